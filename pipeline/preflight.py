"""Checks a run's inputs, model and output before any work starts, so a user's mistake fails fast and clearly."""

import dataclasses
import hashlib
import io
import os

from apache_beam.io.filesystems import FileSystems

from model.cards import card_spec
from model.runtimes import model_files, registry
from model.training.data import file_sha256
from pipeline import store_endpoints
from pipeline.outputs import labels
from pipeline.reading import globs, kinds, listing
from pipeline.reading.inputs import InputError, NoInput
from pipeline.scoring import served_model

class PreflightError(ValueError):
    """A mistake in the run's flags or files; the message says what to change."""


class NoInputError(PreflightError):
    """An input pattern matched nothing."""


@dataclasses.dataclass(frozen=True)
class CheckedModel:
    """The model a run will score with, as preflight found it: its card, version and the file's sha256."""

    card: dict
    version: str
    model_sha256: str
    candidate: "CheckedModel" = None  # --candidate_model, scored beside it

    @property
    def spec(self) -> card_spec.ModelSpec:
        return card_spec.spec_from_card(self.card)


def check(config) -> CheckedModel:
    """Checks the inputs, the model and the output; returns what it found of the model."""
    check_store_endpoints(named_paths(config))
    inputs = kinds.of(config)
    for pattern in inputs.patterns():
        check_input(inputs.flag, pattern)
    try:
        inputs.check()
    except NoInput as error:
        raise NoInputError(str(error)) from None
    except InputError as error:
        raise PreflightError(str(error)) from None
    card, digest = check_model(config.model)
    candidate = None
    if config.candidate_model:
        try:
            candidate_card, candidate_digest = check_model(config.candidate_model)
        except PreflightError as error:
            raise PreflightError(f"--candidate_model: {error}") from None
        candidate = CheckedModel(candidate_card, model_files.model_version(candidate_card), candidate_digest)
    check_output(config.output)
    return CheckedModel(card, model_files.model_version(card), digest, candidate)


def read_labels(config):
    """The --labels file read and checked (pipeline.outputs.labels.Labels), or None without one."""
    if not config.labels:
        return None
    try:
        return labels.read(config.labels)
    except labels.LabelsError as error:
        raise PreflightError(f"--labels: {error}") from None


def named_paths(config) -> list:
    """Everything a run reads or writes by name: where its stores are."""
    return [*kinds.of(config).named(), config.model, config.output,
            *[path for path in (config.candidate_model, config.labels) if path]]


def check_store_endpoints(paths: list, timeout: float = 5.0) -> None:
    """Raises PreflightError when a store server that `paths` go to cannot be reached (store_endpoints.check)."""
    try:
        store_endpoints.check(paths, timeout=timeout)
    except store_endpoints.StoreUnreachable as error:
        raise PreflightError(str(error)) from None


def check_input(flag: str, text: str) -> None:
    """Raises PreflightError for an empty input, NoInputError when it names nothing that could be scored."""
    try:
        spec = listing.input_spec(text)
    except ValueError as error:
        raise PreflightError(f"{flag} {text!r}: {error}") from None
    try:
        if FileSystems.get_scheme(spec.path) is not None:  # object stores: one object is enough to know
            found = FileSystems.match([spec.path], limits=[1])[0].metadata_list
            skipped = {}
        else:
            found, skipped = False, {}
            for _, entry in listing.spec_entries(spec):
                if not isinstance(entry, str):
                    found = True
                    break
                skipped[entry] = skipped.get(entry, 0) + 1
    except Exception as error:  # Beam wraps every filesystem problem (no such bucket, no credentials) alike.
        _say_if_bucket_missing(f"{flag} {text!r}", spec.path)
        raise PreflightError(f"{flag} {text!r} cannot be listed: {error}") from error
    if not found:
        _say_if_bucket_missing(f"{flag} {text!r}", spec.path)
        if skipped:
            what = ", ".join(f"{amount:,} {reason}" for reason, amount in sorted(skipped.items()))
            raise NoInputError(f"{flag} {text!r} holds nothing to score ({what} skipped)")
        raise NoInputError(f"{flag} {text!r} matches no files; check the path, or quote the glob so the shell "
                           "does not expand it")


def _say_if_bucket_missing(what: str, path: str) -> None:
    if _bucket_missing(path):
        raise PreflightError(f"{what}: the bucket {path.split('/')[2]!r} does not exist (or these credentials cannot "
                             "see it); check the bucket's name and the store's flags")


def _bucket_missing(path: str) -> bool:
    """Does the store say that the bucket of `path` does not exist? Beam's listing reads a missing S3 bucket as an
    empty prefix (which would send a typo in a bucket's name to exit 3, "matches no files", instead of exit 2), and a
    missing GCS bucket as a failed listing like any other."""
    scheme = FileSystems.get_scheme(path)
    bucket = path.split("/")[2] if scheme in ("s3", "gs") and path.count("/") >= 2 else ""
    if not bucket:
        return False
    try:
        if scheme == "gs":
            from apache_beam.io.gcp import gcsio

            return gcsio.GcsIO(pipeline_options=FileSystems._pipeline_options).client.lookup_bucket(bucket) is None
        from apache_beam.io.aws import s3io
        from apache_beam.io.aws.clients.s3 import messages

        s3io.S3IO(options=FileSystems._pipeline_options).client.list(messages.ListRequest(bucket=bucket, prefix=""))
    except Exception as error:  # noqa: BLE001 - anything else the store says is not an answer to this question
        return "NoSuchBucket" in str(error)
    return False


MODEL_HINT = ("pass --model with a .keras file that `python -m model.train` wrote, or a model carded by "
              "`python -m model.card` (its .json card beside it)")


