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


def read_table(path: str, columns: list = None):
    """A Parquet file, or a folder of part-*.parquet files, as one Arrow table, read through Beam's filesystems (so
    with the run's options on any of them: pyarrow's own s3:// would know no endpoint or credentials)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.endswith(".parquet"):
        files = [path]
    else:
        files = sorted(m.path for m in FileSystems.match([FileSystems.join(path, "*.parquet")])[0].metadata_list)
    tables = []
    for name in files:
        with FileSystems.open(name, compression_type="uncompressed") as stream:
            tables.append(pq.read_table(pa.BufferReader(stream.read()), columns=columns))
    if not tables:
        raise FileNotFoundError(f"no Parquet files at {path}")
    return pa.concat_tables(tables)


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


def swap_into_place(staging: str, final: str, trash: str) -> None:
    """Replaces `final` by the complete `staging` folder, whole; the old files never mix with the new ones.

    On a local disk this is two renames, so a reader sees the old partition or the new one (a crash between them
    leaves the old one in `trash`, which the next run puts back: see housekeeping). Object stores have no folder
    rename: there the old _SUCCESS goes first and the new one (already in staging) arrives last, so readers that wait
    for _SUCCESS never read a mix either.
    """
    if is_local(final):
        if os.path.exists(final):
            os.makedirs(os.path.dirname(trash), exist_ok=True)
            os.rename(final, trash)
        os.rename(staging, final)
        if os.path.exists(trash):
            FileSystems.delete([trash])
        return
    old = [m.path for m in FileSystems.match([FileSystems.join(final, "**")])[0].metadata_list]
    marker = FileSystems.join(final, SUCCESS)
    if marker in old:
        FileSystems.delete([marker])  # first, so readers stop trusting the partition before anything else changes
    FileSystems.delete([p for p in old if p != marker])
    move_into_place(staging, final)


def move_into_place(folder: str, final: str) -> None:
    """Moves a complete partition folder to `final`, where there is none: one rename locally; elsewhere file by
    file with _SUCCESS last, so readers never trust a partition that is still arriving."""
    if is_local(final):
        os.rename(folder, final)
        return
    files = sorted(m.path for m in FileSystems.match([FileSystems.join(folder, "**")])[0].metadata_list)
    files.sort(key=lambda path: path.endswith("/" + SUCCESS))  # the marker moves last
    FileSystems.rename(files, [final + path[len(folder):] for path in files])
