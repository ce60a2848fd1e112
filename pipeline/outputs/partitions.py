"""Defines the output layout: date partitions, and their staging and swap into place.

    OUTPUT/dt=2026-11-22/{scores/, errors/, _inputs/, _sheet.parquet, manifest.json, report.html, _SUCCESS}
    OUTPUT/.staging/dt=2026-11-22.RUN_ID/     a run in progress (readers never look here)
    OUTPUT/.trash/dt=2026-11-22.RUN_ID/       the partition being replaced, for the instant of the swap
    OUTPUT/.locks/                            one lock per date (see housekeeping)
"""

import json
import os
import re

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"
_PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")


def parquet_writer(partition: str, folder: str, schema, tables: bool = False) -> beam.PTransform:
    """Beam's Parquet sink for one of a partition's folders (snappy, part-*.parquet): of rows, or of Arrow tables
    (each then a row group)."""
    sink = beam.io.WriteToParquetBatched if tables else beam.io.WriteToParquet
    return sink(FileSystems.join(partition, folder, "part"), schema=schema, codec="snappy", file_name_suffix=".parquet")


def partition_path(output: str, run_date: str) -> str:
    return FileSystems.join(output, f"dt={run_date}")


def staging_path(output: str, run_date: str, run_id: str) -> str:
    # The workers write here, and a cluster's workers start in folders of their own: a local path must be absolute.
    output = os.path.abspath(output) if is_local(output) else output
    return FileSystems.join(output, ".staging", f"dt={run_date}.{run_id}")


def trash_path(output: str, run_date: str, run_id: str) -> str:
    return FileSystems.join(output, ".trash", f"dt={run_date}.{run_id}")


def is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) is None


def read_manifest(partition: str) -> dict:
    """A partition's manifest.json; raises (OSError, ValueError, ...) when it is missing or not a JSON object."""
    with FileSystems.open(FileSystems.join(partition, MANIFEST), compression_type="uncompressed") as stream:
        manifest = json.loads(stream.read())
    if not isinstance(manifest, dict):
        raise ValueError(f"{partition}: {MANIFEST} is not a JSON object")
    return manifest


WHOLE_READ_BYTES = 32 << 20  # a remote Parquet file up to this size is read in one request


def read_table(path: str, columns: list = None):
    """A Parquet file, or a folder of part-*.parquet files, as one Arrow table, read through Beam's filesystems (so
    with the run's options on any of them: pyarrow's own s3:// would know no endpoint or credentials).

    Only the columns asked for are read: a local file by Arrow's own reader, another by ranged reads of the open file
    when it is larger than WHOLE_READ_BYTES (a night of 10 million scores is gigabytes, of which the report wants
    two small columns), else in one read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for name in parquet_files(path):
        with _opened(name) as stream:
            if FileSystems.get_scheme(name) is None:
                tables.append(pq.read_table(stream, columns=columns))
                continue
            head = stream.read(WHOLE_READ_BYTES + 1)
            if len(head) <= WHOLE_READ_BYTES:
                tables.append(pq.read_table(pa.BufferReader(head), columns=columns))
            else:
                tables.append(pq.ParquetFile(stream).read(columns=columns))
    if not tables:
        raise FileNotFoundError(f"no Parquet files at {path}")
    return pa.concat_tables(tables)


def iter_batches(path: str, columns: list):
    """The record batches of a folder of part-*.parquet files (or one file), `columns` only, one at a time: what a
    pass over a night's rows holds is one batch, however many rows the night has."""
    import pyarrow.parquet as pq

    for name in parquet_files(path):
        with _opened(name) as stream:
            yield from pq.ParquetFile(stream).iter_batches(columns=columns)


def parquet_files(path: str) -> list:
    """A Parquet file itself, or the part-*.parquet files of a folder (sorted)."""
    if path.endswith(".parquet"):
        return [path]
    return sorted(m.path for m in FileSystems.match([FileSystems.join(path, "*.parquet")])[0].metadata_list)