def check_model(uri: str) -> tuple:
    """Returns (card, sha256 of the model file) after checking, without TensorFlow, that the file is a whole Keras
    archive of a model with the input its card declares, and that the card is a JSON object that fits this code; an
    ONNX model is checked whole (model.runtimes.onnx_checks), from the local copy a bucket's is cached as."""
    if FileSystems.get_scheme(uri) is None and os.path.isdir(uri):
        raise PreflightError(f"--model {uri} is a folder; {MODEL_HINT}")
    if not FileSystems.exists(uri):
        raise PreflightError(f"model file {uri} not found; {MODEL_HINT}")
    try:
        framework = registry.framework_of(uri)
    except model_files.ModelFileError as error:  # it says which files are models
        raise PreflightError(str(error)) from error
    if framework == "onnx" or _lists_copies(uri):  # checked whole, from the local copy a bucket's is cached as
        card, digest = _check_localized(uri)
        if framework == "onnx":
            return card, digest
    try:
        data = _read(uri)
        model_files.check_archive(io.BytesIO(data), uri)
        card = model_files.read_card(uri, read=_read)
        model_files.check_input(io.BytesIO(data), uri, card_spec.spec_from_card(card))
    except model_files.ModelFileError as error:
        raise PreflightError(f"{error}; {MODEL_HINT}") from error
    return card, hashlib.sha256(data).hexdigest()


def _lists_copies(uri: str) -> bool:
    """Whether the card beside `uri` lists copies of the model (a Keras model's ONNX copy)."""
    try:
        return bool(model_files.copies(uri, model_files.read_card(uri, read=_read)))
    except model_files.ModelFileError:
        return False  # refused below, by the checks that name what is wrong


def _check_localized(uri: str) -> tuple:
    """(card, sha256 of the model file) of a model checked from the local copy a bucket's is cached as: an ONNX
    model whole (onnx_checks), and every copy its card lists by the runtime that serves it."""
    local = uri
    try:
        local = served_model.localize(uri)
        card = model_files.read_card(local)
        model_files.check_unloaded(local, card)
        return card, file_sha256(local)
    except model_files.ModelFileError as error:  # named as the user named it, not as the cache holds it
        raise PreflightError(f"{str(error).replace(local, uri)}; {MODEL_HINT}") from error


def _read(uri: str) -> bytes:
    """A file's bytes from any Beam filesystem."""
    try:
        with FileSystems.open(uri, compression_type="uncompressed") as stream:
            return stream.read()
    except Exception as error:  # Missing, unreadable, a folder: the user must point at another file.
        what = "model card" if uri.endswith(".json") else "model file"
        raise model_files.ModelFileError(f"{what} {uri} cannot be read ({error})") from error


def load_model_here(uri: str, threads: int, require_gpu: bool = False, flag: str = "", runtime: str = None) -> None:
    """Loads and checks the model fully (weights against the card's content hash) in this process, for a run whose
    worker is this process: a mistake is then caught before any work, at no cost, since the worker takes this load.
    `flag` names the model's flag in a refusal (--candidate_model)."""
    said = f"{flag}: " if flag else ""
    try:
        served_model.preload(uri, threads, require_gpu, runtime)
    except served_model.NoGPUError as error:
        raise PreflightError(str(error)) from error
    except model_files.ModelFileError as error:
        raise PreflightError(f"{said}{error}; {MODEL_HINT}") from error


def check_beam_options(beam_options) -> None:
    """Raises PreflightError for Beam options that would only fail deep inside Beam: an unknown runner, a negative
    number of local workers."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
    from apache_beam.runners.runner import create_runner

    runner = beam_options.view_as(StandardOptions).runner
    try:
        create_runner(runner)
    except ImportError as error:
        raise PreflightError(f"--runner={runner} needs packages that are not installed ({error}); for Dataflow "
                             "install the project with `pip install -e '.[gcp]'`") from error
    except Exception as error:  # Beam's own message lists the runners it knows
        raise PreflightError(f"--runner={runner} is not a runner Beam knows ({error})") from None
    direct = beam_options.view_as(DirectOptions)
    if direct.direct_num_workers is not None and direct.direct_num_workers < 0:
        raise PreflightError(f"--direct_num_workers={direct.direct_num_workers}: give 1 or more (0 means one per core)")


def check_output(output: str) -> None:
    """Creates the output folder if needed and proves a file can be written there."""
    if not output.strip():
        raise PreflightError("--output is empty; give the folder the run writes its partitions under")
    if FileSystems.get_scheme(output) is None and os.path.isfile(output):
        raise PreflightError(f"--output {output} is a file; give a folder")
    glob = globs.GLOB_CHARACTERS.search(output)
    if glob:
        # Beam's filesystems match and delete by glob, Beam's own file writers included (they find what they wrote
        # with FOLDER/*): below `o[1]` they find nothing and fail, and below `o*` they would also list, and on object
        # stores delete, what lies in every folder the glob matches.
        raise PreflightError(f"--output {output} holds {glob.group()!r}, which Beam reads as a glob when it finds and "
                             "deletes the run's files; choose a folder whose path has none of * ? [")
    # Some S3-compatible servers (SeaweedFS) make a bucket that a write names; a typo there would start a new one.
    _say_if_bucket_missing(f"--output {output}", output)
    probe = FileSystems.join(output, f".write-check-{os.getpid()}")
    try:
        if FileSystems.get_scheme(output) is None:
            os.makedirs(output, exist_ok=True)
        with FileSystems.create(probe) as stream:
            stream.write(b"ok")
        FileSystems.delete([probe])
    except Exception as error:  # Permission, read-only disk, missing bucket: the user must pick another place.
        raise PreflightError(f"cannot write to --output {output} ({error}); choose a folder you can write to") \
            from error
