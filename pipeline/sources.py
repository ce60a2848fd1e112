"""Defines the sources: matching inputs into units of work, and reading each unit into (key, payload) records.

A unit is a list of (path, size, modification time): a chunk of image files, or one TFRecord file. Matching emits
units, not single names, and reshuffles them: that spreads the work over workers at a fraction of the cost of
shuffling every name. Reading a unit yields (key, payload) per input, or an error row per input that could not be
read; it runs where the unit is decoded (pipeline/blocks.py), so each file is read by the thread that decodes it.
A payload is the bytes of an image file, or a uint8[28, 28] array for TFRecords that hold raw pixels.
"""

import os
import struct
import typing

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from model.vocabulary import IMAGE_PIXELS, IMAGE_SHAPE
from pipeline import timeline
from pipeline.errors import error_row

COUNTS = "counts"
# Image files carry one of these signatures; a 784-byte TFRecord value without one is raw pixels.
_IMAGE_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


def as_pattern(path: str) -> str:
    """A folder means every file below it; local paths become absolute so keys are full paths."""
    if FileSystems.get_scheme(path) is None:
        path = os.path.abspath(path)
        if os.path.isdir(path):
            return os.path.join(path, "**")
    elif path.endswith("/"):
        return path + "**"
    return path


def list_files(pattern: str):
    """(path, size, modification time) of every file a pattern matches, as Beam's FileSystems.match lists them.

    A local folder (`/path/**`) is walked here with os.scandir: the same files as Beam's local listing (os.walk,
    not into symlinked folders; files that vanish are left out), at a third of its cost (0.8 s for 100,000 files
    through Beam here), which matters because scoring waits for the listing.
    """
    if FileSystems.get_scheme(pattern) is None and pattern.endswith(os.sep + "**") and os.path.isdir(pattern[:-3]):
        return _walk(pattern[:-3])
    return [(m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in FileSystems.match([pattern])[0].metadata_list]


def _walk(root: str):
    folders = [root]
    while folders:
        try:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    if entry.is_dir():  # like os.walk: a symlink to a folder counts as a folder, and is not entered
                        if not entry.is_symlink():
                            folders.append(entry.path)
                        continue
                    try:
                        status = entry.stat()  # follows a symlink to its file, as Beam's getsize and getmtime do
                    except OSError:
                        continue  # gone since it was listed, or a dangling link
                    yield entry.path, status.st_size, status.st_mtime
        except OSError:
            continue  # an unreadable folder: os.walk skips it too


class Matched(typing.NamedTuple):
    units: beam.PCollection  # lists of (path, size, modification time), reshuffled over the workers
    counts: beam.PCollection  # ("matched" or "skipped", amount)


class _MatchInChunks(beam.DoFn):
    """pattern -> chunks of (path, size, modification time), leaving out files an earlier run already scored."""

    def __init__(self, chunk_size: int, already_scored=None):
        self.chunk_size = chunk_size
        self.already_scored = already_scored  # a callable returning the set of (path, size, mtime) to skip, or None

    def process(self, pattern):
        timeline.mark("listing files")
        files = sorted(entry for entry in list_files(pattern) if not os.path.basename(entry[0]).startswith("."))
        timeline.mark("files listed")
        todo = files
        if self.already_scored is not None:
            skip = self.already_scored()
            todo = [entry for entry in files if entry not in skip]
            yield beam.pvalue.TaggedOutput(COUNTS, ("skipped", len(files) - len(todo)))
        yield beam.pvalue.TaggedOutput(COUNTS, ("matched", len(files)))
        for start in range(0, len(todo), self.chunk_size):
            yield todo[start:start + self.chunk_size]


class MatchFiles(beam.PTransform):
    """patterns -> Matched(units of up to chunk_size files, ('matched'/'skipped', n) counts)."""

    def __init__(self, patterns, chunk_size: int = 256, already_scored=None):
        super().__init__()
        self.patterns = [as_pattern(p) for p in patterns]
        self.chunk_size = chunk_size
        self.already_scored = already_scored

    def expand(self, pipeline):
        matched = (pipeline
                   | "Patterns" >> beam.Create(self.patterns)
                   | "MatchInChunks" >> beam.ParDo(_MatchInChunks(self.chunk_size, self.already_scored))
                   .with_outputs(COUNTS, main="chunks"))
        return Matched(matched.chunks | "SpreadChunks" >> beam.Reshuffle(), matched[COUNTS])


def read_image_files(unit, pool=None):
    """A chunk of image files -> (path, bytes) per file, or a read error row for a file that cannot be read.

    Local files are read one after the other: from the page cache that is ~100,000 files/s, and from this machine's
    disk threads did not help. Files on other filesystems (gs://, s3://, hdfs://) are read on `pool`'s threads:
    each read there waits tens of milliseconds for the network, and one at a time that would be a few dozen files a
    second per worker.
    """
    paths = [path for path, _, _ in unit]
    remote = pool is not None and not all(os.path.isabs(path) for path in paths)
    yield from (pool.map(_read_or_error, paths) if remote else map(_read_or_error, paths))


def _read_or_error(path: str):
    try:
        return path, _read_whole(path)
    except Exception as error:  # Gone, unreadable or a permission problem: that file fails, not the run.
        return error_row(path, "read", type(error).__name__, str(error))


def _read_whole(path: str) -> bytes:
    if os.path.isabs(path):  # Local (matching made local paths absolute): 8 us a file, 16 us through Beam's layers.
        with open(path, "rb", buffering=0) as stream:
            return stream.readall()
    with FileSystems.open(path, compression_type="uncompressed") as stream:
        return stream.read()


class ReadTFRecordFile:
    """One TFRecord file -> (key, payload) per tf.train.Example, or an error row per record that cannot be used.

    The framing is read here, not by TensorFlow's reader (10,000 records/s through its Python iterator, against
    ~400,000 here): every length is checked against its CRC32C and the bytes the file still holds, and every record
    against its data CRC32C. A record with a bad data CRC fails alone; framing that cannot be trusted fails the rest of
    the file, as one error row that says how many bytes were skipped.
    """

    def __init__(self, image_feature: str, key_feature: str):
        self.image_feature = image_feature
        self.key_feature = key_feature

    def __call__(self, unit, pool=None):
        """Reads the unit's files one after the other (`pool` is not used: records stream out of each file)."""
        from tensorflow.core.example import example_pb2  # the Example message; workers load TensorFlow anyway

        for path, size, _ in unit:
            try:
                with FileSystems.open(path, compression_type="uncompressed") as stream:
                    yield from self._records(example_pb2.Example, path, size, stream)
            except Exception as error:  # The file vanished or cannot be opened: one error row for the file.
                yield error_row(f"{path}:0", "read", type(error).__name__, str(error))

    def _records(self, example_class, path: str, size: int, stream):
        for index, frame in enumerate(tfrecord_frames(stream, size)):
            key = f"{path}:{index}"
            if frame.ends_file:
                yield error_row(key, "read", "corrupt TFRecord",
                                f"{frame.problem}; the last {size - frame.offset:,} bytes of the file were skipped")
            elif frame.data is None:
                yield error_row(key, "read", "corrupt TFRecord", frame.problem)
            else:
                yield self._example(example_class, key, frame.data)

    def _example(self, example_class, key: str, record: bytes):
        try:
            features = example_class.FromString(record).features.feature
        except Exception:  # Not a tf.train.Example: that record fails alone.
            return error_row(key, "read", "not an Example", f"the record's {len(record):,} bytes are not a "
                             "tf.train.Example")
        names = features[self.key_feature].bytes_list.value if self.key_feature in features else []
        key = names[0].decode("utf-8", "replace") if names and names[0] else key
        values = features[self.image_feature].bytes_list.value if self.image_feature in features else []
        if not values:
            message = f"record has no bytes feature {self.image_feature!r} (set --image_feature)"
            return error_row(key, "read", "MissingFeature", message)
        return key, raw_pixels_or_bytes(values[0])


_HEADER = struct.Struct("<QI")  # the record's length, and the masked CRC32C of those 8 length bytes
_FOOTER = struct.Struct("<I")  # the masked CRC32C of the record's data


class Frame(typing.NamedTuple):
    offset: int  # where the record starts in the file
    data: typing.Optional[bytes]  # the record, or None when it cannot be used
    problem: str = ""  # why it cannot be used
    ends_file: bool = False  # the framing cannot be trusted past this record, so reading stops


def tfrecord_frames(stream, size: int):
    """Yields a Frame per record of a TFRecord file of `size` bytes; the last one ends_file if the framing broke."""
    offset = 0
    while offset < size:
        header = stream.read(_HEADER.size)
        if len(header) < _HEADER.size:
            yield Frame(offset, None, f"the file ends inside a record header at byte {offset:,}", True)
            return
        length, length_crc = _HEADER.unpack(header)
        if _masked_crc32c(header[:8]) != length_crc:
            yield Frame(offset, None, f"the record length at byte {offset:,} fails its checksum", True)
            return
        if length > size - offset - _HEADER.size - _FOOTER.size:
            yield Frame(offset, None, f"the record at byte {offset:,} claims {length:,} bytes, more than the file "
                        "holds", True)
            return
        data = stream.read(length)
        footer = stream.read(_FOOTER.size)
        if len(data) < length or len(footer) < _FOOTER.size:
            yield Frame(offset, None, f"the file ends inside the record at byte {offset:,}", True)
            return
        if _masked_crc32c(data) != _FOOTER.unpack(footer)[0]:
            yield Frame(offset, None, f"the record at byte {offset:,} fails its data checksum")
        else:
            yield Frame(offset, data)
        offset += _HEADER.size + length + _FOOTER.size


def _masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC32C, rotated right by 15 bits, plus a constant."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def raw_pixels_or_bytes(value: bytes):
    """A 784-byte value that is not an image file is raw uint8 pixels; anything else is image file bytes."""
    if len(value) == IMAGE_PIXELS and not value.startswith(_IMAGE_SIGNATURES):
        return np.frombuffer(value, dtype=np.uint8).reshape(IMAGE_SHAPE)
    return value
