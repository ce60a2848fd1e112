"""Defines fingerprints: what a run knows is scored (key, size, modification time, model version, and which run's
partition holds the scores), kept as `_inputs`, and how a later run finds among them the files --skip_scored leaves
out.

A file is skipped when a complete partition of another date scored it, with the same key, size and modification time,
under the same model version, and did not fail on it. Each run writes the fingerprints of the files it read and
carries forward those of the files it skipped as already scored (naming the run whose partition holds their scores):
so its `_inputs` is an index of everything its inputs held that is scored. A later run over the same inputs asks that
index and, for files it does not hold, only the partitions finished after it began; older partitions are never read.
A carried fingerprint counts while the run it names is still a complete partition of another date.

Fingerprints match by key (pipeline.reading.listing.key_for). Since keys write a backslash as `\\\\` (so that a key
names one file only), a file whose name holds a backslash has another key than partitions written before that change
gave it: --skip_scored does not find it in them, and scores it once more.

Earlier partitions are never loaded whole. Fingerprints are written sorted by key, one batch to a Parquet row group,
so a batch of listed keys needs, from a partition, only the row groups whose key range holds one of its keys, and the
rows found are matched with the batch by Arrow, in C++. A worker holds one batch and one partition's matching rows
at a time: its memory does not grow with the number of nights of history (only a few facts about each partition do).
"""

import datetime

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline.outputs import errors, partitions

FOLDER = "_inputs"  # in a partition, beside scores/ and errors/
SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("modified", pa.float64(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        # null: this run read the file; else the run (see run_identity) whose partition holds its scores
        pa.field("scored_by_run", pa.string(), nullable=True),
    ]
)
_MATCHED = ["key", "size_bytes", "modified"]
# Row groups of fingerprints a worker keeps in memory once asked twice (see _Partition._rows_of), at most.
KEPT_BYTES = 128 << 20
# What a run's manifest says when its _inputs index its inputs; runs before this kept only the files they read.
INDEX_FLAG = "inputs_indexed"


def table(keys: list, sizes: list, modified: list, version: str, scored_by: list = None) -> pa.Table:
    """Fingerprint rows for files (keys sorted, so that the batch is one key range); `scored_by`: None for a file
    this run reads, a run identity for one carried forward."""
    return pa.Table.from_arrays([pa.array(keys, pa.string()), pa.array(sizes, pa.int64()),
                                 pa.array(modified, pa.float64()), pa.array([version] * len(keys), pa.string()),
                                 pa.array(scored_by or [None] * len(keys), pa.string())], schema=SCHEMA)


def run_identity(manifest: dict, date: str) -> str:
    """Names the run that wrote a partition: its run id, or for a partition without one, its date."""
    return manifest.get("run_id") or f"dt={date}"


class WriteFingerprints(beam.PTransform):
    """Fingerprint tables (one per listed batch) -> Parquet in FOLDER under the given partition folder, a table a row
    group."""

    def __init__(self, partition: str):
        super().__init__()
        self.partition = partition

    def expand(self, tables):
        return tables | "WriteParquet" >> partitions.parquet_writer(self.partition, FOLDER, SCHEMA, tables=True)


class AlreadyScored:
    """Answers, batch by batch, which listed files earlier partitions scored (picklable; reads on the worker)."""

    def __init__(self, output: str, run_date: str, model_version: str, inputs: dict):
        self.output, self.run_date, self.model_version = output, run_date, model_version
        self.inputs = dict(inputs)  # what a manifest's `inputs` holds when its run read these inputs (see same_inputs)
        self._history = None

    def __getstate__(self):
        return dict(self.__dict__, _history=None)

    def scored_by(self, keys: list, sizes: list, modified: list) -> np.ndarray:
        """For each file (keys sorted): the run whose partition scored it as it is now, or None.

        Partitions are asked newest first, each only about the files no newer one has answered for. An index over
        the same inputs answers for everything finished before it began: after it, only partitions finished later
        are asked."""
        if self._history is None:
            self._history = _History(self.output, self.run_date, self.model_version, self.inputs)
        runs = np.full(len(keys), None, dtype=object)
        if not keys:
            return runs
        batch = pa.table({"key": pa.array(keys, pa.string()), "size_bytes": pa.array(sizes, pa.int64()),
                          "modified": pa.array(modified, pa.float64())})
        pending = np.arange(len(keys))
        asked, sorted_keys = batch, np.array(keys, dtype=object)
        for partition in self._history.to_ask():
            found = partition.unfailed_among(asked.column("key"), sorted_keys, self.model_version)
            found = found.filter(self._history.valid(found["scored_by_run"]))
            if not found.num_rows:
                continue
            found = found.set_column(3, "scored_by_run", pc.fill_null(found["scored_by_run"], partition.run))
            answered, by = _unchanged(asked, found)
            if answered.any():
                runs[pending[answered]] = by[answered]
                pending = pending[~answered]
                if not pending.size:
                    break
                asked, sorted_keys = batch.take(pending), sorted_keys[~answered]
        return runs


