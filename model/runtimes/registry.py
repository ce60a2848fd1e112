"""Defines what a runtime is to this code, and which runtimes there are: the one place that knows which model files
each runtime serves.

A runtime (one module each: keras_runtime, onnxruntime_runtime, openvino_runtime) checks a model file before anything
parses it for real, loads what passed, runs the forward pass on fixed-row blocks of uint8 pixels, and says where it
runs and what it is. A card names its model's runtimes by the names registered here (card_spec); a worker serves the
first one on the card's list that is installed (model_files.load). Adding a runtime is one module and one line in
_MODULES (docs/layout.md).
"""

import importlib
import os

from model.cards.model_checks import ModelFileError
from model.display import visible

# name -> the module that defines RUNTIME, in the order a card lists runtimes it measured equal.
_MODULES = {
    "keras": "model.runtimes.keras_runtime",
    "onnxruntime": "model.runtimes.onnxruntime_runtime",
    "openvino": "model.runtimes.openvino_runtime",
}
# Runtime names older cards used (card format 3 named onnxruntime "onnx").
ALIASES = {"onnx": "onnxruntime"}
NAMES = tuple(_MODULES)


class Runtime:
    """One runtime: what it serves and how. Subclasses set the class attributes and implement the methods."""

    name = ""  # as cards and --runtime name it
    framework = ""  # the kind of model file it serves: "keras" or "onnx"
    suffixes = ()  # the file names it serves end in these
    package = ""  # importable when installed
    also_needs = ()  # other packages it needs (the ONNX runtimes: onnx, which checks a model before they see it)
    install_hint = ""  # what to install for it
    precisions = ("f32",)  # what a card may ask of it; the first is the default

    def installed(self) -> bool:
        """Whether its packages import here (imported now: a runtime is asked only when it would serve)."""
        for package in (self.package, *self.also_needs):
            try:
                importlib.import_module(package)
            except ImportError:
                return False
        return True

    def check(self, path: str, spec):
        """The model file at `path`, checked (size, structure, the input `spec`, a card_spec.ModelSpec, describes)
        before anything parses it for real: what load takes. Raises ModelFileError."""
        raise NotImplementedError

    def load(self, checked, path: str, threads: int = 0, precision: str = "f32"):
        """The model `check` passed, ready to serve with `threads` threads (0: the runtime's default)."""
        raise NotImplementedError

    def content_sha256(self, checked) -> str:
        """The content hash of a checked model, as its card records it."""
        raise NotImplementedError

    def owns(self, model) -> bool:
        """Whether `model` is one this runtime loaded."""
        raise NotImplementedError

    def forward(self, model, spec):
        """One block of exactly spec.model_call_rows uint8 rows -> float32 probabilities (numpy)."""
        raise NotImplementedError

    def checked_forwards(self, model, spec):
        """The forward passes that may serve `model`, fastest first, for a caller that checks each against the
        card's known answers and serves the first that passes: a runtime can then skip checks of its own."""
        yield self.forward(model, spec)

    def device(self, model) -> str:
        """Where the model scores: 'CPU', or the GPU."""
        return "CPU"

    def describe(self, model) -> dict:
        """What a card records of the model and this runtime (versions, size, hash)."""
        raise NotImplementedError

    def output_width(self, model):
        """Values the model gives per image (None unless one output of [batch, N])."""
        raise NotImplementedError

    def version(self) -> str:
        return importlib.import_module(self.package).__version__


def get(name: str) -> Runtime:
    """The runtime a card or --runtime names (an older card's alias too); ValueError naming the runtimes if none."""
    name = ALIASES.get(name, name)
    if name not in _MODULES:
        raise ValueError(f"unknown runtime {name!r}: use one of {', '.join(NAMES)}")
    return importlib.import_module(_MODULES[name]).RUNTIME


def runtimes() -> list:
    return [get(name) for name in NAMES]


def suffixes() -> tuple:
    """Every model file suffix some runtime serves."""
    return tuple(sorted({suffix for runtime in runtimes() for suffix in runtime.suffixes}))


def framework_of(path: str) -> str:
    """The kind of model file at `path` ("keras" or "onnx"), by the one place that decides it: the runtimes'
    suffixes. Raises ModelFileError naming the files that are served."""
    for runtime in runtimes():
        if str(path).endswith(runtime.suffixes):
            return runtime.framework
    raise ModelFileError(f"{visible(str(path))}: only {' and '.join(suffixes())} model files are loaded (not legacy "
                         ".h5 files or SavedModel folders); pass a .keras file that `python -m model.train` wrote, "
                         "or a .onnx file with its card")


def own_runtime(framework: str) -> Runtime:
    """The runtime of the model's own framework: Keras for a .keras file, onnxruntime for a .onnx file."""
    return get("keras" if framework == "keras" else "onnxruntime")


def serving(framework: str) -> list:
    """The runtimes that can serve a model file of `framework`."""
    return [runtime for runtime in runtimes() if runtime.framework == framework]


def runtime_of(model) -> Runtime:
    """The runtime that loaded `model`."""
    for runtime in runtimes():
        if runtime.owns(model):
            return runtime
    raise TypeError(f"no runtime serves a {type(model).__name__}")


def copy_name(model_path: str, framework: str) -> str:
    """The file name of the `framework` copy of a model, beside it (fashion_cnn.keras -> fashion_cnn.onnx); the copy
    shares the model's card, which lists it."""
    return os.path.splitext(os.path.basename(model_path))[0] + own_runtime(framework).suffixes[0]
