"""Defines fingerprints: what a run read (key, size, modification time, model version), kept as `_inputs`, and how a
later run finds among them the files --skip_scored leaves out.

A file is skipped when a complete partition of another date read it, with the same key, size and modification time,
under the same model version, and did not fail on it. Earlier partitions are never loaded whole. Fingerprints are
written sorted by key, one batch to a Parquet row group, so a batch of listed keys needs, from each earlier partition
in turn, only the row groups whose key range overlaps its own; they are joined with the batch by Arrow, in C++. A
worker holds one batch and one partition's matching rows at a time: its memory does not grow with the number of
nights of history (its time does: each night is one more partition to look into, a few milliseconds a batch).
"""

import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline import partitions

INPUTS = partitions.INPUTS  # the folder of a partition that holds its fingerprints
SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("modified", pa.float64(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
    ]
)
_MATCHED = ["key", "size_bytes", "modified"]


def table(keys: list, sizes: list, modified: list, version: str) -> pa.Table:
    """Fingerprint rows for files (keys sorted, so that the batch is one key range)."""
    return pa.Table.from_arrays([pa.array(keys, pa.string()), pa.array(sizes, pa.int64()),
                                 pa.array(modified, pa.float64()), pa.array([version] * len(keys), pa.string())],
                                schema=SCHEMA)


class WriteFingerprints(beam.PTransform):
    """Fingerprint tables (one per listed batch) -> `_inputs` Parquet under the given folder, a table a row group."""

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def expand(self, tables):
        return tables | "WriteParquet" >> beam.io.WriteToParquetBatched(
            FileSystems.join(self.folder, "part"), schema=SCHEMA, codec="snappy", file_name_suffix=".parquet")


class AlreadyScored:
    """Answers, batch by batch, which listed files earlier partitions scored (picklable; reads on the worker)."""

    def __init__(self, output: str, run_date: str, model_version: str):
        self.output, self.run_date, self.model_version = output, run_date, model_version
        self._history = None

    def __getstate__(self):
        return {"output": self.output, "run_date": self.run_date, "model_version": self.model_version,
                "_history": None}

    def mask(self, keys: list, sizes: list, modified: list) -> np.ndarray:
        """True for each file (keys sorted) that a complete partition of another date scored, unchanged."""
        if self._history is None:
            self._history = _history(self.output, self.run_date, self.model_version)
        skip = np.zeros(len(keys), dtype=bool)
        if not keys:
            return skip
        batch = pa.table({"key": pa.array(keys, pa.string()), "size_bytes": pa.array(sizes, pa.int64()),
                          "modified": pa.array(modified, pa.float64())})
        for partition in self._history:
            found = partition.unfailed_between(keys[0], keys[-1], self.model_version)
            if found.num_rows:
                matched = batch.join(found, keys=_MATCHED, join_type="inner").column("key")
                skip |= pc.is_in(batch.column("key"), value_set=matched).to_numpy(zero_copy_only=False)
        return skip


def _history(output: str, run_date: str, model_version: str) -> list:
    """The earlier complete partitions whose fingerprints can matter: other dates, the same model version."""
    found = []
    for date, folder in sorted(partitions.complete_partitions(output).items()):
        if date == run_date:
            continue  # this date is being replaced whole, so its rows cannot be relied on
        version = _manifest_model_version(folder)
        if version is None or version == model_version:  # no manifest: its rows say their version
            found.append(_Partition(folder))
    return found


def _manifest_model_version(folder: str):
    try:
        with FileSystems.open(FileSystems.join(folder, "manifest.json"), compression_type="uncompressed") as stream:
            return json.loads(stream.read())["model"]["version"]
    except Exception:  # an older or damaged manifest: fall back to the rows' own model_version column
        return None


class _Partition:
    """One earlier partition: its fingerprint files with each row group's key range, and (once asked) its failures."""

    def __init__(self, folder: str):
        self.groups = []  # (path, row group, lowest key, highest key)
        for path in _parquet_files(FileSystems.join(folder, INPUTS)):
            with FileSystems.open(path, compression_type="uncompressed") as stream:
                metadata = pq.ParquetFile(stream).metadata
            for group in range(metadata.num_row_groups):
                statistics = metadata.row_group(group).column(0).statistics
                known = statistics is not None and statistics.has_min_max
                self.groups.append((path, group, statistics.min if known else None,
                                    statistics.max if known else None))
        self.errors_folder = FileSystems.join(folder, "errors")
        self._failed = None

    def unfailed_between(self, low: str, high: str, model_version: str) -> pa.Table:
        """Fingerprints of this model version with keys in [low, high], minus the files this partition failed on."""
        wanted = {}
        for path, group, lowest, highest in self.groups:
            if lowest is None or (lowest <= high and highest >= low):
                wanted.setdefault(path, []).append(group)
        pieces = []
        for path, groups in wanted.items():
            with FileSystems.open(path, compression_type="uncompressed") as stream:
                rows = pq.ParquetFile(stream).read_row_groups(groups, columns=SCHEMA.names)
            keep = pc.and_(pc.and_(pc.greater_equal(rows["key"], low), pc.less_equal(rows["key"], high)),
                           pc.equal(rows["model_version"], model_version))
            pieces.append(rows.filter(keep).select(_MATCHED))
        if not pieces:
            return pa.table({"key": pa.array([], pa.string()), "size_bytes": pa.array([], pa.int64()),
                             "modified": pa.array([], pa.float64())})
        found = pa.concat_tables(pieces)
        failed = self.failed_keys()
        return found.filter(pc.invert(pc.is_in(found["key"], value_set=failed))) if len(failed) else found

    def failed_keys(self) -> pa.Array:
        """Keys this partition failed on (read once: failures are few next to the files read)."""
        if self._failed is None:
            keys = []
            for path in _parquet_files(self.errors_folder):
                with FileSystems.open(path, compression_type="uncompressed") as stream:
                    keys.append(pq.read_table(stream, columns=["key"]).column("key").combine_chunks())
            self._failed = pa.concat_arrays(keys) if keys else pa.array([], pa.string())
        return self._failed


def _parquet_files(folder: str) -> list:
    return sorted(m.path for m in FileSystems.match([FileSystems.join(folder, "*.parquet")])[0].metadata_list)
