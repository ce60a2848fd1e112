"""Defines the model architectures: the tutorials' MLP and the CNNs, all with scaling and augmentation inside, for
Fashion-MNIST's 28x28 grey images and ten classes or for any card's input (H x W x C) and classes."""

import inspect
import math

import keras
from keras import layers

from model.cards.card_spec import FASHION_MNIST

# Inputs bigger than 28x28 get more conv blocks until what the dense head reads is at most this many values (at 28x28
# no block is added: the head reads 1,600 values of the cnn, 1,024 of cnn3).
MAX_HEAD_INPUTS = 4096


def augmentation(seed: int, kind: str = "full", image_size: tuple = (28, 28)) -> keras.Sequential:
    """Keras runs these layers only while training. full: random shift, rotation, zoom and horizontal flip;
    shift-flip: a random shift of up to 2 pixels each way (a crop of the image padded by 2) and a horizontal flip;
    shift-flip-erase: those, then half the images get one random rectangle (2-25% of the image) set to the
    background, as if part of the item were hidden (random erasing, Zhong et al. 2017)."""
    if kind in ("shift-flip", "shift-flip-erase"):
        height, width = image_size
        steps = [layers.RandomTranslation(2 / height, 2 / width, fill_mode="constant", seed=seed),
                 layers.RandomFlip("horizontal", seed=seed + 3)]
        if kind == "shift-flip-erase":
            # factor (p, p) erases with probability p; scale is the erased share of the image's area.
            steps.append(layers.RandomErasing(factor=(0.5, 0.5), scale=(0.02, 0.25), fill_value=0.0,
                                              value_range=(0, 1), seed=seed + 4))
    else:
        steps = [layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=seed),
                 layers.RandomRotation(0.04, fill_mode="constant", seed=seed + 1),
                 layers.RandomZoom(0.08, fill_mode="constant", seed=seed + 2),
                 layers.RandomFlip("horizontal", seed=seed + 3)]
    return keras.Sequential(steps, name="augmentation")


def _stem(augment, seed: int, input_shape: tuple):
    """Input uint8-valued pixels (N, H, W) grey or (N, H, W, 3) -> floats in [0, 1] (N, H, W, C), augmented when
    asked."""
    height, width, channels = input_shape
    inputs = keras.Input(shape=(height, width) if channels == 1 else input_shape, name="pixels")
    # Scaling lives in the model so the saved file carries it and scoring feeds raw 0-255 pixels.
    x = layers.Rescaling(1.0 / 255, name="scale_to_unit")(inputs)
    if channels == 1:
        x = layers.Reshape(input_shape, name="add_channel")(x)  # (N, H, W, 1)
    if augment and augment != "none":  # True (older callers) means "full"
        x = augmentation(seed, "full" if augment is True else augment, (height, width))(x)
    return inputs, x


def build_mlp(augment: bool = False, seed: int = 0, hidden_units: int = 128, input_shape: tuple = (28, 28, 1),
              num_classes: int = 10) -> keras.Model:
    """The classic TensorFlow 2 tutorial model: Flatten -> Dense 128 relu -> Dense 10 (or one per class)."""
    inputs, x = _stem(augment, seed, input_shape)
    x = layers.Flatten(name="flatten")(x)  # (N, 784) at 28x28
    x = layers.Dense(hidden_units, activation="relu", name="hidden")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mlp")


def build_cnn(augment: bool = False, seed: int = 0, dropout_rate: float = 0.3, first_padding: str = "valid",
              input_shape: tuple = (28, 28, 1), num_classes: int = 10):
    """The default model: two conv blocks with batch normalisation and a small dense head (~225k parameters at
    28x28; bigger inputs get more blocks, see MAX_HEAD_INPUTS)."""
    inputs, x = _stem(augment, seed, input_shape)
    x = _conv_block(x, 32, "conv1", first_padding)  # (N, 13, 13, 32); padding "same": (N, 14, 14, 32)
    x = _conv_block(x, 64, "conv2")  # (N, 5, 5, 64); after "same": (N, 6, 6, 64)
    x = _shrunk_for_head(x, 64, first_block=3)
    return keras.Model(inputs, _dense_head(x, dropout_rate, seed, num_classes), name="cnn")  # flattened: (N, 1600)


def build_cnn_same(augment: bool = False, seed: int = 0, dropout_rate: float = 0.3, input_shape: tuple = (28, 28, 1),
                   num_classes: int = 10) -> keras.Model:
    """The default CNN with its first convolution padded ("same"): the image's border is seen, and the second block
    works on 14x14 (~21% more work per image, ~300k parameters)."""
    return build_cnn(augment, seed, dropout_rate, "same", input_shape, num_classes)


