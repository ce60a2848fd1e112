"""Checks, without TensorFlow, that a model file and its card are what loaders may trust: a whole Keras archive of
the expected members only, and a card whose every field has its type and fits this code."""

import collections
import json
import re

from model import recipes
from model.cards import card_spec
from model import reading
from model.display import shortened, visible
from model.vocabulary import CLASS_NAMES, COMPATIBLE_PREPROCESSING_VERSIONS, IMAGE_SHAPE, PREPROCESSING_VERSION

# The largest model file and card read. The shipped model is 1.4 MB and its card 4 kB; the caps keep a wrong --model
# (a disk image, an endless device) from filling memory before anything can tell it is not a model.
MAX_MODEL_BYTES = 1 << 30
MAX_CARD_BYTES = 1 << 20
# The members of the Keras archives this code writes and loads. Anything else (assets, a `../` path that extraction
# would write outside its folder, a second config.json) is refused before Keras opens the archive.
ARCHIVE_MEMBERS = ("metadata.json", "config.json", "model.weights.h5")


class ModelFileError(ValueError):
    """A model file or its card is missing, unreadable, or they disagree."""


def read_model_file_bytes(path: str, limit: int, what: str, when_missing: str = "", inside: tuple = None) -> bytes:
    """A local model file's (or card's) bytes, read by model.reading's rules (regular files only, at most `limit`
    bytes, and inside `inside` when given); ModelFileError naming `what` if it cannot be."""
    try:
        return reading.read_regular_file(path, limit, inside=inside)
    except FileNotFoundError as error:
        raise ModelFileError(f"{what} {visible(path)} not found" + (f"; {when_missing}" if when_missing else "")) \
            from error
    except reading.FileRefused as refused:
        raise ModelFileError(f"{what} {visible(path)}: {refused}") from refused
    except OSError as error:
        raise ModelFileError(f"{what} {visible(path)} cannot be read ({error.strerror or error})") from error


def parse_card(text: bytes, card_path: str) -> dict:
    """A card's bytes -> the card, checked: a JSON object with the fields loaders need, fitting this code."""
    try:
        card = json.loads(text)
    except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, or nested deeper than Python recurses
        raise ModelFileError(f"model card {visible(card_path)} is not valid JSON: "
                             f"{shortened(str(error) or type(error).__name__, 200)}") from error
    if not isinstance(card, dict):
        raise ModelFileError(f"model card {card_path} is not a JSON object (it holds a {type(card).__name__})")
    validate_card(card, card_path)
    return card


def check_archive(archive, path: str) -> None:
    """Checks, without TensorFlow, that a .keras file (a path or a binary file object) is a whole Keras archive of a
    model: every member intact, a model config and weights."""
    import zipfile

    try:
        with zipfile.ZipFile(archive) as opened:
            _check_members(opened.infolist(), path)  # before a byte is unpacked
            damaged = opened.testzip()  # reads every member and checks its CRC
            names = set(opened.namelist())
            config = json.loads(opened.read("config.json")) if "config.json" in names else None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, RecursionError) as error:
        raise ModelFileError(f"{visible(path)} is not a whole .keras archive ({shortened(str(error), 200)}); it may "
                             "be cut short") from error
    if damaged:
        raise ModelFileError(f"{visible(path)} is damaged: its member {visible(damaged)} fails its checksum")
    if not isinstance(config, dict) or "model.weights.h5" not in names:
        raise ModelFileError(f"{visible(path)} is a zip archive but not a Keras model (no config.json and "
                             "model.weights.h5)")


def check_input(archive, path: str, spec: card_spec.ModelSpec) -> None:
    """Checks, without TensorFlow, that a .keras archive check_archive passed takes the input its card declares."""
    import zipfile

    with zipfile.ZipFile(archive) as opened:
        config = json.loads(opened.read("config.json"))
    shapes = _input_shapes(config) if isinstance(config, dict) else []
    if len(shapes) != 1 or not isinstance(shapes[0], list) or tuple(shapes[0][1:]) not in accepted_inputs(spec):
        found = shapes[0][1:] if shapes and isinstance(shapes[0], list) else shapes
        raise ModelFileError(f"{visible(path)}: the model's input is {shortened(repr(found), 80)}, its card says "
                             f"{list(spec.input_shape)}")


def accepted_inputs(spec: card_spec.ModelSpec) -> tuple:
    """The model input shapes (without the batch) that fit a card: [H, W, C], and [H, W] for a grey model."""
    return (spec.input_shape, spec.pixel_shape)