def _unchanged(batch: pa.Table, found: pa.Table) -> tuple:
    """(True for each row of `batch` that `found` holds with the same key, size and modification time; the run that
    scored it, from `found`'s scored_by_run)."""
    if pc.count_distinct(found["key"]).as_py() < found.num_rows:  # a key listed twice: let Arrow join them
        matched = batch.join(found, keys=_MATCHED, join_type="inner")
        where = pc.index_in(batch["key"], value_set=matched["key"]).to_numpy(zero_copy_only=False)
        present = ~np.isnan(where)
        by = np.full(batch.num_rows, None, dtype=object)
        by[present] = np.asarray(matched["scored_by_run"].to_pylist(), dtype=object)[where[present].astype(np.int64)]
        return present, by
    where = pc.index_in(batch["key"], value_set=found["key"]).to_numpy(zero_copy_only=False)
    present = ~np.isnan(where)
    rows = where[present].astype(np.int64)
    same = np.zeros(batch.num_rows, dtype=bool)
    same[present] = ((found["size_bytes"].to_numpy()[rows] == batch["size_bytes"].to_numpy()[present])
                     & (found["modified"].to_numpy()[rows] == batch["modified"].to_numpy()[present]))
    by = np.full(batch.num_rows, None, dtype=object)
    by[same] = np.asarray(found["scored_by_run"].to_pylist(), dtype=object)[where[same].astype(np.int64)]
    return same, by


class _History:
    """The earlier complete partitions whose fingerprints can matter (other dates, the same model version), newest
    finished first, and which runs' scores are still there to rely on."""

    def __init__(self, output: str, run_date: str, model_version: str, inputs: dict):
        self.partitions = []
        budget = [KEPT_BYTES]  # shared by the partitions
        for date, folder in partitions.complete_partitions(output).items():
            if date == run_date:
                continue  # this date is being replaced whole, so its rows cannot be relied on
            try:
                manifest = partitions.read_manifest(folder)
            except Exception:  # an older or damaged manifest: its rows' own model_version column decides
                manifest = {}
            version = manifest.get("model", {}).get("version")
            if version is None or version == model_version:  # no manifest: its rows say their version
                self.partitions.append(_Partition(folder, run_identity(manifest, date), manifest, inputs,
                                                  budget))
        self.partitions.sort(key=lambda partition: (partition.finished or 0.0, partition.run), reverse=True)
        self.runs = pa.array(sorted(partition.run for partition in self.partitions), pa.string())

    def to_ask(self):
        """The partitions to ask, newest finished first, up to and including the first index of these inputs and
        then only those finished after it began (runs of other dates at the same time)."""
        index_began = None
        for partition in self.partitions:
            if index_began is not None and partition.finished is not None and partition.finished < index_began:
                continue
            yield partition
            if index_began is None and partition.indexes_inputs:
                index_began = partition.started

    def valid(self, scored_by: pa.ChunkedArray) -> pa.ChunkedArray:
        """True for fingerprints whose scores are still in a complete partition: read by the partition's own run, or
        carried from a run whose partition is complete and not of this run's date."""
        return pc.or_(pc.is_null(scored_by), pc.is_in(scored_by, value_set=self.runs))


def _moment(text) -> float:
    """Seconds since the epoch of a manifest's ISO time, or None."""
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


