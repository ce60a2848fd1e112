"""Defines reading TFRecord files of tf.train.Example: a unit -> (key, payload) per record, or an error row per
record (or per unreadable rest of a file).

The framing is read here, not by TensorFlow's reader (whose Python iterator manages 10,000 records/s, against
~400,000 here, and which crashes the process on a length that claims more than the file holds): every length is
checked against its CRC32C and against what the file can still hold, every record against its data CRC32C. A record
with a bad data CRC fails alone; framing that cannot be trusted fails the rest of its file as one error row that
says how much was skipped; the other files are not affected. Files compressed with gzip or zlib (as TensorFlow's
writer compresses them) are read by extension (.gz, .gzip; .zlib, .zz) or as --compression says.

An Example holds its image as encoded bytes (--image_feature) or as raw pixels (--raw_feature, bytes or integers: the
model's H * W * C, 784 for Fashion-MNIST); which one is decided by the feature's name, never by guessing from the
bytes.
"""

import gzip
import struct
import typing
import zlib

import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipeline import options
from pipeline.reading import matching
from pipeline.reading.inputs import Inputs
from pipeline.records import error_row
from pipeline.reading.listing import key_for
from pipeline.records import Source

COMPRESSIONS = options.COMPRESSIONS
_EXTENSIONS = {".gz": "gzip", ".gzip": "gzip", ".zlib": "zlib", ".zz": "zlib"}
_HEADER = struct.Struct("<QI")  # the record's length, and the masked CRC32C of those 8 length bytes
_FOOTER = struct.Struct("<I")  # the masked CRC32C of the record's data


class ReadTFRecordFiles:
    """A unit of TFRecord files -> (key, payload, pipeline.records.Source) per Example, and the unit's error rows
    as they are."""

    def __init__(self, image_feature: str, key_feature: str, raw_feature: str, compression: str = "auto",
                 max_record_bytes: int = 128 << 20):
        self.image_feature, self.key_feature, self.raw_feature = image_feature, key_feature, raw_feature
        self.compression = compression
        self.max_record_bytes = max_record_bytes

    def __call__(self, unit, pool=None):
        """Reads the unit's files one after the other (`pool` is not used: records stream out of each file)."""
        from tensorflow.core.example import example_pb2  # the Example message; workers load TensorFlow anyway

        for entry in unit:
            if isinstance(entry, dict):
                yield entry
                continue
            path, size, modified = entry
            try:
                with FileSystems.open(path, compression_type="uncompressed") as raw:
                    compression = compression_of(key_for(path), self.compression)
                    stream = _decompressed(raw, compression)
                    limit = size if compression == "none" else None
                    source = Source(path, size, modified, compression=compression)
                    yield from self._records(example_pb2.Example, key_for(path), stream, limit, source)
            except OSError as error:  # The file vanished or cannot be opened: one error row for the file.
                yield error_row(f"{key_for(path)}:0", "read", type(error).__name__, error.strerror or str(error))

    def _records(self, example_class, path_key: str, stream, size, source: Source):
        for index, frame in enumerate(frames(stream, size, self.max_record_bytes)):
            key = f"{path_key}:{index}"
            if frame.ends_file:
                skipped = (f"the last {size - frame.offset:,} bytes of the file were skipped" if size is not None
                           else "the rest of the file was skipped")
                yield error_row(key, "read", "corrupt TFRecord", f"{frame.problem}; {skipped}")
            elif frame.data is None:
                yield error_row(key, "read", "corrupt TFRecord", frame.problem)
            else:
                found = self._example(example_class, key, frame.data)
                if isinstance(found, dict):
                    yield found
                else:
                    raw = isinstance(found[1], np.ndarray)
                    yield (*found, source._replace(record=index, offset=frame.offset, raw=raw,
                                                   feature=self.raw_feature if raw else self.image_feature))


    def _example(self, example_class, key: str, record: bytes):
        try:
            features = example_class.FromString(record).features.feature
        except Exception:  # Not a tf.train.Example: that record fails alone.
            return error_row(key, "read", "not an Example", f"the record's {len(record):,} bytes are not a "
                             "tf.train.Example")
        names = features[self.key_feature].bytes_list.value if self.key_feature in features else []
        key = key_for(names[0]) if names and names[0] else key
        if self.raw_feature in features:
            return _raw_pixels(key, self.raw_feature, features[self.raw_feature])
        values = features[self.image_feature].bytes_list.value if self.image_feature in features else []
        if not values:
            message = (f"the record has no bytes feature {self.image_feature!r} nor {self.raw_feature!r} (set "
                       "--image_feature or --raw_feature)")
            return error_row(key, "read", "missing feature", message)
        return key, values[0]


def _raw_pixels(key: str, name: str, feature):
    """A raw-pixels feature -> (key, flat uint8 pixels): one bytes value, or integers from 0 to 255. Decoding checks
    that there are the H * W * C the model takes (pipeline.scoring.blocks)."""
    values = feature.bytes_list.value
    if len(values) == 1 and values[0]:
        return key, np.frombuffer(values[0], dtype=np.uint8)
    numbers = feature.int64_list.value
    if numbers and min(numbers) >= 0 and max(numbers) <= 255:
        return key, np.asarray(numbers, dtype=np.uint8)
    found = f"{len(values[0]):,} bytes" if len(values) == 1 else f"{len(numbers) or len(values):,} values"
    return error_row(key, "decode", "unsupported", f"feature {name!r} holds {found}; raw pixels are one bytes "
                     "value or integers 0-255, H * W * C of them for the model's input, row by row")


