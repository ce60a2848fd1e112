"""Loads a model file with its model card (`.json`) beside it, whichever runtime serves it (a `.keras` file in Keras's
safe mode, a `.onnx` file after onnx_checks), and checks they agree; saves a trained Keras model with its card."""

import hashlib
import io
import json
import os
import sys
from dataclasses import dataclass

import numpy as np

from model.cards import card_spec
from model.cards.model_checks import (MAX_CARD_BYTES, MAX_MODEL_BYTES, ModelFileError, accepted_inputs, check_archive,
                                      check_input, parse_card, read_model_file_bytes)
from model.display import shortened, visible
from model.runtimes import forward, onnx_checks, onnx_model
from model.vocabulary import CLASS_NAMES, IMAGE_SHAPE, PREPROCESSING_VERSION

CARD_FORMAT = 1
ARTIFACTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "artifacts")
DEFAULT_MODEL_PATH = os.path.join(ARTIFACTS_DIR, "fashion_cnn.keras")


@dataclass(frozen=True)
class LoadedModel:
    """A model with its card: `model` is a Keras model or an onnx_model.OnnxModel (model.runtimes.forward serves
    either); `version` names this exact model (card version + content hash)."""

    model: object
    card: dict

    @property
    def version(self) -> str:
        return model_version(self.card)

    @property
    def spec(self) -> card_spec.ModelSpec:
        return card_spec.spec_from_card(self.card)


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


def save(model, path: str, card_fields: dict, spec: card_spec.ModelSpec = card_spec.FASHION_MNIST) -> dict:
    """Writes `path` (.keras) and its card; the card gets the fields every loader checks, plus card_fields. A
    Fashion-MNIST model gets a format-1 card, as it always has; any other spec a format-2 card (card_spec)."""
    import keras
    import tensorflow as tf

    if not path.endswith(".keras"):
        raise ValueError(f"{path}: the model file name must end in .keras")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if spec == card_spec.FASHION_MNIST:
        described = {"card_format": CARD_FORMAT, "version": "1.0.0", **card_fields, "class_names": list(CLASS_NAMES),
                     "preprocessing_version": PREPROCESSING_VERSION, "input_shape": list(IMAGE_SHAPE),
                     "input_dtype": "uint8 values 0-255 (scaled to [0, 1] inside the model)"}
    else:
        described = {**card_spec.card_fields(spec), "version": "1.0.0", **card_fields}
    card = {
        **described,
        "parameter_count": int(model.count_params()),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "content_sha256": content_sha256(model),
        "known_answers": forward.known_answers(model, spec),
    }
    model.save(path)
    write_json_atomically(card_path_for(path), card)
    return card


def load(path: str, compile: bool = False, threads: int = 0) -> LoadedModel:
    """Loads a model (see load_keras_file; a .onnx file, see load_onnx) and checks that its card describes it; raises
    ModelFileError if not. The file and its card are both checked before Keras or onnxruntime is imported."""
    if str(path).endswith(onnx_checks.EXTENSION):
        return load_onnx(path, threads)
    data = read_model_file(path)
    card = read_card(path)
    check_input(io.BytesIO(data), path, card_spec.spec_from_card(card))
    model = _keras_model(data, path, compile)
    check_agrees(model, card, path)
    return LoadedModel(model, card)


def load_onnx(path: str, threads: int = 0) -> LoadedModel:
    """Checks a .onnx file (onnx_checks) and its card against each other, then makes its onnxruntime session with
    `threads` threads (0: onnxruntime's default), so a model onnxruntime cannot run is refused here too."""
    card = read_card(path)
    checked = check_onnx(path, card)
    model = onnx_model.OnnxModel(checked, path, threads)
    model.session  # noqa: B018 - made now: onnxruntime's refusal is a ModelFileError at load, not at the first input
    return LoadedModel(model, card)