class _Partition:
    """One earlier partition: when its run began and finished, whether it indexes this run's inputs, its fingerprint
    files with each row group's key range (read when first asked) and its failures (likewise)."""

    def __init__(self, folder: str, run: str, manifest: dict, inputs: dict, budget: list):
        self.folder, self.run = folder, run
        self.kept, self.asked, self.budget = {}, {}, budget  # row groups kept in memory (budget: bytes left)
        self.started, self.finished = _moment(manifest.get("started_at")), _moment(manifest.get("finished_at"))
        self.indexes_inputs = bool(manifest.get(INDEX_FLAG) and self.started is not None
                                   and self.finished is not None
                                   and same_inputs(manifest.get("inputs") or {}, inputs))
        self._groups = self._failed = None

    @property
    def groups(self) -> list:
        """(path, row group, lowest key, highest key) of each row group of the fingerprints."""
        if self._groups is None:
            self._groups = []
            for path in partitions.parquet_files(FileSystems.join(self.folder, FOLDER)):
                with FileSystems.open(path, compression_type="uncompressed") as stream:
                    metadata = pq.ParquetFile(stream).metadata
                for group in range(metadata.num_row_groups):
                    statistics = metadata.row_group(group).column(0).statistics
                    known = statistics is not None and statistics.has_min_max
                    self._groups.append((path, group, statistics.min if known else None,
                                         statistics.max if known else None))
        return self._groups

    def unfailed_among(self, keys: pa.ChunkedArray, sorted_keys: np.ndarray, model_version: str) -> pa.Table:
        """This partition's fingerprints of `keys` under this model version, minus the files it failed on.

        Only row groups whose key range holds one of the keys (`sorted_keys`, the same keys sorted) are read."""
        wanted = {}
        for path, group, lowest, highest in self.groups:
            if lowest is None or _any_between(sorted_keys, lowest, highest):
                wanted.setdefault(path, []).append(group)
        pieces = [rows.filter(pc.is_in(rows["key"], value_set=keys))
                  for path, groups in wanted.items() for rows in self._rows_of(path, groups, model_version)]
        if not pieces:
            return SCHEMA.empty_table().select(_MATCHED + ["scored_by_run"])
        found = pa.concat_tables(pieces)
        failed = self.failed_keys()
        return found.filter(pc.invert(pc.is_in(found["key"], value_set=failed))) if len(failed) else found

    def _rows_of(self, path: str, groups: list, model_version: str) -> list:
        """Each row group's fingerprints under this model version. A row group asked for a second time is kept, while
        the budget lasts: a folder's sorted batches ask each row group about once, but a table's rows come in no
        order, so each of its batches may ask them all."""
        missing = [group for group in groups if (path, group) not in self.kept]
        read = dict(zip(missing, _read_row_groups(path, missing))) if missing else {}
        found = []
        for group in groups:
            rows = self.kept.get((path, group))
            if rows is None:
                rows = read[group]
                rows = rows.filter(pc.equal(rows["model_version"], model_version)).select(
                    _MATCHED + ["scored_by_run"])
                asked = self.asked[(path, group)] = self.asked.get((path, group), 0) + 1
                if asked > 1 and rows.nbytes <= self.budget[0]:
                    self.kept[(path, group)] = rows
                    self.budget[0] -= rows.nbytes
            found.append(rows)
        return found

    def failed_keys(self) -> pa.Array:
        """Keys this partition failed on (read once: failures are few next to the files read)."""
        if self._failed is None:
            keys = []
            for path in partitions.parquet_files(FileSystems.join(self.folder, errors.FOLDER)):
                with FileSystems.open(path, compression_type="uncompressed") as stream:
                    keys.append(pq.read_table(stream, columns=["key"]).column("key").combine_chunks())
            self._failed = pa.concat_arrays(keys) if keys else pa.array([], pa.string())
        return self._failed


def same_inputs(described: dict, identity: dict) -> bool:
    """Whether a manifest's `inputs` describe the inputs `identity` names: each of its entries equal there (an entry
    that is a dict: each of its own entries), e.g. {"images": [...]} for files, or a table's file and URI column."""
    for name, value in identity.items():
        if isinstance(value, dict):
            found = described.get(name)
            if not isinstance(found, dict) or any(found.get(part) != wanted for part, wanted in value.items()):
                return False
        elif described.get(name) != value:
            return False
    return True


def _any_between(keys: np.ndarray, low: str, high: str) -> bool:
    """Whether one of `keys` (sorted) lies in [low, high]."""
    at = int(np.searchsorted(keys, low))
    return at < len(keys) and keys[at] <= high


def _read_row_groups(path: str, groups: list) -> list:
    """Each row group's fingerprints (an older partition's, which name no run, as read by its own run)."""
    if FileSystems.get_scheme(path) is None:  # a local file: Arrow's own reader, a third of the time
        found = _read_from(pq.ParquetFile(path), groups)
    else:
        with FileSystems.open(path, compression_type="uncompressed") as stream:
            found = _read_from(pq.ParquetFile(stream), groups)
    return [rows if "scored_by_run" in rows.column_names
            else rows.append_column("scored_by_run", pa.nulls(rows.num_rows, pa.string())) for rows in found]


def _read_from(parquet: pq.ParquetFile, groups: list) -> list:
    present = set(parquet.schema_arrow.names)
    columns = [name for name in SCHEMA.names if name in present]
    return [parquet.read_row_group(group, columns=columns) for group in groups]
