"""Defines dead letters: the row that records an input which could not be scored, and its Parquet schema."""

import pyarrow as pa

# Where in the run an input failed.
STAGES = ("read", "decode", "predict")

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
