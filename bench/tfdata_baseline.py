"""The tf.data script: TensorFlow reads and decodes the PNGs on its own threads while the model predicts.

    python bench/tfdata_baseline.py IMAGE_FOLDER OUTPUT.parquet [MODEL]

from_tensor_slices(paths) -> read_file + decode_png (AUTOTUNE, deterministic) -> batch(1024) -> prefetch(2) ->
predict_on_batch, then one Parquet file. Fast on 28x28 PNGs; it has no error rows, no photo conversion, no cluster.
"""

import glob
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.peer_output import write_scores  # noqa: E402
from model.runtimes import model_files  # noqa: E402


def predict(paths: list, convert, rows: int, model) -> np.ndarray:
    """The tf.data way every peer script here shares: convert(path) on TensorFlow's threads (AUTOTUNE,
    deterministic) -> batches of `rows` -> prefetch(2) -> predict_on_batch; the model's outputs in `paths` order."""
    import tensorflow as tf

    dataset = (tf.data.Dataset.from_tensor_slices(paths)
               .map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .batch(rows)
               .prefetch(2))
    return np.concatenate([np.asarray(model.predict_on_batch(batch)) for batch in dataset])


def main(folder: str, output: str, model_path: str = model_files.DEFAULT_MODEL_PATH) -> None:
    import tensorflow as tf

    paths = sorted(glob.glob(os.path.join(folder, "**", "*.png"), recursive=True))
    model = model_files.load(model_path, runtime="keras").model  # the script a TensorFlow user writes
    probabilities = predict(paths, lambda path: tf.io.decode_png(tf.io.read_file(path), channels=1)[..., 0], 1024,
                            model)
    write_scores(paths, probabilities, output)


if __name__ == "__main__":
    main(*sys.argv[1:])
