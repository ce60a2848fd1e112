"""Defines dead letters as written: their Parquet schema, the folder of a partition that holds them, and their writer
(the row itself, and its stages, are records every stage makes: pipeline.records)."""

import apache_beam as beam
import pyarrow as pa

from pipeline.outputs import partitions

FOLDER = "errors"  # in a partition, beside scores/

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("error_message", pa.string(), nullable=False),
    ]
)


class WriteErrors(beam.PTransform):
    """Error rows -> Parquet files in FOLDER under the given partition folder (an empty file when nothing failed, so
    readers always find the schema)."""

    def __init__(self, partition: str, table_fields: list = ()):
        super().__init__()
        self.partition = partition
        self.schema = pa.schema(list(ERRORS_SCHEMA) + list(table_fields))  # an input table's columns after its own

    def expand(self, rows):
        return rows | "WriteParquet" >> partitions.parquet_writer(self.partition, FOLDER, self.schema)
