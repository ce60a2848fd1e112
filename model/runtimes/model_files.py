"""Loads a model file with its model card (`.json`) beside it on the runtime the card and this install choose
(registry: a `.keras` file in Keras's safe mode, a `.onnx` file after onnx_checks, or a copy the card lists), and
checks they agree; saves a trained Keras model with its card."""

import hashlib
import io
import json
import os
import sys
from dataclasses import dataclass

import numpy as np

from model.cards import card_spec
from model.cards.model_checks import (MAX_CARD_BYTES, MAX_MODEL_BYTES, ModelFileError, check_archive,
                                      check_input, parse_card, read_model_file_bytes)
from model.display import shortened, visible
from model.writing import write_json_atomically
from model.runtimes import forward, onnx_checks, registry
from model.vocabulary import CLASS_NAMES, IMAGE_SHAPE, PREPROCESSING_VERSION

CARD_FORMAT = 1
ARTIFACTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "artifacts")
DEFAULT_MODEL_PATH = os.path.join(ARTIFACTS_DIR, "fashion_cnn.keras")


@dataclass(frozen=True)
class LoadedModel:
    """A model with its card: `model` is what its runtime loaded (model.runtimes.forward serves any); `runtime` names
    that runtime (registry); `version` names this exact model (card version + content hash)."""

    model: object
    card: dict
    runtime: str = "keras"
    precision: str = "f32"

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


def load(path: str, threads: int = 0, runtime: str = None) -> LoadedModel:
    """Loads a model for serving and checks that its card describes it; raises ModelFileError if not. The runtime is
    `runtime` where given (a copy of the model the card lists, or the model's own file), else the first of the
    card's runtimes that is installed, down to the model's own framework (keras for a .keras file, onnxruntime for a
    .onnx file). The file and its card are both checked before the runtime sees them."""
    framework = registry.framework_of(path)
    card = read_card(path)
    spec = card_spec.spec_from_card(card)
    serving = choose_runtime(path, card, framework, runtime)
    if serving.path != path and not os.path.lexists(serving.path):
        raise ModelFileError(f"{visible(path)}: its card serves it on {serving.runtime.name} from "
                             f"{visible(os.path.basename(serving.path))}, which is not beside it; copy that file with "
                             f"the model, or pass --runtime {registry.own_runtime(framework).name}")
    checked = serving.runtime.check(serving.path, spec)
    model = serving.runtime.load(checked, serving.path, threads, serving.precision)
    problems = serving.runtime.agrees(model, spec) if hasattr(serving.runtime, "agrees") else []
    if not problems and serving.runtime.content_sha256(model) != serving.sha256:
        problems.append(("the weights do not" if framework == "keras" else "the model does not") + " match the "
                        "card's content_sha256 (the card belongs to another model)" if serving.path == path else "the copy does not match the sha256 its card lists (re-card "
                        "the model with `python -m model.card`)")
    if problems:
        raise ModelFileError(f"{visible(serving.path)}: " + "; ".join(problems))
    return LoadedModel(model, card, serving.runtime.name, serving.precision)


@dataclass(frozen=True)
class Serving:
    """Which runtime serves a model, from which file (the model's own, or a copy its card lists), of which content
    hash, at which precision."""

    runtime: registry.Runtime
    path: str
    sha256: str
    precision: str = "f32"