def _check_members(members: list, path: str) -> None:
    """Refuses an archive with members other than ARCHIVE_MEMBERS, each once, or unpacking to more than
    2 * MAX_MODEL_BYTES (a zip bomb); a name with `..`, a leading `/` or a drive would point outside any folder."""
    names = [member.filename for member in members]
    for name in names:
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
            raise ModelFileError(f"{visible(path)}: refused, its member {shortened(repr(name), 80)} would unpack "
                                 "outside its folder")
    unexpected = sorted(set(names) - set(ARCHIVE_MEMBERS)) or sorted({n for n in names if names.count(n) > 1})
    if unexpected:
        raise ModelFileError(f"{visible(path)}: refused, member {shortened(repr(unexpected[0]), 80)} is unexpected "
                             f"or repeated (a Keras model holds {', '.join(ARCHIVE_MEMBERS)}, each once)")
    if sum(member.file_size for member in members) > 2 * MAX_MODEL_BYTES:
        raise ModelFileError(f"{visible(path)}: refused, its members would unpack to more than "
                             f"{2 * MAX_MODEL_BYTES:,} bytes")


def _input_shapes(config: dict) -> list:
    """The batch_shape of each InputLayer in a Keras model config (of any shape: it is the file's text, unchecked)."""
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list):
        return []
    return [layer["config"].get("batch_shape") for layer in layers
            if isinstance(layer, dict) and layer.get("class_name") == "InputLayer"
            and isinstance(layer.get("config"), dict)]


def _is_whole_number(value) -> bool:
    return type(value) is int  # not bool, which is an int to isinstance


def _is_number_or_none(value) -> bool:
    return value is None or (type(value) in (int, float))


# What each card field the code reads must be, and how to say so. The version goes into every score row and file
# name shown to people, so it is kept to characters that are safe in a terminal, HTML, a path and a URL.
_REQUIRED_FIELDS = {
    "version": (lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9._+-]{1,64}", v),
                "a string of 1-64 letters, digits and . _ + -"),
    "content_sha256": (lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v),
                       "64 lowercase hex digits"),
    "class_names": (lambda v: isinstance(v, list) and all(isinstance(name, str) for name in v), "a list of strings"),
    "input_shape": (lambda v: isinstance(v, list) and all(map(_is_whole_number, v)), "a list of whole numbers"),
    "preprocessing_version": (lambda v: isinstance(v, str), "a string"),
}
# Fields older cards may lack, checked when present.
_OPTIONAL_FIELDS = {
    "card_format": (_is_whole_number, "a whole number"),
    "test_metrics": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "training_seconds": (_is_number_or_none, "a number or null"),
    "temperature": (_is_number_or_none, "a number or null"),
    "known_answers": (lambda v: isinstance(v, list) and len(v) <= 16 and all(map(_is_reference, v)),
                      "a list of up to 16 objects with what, image_base64, input_sha256 and probabilities"),
}


