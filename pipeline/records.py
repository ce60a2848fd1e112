"""Defines the records every stage of a run passes on, at the bottom of the house so that reading, scoring, the
outputs and the report all import them from here and no import runs back up: where an input was read (Source), a
decoded block (Block) and its results (ScoredBlock), the error row of an input that could not be scored and its
stages, and the names of the run's counts.

Nothing here imports Beam or a model: a record is plain data.
"""

import dataclasses
import typing

import numpy as np


class TableRow(typing.NamedTuple):
    """The row of an input table (--input_table) that named an input: the table file, the row's index in it (from 0),
    and the columns the caller keeps, as (name, value) pairs in --keep_columns order."""

    file: str
    index: int
    kept: tuple = ()


def table_fields(table: TableRow) -> dict:
    """A TableRow as an output row's columns: `table_row` (file and index) and each kept column by its name."""
    return {"table_row": {"file": table.file, "index": table.index}, **dict(table.kept)}


def table_row_text(where: dict, kept: list) -> str:
    """Which table row named an input and the columns it kept, as the report lists them beside its key: `row 3 of
    table.parquet; product_id=1003, title=..` (`where`: its table_row, `kept`: (name, value) pairs; a null value
    reads null). Escape it as a key."""
    beside = ", ".join(f"{name}={'null' if value is None else value}" for name, value in kept)
    return f"row {where['index']} of {where['file'].rsplit('/', 1)[-1]}" + (f"; {beside}" if beside else "")


class Source(typing.NamedTuple):
    """Where one input was read: a file as listed (text, or bytes for a local name that is not UTF-8), its size and
    modification time then, and for a TFRecord record its index and offset in the (decompressed) file; for an input a
    table named, that table's row."""

    path: typing.Union[str, bytes]
    size: int
    modified: float
    record: int = -1  # -1 for an image file
    offset: int = -1
    compression: str = "none"
    feature: str = ""  # the Example feature that held the image
    raw: bool = False  # the feature holds raw pixels, not an encoded image
    table: TableRow = None  # the table row that named the file (--input_table)


@dataclasses.dataclass
class Block:
    """Decoded images and the error rows of the inputs read with them that could not be decoded."""

    keys: list  # one per row of pixels
    pixels: np.ndarray  # uint8 (len(keys), *spec.pixel_shape)
    errors: list  # error rows (error_row)
    sources: list = dataclasses.field(default_factory=list)  # where each row was read (Source)
    # With a candidate model: the same inputs as its card's recipe gave them (its keys are those it could decode,
    # its errors those it alone could not; see pipeline.scoring.candidate).
    candidate: "Block" = None


@dataclasses.dataclass
class ScoredBlock:
    """A block's results: probabilities for the keys that scored, and an error row for every input that did not."""

    keys: list
    probabilities: np.ndarray  # float32 (len(keys), the model's number of classes)
    errors: list  # the block's read and decode errors, then the records the model failed on
    # The block's contact-sheet candidates (pipeline.outputs.sheet).
    sheet: list = dataclasses.field(default_factory=list)
    device: str = ""  # where the model scored it: CPU, or GPU:0 and the GPU's name
    # With a candidate model (pipeline.scoring.candidate): the decoded block, kept until the candidate has scored its
    # images; then the candidate's results and the block's inputs where the two disagree most.
    inputs: Block = None
    candidate: "ScoredBlock" = None
    disagreements: list = dataclasses.field(default_factory=list)
    tables: list = None  # for inputs a table named: each key's TableRow (--input_table)


# Where in the run an input failed.
STAGES = ("read", "decode", "predict")
# With a candidate model, the stage of a failure of one model alone says which (pipeline.scoring.candidate).
MODEL_ONLY, CANDIDATE_ONLY = "model:", "candidate:"


def error_row(key: str, stage: str, error_type: str, message: str, table: TableRow = None) -> dict:
    """One row of the `errors` table: which input, at which stage, what kind of error, and what exactly went wrong;
    for an input a table named, that row's table_row and kept columns too."""
    row = {"key": key, "stage": stage, "error_type": error_type, "error_message": message}
    return row if table is None else {**row, **table_fields(table)}


def failed_by(row: dict) -> tuple:
    """(whether the run's model failed on the input, whether the candidate did, the stage) of an error row."""
    stage = row["stage"]
    if stage.startswith(MODEL_ONLY):
        return True, False, stage[len(MODEL_ONLY):]
    if stage.startswith(CANDIDATE_ONLY):
        return False, True, stage[len(CANDIDATE_ONLY):]
    return True, True, stage


# The run's counts (pipeline.outputs.counts sums them). The runner's counters (Beam Metrics) are named as the counts,
# under NAMESPACE; RunInference's own metrics (num_inferences, inference_batch_latency_micro_secs, ...) share it.
NAMESPACE = "fashion_scorer"
# Counters: matched = scored + failed + skipped.
MATCHED, SKIPPED, SCORED, FAILED, DUPLICATE_KEYS = "matched", "skipped", "scored", "failed", "duplicate_keys"
# Groups, each counted by member.
CLASS, LOW_CONFIDENCE = "class", "low_confidence"
FAILED_BY_STAGE, FAILED_BY_TYPE, SKIPPED_BY_REASON = "failed_by_stage", "failed_by_type", "skipped_by_reason"
SCORED_ON = "scored_on"  # by device: CPU, GPU:0 NAME
CANDIDATE_GROUPS = "candidate"  # the prefix of the groups a candidate model's comparison counts (outputs.comparison)


def member(group: str, name: str) -> str:
    """The counter name of one member of a group: member(CLASS, "Bag") == "class/Bag"."""
    return f"{group}/{name}"
