"""Checks a run's inputs, model and output before any work starts, so a user's mistake fails fast and clearly."""

import dataclasses
import hashlib
import json
import os

from apache_beam.io.filesystems import FileSystems

from model import model_files
from pipeline import listing

_ZIP_SIGNATURE = b"PK\x03\x04"


class PreflightError(ValueError):
    """A mistake in the run's flags or files; the message says what to change."""


class NoInputError(PreflightError):
    """An input pattern matched nothing."""


@dataclasses.dataclass(frozen=True)
class Checked:
    card: dict
    version: str
    model_sha256: str


def check(config) -> Checked:
    for flag, patterns in (("--input", config.inputs), ("--input_tfrecords", config.input_tfrecords)):
        for pattern in patterns:
            check_input(flag, pattern)
    card, digest = check_model(config.model)
    check_output(config.output)
    return Checked(card, model_files.model_version(card), digest)


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
            lister = listing.Listing()
            found = next(iter(lister.entries([spec])), None) is not None
            skipped = dict(lister.skipped)
    except Exception as error:  # Beam wraps every filesystem problem (no such bucket, no credentials) alike.
        raise PreflightError(f"{flag} {text!r} cannot be listed: {error}") from error
    if not found:
        if skipped:
            what = ", ".join(f"{amount:,} {reason}" for reason, amount in sorted(skipped.items()))
            raise NoInputError(f"{flag} {text!r} holds nothing to score ({what} skipped)")
        raise NoInputError(f"{flag} {text!r} matches no files; check the path, or quote the glob so the shell "
                           "does not expand it")


def check_model(uri: str) -> tuple:
    """Returns (card, sha256 of the model file) after checking the file looks like a Keras model and its card fits."""
    hint = "pass --model with a .keras file that `python -m model.train` wrote (its .json card beside it)"
    if not FileSystems.exists(uri):
        raise PreflightError(f"model file {uri} not found; {hint}")
    digest = hashlib.sha256()
    with FileSystems.open(uri, compression_type="uncompressed") as stream:
        head = stream.read(4)
        digest.update(head)
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    if head != _ZIP_SIGNATURE:
        raise PreflightError(f"{uri} is not a Keras .keras file (it is not a zip archive); {hint}")
    card_uri = model_files.card_path_for(uri)
    try:
        with FileSystems.open(card_uri, compression_type="uncompressed") as stream:
            card = json.loads(stream.read())
    except Exception as error:  # Missing, unreadable or not JSON: all mean the card cannot be trusted.
        raise PreflightError(f"model card {card_uri} cannot be read ({error}); {hint}") from error
    try:
        model_files.validate_card(card, card_uri)
    except model_files.ModelFileError as error:
        raise PreflightError(f"{error}; {hint}") from error
    return card, digest.hexdigest()


def check_output(output: str) -> None:
    """Creates the output folder if needed and proves a file can be written there."""
    if FileSystems.get_scheme(output) is None and os.path.isfile(output):
        raise PreflightError(f"--output {output} is a file; give a folder")
    probe = FileSystems.join(output, f".write-check-{os.getpid()}")
    try:
        if FileSystems.get_scheme(output) is None:
            os.makedirs(output, exist_ok=True)
        with FileSystems.create(probe) as stream:
            stream.write(b"ok")
        FileSystems.delete([probe])
    except Exception as error:  # Permission, read-only disk, missing bucket: the user must pick another place.
        raise PreflightError(f"cannot write to --output {output} ({error}); choose a folder you can write to") from error