def build_cnn3(augment: bool = False, seed: int = 0, dropout_rate: float = 0.3, third_filters: int = 64,
               input_shape: tuple = (28, 28, 1), num_classes: int = 10):
    """Three conv blocks at about today's cost per image: a narrow first block (16 filters at 28x28, where a wide one
    costs most, measured), 64 filters at 12x12, a third convolution at 6x6, and the same small dense head."""
    inputs, x = _stem(augment, seed, input_shape)
    x = _conv_block(x, 16, "conv1", "same")  # (N, 14, 14, 16)
    x = _conv_block(x, 64, "conv2")  # (N, 6, 6, 64)
    x = _conv_block(x, third_filters, "conv3", pool=False)  # (N, 4, 4, third_filters)
    x = _shrunk_for_head(x, third_filters, first_block=4)
    return keras.Model(inputs, _dense_head(x, dropout_rate, seed, num_classes), name="cnn3")


def build_cnn3_wide(augment: bool = False, seed: int = 0, dropout_rate: float = 0.3, input_shape: tuple = (28, 28, 1),
                    num_classes: int = 10) -> keras.Model:
    """cnn3 with 128 filters in its third block (~350k parameters)."""
    return build_cnn3(augment, seed, dropout_rate, 128, input_shape, num_classes)


def _shrunk_for_head(x, filters: int, first_block: int):
    """Adds conv blocks (3x3, pooled) while the dense head would read more than MAX_HEAD_INPUTS values."""
    block = first_block
    while math.prod(x.shape[1:]) > MAX_HEAD_INPUTS and min(x.shape[1:3]) >= 4:
        x = _conv_block(x, filters, f"conv{block}")
        block += 1
    return x


def _dense_head(x, dropout_rate: float, seed: int, num_classes: int):
    """Flatten, dropout, dense 128 relu, dropout, then the softmax over the classes: (N, ...) -> (N, num_classes)."""
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout_rate, seed=seed, name="dropout1")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)  # (N, 128)
    x = layers.Dropout(dropout_rate, seed=seed + 1, name="dropout2")(x)
    return layers.Dense(num_classes, activation="softmax", name="probabilities")(x)


def _conv_block(x, filters: int, name: str, padding: str = "valid", pool: bool = True):
    """3x3 convolution (no padding unless asked), batch normalisation, relu, then 2x2 max pooling unless told not."""
    x = layers.Conv2D(filters, 3, padding=padding, use_bias=False, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_norm")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    return layers.MaxPooling2D(name=f"{name}_pool")(x) if pool else x


ARCHITECTURES = {"mlp": build_mlp, "cnn": build_cnn, "cnn-same": build_cnn_same, "cnn3": build_cnn3,
                 "cnn3-wide": build_cnn3_wide}
# The architectures whose builder takes a dropout rate (read from the builders, so a new one cannot be left out).
HAS_DROPOUT = tuple(name for name, builder in ARCHITECTURES.items()
                    if "dropout_rate" in inspect.signature(builder).parameters)


def build(name: str, augment: bool = False, seed: int = 0, dropout_rate: float = None, spec=FASHION_MNIST,
          steps_per_epoch: int = None) -> keras.Model:
    """Builds the named architecture for spec's input and classes (not compiled: training chooses the optimizer and
    its schedule); dropout_rate None keeps the architecture's own (the MLP has no dropout).

    Batch normalisation keeps moving statistics for inference with Keras's momentum of 0.99: an average over the last
    ~100 batches, right for Fashion-MNIST's 422 batches an epoch. A run of a few hundred images has a dozen batches an
    epoch, and statistics that slow have not caught up when it ends (measured: 3 classes of 150 pictures, 10 epochs
    of 15 batches, scored one class for every image in inference while training-mode accuracy was 0.94). Given
    steps_per_epoch, the momentum is 1 - 1 / steps_per_epoch where that is below 0.99: about the last epoch's batches.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}: use one of {', '.join(sorted(ARCHITECTURES))}")
    shape = {"input_shape": tuple(spec.input_shape), "num_classes": spec.num_classes}
    if dropout_rate is None:
        model = ARCHITECTURES[name](augment=augment, seed=seed, **shape)
    elif name not in HAS_DROPOUT:
        raise ValueError(f"the {name} architecture has no dropout: leave out --dropout-rate")
    else:
        model = ARCHITECTURES[name](augment=augment, seed=seed, dropout_rate=dropout_rate, **shape)
    if steps_per_epoch:
        momentum = min(0.99, 1 - 1 / steps_per_epoch)
        for layer in model.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = momentum
    return model
