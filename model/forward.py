"""Defines the model's forward pass as the scorer calls it (fixed 1,024-row blocks, one compiled graph) and measures
its cost, so a model card can say what a model costs per image beside what it is worth."""

import statistics
import time

import numpy as np

from model.folding import fold_batch_norms
from model.vocabulary import IMAGE_SHAPE

# Every model call gets exactly this many rows (the last block padded), so a record's probabilities never depend on
# how the runner happened to batch it with others: oneDNN may pick other kernels for other batch shapes. 1,024 rows
# scored 8% faster than 256 on one core here (10,100 against 9,300 img/s) and no slower on two.
MODEL_CALL_ROWS = 1024


def compiled_forward(model):
    """The model's forward pass as one TensorFlow graph over blocks of MODEL_CALL_ROWS uint8 rows -> numpy.

    The same probabilities as model.predict_on_batch, to the bit, ~10% faster on 1,024 rows here: Keras wraps every
    predict_on_batch call in its data handling, a few milliseconds of Python a call. (The scorer hands it the model
    with batch normalisation folded in, see model.folding.)
    """
    import tensorflow as tf

    # autograph=False: a plain model call has no Python control flow to convert, and converting it writes an
    # __autograph_generated_file*.py into the temporary folder that only TensorFlow's exit handler removes, which a
    # worker that leaves quickly (pipeline.worker_process, pipeline.score.main) never runs.
    forward = tf.function(lambda pixels: model(pixels, training=False), autograph=False,
                          input_signature=[tf.TensorSpec((MODEL_CALL_ROWS,) + IMAGE_SHAPE, tf.uint8)])
    return lambda block: forward(block).numpy()


def served_forward(model):
    """The forward pass exactly as the scorer serves it: batch normalisation folded, then compiled."""
    return compiled_forward(fold_batch_norms(model))


def forward_cost(models: dict, repeat: int = 5, calls: int = 10) -> dict:
    """{name: median images a second} of each model's served forward pass on one fixed random block, the models timed
    in turn `repeat` times (interleaved, so all of them see the same machine), each timing `calls` calls."""
    forwards = {name: served_forward(model) for name, model in models.items()}
    block = np.random.default_rng(0).integers(0, 256, size=(MODEL_CALL_ROWS,) + IMAGE_SHAPE, dtype=np.uint8)
    for forward in forwards.values():
        forward(block)  # traced, and its kernels chosen, before timing
    rates = {name: [] for name in forwards}
    for _ in range(repeat):
        for name, forward in forwards.items():
            started = time.perf_counter()
            for _ in range(calls):
                forward(block)
            rates[name].append(calls * MODEL_CALL_ROWS / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in rates.items()}
