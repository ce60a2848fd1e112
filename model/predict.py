"""Classifies a user's own photos: the top labels with probabilities for each file, through the model card's
preprocessing.

    python -m model.predict my_shoe.jpg my_shirt.png --top 3

One line per file, its name shown through model.display (a name's control characters cannot retitle the terminal or
fake a line); files are read as own_images reads them, so a FIFO or a device is an error line, never a hang.
"""

import argparse
import sys

import numpy as np

from model.cli_types import help_texts, positive_int
from model.display import visible
from model.recipes import preprocessing
from model.runtimes import forward, model_files, quiet
from model.training import own_images

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def top_labels(probabilities: np.ndarray, count: int, class_names: tuple) -> list:
    """[(class name, probability), ...] best first."""
    order = np.argsort(-probabilities, kind="stable")[:count]
    return [(class_names[i], float(probabilities[i])) for i in order]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fmnist-predict", **help_texts(__doc__))
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, WebP, BMP, TIFF, GIF)")
    parser.add_argument("--model", default=model_files.DEFAULT_MODEL_PATH)
    parser.add_argument("--top", type=positive_int, default=3, help="how many labels to show (at most the model's "
                                                                       "classes; default 3)")
    parser.add_argument("--max-pixels", type=int, default=preprocessing.DEFAULT_MAX_PIXELS)
    args = parser.parse_args(argv)
    try:
        with quiet.quiet_tensorflow_start_up():
            loaded = model_files.load(args.model)
    except model_files.ModelFileError as error:
        print(f"error: {visible(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    spec = loaded.spec
    files = own_images.read_images(args.images, args.max_pixels, spec=spec)
    probabilities = forward.served_predict(loaded.model, spec)(files.images) if len(files.images) else []
    answers = dict(zip((path for path, read in zip(args.images, files.read) if read), probabilities))
    failures = {failure.path: failure.message for failure in files.unreadable}
    for path in args.images:
        if path in answers:
            ranked = ", ".join(f"{name} {100 * p:.1f}%" for name, p in top_labels(answers[path], args.top, spec.class_names))
            print(f"{visible(path)}: {ranked}")
        else:
            print(f"{visible(path)}: error: {visible(failures[path])}")
    if failures:
        print(f"{len(files.unreadable)} of {len(args.images)} files could not be classified", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
