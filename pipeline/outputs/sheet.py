"""Defines the report's contact sheet as the run gathers it: the least confident scored inputs, each with where it
was read (the file as listed, and for a record its place in that file, with the file's size and modification time)
and the hash of the model input it gave; they are written to _sheet.parquet in the partition, so the report shows
only what the run itself scored and never treats a key as a path.

A key is the input's name, and for a TFRecord it is whatever the record's key feature says: `/etc/passwd`,
`../private/photo.png`. The report reads a picture back only from the place recorded here, checks the file's size
and modification time, and shows it only if it preprocesses to the same model input (by hash), so a file changed or
a link re-pointed since the run shows as changed, not as somebody else's picture.
"""

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from model.input_hashes import shape_dtype_and_pixels_sha256
from pipeline import options
from pipeline.records import Source, table_fields

FILE = "_sheet.parquet"  # in a partition; readers of the tables skip names that start with "_"
SHEET_IMAGES = options.REPORT_IMAGES  # candidates a run keeps: the report shows up to this many


# Where an input was read (pipeline.records.Source), as columns; for an input a table named, also its table_row and
# its kept columns as text (name, value) pairs, which the report shows beside the key (null for other inputs).
SOURCE_COLUMNS = [
    pa.field("path", pa.binary(), nullable=False),
    pa.field("size", pa.int64(), nullable=False),
    pa.field("modified", pa.float64(), nullable=False),
    pa.field("record", pa.int64(), nullable=False),
    pa.field("offset", pa.int64(), nullable=False),
    pa.field("compression", pa.string(), nullable=False),
    pa.field("feature", pa.string(), nullable=False),
    pa.field("raw", pa.bool_(), nullable=False),
    pa.field("table_row", pa.struct([pa.field("file", pa.string()), pa.field("index", pa.int64())])),
    pa.field("kept", pa.list_(pa.struct([pa.field("name", pa.string()), pa.field("value", pa.string())]))),
]
SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    pa.field("label_index", pa.int32(), nullable=False),
    pa.field("confidence", pa.float32(), nullable=False),
    pa.field("probabilities", pa.list_(pa.float32()), nullable=False),
    pa.field("input_sha256", pa.string(), nullable=False),
    *SOURCE_COLUMNS,
])


def candidates(keys: list, sources: list, pixels: np.ndarray, probabilities: np.ndarray, skip=(),
               count: int = SHEET_IMAGES) -> list:
    """Sheet rows for the `count` least confident rows of one scored block, leaving out the rows in `skip` (the
    model failed on them) and rows read from no Source. Only the chosen rows are touched: the block is not copied."""
    usable = [at for at in range(len(keys)) if at not in skip and at < len(sources) and sources[at] is not None]
    if not usable:
        return []
    confidence = probabilities[usable].max(axis=1)
    chosen = np.argpartition(confidence, count - 1)[:count] if count < len(usable) else range(len(usable))
    return [_row(keys[usable[at]], sources[usable[at]], pixels[usable[at]], probabilities[usable[at]])
            for at in chosen]


def _row(key: str, source: Source, pixels: np.ndarray, probabilities: np.ndarray) -> dict:
    index = int(probabilities.argmax())
    return {"key": key, "label_index": index, "confidence": float(probabilities[index]),
            "probabilities": [float(value) for value in probabilities], "input_sha256": shape_dtype_and_pixels_sha256(pixels),
            **source_fields(source)}


def source_fields(source: Source) -> dict:
    """A Source as a row's columns (SOURCE_COLUMNS), its path as bytes."""
    path = source.path if isinstance(source.path, bytes) else source.path.encode("utf-8", "surrogateescape")
    table = source.table
    return {"path": path, "size": int(source.size), "modified": float(source.modified), "record": source.record,
            "offset": source.offset, "compression": source.compression, "feature": source.feature,
            "raw": source.raw, "table_row": table_fields(table)["table_row"] if table else None,
            "kept": [{"name": name, "value": None if value is None else str(value)} for name, value in table.kept]
            if table else None}


def order(row: dict) -> tuple:
    """Least confident first, then by key: the same rows whatever the bundles were."""
    return row["confidence"], row["key"]


def _block_candidates(block) -> list:
    return block.sheet


def _write(rows: list, path: str) -> None:
    """The sheet as one small Parquet file, written by one worker (a retry writes the same file again)."""
    import pyarrow.parquet as pq

    with FileSystems.create(path) as stream:
        pq.write_table(pa.Table.from_pylist(sorted(rows, key=order), schema=SCHEMA), stream)


class WriteSheet(beam.PTransform):
    """ScoredBlocks -> the run's SHEET_IMAGES least confident candidates, as FILE in the given folder."""

    def __init__(self, folder: str):
        super().__init__()
        self.path = FileSystems.join(folder, FILE)

    def expand(self, scored):
        return (scored
                | "Candidates" >> beam.FlatMap(_block_candidates)
                | "LeastConfident" >> beam.combiners.Top.Smallest(SHEET_IMAGES, key=order)
                | "WriteParquet" >> beam.Map(_write, self.path))
