"""Defines the scores output: its Parquet schema (with the class names and model card in the file metadata), a
ScoredBlock as a table of rows, and the writer."""

import json

import apache_beam as beam
import numpy as np
import pyarrow as pa

from model.vocabulary import CLASS_NAMES, NUM_CLASSES
from pipeline import partitions
from pipeline.model_handler import ScoredBlock

FOLDER = "scores"  # in a partition
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
    """ScoredBlocks -> Parquet files (snappy) in FOLDER under the given partition folder."""

    def __init__(self, partition: str, card: dict, version: str):
        super().__init__()
        self.partition = partition
        self.schema = scores_schema(card)
        self.version = version

    def expand(self, batches):
        schema, version = self.schema, self.version
        return (batches
                | "ToArrow" >> beam.Map(to_table, schema, version)
                | "WriteParquet" >> partitions.parquet_writer(self.partition, FOLDER, self.schema, tables=True))