def check_onnx(path: str, card: dict) -> onnx_checks.CheckedOnnx:
    """The checked ONNX model at `path` (onnx_checks.check_file), refused unless `card` describes it."""
    spec = card_spec.spec_from_card(card)
    if spec.runtime != "onnx":
        raise ModelFileError(f"{visible(path)}: its card describes a {spec.runtime} model, not an ONNX one; card it "
                             "with `python -m model.card`")
    checked = onnx_checks.check_file(path)
    problems = []
    try:
        geometry, _ = onnx_checks.image_geometry(checked, spec.layout)
        if geometry != spec.input_shape:
            problems.append(f"input {list(geometry)} (H, W, C), the card says {list(spec.input_shape)}")
    except ValueError as error:
        problems.append(str(error))
    problems += onnx_checks.mismatches(checked, spec)
    if not problems and checked.content_sha256 != card["content_sha256"]:
        problems.append("the model does not match the card's content_sha256 (the card belongs to another model)")
    if problems:
        raise ModelFileError(f"{visible(path)}: " + "; ".join(problems))
    return checked


def load_keras_file(path: str, compile: bool = False):
    """The one way a file becomes a Keras model here (a training checkpoint too): read_model_file's checks, then Keras
    loads those very bytes in safe mode, so a file swapped after the checks is never the one loaded."""
    return _keras_model(read_model_file(path), path, compile)


def read_model_file(path: str) -> bytes:
    """The bytes of a .keras file, refused before anything parses them unless its name ends in .keras (Keras would
    load a legacy .h5 file or a SavedModel folder by other, less guarded code) and it is a regular file of at most
    MAX_MODEL_BYTES; then checked as an archive (check_archive). Raises ModelFileError."""
    if not str(path).endswith(".keras"):
        raise ModelFileError(f"{visible(str(path))}: only .keras and .onnx model files are loaded (not legacy .h5 "
                             "files or SavedModel folders); pass a .keras file that `python -m model.train` wrote, "
                             "or a .onnx file with its card")
    data = _read_local(path, MAX_MODEL_BYTES, "model file", "pass --model with the path of a trained .keras file")
    check_archive(io.BytesIO(data), path)
    return data


def _keras_model(data: bytes, path: str, compile: bool):
    import_keras()
    from keras.src.saving import saving_lib  # keras.saving.load_model takes only a path; this takes the bytes

    try:
        return saving_lib.load_model(io.BytesIO(data), compile=compile, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file; all mean the same thing to the user.
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ModelFileError(f"{visible(path)}: cannot load the Keras model ({type(error).__name__}: "
                             f"{shortened(first_line, 400)})") from error


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
        raise ModelFileError(f"model file {visible(path)} not found; pass --model with the path of a trained "
                             ".keras file")
    card_path = card_path_for(path)
    return parse_card((read or _read_local_card)(card_path), card_path)


def _read_local_card(card_path: str) -> bytes:
    return _read_local(card_path, MAX_CARD_BYTES, "model card", "every model needs the card `train` writes")


def _read_local(path: str, limit: int, what: str, when_missing: str) -> bytes:
    return read_model_file_bytes(path, limit, what, when_missing)


def output_width(model):
    """How many values the model gives per image (None unless one output of [batch, N])."""
    if isinstance(model, onnx_model.OnnxModel):
        return model.checked.output_width
    shape = tuple(model.outputs[0].shape[1:]) if len(model.outputs) == 1 else ()
    return shape[0] if len(shape) == 1 else None


def described(model) -> dict:
    """What a card records of the model itself: its content hash, size, and the runtime it was carded with."""
    if isinstance(model, onnx_model.OnnxModel):
        return {"content_sha256": model.checked.content_sha256, "parameter_count": model.checked.parameter_count,
                "onnxruntime_version": onnx_model.runtime_version(), "onnx_opset": model.checked.opset,
                "onnx_input_type": model.checked.input_type}
    import keras
    import tensorflow as tf

    return {"content_sha256": content_sha256(model), "parameter_count": int(model.count_params()),
            "tensorflow_version": tf.__version__, "keras_version": keras.__version__}


def check_agrees(model, card: dict, path: str) -> None:
    """Raises ModelFileError when the model and its card disagree: its input, its outputs, its weights."""
    spec = card_spec.spec_from_card(card)
    problems = []
    if spec.runtime != "keras":
        problems.append(f"its card describes a {spec.runtime} model")
    elif len(model.inputs) != 1 or tuple(model.input_shape[1:]) not in accepted_inputs(spec):
        problems.append(f"input shape {model.input_shape[1:]}, the card says {list(spec.input_shape)}")
    if len(model.outputs) != 1 or tuple(model.output_shape[1:]) != (spec.num_classes,):
        problems.append(f"output shape {model.output_shape[1:]}, the card names {spec.num_classes} classes")
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
