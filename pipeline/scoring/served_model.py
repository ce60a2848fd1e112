"""Defines the model as scoring uses it: loaded once (from any Beam filesystem), called on fixed-size blocks, whichever
runtime serves it (model.runtimes)."""

import hashlib
import json
import os
import stat
import tempfile

import numpy as np

from model.cards import known_answers, model_checks
from model.runtimes import choosing, forward, model_files, onnx_checks, quiet, registry
from model.training.data import file_sha256
from model.writing import write_atomically
from pipeline import timeline


class NoGPUError(model_files.ModelFileError):
    """--require_gpu, and this worker sees no GPU."""


class ServedModel:
    """What load_model returns: the model (Keras or ONNX) behind one method, so that Beam can also serve it from
    another process (--share_model), where callers hold a proxy that forwards method calls but not attribute
    access."""

    def __init__(self, loaded: model_files.LoadedModel, require_gpu: bool = False):
        self.loaded = loaded
        spec = loaded.spec
        self._device = forward.device(loaded.model)
        if require_gpu and not self._device.startswith("GPU"):
            raise NoGPUError("--require_gpu: this worker sees no GPU (TensorFlow lists none: check the worker's "
                             "accelerator, its NVIDIA driver and a CUDA build of TensorFlow; or leave out "
                             "--require_gpu to score on CPU)")
        self._rows = spec.model_call_rows
        try:  # before this worker reads any input: it must preprocess and score as where the card was written
            self._call_block = forward.served_forward_checked(loaded.model, spec, loaded.card.get("known_answers"),
                                                              choosing.agreement(loaded.precision))
        except known_answers.KnownAnswerError as error:
            raise model_files.ModelFileError(str(error)) from None
        # The first call of the compiled forward pass (a Keras model's: batch norms folded before it).
        timeline.mark(f"forward pass ready on {loaded.runtime}, traced, known answers checked")

    def predict_rows(self, pixels: np.ndarray) -> np.ndarray:
        return forward.predict_fixed_rows(self._call_block, pixels, self._rows)

    def device(self) -> str:
        """Where this model scores: 'CPU' or 'GPU:0 NAME' (a method, so a proxy of a shared model forwards it)."""
        return self._device


# Models loaded before the pipeline ran, by the process that is also its worker (see preflight.load_model_here).
_preloaded = {}


