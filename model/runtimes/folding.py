"""Folds batch normalisation into the layer before it, for serving: the same function with less work per image (and
drops the augmentation layers, which do nothing at inference, and makes a Normalization layer a fixed rescaling).

At inference a BatchNormalization layer is a fixed scale and shift per channel, so it can be moved into the kernel and
bias of the Conv2D or Dense layer that feeds it. That saves two passes over the largest activations (the first
convolution's output is 87 MB for 1,024 images): the shipped CNN scores 35-50% more images a second folded, and its
probabilities move by at most ~1e-6. A layer is folded only when nothing else reads its output and it has no
activation of its own; the folded model is checked against the original on a probe batch and not used if they differ,
unless its caller checks it itself (the scorer: against the card's known answers, which a wrong fold cannot pass).
"""

import numpy as np

# Largest difference in any probability allowed between the folded and the original model on the probe batch.
TOLERANCE = 1e-4
# The probe runs both models eagerly, op by op. A few rows find a wrong fold as surely as many (every row goes through
# every layer), and at 224x224x3 many cost dearly: EfficientNetB0 folded in 13.4 s with a peak of 7.4 GB on 64 rows,
# in 2.3 s and 1.9 GB on 4 (its unfolded model alone peaks at 1.9 GB; folded, it scores 10-15% faster).
_PROBE_ROWS = 4


def fold_batch_norms(model, compare: bool = True):
    """Returns a copy of `model` with every foldable BatchNormalization folded away, every augmentation layer dropped
    and every Normalization a Rescaling, or `model` itself when there is none or (with `compare`) the copy does not
    compute the same probabilities. Without `compare` the caller must check the copy: the comparison runs both models
    eagerly, 0.44 of the 0.8 s that folding MobileNetV3Small takes here."""
    import keras

    pairs = _foldable_pairs(model, keras)
    training_only = {layer.name for layer in model.layers if _training_only(layer, keras)}
    normalizations = {layer.name: layer for layer in model.layers if _fixed_normalization(layer, keras)}
    if not pairs and not training_only and not normalizations:
        return model
    folded_away = {norm.name: producer for producer, norm in pairs}
    producers = {producer.name: norm for producer, norm in pairs}

    class FoldedAway(keras.layers.Layer):
        """Stands where a folded BatchNormalization was: passes its input on (and takes the same arguments)."""

        def call(self, inputs, training=None, mask=None):
            return inputs

    def clone(layer):
        if layer.name in folded_away or layer.name in training_only:
            return FoldedAway(name=layer.name)
        if layer.name in producers:
            return type(layer).from_config({**layer.get_config(), "use_bias": True})
        if layer.name in normalizations:
            return _as_rescaling(layer, keras)
        return type(layer).from_config(layer.get_config())

    folded = keras.models.clone_model(model, clone_function=clone)
    for original in model.layers:
        if not original.weights:
            continue  # nothing to copy (and an input layer's name is not kept by cloning)
        target = folded.get_layer(original.name)
        if original.name in producers:
            target.set_weights(_folded_weights(original, producers[original.name]))
        elif original.name not in folded_away and original.name not in normalizations:
            target.set_weights(original.get_weights())
    return folded if not compare or _same_function(model, folded) else model


def folded_call(model):
    """The function fold_batch_norms(model, compare=False) computes, as a callable (inputs -> outputs at inference) over
    `model`'s own layers: no copy of the model is built. Each folded pair's convolution or matrix product runs on the
    folded weights (the same operations a folded copy runs), each folded-away layer passes its input on. None where
    there is nothing to fold, or `model` is not a functional model (a subclassed one: fold_batch_norms copies it).

    Copying MobileNetV3Small's 157 layers took 0.31 s here, 0.14 s of it making variables the copy then overwrites."""
    import keras
    from keras.src.models.functional import Functional, operation_fn

    if not isinstance(model, Functional):
        return None
    pairs = _foldable_pairs(model, keras)
    replaced = {layer.name: _passes_on for layer in model.layers if _training_only(layer, keras)}
    replaced.update({layer.name: _as_rescaling(layer, keras) for layer in model.layers
                     if _fixed_normalization(layer, keras)})
    for producer, norm in pairs:
        replaced[norm.name] = _passes_on
        replaced[producer.name] = _folded_producer(producer, *_folded_weights(producer, norm), keras)
    if not replaced:
        return None

    def call(inputs):
        outputs = model._run_through_graph([inputs], operation_fn=lambda layer: replaced.get(layer.name) or
                                           operation_fn(layer, training=False))
        return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs

    return call


