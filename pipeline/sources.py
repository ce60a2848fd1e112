"""Defines the sources: image files or TFRecords on any Beam filesystem -> (key, payload) records.

A payload is the bytes of an image file, or a uint8[28, 28] array for TFRecords that hold raw pixels. Matching emits
chunks of file names, not single names, and the chunks are reshuffled: that spreads the work over workers at a
fraction of the cost of shuffling every name.
"""

import os

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from model.vocabulary import IMAGE_PIXELS, IMAGE_SHAPE

ERRORS = "errors"
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


def error_row(key: str, stage: str, error_type: str, message: str) -> dict:
    return {"key": key, "stage": stage, "error_type": error_type, "error_message": message}


COUNTS = "counts"


class _MatchInChunks(beam.DoFn):
    """pattern -> chunks of (path, size, modification time), leaving out files an earlier run already scored."""

    def __init__(self, chunk_size: int, already_scored=None):
        self.chunk_size = chunk_size
        self.already_scored = already_scored  # a callable returning the set of (path, size, mtime) to skip, or None

    def process(self, pattern):
        matched = [m for m in FileSystems.match([pattern])[0].metadata_list
                   if not os.path.basename(m.path).startswith(".")]
        files = sorted((m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in matched)
        todo = files
        if self.already_scored is not None:
            skip = self.already_scored()
            todo = [entry for entry in files if entry not in skip]
            yield beam.pvalue.TaggedOutput(COUNTS, ("skipped", len(files) - len(todo)))
        yield beam.pvalue.TaggedOutput(COUNTS, ("matched", len(files)))
        for start in range(0, len(todo), self.chunk_size):
            yield todo[start:start + self.chunk_size]


class MatchFiles(beam.PTransform):
    """patterns -> (chunks (lists) of (path, size, mtime), reshuffled over the workers; ('matched'/'skipped', n))."""

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
        return matched.chunks | "SpreadChunks" >> beam.Reshuffle(), matched[COUNTS]


class _ReadFiles(beam.DoFn):
    def process(self, chunk):
        for path, _, _ in chunk:
            try:
                with FileSystems.open(path, compression_type="uncompressed") as stream:
                    yield path, stream.read()
            except Exception as error:  # Gone, unreadable or a permission problem: that file fails, not the run.
                yield beam.pvalue.TaggedOutput(ERRORS, error_row(path, "read", type(error).__name__, str(error)))


class ReadImageFiles(beam.PTransform):
    """patterns -> (records: (path, bytes) per file, error rows, counts, the chunks of (path, size, mtime) read)."""

    def __init__(self, patterns, chunk_size: int = 256, already_scored=None):
        super().__init__()
        self.patterns = patterns
        self.chunk_size = chunk_size
        self.already_scored = already_scored

    def expand(self, pipeline):
        # Every matched file is counted before it is read, so the manifest can check that none went missing.
        chunks, counts = pipeline | "MatchFiles" >> MatchFiles(self.patterns, self.chunk_size, self.already_scored)
        read = chunks | "ReadFiles" >> beam.ParDo(_ReadFiles()).with_outputs(ERRORS, main="records")
        return read.records, read[ERRORS], counts, chunks


class _ReadTFRecordFiles(beam.DoFn):
    def __init__(self, image_feature: str, key_feature: str):
        self.image_feature = image_feature
        self.key_feature = key_feature

    def process(self, chunk):
        import tensorflow as tf  # Imported here: TFRecord reading and Example parsing need it, matching does not.

        for path, _, _ in chunk:
            index = -1
            try:
                for index, raw in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
                    yield self._record(tf, path, index, raw)
            except Exception as error:  # A corrupt or cut file: what was read is kept, the rest is one error row.
                key = f"{path}:{index + 1}"
                yield beam.pvalue.TaggedOutput(ERRORS, error_row(key, "read", type(error).__name__, str(error)))

    def _record(self, tf, path: str, index: int, raw: bytes):
        key = f"{path}:{index}"
        try:
            features = tf.train.Example.FromString(raw).features.feature
        except Exception as error:  # Not a tf.train.Example: that record fails alone.
            return beam.pvalue.TaggedOutput(ERRORS, error_row(key, "read", type(error).__name__, str(error)))
        names = features[self.key_feature].bytes_list.value if self.key_feature in features else []
        key = names[0].decode("utf-8", "replace") if names and names[0] else key
        values = features[self.image_feature].bytes_list.value if self.image_feature in features else []
        if not values:
            message = f"record has no bytes feature {self.image_feature!r} (set --image_feature)"
            return beam.pvalue.TaggedOutput(ERRORS, error_row(key, "read", "MissingFeature", message))
        return key, raw_pixels_or_bytes(values[0])


def raw_pixels_or_bytes(value: bytes):
    """A 784-byte value that is not an image file is raw uint8 pixels; anything else is image file bytes."""
    if len(value) == IMAGE_PIXELS and not value.startswith(_IMAGE_SIGNATURES):
        return np.frombuffer(value, dtype=np.uint8).reshape(IMAGE_SHAPE)
    return value


class ReadTFRecords(beam.PTransform):
    """TFRecord patterns -> (records: (key, payload) per Example, error rows, ('matched', n) counts, None)."""

    def __init__(self, patterns, image_feature: str, key_feature: str):
        super().__init__()
        self.patterns = patterns
        self.image_feature = image_feature
        self.key_feature = key_feature

    def expand(self, pipeline):
        files, _ = pipeline | "MatchFiles" >> MatchFiles(self.patterns, chunk_size=1)
        read = files | "ReadRecords" >> beam.ParDo(_ReadTFRecordFiles(self.image_feature, self.key_feature)).with_outputs(
            ERRORS, main="records")
        # Records are only known once read: each record, and each unreadable rest of a file, counts as matched.
        seen = (read.records, read[ERRORS]) | "AllRead" >> beam.Flatten()
        # There are no file fingerprints to keep: --skip_scored works on image files only.
        return read.records, read[ERRORS], seen | "CountMatched" >> beam.Map(lambda _: ("matched", 1)), None
