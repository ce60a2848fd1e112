"""Defines the model architectures: the tutorials' MLP and the CNNs, all with scaling and augmentation inside."""

import inspect

import keras
from keras import layers

from model.vocabulary import IMAGE_SHAPE, NUM_CLASSES


AUGMENTATIONS = ("none", "full", "shift-flip", "shift-flip-erase")


def augmentation(seed: int, kind: str = "full") -> keras.Sequential:
    """Keras runs these layers only while training. full: random shift, rotation, zoom and horizontal flip;
    shift-flip: a random shift of up to 2 pixels each way (a crop of the image padded by 2) and a horizontal flip;
    shift-flip-erase: those, then half the images get one random rectangle (2-25% of the image) set to the
    background, as if part of the item were hidden (random erasing, Zhong et al. 2017)."""
    if kind in ("shift-flip", "shift-flip-erase"):
        steps = [layers.RandomTranslation(2 / 28, 2 / 28, fill_mode="constant", seed=seed),
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


def _stem(augment, seed: int):
    """Input uint8-valued pixels (N, 28, 28) -> floats in [0, 1] (N, 28, 28, 1), augmented when asked."""
    inputs = keras.Input(shape=IMAGE_SHAPE, name="pixels")
    # Scaling lives in the model so the saved file carries it and scoring feeds raw 0-255 pixels.
    x = layers.Rescaling(1.0 / 255, name="scale_to_unit")(inputs)
    x = layers.Reshape(IMAGE_SHAPE + (1,), name="add_channel")(x)  # (N, 28, 28, 1)
    if augment and augment != "none":  # True (older callers) means "full"
        x = augmentation(seed, "full" if augment is True else augment)(x)
    return inputs, x


def build_mlp(augment: bool = False, seed: int = 0, hidden_units: int = 128) -> keras.Model:
    """The classic TensorFlow 2 tutorial model: Flatten -> Dense 128 relu -> Dense 10."""
    inputs, x = _stem(augment, seed)
    x = layers.Flatten(name="flatten")(x)  # (N, 784)
    x = layers.Dense(hidden_units, activation="relu", name="hidden")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mlp")


def build_cnn(augment: bool = False, seed: int = 0, dropout_rate: float = 0.3, first_padding: str = "valid"):
    """The default model: two conv blocks with batch normalisation and a small dense head (~225k parameters)."""
    inputs, x = _stem(augment, seed)
    x = _conv_block(x, 32, "conv1", first_padding)  # (N, 13, 13, 32); padding "same": (N, 14, 14, 32)
    x = _conv_block(x, 64, "conv2")  # (N, 5, 5, 64); after "same": (N, 6, 6, 64)
    return keras.Model(inputs, _dense_head(x, dropout_rate, seed), name="cnn")  # flattened: (N, 1600)


def build_cnn_same(augment: bool = False, seed: int = 0, dropout_rate: float = 0.3) -> keras.Model:
    """The default CNN with its first convolution padded ("same"): the image's border is seen, and the second block
    works on 14x14 (~21% more work per image, ~300k parameters)."""
    return build_cnn(augment, seed, dropout_rate, first_padding="same")


def build_cnn3(augment: bool = False, seed: int = 0, dropout_rate: float = 0.3, third_filters: int = 64):
    """Three conv blocks at about today's cost per image: a narrow first block (16 filters at 28x28, where a wide one
    costs most, measured), 64 filters at 12x12, a third convolution at 6x6, and the same small dense head."""
    inputs, x = _stem(augment, seed)
    x = _conv_block(x, 16, "conv1", "same")  # (N, 14, 14, 16)
    x = _conv_block(x, 64, "conv2")  # (N, 6, 6, 64)
    x = _conv_block(x, third_filters, "conv3", pool=False)  # (N, 4, 4, third_filters)
    return keras.Model(inputs, _dense_head(x, dropout_rate, seed), name="cnn3")


def build_cnn3_wide(augment: bool = False, seed: int = 0, dropout_rate: float = 0.3) -> keras.Model:
    """cnn3 with 128 filters in its third block (~350k parameters)."""
    return build_cnn3(augment, seed, dropout_rate, third_filters=128)


def _dense_head(x, dropout_rate: float, seed: int):
    """Flatten, dropout, dense 128 relu, dropout, then the softmax over the classes: (N, ...) -> (N, NUM_CLASSES)."""
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout_rate, seed=seed, name="dropout1")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)  # (N, 128)
    x = layers.Dropout(dropout_rate, seed=seed + 1, name="dropout2")(x)
    return layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)


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


def build(name: str, augment: bool = False, seed: int = 0, dropout_rate: float = None) -> keras.Model:
    """Builds the named architecture (not compiled: training chooses the optimizer and its schedule); dropout_rate
    None keeps the architecture's own (the MLP has no dropout)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}: use one of {', '.join(sorted(ARCHITECTURES))}")
    if dropout_rate is None:
        return ARCHITECTURES[name](augment=augment, seed=seed)
    if name not in HAS_DROPOUT:
        raise ValueError(f"the {name} architecture has no dropout: leave out --dropout-rate")
    return ARCHITECTURES[name](augment=augment, seed=seed, dropout_rate=dropout_rate)