def _is_reference(reference) -> bool:
    """One known answer (model.cards.known_answers): small encoded image, the hash of its model input, probabilities."""
    import base64
    import binascii

    if not (isinstance(reference, dict) and isinstance(reference.get("what"), str)
            and isinstance(reference.get("image_base64"), str)
            and isinstance(reference.get("input_sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", reference["input_sha256"])
            and isinstance(reference.get("probabilities"), list)
            and all(type(value) in (int, float) for value in reference["probabilities"])):
        return False
    try:
        base64.b64decode(reference["image_base64"], validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


# Format-2 limits: names shown in every row and page, and inputs a worker can hold a model call of.
MAX_CLASSES = 100_000
MAX_CLASS_NAME = 200
MAX_INPUT_EDGE = 4096
# What a format-2 card holds instead of preprocessing_version, with the classes and input of any model.
_FORMAT_2_FIELDS = {
    "version": _REQUIRED_FIELDS["version"],
    "content_sha256": _REQUIRED_FIELDS["content_sha256"],
    "class_names": (lambda v: isinstance(v, list) and 2 <= len(v) <= MAX_CLASSES and all(map(_is_class_name, v))
                    and len(set(v)) == len(v),
                    f"a list of 2-{MAX_CLASSES:,} different names of 1-{MAX_CLASS_NAME} characters, none hidden "
                    "(no control, format or separator characters)"),
    "input_shape": (lambda v: isinstance(v, list) and len(v) == 3 and all(map(_is_whole_number, v))
                    and all(1 <= edge <= MAX_INPUT_EDGE for edge in v[:2]) and v[2] in (1, 3),
                    f"[height, width, channels], edges 1-{MAX_INPUT_EDGE} and 1 (grey) or 3 (RGB) channels"),
    "input_range": (lambda v: v in card_spec.INPUT_RANGES, f"one of {', '.join(card_spec.INPUT_RANGES)}"),
    "outputs": (lambda v: v in card_spec.OUTPUTS, f"one of {', '.join(card_spec.OUTPUTS)}"),
    "preprocessing": (lambda v: isinstance(v, dict) and isinstance(v.get("name"), str)
                      and _is_whole_number(v.get("version")) and isinstance(v.get("parameters", {}), dict),
                      "an object with a name, a whole-number version and parameters"),
}



def _is_channel_values(value, positive: bool = False) -> bool:
    """A mean or std: null, or a list of 1 or 3 finite numbers (std above 0)."""
    import math

    return value is None or (isinstance(value, list) and len(value) in (1, 3)
                             and all(type(v) in (int, float) and math.isfinite(v) and (v > 0 or not positive)
                                     for v in value))


# What a format-3 card adds: the runtime, the layout of the model's input, and a per-channel mean and std.
_FORMAT_3_FIELDS = {
    **_FORMAT_2_FIELDS,
    "runtime": (lambda v: v in ("keras", "onnx"), "keras or onnx"),
    "layout": (lambda v: v in ("nhwc", "nchw"), "nhwc or nchw"),
    "mean": (_is_channel_values, "null or a list of 1 or 3 finite numbers, one per channel"),
    "std": (lambda v: _is_channel_values(v, positive=True), "null or a list of 1 or 3 numbers above 0, one per "
                                                             "channel"),
}


def _is_runtime_name(value) -> bool:
    from model.runtimes import registry

    return value in registry.NAMES


def _is_runtime_entry(entry) -> bool:
    """One of a format-4 card's runtimes: a registered name, and where it serves a copy of the model (another
    file beside it), the copy's plain file name and content hash; what it measured; a precision it has."""
    from model.runtimes import registry

    if not isinstance(entry, dict) or not _is_runtime_name(entry.get("runtime")):
        return False
    file, digest = entry.get("file"), entry.get("sha256")
    if (file is None) != (digest is None):
        return False
    if file is not None and not (_is_plain_file_name(file) and isinstance(digest, str)
                                 and re.fullmatch(r"[0-9a-f]{64}", digest)):
        return False
    return entry.get("precision", "f32") in registry.get(entry["runtime"]).precisions and all(
        _is_number_or_none(entry.get(name)) for name in ("images_per_second", "max_abs_diff"))


def _is_plain_file_name(name) -> bool:
    """A file name beside the model: no folder, not hidden, nothing invisible."""
    return isinstance(name, str) and 0 < len(name) <= 255 and "/" not in name and "\\" not in name \
        and not name.startswith(".") and visible(name) == name


# What a format-4 card adds: runtimes by their registered names, every runtime that gives the model's answers
# (fastest first), flat input rows, and the output that holds the scores.
_FORMAT_4_FIELDS = {
    **_FORMAT_3_FIELDS,
    "runtime": (_is_runtime_name, "a registered runtime (keras, onnxruntime, openvino)"),
    "layout": (lambda v: v in card_spec.LAYOUTS, f"one of {', '.join(card_spec.LAYOUTS)}"),
}
# Any card may list its model's runtimes (the shipped model's format-1 card does).
_RUNTIMES_FIELD = {
    "runtimes": (lambda v: isinstance(v, list) and 1 <= len(v) <= 8 and all(map(_is_runtime_entry, v)),
                 "a list of 1-8 runtimes, each with its name (and a copy's file and sha256)"),
}
_FORMAT_4_OPTIONAL = {
    "output_name": (lambda v: v is None or (isinstance(v, str) and 0 < len(v) <= 256), "null or an output's name"),
}


def _is_class_name(name) -> bool:
    """A class name is shown in terminals and pages and written in every row: any Unicode, but nothing hidden."""
    return isinstance(name, str) and 1 <= len(name) <= MAX_CLASS_NAME and visible(name) == name and name.strip() == name


def check_class_names(names) -> None:
    """Raises ValueError unless `names` may be a format-2 card's classes, saying which name is wrong."""
    if not 2 <= len(names) <= MAX_CLASSES:
        raise ValueError(f"a model needs 2-{MAX_CLASSES:,} classes, not {len(names)}")
    for name in names:
        if not _is_class_name(name):
            raise ValueError(f"class name {_shown(name)} must be 1-{MAX_CLASS_NAME} characters, none hidden (no "
                             "control, format or separator characters) and no space at either end")
    repeated = sorted(name for name, count in collections.Counter(names).items() if count > 1)
    if repeated:
        raise ValueError(f"class name {_shown(repeated[0])} is given more than once")


def validate_card(card: dict, card_path: str) -> None:
    """Raises ModelFileError unless every field the code reads has its type and the card fits this code: a format-1
    card this code's Fashion-MNIST classes, input and preprocessing; a format-2 card its own, with a recipe this code
    runs."""
    where = f"model card {visible(card_path)}"
    form = card.get("card_format", 1)
    if _is_whole_number(form) and form > card_spec.CARD_FORMAT:
        raise ModelFileError(f"{where} has card_format {form}, newer than this code reads "
                             f"({card_spec.CARD_FORMAT}); update the scorer")
    required = {2: _FORMAT_2_FIELDS, 3: _FORMAT_3_FIELDS, 4: _FORMAT_4_FIELDS}.get(form, _REQUIRED_FIELDS)
    missing = set(required) - set(card)
    if missing:
        raise ModelFileError(f"{where} lacks {', '.join(sorted(missing))}")
    optional = {**_OPTIONAL_FIELDS, **_RUNTIMES_FIELD, **(_FORMAT_4_OPTIONAL if form == 4 else {})}
    for field, (fits, what) in (*required.items(), *optional.items()):
        if field in card and not fits(card[field]):
            raise ModelFileError(f"{where}: {field} must be {what}, not {_shown(card[field])}")
    if form in (2, 3, 4):
        if form >= 3:
            _check_format_3(card, where)
        try:
            recipes.check(card_spec.spec_from_card(card))
        except ValueError as error:
            raise ModelFileError(f"{where}: {visible(str(error))}") from error
        return
    if tuple(card["input_shape"]) != IMAGE_SHAPE:
        raise ModelFileError(f"{where}: input shape {_shown(card['input_shape'])}, this code feeds {list(IMAGE_SHAPE)}")
    if tuple(card["class_names"]) != CLASS_NAMES:
        raise ModelFileError(f"{where}: class names {_shown(card['class_names'])} differ from {list(CLASS_NAMES)}")
    if card["preprocessing_version"] not in COMPATIBLE_PREPROCESSING_VERSIONS:
        raise ModelFileError(f"{where}: trained with preprocessing {_shown(card['preprocessing_version'])}, "
                             f"this code has {PREPROCESSING_VERSION!r} and also accepts "
                             f"{', '.join(repr(v) for v in COMPATIBLE_PREPROCESSING_VERSIONS[:-1])}")


def _check_format_3(card: dict, where: str) -> None:
    """What a format-3 card's fields must agree on: mean and std both or neither, one value per channel; a Keras model
    takes [batch, H, W, C]."""
    check_normalisation(card["mean"], card["std"], card["input_shape"][2], where)
    if card["runtime"] == "keras" and card["layout"] != "nhwc":
        raise ModelFileError(f"{where}: a Keras model takes its input as nhwc ([batch, H, W, C]), not "
                             f"{_shown(card['layout'])}")
    if card.get("card_format") == 4 and card.get("runtimes") and card["runtimes"][0]["runtime"] != card["runtime"]:
        raise ModelFileError(f"{where}: runtime {_shown(card['runtime'])} is not the first of its runtimes")


def check_normalisation(mean, std, channels: int, where: str) -> None:
    """Raises ModelFileError unless mean and std are both given (one value per channel) or neither."""
    if (mean is None) != (std is None):
        raise ModelFileError(f"{where}: give both a mean and a std, or neither")
    if mean is not None and not len(mean) == len(std) == channels:
        raise ModelFileError(f"{where}: the mean and std need one value per channel ({channels}), not "
                             f"{len(mean)} and {len(std)}")
    if std is not None and not all(value > 0 for value in std):
        raise ModelFileError(f"{where}: every std must be above 0")


def _shown(value) -> str:
    """A card's value as a message shows it: repr, every hidden character visible, long ones shortened."""
    return shortened(repr(value), 100)