def _opened(name: str):
    """A Parquet file open for reading: a local one by Arrow, any other through Beam's filesystems."""
    import pyarrow as pa

    if FileSystems.get_scheme(name) is None:
        return pa.OSFile(name)
    return FileSystems.open(name, compression_type="uncompressed")


def complete_partitions(output: str) -> dict:
    """{run date: partition path} for every partition under `output` that has its _SUCCESS marker."""
    found = FileSystems.match([FileSystems.join(output, "dt=*", SUCCESS)])[0].metadata_list
    partitions = {}
    for metadata in found:
        folder = metadata.path[: -len(SUCCESS) - 1]
        matched = _PARTITION.match(folder.rstrip("/").rsplit("/", 1)[-1])
        if matched:
            partitions[matched.group(1)] = folder
    return partitions


def files_under(folder: str) -> list:
    """Every file under `folder`, sorted ([] when there is none). Object stores have no folders, only names that
    share a prefix; FileSystems.exists() of a "folder" there is always False, so this is how to ask."""
    if is_local(folder):
        return sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names)
    return sorted(m.path for m in FileSystems.match([FileSystems.join(folder, "**")])[0].metadata_list)


def remove(folder: str) -> None:
    """Deletes `folder` and everything under it, on any filesystem (a missing one is no error)."""
    if is_local(folder):
        if os.path.lexists(folder):
            FileSystems.delete([folder])
        return
    files = files_under(folder)
    if files:
        FileSystems.delete(files)


def is_complete(folder: str) -> bool:
    return FileSystems.exists(FileSystems.join(folder, SUCCESS))


def swap_into_place(staging: str, final: str, trash: str) -> None:
    """Replaces `final` by the complete `staging` folder, whole; the old files never mix with the new ones.

    On a local disk this is two renames, so a reader sees the old partition or the new one (a crash between them
    leaves the old one in `trash`, which the next run puts back: see housekeeping).

    Object stores have no rename of many names at once, so there the swap is in steps, each safe to be cut short:
      1. the old partition is copied whole to `trash`, its _SUCCESS last (a complete copy to return to);
      2. the old _SUCCESS goes, then the old files (from here readers that trust _SUCCESS skip the date);
      3. the new files arrive from staging, their _SUCCESS last (from here readers read the new partition);
      4. `trash` goes.
    A run killed in 2 or 3 leaves the date with no _SUCCESS and the old partition whole in `trash`; the next run,
    of any date, puts it back before it does anything else (housekeeping.clear_leftovers).
    """
    if is_local(final):
        if os.path.exists(final):
            os.makedirs(os.path.dirname(trash), exist_ok=True)
            os.rename(final, trash)
        os.rename(staging, final)
        if os.path.exists(trash):
            FileSystems.delete([trash])
        return
    old = files_under(final)
    if old and FileSystems.join(final, SUCCESS) in old:
        _in_order(FileSystems.copy, old, final, trash)
    if old:
        retract(final, old)
    move_into_place(staging, final)
    remove(trash)


def retract(final: str, files: list = None) -> None:
    """Deletes a partition on an object store: its _SUCCESS first, so no reader trusts it while the rest goes."""
    files = files_under(final) if files is None else files
    marker = FileSystems.join(final, SUCCESS)
    if marker in files:
        FileSystems.delete([marker])
    rest = [path for path in files if path != marker]
    if rest:
        FileSystems.delete(rest)


def move_into_place(folder: str, final: str) -> None:
    """Moves a complete partition folder to `final`, where there is none: one rename locally; elsewhere file by
    file with _SUCCESS last, so readers never trust a partition that is still arriving."""
    if is_local(final):
        os.rename(folder, final)
        return
    _in_order(FileSystems.rename, files_under(folder), folder, final)


def _in_order(operation, files: list, source: str, destination: str) -> None:
    """Copies or renames `files` from under `source` to under `destination`: every file but _SUCCESS in one call
    (Beam's filesystems run such a call's requests side by side), then _SUCCESS alone, once all the rest are there."""
    marker = FileSystems.join(source, SUCCESS)
    for group in ([path for path in files if path != marker], [path for path in files if path == marker]):
        if group:
            operation(group, [destination + path[len(source):] for path in group])
