"""Reads the report's pictures back: for each contact-sheet candidate (pipeline.outputs.sheet), the input from exactly
where the run read it, as the model saw it and as a thumbnail of the original.

Nothing here opens a name taken from a key. A local file is opened without blocking and read only if it is a regular
file of the size and modification time the run saw; a remote one only if its metadata agrees. The picture is shown
only if it preprocesses to the model input the run scored (by hash): a file rewritten or a link re-pointed since
then shows as changed, never as another file's picture.
"""

import base64
import contextlib
import io
import os

import numpy as np
from apache_beam.io.filesystems import FileSystems

from model import reading
from model.input_hashes import shape_dtype_and_pixels_sha256
from model.cards.card_spec import ModelSpec
from pipeline.reading import tfrecords
from pipeline.records import Source
from pipeline.report import page

MAX_IMAGE_BYTES = 64 << 20  # an image read back for the contact sheet; larger ones are noted, not read
THUMBNAIL = 84  # pixels, the longer side of the original's thumbnail


class Changed(Exception):
    """The input is no longer what the run read: .note says how, in words for the page."""

    def __init__(self, note: str):
        super().__init__(note)
        self.note = note


def pictures(row: dict, spec: ModelSpec) -> tuple:
    """(the model input, the original as a thumbnail) for a sheet row, as HTML; a note where it cannot be shown."""
    try:
        payload = _payload(row)
        seen = _model_input(payload, spec)
        if shape_dtype_and_pixels_sha256(seen) != row["input_sha256"]:
            raise Changed("changed since it was scored")
        original = _thumbnail(payload) if isinstance(payload, bytes) else _thumbnail_of_pixels(seen)
    except Changed as changed:
        return page.missing(changed.note), ""
    except FileNotFoundError:
        return page.missing("gone since it was scored"), ""
    except Exception:  # noqa: BLE001 - unreadable or undecodable now: a note, never a broken report
        return page.missing("cannot be read now"), ""
    shown = seen if max(seen.shape[:2]) <= THUMBNAIL else _thumbnail_of_pixels(seen)  # a big input, made small
    return (page.image(_png_uri(shown), "seen", "as the model saw it"),
            page.image(_png_uri(original), "original", "original"))


def _payload(row: dict):
    """The input's bytes (or raw pixels) from the place the row records."""
    path = _path(row)
    with _opened(path, row) as stream:
        if row["record"] >= 0:
            return tfrecords.record_at(stream, _source(path, row))
        payload = stream.read(MAX_IMAGE_BYTES + 1)
    if len(payload) > MAX_IMAGE_BYTES:
        raise Changed("too large to show")
    return payload


def _path(row: dict):
    """The path as the run listed it: bytes for a local name that is not UTF-8, else text."""
    raw = row["path"]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw  # only local names can be other than UTF-8
    return text


def _source(path, row: dict) -> Source:
    return Source(path, row["size"], row["modified"], row["record"], row["offset"], row["compression"],
                        row["feature"], row["raw"])


@contextlib.contextmanager
def _opened(path, row: dict):
    """The file at `path`, open for reading, if it is still the one the run read (size, modification time)."""
    text = path if isinstance(path, str) else None
    if text is not None and FileSystems.get_scheme(text) is not None:
        metadata = FileSystems.get_filesystem(text).metadata(text)
        if (metadata.size_in_bytes, metadata.last_updated_in_seconds) != (row["size"], row["modified"]):
            raise Changed("changed since it was scored")
        with FileSystems.open(text, compression_type="uncompressed") as stream:
            yield stream
        return
    try:  # opened as every command opens a local file: a name swapped for a FIFO since the run cannot hang it
        with reading.opened_regular_file(path) as (descriptor, status):
            if (status.st_size, status.st_mtime) != (row["size"], row["modified"]):
                raise Changed("changed since it was scored")
            with os.fdopen(descriptor, "rb", closefd=False) as stream:
                yield stream
    except reading.FileRefused:  # no longer a regular file
        raise Changed("changed since it was scored") from None


def _model_input(payload, spec: ModelSpec) -> np.ndarray:
    """The pixels the model was given, by the card's recipe (raw pixels in its shape)."""
    from model import recipes

    if isinstance(payload, np.ndarray):
        if payload.size != spec.pixel_bytes:
            raise Changed("changed since it was scored")
        return payload.reshape(spec.pixel_shape)
    return recipes.to_model_input(spec, payload)


def _thumbnail(payload: bytes):
    from PIL import Image, ImageOps

    from model.recipes import preprocessing

    with Image.open(io.BytesIO(payload), formats=preprocessing.ALLOWED_FORMATS) as opened:
        opened.draft("RGB", (2 * THUMBNAIL, 2 * THUMBNAIL))  # a JPEG decoded at reduced scale: enough for a thumbnail
        original = ImageOps.exif_transpose(opened).convert("RGB")
    small = max(original.size) < THUMBNAIL  # a native 28x28 file: scaled up with its pixels kept sharp
    return ImageOps.contain(original, (THUMBNAIL, THUMBNAIL),
                            Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS)


def _thumbnail_of_pixels(pixels: np.ndarray):
    """Grey or RGB pixels fitted into the thumbnail: a small image scaled up with its pixels kept sharp."""
    from PIL import Image, ImageOps

    small = max(pixels.shape[:2]) < THUMBNAIL
    return ImageOps.contain(Image.fromarray(pixels), (THUMBNAIL, THUMBNAIL),
                            Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS)


def _png_uri(picture) -> str:
    from PIL import Image

    if isinstance(picture, np.ndarray):
        picture = Image.fromarray(picture)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
