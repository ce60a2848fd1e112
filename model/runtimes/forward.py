"""Defines the model's forward pass as the scorer calls it, for either runtime (fixed-row blocks of uint8 pixels,
scaled, normalised and turned into probabilities as the card says: one compiled TensorFlow graph for a Keras model,
one onnxruntime session for an ONNX model), where it runs, and what it costs, so a model card can say what a model
costs per image beside what it is worth."""

import statistics
import time

import numpy as np

from model.cards.card_spec import FASHION_MNIST, ModelSpec
from model.runtimes import onnx_model  # imports onnxruntime only when a session is made
from model.runtimes.folding import fold_batch_norms

# Every model call gets exactly a model's spec.model_call_rows rows (the last block padded), so a record's
# probabilities never depend on how the runner happened to batch it with others: oneDNN may pick other kernels for
# other batch shapes. For 28x28 grey that is 1,024 rows, which scored 8% faster than 256 on one core here (10,100
# against 9,300 img/s) and no slower on two; bigger inputs get fewer rows (card_spec.MODEL_CALL_VALUES).


def compiled_forward(model, spec: ModelSpec = FASHION_MNIST):
    """The model's forward pass as one TensorFlow graph over blocks of spec.model_call_rows uint8 rows -> numpy
    probabilities: the pixels scaled to the card's input range and, for a model that gives logits, a softmax after.

    The same values as model.predict_on_batch (on the scaled input), to the bit, ~10% faster on 1,024 rows here:
    Keras wraps every predict_on_batch call in its data handling, a few milliseconds of Python a call. (The scorer
    hands it the model with batch normalisation folded in, see model.runtimes.folding.)
    """
    import tensorflow as tf

    rows = spec.model_call_rows
    model_shape = (rows,) + tuple(model.input_shape[1:])
    model_dtype = model.inputs[0].dtype

    def call(pixels):  # (rows, H, W[, C]) uint8 -> (rows, N) float32
        inputs = tf.reshape(pixels, model_shape)  # [H, W] and [H, W, 1] alike for a grey model
        if spec.input_range == "unit":
            inputs = tf.cast(inputs, tf.float32) / 255.0
        elif spec.input_range == "symmetric":
            inputs = tf.cast(inputs, tf.float32) / 127.5 - 1.0
        if spec.mean:
            inputs = (tf.cast(inputs, tf.float32) - tf.constant(spec.mean, tf.float32)) / tf.constant(spec.std,
                                                                                                    tf.float32)
        if inputs.dtype != model_dtype:
            inputs = tf.cast(inputs, model_dtype)
        outputs = tf.cast(model(inputs, training=False), tf.float32)
        return tf.nn.softmax(outputs, axis=-1) if spec.outputs == "logits" else outputs

    # autograph=False: a plain model call has no Python control flow to convert, and converting it writes an
    # __autograph_generated_file*.py into the temporary folder that only TensorFlow's exit handler removes, which a
    # worker that leaves quickly (pipeline.scoring.worker_process, pipeline.score.main) never runs.
    forward = tf.function(call, autograph=False,
                          input_signature=[tf.TensorSpec((rows,) + spec.pixel_shape, tf.uint8)])
    return lambda block: forward(block).numpy()


def served_forward(model, spec: ModelSpec = FASHION_MNIST):
    """The forward pass exactly as the scorer serves it, one fixed block of uint8 pixels -> numpy probabilities: for
    a Keras model, batch normalisation folded, then compiled; for an ONNX model (onnx_model.OnnxModel), its session."""
    if isinstance(model, onnx_model.OnnxModel):
        return onnx_model.forward(model, spec)
    return compiled_forward(fold_batch_norms(model), spec)


def device(model) -> str:
    """Where `model` scores in this process: 'CPU', or the GPU ('GPU:0 NAME')."""
    if isinstance(model, onnx_model.OnnxModel):
        return model.device()
    from model.runtimes import devices

    return devices.scoring_device()


def served_predict(model, spec: ModelSpec = FASHION_MNIST):
    """pixels (N, *spec.pixel_shape) uint8 -> float32 (N, classes) probabilities, as the scorer computes them: the
    served forward pass over fixed-row blocks. Evaluating a model this way measures what scoring gives."""
    call_block = served_forward(model, spec)
    return lambda pixels: predict_fixed_rows(call_block, pixels, spec.model_call_rows)


def known_answers(model, spec: ModelSpec) -> list:
    """The card's known answers of a model (model.cards.known_answers), as the scorer serves it: the card's recipe,
    then the served forward pass."""
    from model import recipes
    from model.cards import known_answers as references

    return references.make_references(spec, lambda data: recipes.to_model_input(spec, data),
                                      served_predict(model, spec))


def probe_block(spec: ModelSpec = FASHION_MNIST) -> np.ndarray:
    """One fixed block of random pixels, a model call's worth."""
    return np.random.default_rng(0).integers(0, 256, size=(spec.model_call_rows,) + spec.pixel_shape, dtype=np.uint8)


def predict_fixed_rows(call_block, pixels: np.ndarray, rows: int) -> np.ndarray:
    """Runs call_block (e.g. a served forward pass) over blocks of exactly `rows` rows of pixels (the model's
    spec.model_call_rows, the last block padded); returns float32 (len(pixels), number of classes)."""
    count = len(pixels)
    padded = -count % rows
    if padded:
        pixels = np.concatenate([pixels, np.zeros((padded,) + pixels.shape[1:], dtype=pixels.dtype)])
    blocks = [call_block(pixels[start:start + rows]) for start in range(0, len(pixels), rows)]
    return np.concatenate(blocks)[:count].astype(np.float32, copy=False)


def forward_cost(models: dict, repeat: int = 5, calls: int = 10, spec: ModelSpec = FASHION_MNIST) -> dict:
    """{name: median images a second} of each model's served forward pass on one fixed random block, the models timed
    in turn `repeat` times (interleaved, so all of them see the same machine), each timing `calls` calls."""
    forwards = {name: served_forward(model, spec) for name, model in models.items()}
    block = probe_block(spec)
    for forward in forwards.values():
        forward(block)  # traced, and its kernels chosen, before timing
    rates = {name: [] for name in forwards}
    for _ in range(repeat):
        for name, forward in forwards.items():
            started = time.perf_counter()
            for _ in range(calls):
                forward(block)
            rates[name].append(calls * len(block) / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in rates.items()}
