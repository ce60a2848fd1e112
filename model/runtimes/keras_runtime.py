"""Serves a .keras model on TensorFlow: read and checked as an archive without TensorFlow, loaded from those very
bytes in Keras's safe mode, served with batch normalisation folded (folding) as one compiled TensorFlow graph over
fixed-row blocks of uint8 pixels, scaled and normalised as the card says, with a softmax after logits."""

import sys

from model.runtimes import registry


class KerasRuntime(registry.Runtime):
    name = "keras"
    framework = "keras"
    suffixes = (".keras",)
    package = "tensorflow"
    install_hint = "pip install . (TensorFlow is always installed)"

    def installed(self) -> bool:
        """Always (a dependency of the project); asked without importing TensorFlow, whose start-up is slow and loud."""
        import importlib.util

        return importlib.util.find_spec(self.package) is not None

    def check(self, path: str, spec):
        import io

        from model.cards.model_checks import check_input
        from model.runtimes import model_files

        data = model_files.read_model_file(path)
        check_input(io.BytesIO(data), path, spec)
        return data

    def load(self, checked, path: str, threads: int = 0, precision: str = "f32"):
        from model.runtimes import model_files

        return model_files.keras_model(checked, path)

    def content_sha256(self, model) -> str:
        from model.runtimes import model_files

        return model_files.content_sha256(model)

    def owns(self, model) -> bool:
        keras = sys.modules.get("keras")  # a Keras model exists only where Keras was imported
        return keras is not None and isinstance(model, keras.Model)

    def forward(self, model, spec):
        from model.runtimes.folding import fold_batch_norms

        return compiled_forward(fold_batch_norms(model), spec)

    def checked_forwards(self, model, spec):
        """Folded without folding's own comparison (the caller's known answers check it) and without a copy of the
        model, then as loaded."""
        from model.runtimes.folding import fold_batch_norms, folded_call

        call = folded_call(model)
        if call is not None:
            yield compiled_forward(model, spec, call)
        elif (folded := fold_batch_norms(model, compare=False)) is not model:
            yield compiled_forward(folded, spec)
        yield compiled_forward(model, spec)

    def device(self, model) -> str:
        from model.runtimes import devices

        return devices.scoring_device()

    def describe(self, model) -> dict:
        import keras
        import tensorflow as tf

        return {"content_sha256": self.content_sha256(model), "parameter_count": int(model.count_params()),
                "tensorflow_version": tf.__version__, "keras_version": keras.__version__}

    def output_width(self, model):
        shape = tuple(model.outputs[0].shape[1:]) if len(model.outputs) == 1 else ()
        return shape[0] if len(shape) == 1 else None

    def agrees(self, model, spec) -> list:
        """What keeps a loaded Keras model from being the one `spec` describes: its input and its outputs."""
        from model.cards.model_checks import accepted_inputs

        problems = []
        if len(model.inputs) != 1 or tuple(model.input_shape[1:]) not in accepted_inputs(spec):
            problems.append(f"input shape {model.input_shape[1:]}, the card says {list(spec.input_shape)}")
        if len(model.outputs) != 1 or tuple(model.output_shape[1:]) != (spec.num_classes,):
            problems.append(f"output shape {model.output_shape[1:]}, the card names {spec.num_classes} classes")
        return problems


def compiled_forward(model, spec, call_model=None):
    """The model's forward pass as one TensorFlow graph over blocks of spec.model_call_rows uint8 rows -> numpy
    probabilities: the pixels scaled to the card's input range and, for a model that gives logits, a softmax after.
    `call_model(inputs) -> outputs` computes the model's function (default: the model itself, at inference).

    The same values as model.predict_on_batch (on the scaled input), to the bit, ~10% faster on 1,024 rows here:
    Keras wraps every predict_on_batch call in its data handling, a few milliseconds of Python a call.
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
        outputs = tf.cast(call_model(inputs) if call_model else model(inputs, training=False), tf.float32)
        return tf.nn.softmax(outputs, axis=-1) if spec.outputs == "logits" else outputs

    # autograph=False: a plain model call has no Python control flow to convert, and converting it writes an
    # __autograph_generated_file*.py into the temporary folder that only TensorFlow's exit handler removes, which a
    # worker that leaves quickly (pipeline.scoring.worker_process, pipeline.score.main) never runs.
    _quiet_about_retracing()
    forward = tf.function(call, autograph=False,
                          input_signature=[tf.TensorSpec((rows,) + spec.pixel_shape, tf.uint8)])
    return lambda block: forward(block).numpy()


class _NotOurRetracing:
    """Drops TensorFlow's "triggered tf.function retracing" warning about compiled_forward: each forward pass is its
    own tf.function over one fixed block shape, traced once on purpose (model.card makes several, one per runtime
    measured and check), which TensorFlow counts as retracing one function. Its warning about anything else stays."""

    @staticmethod
    def filter(record) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and "compiled_forward.<locals>.call" in message)


def _quiet_about_retracing() -> None:
    import logging

    logger = logging.getLogger("tensorflow")
    if not any(isinstance(kept, _NotOurRetracing) for kept in logger.filters):
        logger.addFilter(_NotOurRetracing())


RUNTIME = KerasRuntime()
