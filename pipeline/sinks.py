"""Defines the outputs: the scores and errors Parquet schemas and writers, the run counts, and the manifest."""

import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from model.vocabulary import CLASS_NAMES, NUM_CLASSES
from pipeline.errors import ERRORS_SCHEMA
from pipeline.model_handler import ScoredBlock

_LABELS = np.array(CLASS_NAMES, dtype=object)


def scores_schema(card: dict) -> pa.Schema:
    """One row per scored input; the file metadata carries the class names and the whole model card."""
    return pa.schema(
        [
            pa.field("key", pa.string(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("label_index", pa.int32(), nullable=False),
            pa.field("confidence", pa.float32(), nullable=False),
            pa.field("probabilities", pa.list_(pa.float32()), nullable=False),
            pa.field("model_version", pa.string(), nullable=False),
        ],
        metadata={"class_names": json.dumps(list(CLASS_NAMES)), "model_card": json.dumps(card, sort_keys=True)},
    )


def to_table(batch: ScoredBlock, schema: pa.Schema, version: str) -> pa.Table:
    """A ScoredBlock as a pyarrow Table, built column by column (no Python object per row except the label)."""
    probabilities = np.ascontiguousarray(batch.probabilities, dtype=np.float32)
    index = probabilities.argmax(axis=1).astype(np.int32)
    count = len(batch.keys)
    offsets = pa.array(np.arange(0, (count + 1) * NUM_CLASSES, NUM_CLASSES, dtype=np.int32))
    columns = [
        pa.array(batch.keys, type=pa.string()),
        pa.array(_LABELS[index], type=pa.string()),
        pa.array(index),
        pa.array(probabilities[np.arange(count), index]),
        pa.ListArray.from_arrays(offsets, pa.array(probabilities.ravel())),
        pa.array([version] * count, type=pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


class WriteScores(beam.PTransform):
    """ScoredBlock -> `scores` Parquet files (snappy) under the given folder."""

    def __init__(self, folder: str, card: dict, version: str):
        super().__init__()
        self.folder = folder
        self.schema = scores_schema(card)
        self.version = version

    def expand(self, batches):
        schema, version = self.schema, self.version
        return (batches
                | "ToArrow" >> beam.Map(to_table, schema, version)
                | "WriteParquet" >> beam.io.WriteToParquetBatched(
                    FileSystems.join(self.folder, "part"), schema=self.schema, codec="snappy",
                    file_name_suffix=".parquet"))


class WriteErrors(beam.PTransform):
    """Error rows -> `errors` Parquet files (an empty file when nothing failed, so readers always find the schema)."""

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def expand(self, rows):
        return rows | "WriteParquet" >> beam.io.WriteToParquet(
            FileSystems.join(self.folder, "part"), schema=ERRORS_SCHEMA, codec="snappy", file_name_suffix=".parquet")


def block_counts(block: ScoredBlock, low_confidence: float, count_matched: bool = False):
    """Yields (counter name, amount) for a scored block: scored, per class, low-confidence per class, failed by stage
    and type; and matched, for inputs only known once read (TFRecords)."""
    index = block.probabilities.argmax(axis=1)
    confident = block.probabilities.max(axis=1) >= low_confidence
    if count_matched:
        yield "matched", len(block.keys) + len(block.errors)
    yield "scored", len(block.keys)
    for label, amount in zip(*np.unique(index, return_counts=True)):
        yield f"class/{CLASS_NAMES[label]}", int(amount)
    for label, amount in zip(*np.unique(index[~confident], return_counts=True)):
        yield f"low_confidence/{CLASS_NAMES[label]}", int(amount)
    yield "failed", len(block.errors)
    for row in block.errors:
        yield f"failed_by_stage/{row['stage']}", 1
        yield f"failed_by_type/{row['error_type']}", 1


class CountDuplicateKeys(beam.PTransform):
    """ScoredBlocks -> ("duplicate_keys", n) for every key scored n + 1 times (TFRecord keys come from a feature)."""

    def expand(self, blocks):
        return (blocks
                | "Keys" >> beam.FlatMap(lambda block: block.keys)
                | "CountEach" >> beam.combiners.Count.PerElement()
                | "Repeats" >> beam.FlatMap(lambda counted: [("duplicate_keys", counted[1] - 1)] if counted[1] > 1
                                            else []))


class SumCounts(beam.CombineFn):
    """Sums (counter name, amount) pairs into one dict, in a single combine (cheaper than per-key sums here)."""

    def create_accumulator(self):
        return {}

    def add_input(self, sums, pair):
        name, amount = pair
        sums[name] = sums.get(name, 0) + amount
        return sums

    def merge_accumulators(self, accumulators):
        merged = {}
        for sums in accumulators:
            for name, amount in sums.items():
                merged[name] = merged.get(name, 0) + amount
        return merged

    def extract_output(self, sums):
        return sums


def _write_json(counts: dict, path: str) -> None:
    with FileSystems.create(path) as stream:
        stream.write(json.dumps(counts, sort_keys=True).encode())


class WriteCounts(beam.PTransform):
    """(counter name, amount) pairs -> one JSON object of sums, written as a single file by a single worker."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, pairs):
        return (pairs
                | "Sum" >> beam.CombineGlobally(SumCounts())
                | "WriteJson" >> beam.Map(_write_json, self.path))


def nest_counts(flat: dict) -> dict:
    """{'class/Bag': 3, 'scored': 9} -> {'class': {'Bag': 3}, 'scored': 9}."""
    nested = {}
    for name, amount in sorted(flat.items()):
        group, _, member = name.partition("/")
        if member:
            nested.setdefault(group, {})[member] = amount
        else:
            nested[name] = amount
    return nested
