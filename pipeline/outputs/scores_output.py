"""Defines the scores output: its Parquet schema (with the class names and model card in the file metadata), a
ScoredBlock as a table of rows, and the writer."""

import json

import apache_beam as beam
import numpy as np
import pyarrow as pa

from model.cards import card_spec
from pipeline.outputs import partitions
from pipeline.records import ScoredBlock

FOLDER = "scores"  # in a partition
CANDIDATE_FOLDER = "candidate"  # a candidate model's rows (--candidate_model), in the same schema


def scores_schema(card: dict, table_fields: list = ()) -> pa.Schema:
    """One row per scored input, `probabilities` in the card's class order, then `table_fields` (an input table's
    table_row and kept columns, pipeline.reading.tables); the file metadata carries the class names and the whole
    model card."""
    return pa.schema(
        [
            pa.field("key", pa.string(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("label_index", pa.int32(), nullable=False),
            pa.field("confidence", pa.float32(), nullable=False),
            pa.field("probabilities", pa.list_(pa.float32()), nullable=False),
            pa.field("model_version", pa.string(), nullable=False),
            *table_fields,
        ],
        metadata={"class_names": json.dumps(list(card_spec.spec_from_card(card).class_names), ensure_ascii=False),
                  "model_card": json.dumps(card, sort_keys=True)},
    )


def to_table(batch: ScoredBlock, schema: pa.Schema, version: str, labels: np.ndarray) -> pa.Table:
    """A ScoredBlock as a pyarrow Table, built column by column (no Python object per row except the label);
    `labels` holds the class names as an object array."""
    probabilities = np.ascontiguousarray(batch.probabilities, dtype=np.float32)
    index = probabilities.argmax(axis=1).astype(np.int32)
    count, classes = len(batch.keys), len(labels)
    offsets = pa.array(np.arange(0, (count + 1) * classes, classes, dtype=np.int32))
    columns = [
        pa.array(batch.keys, type=pa.string()),
        pa.array(labels[index], type=pa.string()),
        pa.array(index),
        pa.array(probabilities[np.arange(count), index]),
        pa.ListArray.from_arrays(offsets, pa.array(probabilities.ravel())),
        pa.array([version] * count, type=pa.string()),
    ]
    columns += table_columns(batch.tables, list(schema)[len(columns):], count)
    return pa.Table.from_arrays(columns, schema=schema)


def table_columns(tables: list, fields, count: int) -> list:
    """The columns of `fields` (table_row, then kept columns in order) for rows named by `tables` (their TableRows)."""
    if not len(fields):
        return []
    tables = tables or [None] * count
    where = pa.StructArray.from_arrays(
        [pa.array([table.file if table else None for table in tables], pa.string()),
         pa.array([table.index if table else None for table in tables], pa.int64())],
        fields=list(fields[0].type), mask=pa.array([table is None for table in tables], pa.bool_()))
    kept = [pa.array([table.kept[at][1] if table else None for table in tables], type=field.type)
            for at, field in enumerate(fields[1:])]
    return [where, *kept]


class WriteScores(beam.PTransform):
    """ScoredBlocks -> Parquet files (snappy) in `folder` (FOLDER, or CANDIDATE_FOLDER) under the given partition
    folder."""

    def __init__(self, partition: str, card: dict, version: str, folder: str = FOLDER, table_fields: list = ()):
        super().__init__()
        self.partition = partition
        self.folder = folder
        self.schema = scores_schema(card, table_fields)
        self.version = version
        self.labels = np.array(card_spec.spec_from_card(card).class_names, dtype=object)

    def expand(self, batches):
        schema, version, labels = self.schema, self.version, self.labels
        return (batches
                | "ToArrow" >> beam.Map(to_table, schema, version, labels)
                | "WriteParquet" >> partitions.parquet_writer(self.partition, self.folder, self.schema, tables=True))
