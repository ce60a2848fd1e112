"""Writes every trainable variable of a saved model (name, shape, values) to a readable text file.

    python -m model.weights_text --model model/artifacts/fashion_cnn.keras --output weights.txt
"""

import argparse
import sys

import numpy as np

from model.cli_types import help_texts
from model.display import visible
from model.runtimes import model_files, quiet, registry


def write_weights(model, path: str) -> int:
    """Writes one block per trainable variable; returns how many values were written."""
    written = 0
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(f"# {model.name}: {len(model.trainable_weights)} trainable variables\n")
        for variable in model.trainable_weights:
            values = np.asarray(variable)
            stream.write(f"\n## {variable.path} shape={list(values.shape)} dtype={values.dtype}\n")
            # Full precision and no '...' elision, so the file can be read back or diffed exactly.
            stream.write(np.array2string(values, threshold=sys.maxsize, max_line_width=120, precision=8, separator=", "))
            stream.write("\n")
            written += values.size
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fmnist-weights", **help_texts(__doc__))
    parser.add_argument("--model", default=model_files.DEFAULT_MODEL_PATH)
    parser.add_argument("--output", default="weights.txt")
    args = parser.parse_args(argv)
    try:
        if registry.framework_of(args.model) != "keras":
            raise model_files.ModelFileError(f"{args.model}: weights are written as text from a .keras model "
                                             "(an ONNX model's are in its file; onnx.numpy_helper reads them)")
        with quiet.quiet_tensorflow_start_up():
            loaded = model_files.load(args.model, runtime="keras")
    except model_files.ModelFileError as error:
        print(f"error: {visible(str(error))}", file=sys.stderr)
        return 2
    count = write_weights(loaded.model, args.output)
    print(f"wrote {count} values of {len(loaded.model.trainable_weights)} variables to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