def choose_runtime(path: str, card: dict, framework: str, wanted: str = None) -> Serving:
    """The runtime a model is served on (see load); raises ModelFileError where `wanted` cannot serve it or the
    card's own runtime is not of the model file's framework."""
    spec = card_spec.spec_from_card(card)
    listed = card.get("runtimes") or [{"runtime": spec.runtime}]
    own = [entry for entry in listed if "file" not in entry]
    own_name = card_spec.runtime_name(own[0]["runtime"]) if own else registry.own_runtime(framework).name
    if registry.get(own_name).framework != framework:
        raise ModelFileError(f"{visible(path)}: its card describes a {registry.get(own_name).framework} model, not "
                             f"a {framework} one; card it with `python -m model.card`")
    folder = os.path.dirname(path)

    def serving(entry) -> Serving:
        name = card_spec.runtime_name(entry["runtime"])
        if "file" not in entry:
            return Serving(registry.get(name), path, card["content_sha256"], entry.get("precision", "f32"))
        return Serving(registry.get(name), os.path.join(folder, entry["file"]), entry["sha256"],
                       entry.get("precision", "f32"))

    if wanted is not None:
        runtime = registry.get(wanted)
        entries = [entry for entry in listed if card_spec.runtime_name(entry["runtime"]) == runtime.name]
        if entries:
            return serving(entries[0])
        if runtime.framework == framework:
            return serving({"runtime": runtime.name})
        raise ModelFileError(f"--runtime {runtime.name}: {visible(path)} is a {framework} model and its card lists "
                             f"no {runtime.framework} copy; card it with `python -m model.card MODEL --runtime "
                             f"{runtime.name}`")
    for entry in listed:
        if registry.get(entry["runtime"]).installed():
            return serving(entry)
    return serving({"runtime": registry.own_runtime(framework).name})


def check_unloaded(path: str, card: dict) -> None:
    """Checks a model file and every copy its card lists that this install can serve, as far as can be done without
    loading a model: each ONNX file whole (onnx_checks) against the card, with its content hash; raises
    ModelFileError. (A copy no installed runtime serves is not read: the model's own runtime serves the model.)"""
    framework = registry.framework_of(path)
    choose_runtime(path, card, framework)  # the card's own runtime is the file's framework
    spec = card_spec.spec_from_card(card)
    listed = [(path, card["content_sha256"])] + [(os.path.join(os.path.dirname(path), entry["file"]), entry["sha256"])
                                                 for entry in card.get("runtimes") or ()
                                                 if "file" in entry and registry.get(entry["runtime"]).installed()]
    for file, digest in listed:
        if registry.framework_of(file) == "onnx":
            if onnx_checks.check_against(file, spec).content_sha256 != digest:
                raise ModelFileError(f"{visible(file)}: it does not match the content hash its card gives (the card "
                                     "belongs to another model, or the copy to another card)")


def copies(path: str, card: dict) -> list:
    """The files beside the model that its card lists (a Keras model's ONNX copy), by name."""
    return [entry["file"] for entry in card.get("runtimes") or () if "file" in entry]


def load_keras_file(path: str, compile: bool = False):
    """The one way a file becomes a Keras model here (a training checkpoint too): read_model_file's checks, then Keras
    loads those very bytes in safe mode, so a file swapped after the checks is never the one loaded."""
    return keras_model(read_model_file(path), path, compile)


def read_model_file(path: str) -> bytes:
    """The bytes of a .keras file, refused before anything parses them unless its name ends in .keras (Keras would
    load a legacy .h5 file or a SavedModel folder by other, less guarded code) and it is a regular file of at most
    MAX_MODEL_BYTES; then checked as an archive (check_archive). Raises ModelFileError."""
    if registry.framework_of(path) != "keras":
        raise ModelFileError(f"{visible(str(path))}: not a Keras model file (.keras)")
    data = _read_local(path, MAX_MODEL_BYTES, "model file", "pass --model with the path of a trained .keras file")
    check_archive(io.BytesIO(data), path)
    return data


def keras_model(data: bytes, path: str, compile: bool = False):
    """A Keras model from the bytes of a checked .keras file (read_model_file), loaded in Keras's safe mode."""
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
    if read is None and not os.path.lexists(path):  # anything there is refused by its runtime's checks, by name
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
    return registry.runtime_of(model).output_width(model)


def described(model) -> dict:
    """What a card records of the model itself: its content hash, size, and the runtime it was carded with."""
    return registry.runtime_of(model).describe(model)
