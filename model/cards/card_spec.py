"""Defines what a model card says about how to use its model, as one small typed value: the classes, the input's
geometry, value range and normalisation, the kind of output, the preprocessing recipe with its parameters, and the
runtime that serves the model with the layout it takes its input in.

Every module that needs a model's classes or input reads them from a ModelSpec made from the loaded card (the way
Beam hands a ModelHandler down its graph), never from a constant. Format-1 cards, written before cards said any of
this, are read as what they were: the Fashion-MNIST model, 28x28 grey, uint8 scaled inside the model, probabilities;
format-2 cards, written before ONNX models, as Keras models taking [H, W, C] with no mean or std.
"""

import dataclasses
import json

from model import vocabulary

# Card formats this code reads. 2 added class names of any model, [H, W, C], the input range, the output kind and a
# preprocessing recipe with parameters; 3 the runtime (Keras or ONNX), the input's layout and a per-channel mean and
# std; 4 runtimes by their registered names (model.runtimes.registry) with the list of those that give the model's
# answers, fastest first, flat input rows and the output that holds the scores.
CARD_FORMAT = 4
INPUT_RANGES = ("uint8", "unit", "symmetric")  # 0-255 as bytes (scaled inside the model), [0, 1], [-1, 1]
OUTPUTS = ("probabilities", "logits")  # logits get a softmax
# Where the model's input has its channels: [batch, H, W, C] (or [batch, H, W] grey), [batch, C, H, W], or flat rows
# [batch, H*W*C] (row-major, channels last: a scikit-learn model's).
LAYOUTS = ("nhwc", "nchw", "flat")
RUNTIME_ALIASES = {"onnx": "onnxruntime"}  # format 3 named onnxruntime "onnx"
# A model call's input stays within this many values (64 MiB as float32), so rows per call follow from the input
# size: 1,024 rows at 28x28 grey or 64x64 colour, 64 rows at 224x224 colour.
MODEL_CALL_VALUES = 1 << 24
MAX_MODEL_CALL_ROWS = 1024


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to feed a model and read what it gives back, from its card."""

    class_names: tuple
    input_shape: tuple  # (height, width, channels), channels 1 (grey) or 3 (RGB)
    input_range: str = "uint8"
    outputs: str = "probabilities"
    preprocessing: str = "fmnist-catalogue"
    preprocessing_version: int = 2
    parameters: str = "{}"  # the recipe's parameters as sorted JSON: hashable, and the same text on every worker
    runtime: str = "keras"  # the runtime the card serves the model on first (model.runtimes.registry names it)
    layout: str = "nhwc"
    mean: tuple = ()  # per channel, subtracted after scaling to the input range; () for none
    std: tuple = ()  # per channel, divided by after the mean; () for none
    output_name: str = None  # the ONNX output that holds the scores; None: the one that can

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def pixel_shape(self) -> tuple:
        """The shape of one preprocessed image as numpy holds it: (H, W) for grey, as Pillow's mode L gives it, and
        (H, W, 3) for colour."""
        height, width, channels = self.input_shape
        return (height, width) if channels == 1 else (height, width, channels)

    @property
    def pixel_bytes(self) -> int:
        height, width, channels = self.input_shape
        return height * width * channels

    @property
    def model_call_rows(self) -> int:
        """Rows in every model call for this model: the largest power of two, at most MAX_MODEL_CALL_ROWS, whose
        input fits MODEL_CALL_VALUES. Fixed per model, so a row's probabilities never depend on how it was batched."""
        rows = MAX_MODEL_CALL_ROWS
        while rows > 1 and rows * self.pixel_bytes > MODEL_CALL_VALUES:
            rows //= 2
        return rows

    @property
    def recipe_parameters(self) -> dict:
        return json.loads(self.parameters)

    @property
    def recipe(self) -> str:
        """The recipe as cards and messages name it: fit-v1, fmnist-catalogue-v2."""
        return f"{self.preprocessing}-v{self.preprocessing_version}"


FASHION_MNIST = ModelSpec(class_names=vocabulary.CLASS_NAMES, input_shape=(*vocabulary.IMAGE_SHAPE, 1))


def spec_from_card(card: dict) -> ModelSpec:
    """The ModelSpec of a card that model_checks.validate_card accepted."""
    if card.get("card_format", 1) < 2:
        # Format 1 named the preprocessing by version only ("fmnist-catalogue-v2"); every v1 and v2 model is scored by
        # v2 (see vocabulary.COMPATIBLE_PREPROCESSING_VERSIONS).
        return dataclasses.replace(FASHION_MNIST, class_names=tuple(card["class_names"]))
    recipe = card["preprocessing"]
    return ModelSpec(class_names=tuple(card["class_names"]), input_shape=tuple(card["input_shape"]),
                     input_range=card["input_range"], outputs=card["outputs"], preprocessing=recipe["name"],
                     preprocessing_version=recipe["version"],
                     parameters=parameters_text(recipe.get("parameters", {})),
                     runtime=runtime_name(card.get("runtime", "keras")), layout=card.get("layout", "nhwc"),
                     mean=tuple(card.get("mean") or ()), std=tuple(card.get("std") or ()),
                     output_name=card.get("output_name"))


def runtime_name(name: str) -> str:
    """A runtime's registered name, for the name an older card gives it."""
    return RUNTIME_ALIASES.get(name, name)


def class_index(name_or_index: str, class_names: tuple) -> int:
    """The label index of a class given by its name ("Ankle boot"), a folder-safe spelling of it ("ankle_boot",
    "T-shirt-top": case and anything but letters and digits ignored, where that names one class) or its index ("9").
    Raises ValueError naming the classes."""
    text = name_or_index.strip()
    if text in class_names:
        return class_names.index(text)
    folded = [index for index, name in enumerate(class_names) if _folded(name) == _folded(text)]
    if len(folded) == 1 and _folded(text):
        return folded[0]
    if text.isdigit() and int(text) < len(class_names):
        return int(text)
    listed = ", ".join(class_names[:20]) + (f" (and {len(class_names) - 20} more)" if len(class_names) > 20 else "")
    raise ValueError(f"unknown class {name_or_index!r}: use an index 0-{len(class_names) - 1} or one of {listed}")


def _folded(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def parameters_text(parameters: dict) -> str:
    """A recipe's parameters as ModelSpec holds them."""
    return json.dumps(parameters, sort_keys=True)


def described(spec: ModelSpec) -> dict:
    """What a run's manifest says of its model's spec: card_fields without the card's format."""
    return {name: value for name, value in card_fields(spec).items() if name != "card_format"}


def spec_described(fields: dict) -> ModelSpec:
    """The spec a manifest's model section describes (described); a manifest written before it said so was the
    Fashion-MNIST model's."""
    if not isinstance(fields.get("preprocessing"), dict):
        return FASHION_MNIST
    return spec_from_card({**fields, "card_format": CARD_FORMAT})


def card_fields(spec: ModelSpec) -> dict:
    """The fields a card of this format holds for `spec` (the inverse of spec_from_card)."""
    return {"card_format": CARD_FORMAT, "class_names": list(spec.class_names), "input_shape": list(spec.input_shape),
            "input_range": spec.input_range, "mean": list(spec.mean) or None, "std": list(spec.std) or None,
            "outputs": spec.outputs,
            "preprocessing": {"name": spec.preprocessing, "version": spec.preprocessing_version,
                              "parameters": spec.recipe_parameters},
            "runtime": spec.runtime, "layout": spec.layout, "output_name": spec.output_name}