def _passes_on(inputs, *args, **kwargs):
    return inputs


def _folded_producer(producer, kernel, bias, keras):
    """What the Conv2D or Dense `producer` computes with the folded kernel and bias (its activation is linear)."""
    kernel, bias = keras.ops.convert_to_tensor(kernel), keras.ops.convert_to_tensor(bias)
    if isinstance(producer, keras.layers.Conv2D):
        return lambda inputs, *args, **kwargs: producer.convolution_op(inputs, kernel) + bias
    return lambda inputs, *args, **kwargs: keras.ops.matmul(inputs, kernel) + bias


def _fixed_normalization(layer, keras) -> bool:
    """A Normalization layer (keras.applications' EfficientNet has one) with its mean and variance set: at inference a
    fixed scale and offset per channel. As variables, tf2onnx leaves them as inputs of the exported graph."""
    return type(layer) is keras.layers.Normalization and not layer.invert and getattr(layer, "mean", None) is not None


def _as_rescaling(layer, keras):
    """The Rescaling layer that computes what the Normalization `layer` does: (x - mean) / max(sqrt(var), epsilon)."""
    divisor = np.maximum(np.sqrt(np.asarray(layer.variance, np.float64)), keras.backend.epsilon())
    scale = (1.0 / divisor).astype(np.float32)
    offset = (-np.asarray(layer.mean, np.float64) / divisor).astype(np.float32)
    return keras.layers.Rescaling(scale=scale, offset=offset, name=layer.name)


def _training_only(layer, keras) -> bool:
    """Whether `layer` does nothing at inference: one of Keras's random image augmentation layers, or a Sequential of
    only those (model.training.architectures' augmentation). Left in, such a layer is exported to ONNX with its random
    operators, which no ONNX runtime has (tf2onnx traces both of its branches)."""
    if isinstance(layer, keras.Sequential):
        return bool(layer.layers) and all(_training_only(inner, keras) for inner in layer.layers)
    return type(layer).__name__.startswith("Random") and type(layer).__module__.startswith(
        "keras.src.layers.preprocessing")


def _foldable_pairs(model, keras) -> list:
    """(Conv2D or Dense, the BatchNormalization right after it) for every pair that can be folded."""
    consumers = {}
    for layer in model.layers:
        for tensor in keras.tree.flatten(layer.input) if not isinstance(layer, keras.layers.InputLayer) else []:
            producer = tensor._keras_history.operation
            consumers.setdefault(producer.name, []).append(layer)
    pairs = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or layer.input is None:
            continue
        producer = layer.input._keras_history.operation
        axis = layer.axis if isinstance(layer.axis, int) else None
        if (isinstance(producer, (keras.layers.Conv2D, keras.layers.Dense))
                and producer.activation is keras.activations.linear
                and consumers.get(producer.name) == [layer]
                and axis in (-1, len(layer.input.shape) - 1)):
            pairs.append((producer, layer))
    return pairs


def _folded_weights(producer, norm) -> list:
    """[kernel, bias] of `producer` with `norm`'s scale and shift folded in (the output channel is the last axis)."""
    kernel = np.asarray(producer.kernel, dtype=np.float64)
    bias = np.asarray(producer.bias, dtype=np.float64) if producer.use_bias else np.zeros(kernel.shape[-1])
    gamma = np.asarray(norm.gamma, dtype=np.float64) if norm.scale else 1.0
    beta = np.asarray(norm.beta, dtype=np.float64) if norm.center else 0.0
    scale = gamma / np.sqrt(np.asarray(norm.moving_variance, dtype=np.float64) + norm.epsilon)
    shift = beta - np.asarray(norm.moving_mean, dtype=np.float64) * scale
    return [(kernel * scale).astype(np.float32), (bias * scale + shift).astype(np.float32)]


def _same_function(model, folded) -> bool:
    """Whether both give the same outputs on random input of the model's shape (0-255 for a model that takes bytes or
    scales inside, [0, 1] otherwise), to TOLERANCE relative to the outputs' size (logits may be large)."""
    rng = np.random.default_rng(0)
    shape = (_PROBE_ROWS,) + tuple(model.input_shape[1:])
    dtype = np.dtype(str(model.inputs[0].dtype))
    probe = (rng.integers(0, 256, size=shape).astype(dtype) if dtype.kind in "ui"
             else rng.random(shape).astype(dtype))
    expected = np.asarray(model(probe, training=False))
    found = np.asarray(folded(probe, training=False))
    limit = TOLERANCE * max(1.0, float(np.abs(expected).max()))
    return expected.shape == found.shape and float(np.abs(expected - found).max()) <= limit
