"""Saves and loads a trained model as a `.keras` file with its model card (`.json`) beside it, and checks they agree."""

import hashlib
import json
import os
import sys
from dataclasses import dataclass

import numpy as np

from model.vocabulary import CLASS_NAMES, COMPATIBLE_PREPROCESSING_VERSIONS, IMAGE_SHAPE, PREPROCESSING_VERSION

CARD_FORMAT = 1
ARTIFACTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")
DEFAULT_MODEL_PATH = os.path.join(ARTIFACTS_DIR, "fashion_cnn.keras")


class ModelFileError(ValueError):
    """A model file or its card is missing, unreadable, or they disagree."""


@dataclass(frozen=True)
class LoadedModel:
    """A Keras model with its card; `version` names this exact model (card version + content hash)."""

    model: object
    card: dict

    @property
    def version(self) -> str:
        return model_version(self.card)


def card_path_for(model_path: str) -> str:
    """The card lives beside the model: fashion_cnn.keras -> fashion_cnn.json."""
    return os.path.splitext(model_path)[0] + ".json"


def model_version(card: dict) -> str:
    """A short, stable name for one model: its card version and the first 12 hex digits of its content hash."""
    return f"{card['version']}+{card['content_sha256'][:12]}"


def content_sha256(model) -> str:
    """Hashes the architecture and every weight, so the same trained model hashes the same however it was saved."""
    digest = hashlib.sha256()
    digest.update(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    for variable in model.weights:
        value = np.ascontiguousarray(np.asarray(variable))
        digest.update(f"{variable.path}|{value.dtype}|{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def save(model, path: str, card_fields: dict) -> dict:
    """Writes `path` (.keras) and its card; the card gets the fields every loader checks, plus card_fields."""
    import keras
    import tensorflow as tf

    if not path.endswith(".keras"):
        raise ValueError(f"{path}: the model file name must end in .keras")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    card = {
        "card_format": CARD_FORMAT,
        "version": "1.0.0",
        **card_fields,
        "class_names": list(CLASS_NAMES),
        "preprocessing_version": PREPROCESSING_VERSION,
        "input_shape": list(IMAGE_SHAPE),
        "input_dtype": "uint8 values 0-255 (scaled to [0, 1] inside the model)",
        "parameter_count": int(model.count_params()),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "content_sha256": content_sha256(model),
    }
    model.save(path)
    write_json_atomically(card_path_for(path), card)
    return card


def load(path: str, compile: bool = False) -> LoadedModel:
    """Loads a model in Keras safe mode and checks that its card describes it; raises ModelFileError if not."""
    card = read_card(path)
    keras = import_keras()
    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file; all mean the same thing to the user.
        raise ModelFileError(f"{path}: cannot load the Keras model ({type(error).__name__}: {error})") from error
    check_agrees(model, card, path)
    return LoadedModel(model, card)


def import_keras():
    """Imports Keras without the matplotlib.pyplot it imports for plotting helpers that loading never uses: 0.7 s of a
    scoring worker's start-up where matplotlib is installed. Importing pyplot later works as usual."""
    if "keras" in sys.modules or "matplotlib.pyplot" in sys.modules:
        import keras

        return keras
    sys.modules["matplotlib.pyplot"] = None  # makes `import matplotlib.pyplot` fail, which Keras allows for
    try:
        import keras
    finally:
        if sys.modules.get("matplotlib.pyplot", False) is None:
            del sys.modules["matplotlib.pyplot"]
    return keras


def read_card(path: str, read=None) -> dict:
    """Reads and checks the card beside a model file. `read(path) -> bytes` fetches a file (default: from local disk;
    the scorer passes one for any Beam filesystem) and raises ModelFileError saying what is missing."""
    if read is None and not os.path.isfile(path):
        raise ModelFileError(f"model file {path} not found; pass --model with the path of a trained .keras file")
    card_path = card_path_for(path)
    return parse_card((read or _read_local_card)(card_path), card_path)


def _read_local_card(card_path: str) -> bytes:
    try:
        with open(card_path, "rb") as stream:
            return stream.read()
    except FileNotFoundError as error:
        raise ModelFileError(f"model card {card_path} not found; every model needs the card `train` writes") from error
    except OSError as error:
        raise ModelFileError(f"model card {card_path} cannot be read ({error.strerror or error})") from error


def parse_card(text: bytes, card_path: str) -> dict:
    """A card's bytes -> the card, checked: a JSON object with the fields loaders need, fitting this code."""
    try:
        card = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(f"model card {card_path} is not valid JSON: {error}") from error
    if not isinstance(card, dict):
        raise ModelFileError(f"model card {card_path} is not a JSON object (it holds a {type(card).__name__})")
    validate_card(card, card_path)
    return card


def check_archive(archive, path: str) -> None:
    """Checks, without TensorFlow, that a .keras file (a path or a binary file object) is a whole Keras archive of a
    model this code can score: every member intact, a model config, weights, and an input of IMAGE_SHAPE."""
    import zipfile

    try:
        with zipfile.ZipFile(archive) as opened:
            damaged = opened.testzip()  # reads every member and checks its CRC
            names = set(opened.namelist())
            config = json.loads(opened.read("config.json")) if "config.json" in names else None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise ModelFileError(f"{path} is not a whole .keras archive ({error}); it may be cut short") from error
    if damaged:
        raise ModelFileError(f"{path} is damaged: its member {damaged} fails its checksum")
    if not isinstance(config, dict) or "model.weights.h5" not in names:
        raise ModelFileError(f"{path} is a zip archive but not a Keras model (no config.json and model.weights.h5)")
    shapes = [layer.get("config", {}).get("batch_shape") for layer in config.get("config", {}).get("layers", [])
              if isinstance(layer, dict) and layer.get("class_name") == "InputLayer"]
    if len(shapes) != 1 or not isinstance(shapes[0], list) or tuple(shapes[0][1:]) != IMAGE_SHAPE:
        raise ModelFileError(f"{path}: the model's input is {shapes[0][1:] if shapes and shapes[0] else shapes}, "
                             f"this code feeds {list(IMAGE_SHAPE)}")


def validate_card(card: dict, card_path: str) -> None:
    """Raises ModelFileError unless the card has the fields loaders need and fits this code's classes and preprocessing."""
    missing = {"version", "class_names", "input_shape", "preprocessing_version", "content_sha256"} - set(card)
    if missing:
        raise ModelFileError(f"model card {card_path} lacks {', '.join(sorted(missing))}")
    if not isinstance(card["input_shape"], list) or tuple(card["input_shape"]) != IMAGE_SHAPE:
        raise ModelFileError(f"model card {card_path}: input shape {card['input_shape']}, this code feeds "
                             f"{list(IMAGE_SHAPE)}")
    if not isinstance(card["class_names"], list) or tuple(card["class_names"]) != CLASS_NAMES:
        raise ModelFileError(f"model card {card_path}: class names {card['class_names']} differ from {list(CLASS_NAMES)}")
    if card["preprocessing_version"] not in COMPATIBLE_PREPROCESSING_VERSIONS:
        raise ModelFileError(f"model card {card_path}: trained with preprocessing {card['preprocessing_version']!r}, "
                             f"this code has {PREPROCESSING_VERSION!r} and also accepts "
                             f"{', '.join(repr(v) for v in COMPATIBLE_PREPROCESSING_VERSIONS[:-1])}")


def check_agrees(model, card: dict, path: str) -> None:
    """Raises ModelFileError when the model and its card (or this code's vocabulary) disagree."""
    problems = []
    if tuple(card["input_shape"]) != IMAGE_SHAPE or tuple(model.input_shape[1:]) != IMAGE_SHAPE:
        problems.append(f"input shape {model.input_shape[1:]} (card {card['input_shape']}), expected {IMAGE_SHAPE}")
    if tuple(model.output_shape[1:]) != (len(CLASS_NAMES),):
        problems.append(f"output shape {model.output_shape[1:]}, expected ({len(CLASS_NAMES)},)")
    if not problems and content_sha256(model) != card["content_sha256"]:
        problems.append("the weights do not match the card's content_sha256 (the card belongs to another model)")
    if problems:
        raise ModelFileError(f"{path}: " + "; ".join(problems))


def write_json_atomically(path: str, payload: dict) -> None:
    """Writes JSON to a temporary file and renames it, so readers never see half a file."""
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as stream:
        json.dump(payload, stream, indent=2, sort_keys=False)
        stream.write("\n")
    os.replace(temporary, path)