def thread_settings(threads: int) -> dict:
    """The environment that gives the model `threads` threads (0: its runtime's default). TensorFlow reads it once,
    when it first runs an operation; an ONNX model's session is made with as many."""
    return {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1"} if threads else {}


def _threads() -> int:
    """The model's threads that thread_settings set in this process (0: the runtime's default)."""
    return int(os.environ.get("TF_NUM_INTRAOP_THREADS") or 0)


def preload(model_uri: str, threads: int = 0, require_gpu: bool = False, runtime: str = None) -> None:
    """Loads and checks the model now (the known-answer check included), for the worker of this process to take
    (raises ModelFileError)."""
    os.environ.update(thread_settings(threads))
    timeline.mark("model loading")
    with quiet.quiet_tensorflow_start_up():
        _preloaded[(model_uri, runtime)] = ServedModel(_read_model(model_uri, runtime), require_gpu)
    timeline.mark("model loaded")


def load_served_model(model_uri: str, require_gpu: bool = False, runtime: str = None) -> ServedModel:
    """Copies the model to local disk if needed, then loads and checks it (safe mode), or takes the one preloaded.

    Loading happens in the worker's own thread, before any input is read: measured here, loading in a background
    thread while the first blocks were decoded made start-up slower, not faster (importing TensorFlow is Python
    work, and two busy threads share one interpreter lock). Readying the forward pass (folding, tracing, the first
    call) on a thread while Beam built the graph gained nothing either: 1.00x wall and CPU over 8 interleaved pairs
    of MobileNetV3Small on 400 photos.
    """
    served = _preloaded.pop((model_uri, runtime), None)
    if served is None:
        timeline.mark("model loading")
        with quiet.quiet_tensorflow_start_up():
            served = ServedModel(_read_model(model_uri, runtime), require_gpu)
        timeline.mark("model loaded")
    return served


def _read_model(model_uri: str, runtime: str = None) -> model_files.LoadedModel:
    loaded = model_files.load(localize(model_uri), threads=_threads(), runtime=runtime)
    timeline.mark(f"model file read on {loaded.runtime}" + (" (Keras imported, safe-mode load, content hash)"
                                                            if loaded.runtime == "keras" else
                                                            " (ONNX checks, external data, content hash, session)"))
    return loaded


def localize(model_uri: str) -> str:
    """Returns a local path for a model on any Beam filesystem, copying it (and its card, and an ONNX model's external
    data files) to local disk once, into this user's private cache; a cached copy is used again only while its bytes
    are those copied."""
    if os.path.lexists(model_uri) or not model_uri.endswith(registry.suffixes()):
        return model_uri  # a local path, or no model file at all: model_files.load checks and refuses it
    from apache_beam.io.filesystems import FileSystems  # only remote models need Beam's filesystems

    # The cache is keyed by the file's URI, size and modification time, so a replaced model is copied again.
    metadata = FileSystems.get_filesystem(model_uri).metadata(model_uri)  # FileSystems itself has no metadata()
    identity = f"{model_uri}|{metadata.size_in_bytes}|{metadata.last_updated_in_seconds}"
    folder = os.path.join(private_cache(), hashlib.sha256(identity.encode()).hexdigest()[:16])
    local_model = os.path.join(folder, os.path.basename(model_uri))
    copies = ((model_uri, local_model), (model_files.card_path_for(model_uri), model_files.card_path_for(local_model)))
    if _cached_intact(local_model, [os.path.basename(target) for _, target in copies]):
        return local_model
    os.makedirs(folder, mode=0o700, exist_ok=True)
    budget = [model_checks.MAX_MODEL_BYTES]  # what the copies may hold in all, as a local model may
    digests = {os.path.basename(target): _copy(FileSystems, source, target, budget) for source, target in copies}
    source_folder = model_uri.rsplit("/", 1)[0]
    try:  # the copies its card lists (a Keras model's ONNX copy), from the model's folder in the bucket
        listed = model_files.copies(local_model, model_files.read_card(local_model))
    except model_checks.ModelFileError:
        listed = []  # a card that does not parse is refused when the model is loaded, named as the user named it
    for name in listed:
        digests[name] = _copy(FileSystems, f"{source_folder}/{name}", os.path.join(folder, name), budget)
    for model_file in [local_model, *(os.path.join(folder, name) for name in listed)]:
        if registry.framework_of(model_file) != "onnx":
            continue
        try:  # its external data, from the model's folder in the bucket
            locations = onnx_checks.external_locations(model_file)
        except model_checks.ModelFileError as error:  # named as the user named it, not as the cache holds it
            raise model_checks.ModelFileError(str(error).replace(local_model, model_uri)) from None
        for location in locations:
            target = os.path.join(folder, *location.replace("\\", "/").split("/"))
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            digests[location] = _copy(FileSystems, f"{source_folder}/{location}", target, budget)
    write_atomically(_digests_path(local_model), json.dumps(digests).encode())  # last: it vouches for every copy
    return local_model


def private_cache() -> str:
    """This user's model cache, <tempdir>/fashion-scorer-models-<uid>, made with mode 0700. A folder already there is
    used only if it is a real folder (not a link) of this user that no one else can write: in a shared /tmp another
    user could otherwise plant a model there, or swap one cached, for this user's runs to load."""
    folder = os.path.join(tempfile.gettempdir(), f"fashion-scorer-models-{os.getuid()}")
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass  # checked below, whoever made it
    status = os.lstat(folder)
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid() or status.st_mode & 0o022:
        raise model_files.ModelFileError(
            f"the model cache {folder} is not a private folder of this user (a folder owned by uid {os.getuid()} "
            "that only it can write); remove it, or set TMPDIR to a folder of your own")
    return folder


def _digests_path(local_model: str) -> str:
    return local_model + ".sha256.json"


def _cached_intact(local_model: str, required: list) -> bool:
    """Whether the `required` files and every other file recorded (an ONNX model's external data) still have the
    sha256 recorded when they were copied (a changed one is copied again)."""
    folder = os.path.dirname(local_model)
    try:
        with open(_digests_path(local_model), "rb") as stream:
            recorded = json.load(stream)
        return all(name in recorded for name in required) and all(
            digest == file_sha256(os.path.join(folder, *name.split("/"))) for name, digest in recorded.items())
    except (OSError, ValueError, AttributeError, TypeError):  # missing, torn or not a JSON object: copy again
        return False


def _copy(file_systems, source: str, target: str, budget: list) -> str:
    """Copies one file through Beam's filesystems, within what is left of budget[0] bytes (ModelFileError past it);
    returns the sha256 of the bytes written."""
    digest = hashlib.sha256()

    def chunks():
        with file_systems.open(source, compression_type="uncompressed") as reader:
            for chunk in iter(lambda: reader.read(1 << 20), b""):
                budget[0] -= len(chunk)
                if budget[0] < 0:
                    raise model_checks.ModelFileError(f"{source}: refused, the model and its files hold more than "
                                                      f"{model_checks.MAX_MODEL_BYTES:,} bytes")
                digest.update(chunk)
                yield chunk

    write_atomically(target, chunks())  # so a concurrent worker never loads half a file
    return digest.hexdigest()