def record_at(raw, source: Source, max_record_bytes: int = 128 << 20):
    """The image of the record `source` names, read from the open file `raw`: bytes, or uint8 pixels for raw
    pixels. Raises ValueError when no intact Example with that feature starts there."""
    from tensorflow.core.example import example_pb2

    stream = _decompressed(raw, source.compression)
    remaining = source.offset  # skipped by reading: a compressed stream cannot seek
    while remaining > 0:
        skipped = len(stream.read(min(remaining, 1 << 20)))
        if not skipped:
            raise ValueError("the file ends before the record")
        remaining -= skipped
    size = source.size if source.compression == "none" else None
    frame, _ = _frame(stream, source.offset, size, max_record_bytes)
    if frame is None or frame.data is None:
        raise ValueError(frame.problem if frame else "the file ends before the record")
    reader = ReadTFRecordFiles("" if source.raw else source.feature, "", source.feature if source.raw else "")
    found = reader._example(example_pb2.Example, "", frame.data)
    if isinstance(found, dict):
        raise ValueError(found["error_message"])
    return found[1]


def compression_of(path: str, flag: str) -> str:
    if flag != "auto":
        return flag
    for extension, compression in _EXTENSIONS.items():
        if path.lower().endswith(extension):
            return compression
    return "none"


def _decompressed(raw, compression: str):
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "zlib":
        return _ZlibStream(raw)
    return raw


class _ZlibStream:
    """Reads a zlib-compressed stream (TensorFlow's ZLIB TFRecords) as a file of its decompressed bytes."""

    def __init__(self, raw):
        self.raw, self.inflater, self.buffer = raw, zlib.decompressobj(), b""

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size and not self.inflater.eof:
            # What the inflater held back last time comes first; decompressing at most what is asked keeps a
            # zlib bomb from filling memory.
            compressed = self.inflater.unconsumed_tail or self.raw.read(1 << 16)
            if not compressed:
                raise EOFError("the compressed stream ends early")
            self.buffer += self.inflater.decompress(compressed, size - len(self.buffer))
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


class Frame(typing.NamedTuple):
    offset: int  # where the record starts in the (decompressed) file
    data: typing.Optional[bytes]  # the record, or None when it cannot be used
    problem: str = ""  # why it cannot be used
    ends_file: bool = False  # the framing cannot be trusted past this record, so reading stops


def frames(stream, size, max_record_bytes: int):
    """Yields a Frame per record; the last one ends_file if the framing broke. `size` is the file's size in bytes,
    or None for a compressed stream (whose records are then bounded by max_record_bytes)."""
    offset = 0
    while size is None or offset < size:
        try:
            frame, length = _frame(stream, offset, size, max_record_bytes)
        except (OSError, EOFError, zlib.error) as error:  # a broken gzip or zlib stream
            yield Frame(offset, None, f"the compressed data is broken at byte {offset:,} ({error})", True)
            return
        if frame is None:
            return  # the end of a compressed stream
        yield frame
        if frame.ends_file:
            return
        offset += _HEADER.size + length + _FOOTER.size


def _frame(stream, offset: int, size, max_record_bytes: int):
    header = stream.read(_HEADER.size)
    if not header and size is None:
        return None, 0
    if len(header) < _HEADER.size:
        return Frame(offset, None, f"the file ends inside a record header at byte {offset:,}", True), 0
    length, length_crc = _HEADER.unpack(header)
    if _masked_crc32c(header[:8]) != length_crc:
        return Frame(offset, None, f"the record length at byte {offset:,} fails its checksum", True), 0
    room = max_record_bytes if size is None else size - offset - _HEADER.size - _FOOTER.size
    if length > room:
        holds = "more than the file holds" if size is not None else f"over the limit of {max_record_bytes:,}"
        return Frame(offset, None, f"the record at byte {offset:,} claims {length:,} bytes, {holds}", True), 0
    data = stream.read(length)
    footer = stream.read(_FOOTER.size)
    if len(data) < length or len(footer) < _FOOTER.size:
        return Frame(offset, None, f"the file ends inside the record at byte {offset:,}", True), 0
    if _masked_crc32c(data) != _FOOTER.unpack(footer)[0]:
        return Frame(offset, None, f"the record at byte {offset:,} fails its data checksum"), length
    return Frame(offset, data), length


def _masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC32C, rotated right by 15 bits, plus a constant."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class TFRecordFiles(Inputs):
    """--input_tfrecords: TFRecord files of tf.train.Example, one unit a file, spread over the workers; a record's key
    comes from a feature, so its records are counted as read and their keys may repeat."""

    flag, option = "--input_tfrecords", "input_tfrecords"
    counted_when_read = True
    keys_may_repeat = True
    manifest_key = "tfrecords"

    def patterns(self) -> tuple:
        return self.config.input_tfrecords

    def match(self, pipeline, version: str, folder: str):
        config = self.config
        return pipeline | "MatchTFRecords" >> matching.MatchInputs(
            config.input_tfrecords, 1, False, output=config.output, spread=True,
            refuse_outside_links=config.refuse_outside_links)

    def reader(self):
        config = self.config
        return ReadTFRecordFiles(config.image_feature, config.key_feature, config.raw_feature, config.compression,
                                 config.max_file_bytes)

    def manifest(self) -> dict:
        return {**super().manifest(), "tfrecords": list(self.config.input_tfrecords)}
