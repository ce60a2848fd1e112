"""Defines dead letters: the row that records an input which could not be scored, its Parquet schema, the folder of
a partition that holds them, and their writer."""

import apache_beam as beam
import pyarrow as pa

from pipeline.outputs import partitions

FOLDER = "errors"  # in a partition, beside scores/

# Where in the run an input failed.
STAGES = ("read", "decode", "predict")
# With a candidate model, the stage of a failure of one model alone says which (pipeline.scoring.candidate).
MODEL_ONLY, CANDIDATE_ONLY = "model:", "candidate:"

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("error_message", pa.string(), nullable=False),
    ]
)


def error_row(key: str, stage: str, error_type: str, message: str) -> dict:
    """One row of the `errors` table: which input, at which stage, what kind of error, and what exactly went wrong."""
    return {"key": key, "stage": stage, "error_type": error_type, "error_message": message}


def failed_by(row: dict) -> tuple:
    """(whether the run's model failed on the input, whether the candidate did, the stage) of an error row."""
    stage = row["stage"]
    if stage.startswith(MODEL_ONLY):
        return True, False, stage[len(MODEL_ONLY):]
    if stage.startswith(CANDIDATE_ONLY):
        return False, True, stage[len(CANDIDATE_ONLY):]
    return True, True, stage


class WriteErrors(beam.PTransform):
    """Error rows -> Parquet files in FOLDER under the given partition folder (an empty file when nothing failed, so
    readers always find the schema)."""

    def __init__(self, partition: str):
        super().__init__()
        self.partition = partition

    def expand(self, rows):
        return rows | "WriteParquet" >> partitions.parquet_writer(self.partition, FOLDER, ERRORS_SCHEMA)
