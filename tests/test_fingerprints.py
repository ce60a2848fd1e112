"""Tests --skip_scored's lookup against the history: on thousands of fingerprints in several partitions it skips
exactly what the earlier behaviour (every partition's fingerprints in one set) skipped, batch by batch."""

import json
import os
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.outputs import fingerprints
from pipeline.reading import matching
from pipeline.outputs.errors import ERRORS_SCHEMA

pytestmark = pytest.mark.clock  # also run with the clock moved to another day and zone: make test-clock


def _reference(partitions: dict, run_date: str, version: str) -> set:
    """The earlier behaviour: (key, size, mtime) scored by `version` in complete partitions of other dates, minus
    the files each of those partitions failed on."""
    seen = set()
    for date, (rows, failed, complete) in partitions.items():
        if date != run_date and complete:
            seen.update((key, size, modified) for key, size, modified, row_version in rows
                        if row_version == version and key not in failed)
    return seen


def _write(output, date, rows, failed, complete, manifest_version):
    folder = os.path.join(output, f"dt={date}")
    os.makedirs(os.path.join(folder, "_inputs"))
    os.makedirs(os.path.join(folder, "errors"))
    rows = sorted(rows)
    with pq.ParquetWriter(os.path.join(folder, "_inputs", "part-0.parquet"), fingerprints.SCHEMA) as writer:
        for start in range(0, len(rows), 700):  # many row groups, each a key range
            chunk = rows[start:start + 700]
            writer.write_table(pa.Table.from_pylist(
                [dict(zip(fingerprints.SCHEMA.names, row)) for row in chunk], schema=fingerprints.SCHEMA))
    errors = pa.Table.from_pylist([{"key": key, "stage": "decode", "error_type": "truncated", "error_message": "x"}
                                   for key in sorted(failed)], schema=ERRORS_SCHEMA)
    pq.write_table(errors, os.path.join(folder, "errors", "part-0.parquet"))
    with open(os.path.join(folder, "manifest.json"), "w") as stream:
        json.dump({"model": {"version": manifest_version}}, stream)
    if complete:
        open(os.path.join(folder, "_SUCCESS"), "w").close()


def test_lookup_skips_exactly_what_the_whole_history_in_one_set_skipped(tmp_path):
    generator = random.Random(11)
    output, version = str(tmp_path / "out"), "1.0.0+abc"
    files = [(f"/data/images/{folder:02d}/{index:05d}.png", 1000 + index, 1.7e9 + index)
             for folder in range(6) for index in range(800)]
    history = {}
    for date, manifest_version, complete in (("2026-11-01", version, True), ("2026-11-02", version, True),
                                             ("2026-11-03", "2.0.0+def", True), ("2026-11-04", version, False),
                                             ("2026-11-10", version, True)):
        rows = []
        for key, size, modified in generator.sample(files, 2500):
            change = generator.random()
            if change < 0.1:
                size += 1  # the file has changed size since
            elif change < 0.2:
                modified += 1.5  # or was touched since
            rows.append((key, size, modified, manifest_version))
        if date == "2026-11-02":  # a key written twice, once changed (first) and once as it is
            rows += [(key, size - 7, modified, row_version) for key, size, modified, row_version
                     in generator.sample(rows, 100)]
        failed = {row[0] for row in generator.sample(rows, 150)}  # failed there: to be tried again
        history[date] = (rows, failed, complete)
        _write(output, date, rows, failed, complete, manifest_version)
    expected = _reference(history, "2026-11-10", version)  # the run's own date does not count
    lookup = fingerprints.AlreadyScored(output, "2026-11-10", version, {"images": ["/data/images"]})
    ordered = sorted(files)
    found = set()
    for start in range(0, len(ordered), matching.LOOKUP_BATCH // 8):
        batch = ordered[start:start + matching.LOOKUP_BATCH // 8]
        runs = lookup.scored_by([k for k, _, _ in batch], [s for _, s, _ in batch], [m for _, _, m in batch])
        found.update(entry for entry, run in zip(batch, runs) if run is not None)
    assert found == expected & set(files) and 500 < len(found) < len(files)
    new_model = fingerprints.AlreadyScored(output, "2026-11-10", "9.9.9+new", {"images": ["/data/images"]})
    assert not new_model.scored_by([k for k, _, _ in ordered[:100]], [s for _, s, _ in ordered[:100]],
                              [m for _, _, m in ordered[:100]]).any()


def test_lookup_with_no_history_skips_nothing(tmp_path):
    lookup = fingerprints.AlreadyScored(str(tmp_path / "nothing-yet"), "2026-11-10", "1.0.0+abc",
                                        {"images": ["/a.png"]})
    assert lookup.scored_by(["/a.png"], [1], [2.0]).tolist() == [None]
    assert isinstance(lookup.scored_by([], [], []), np.ndarray)


def test_row_groups_asked_again_are_kept_in_memory_within_the_budget(tmp_path, monkeypatch):
    """A table's batches come in no order, so each asks every row group: one asked twice is kept (the lookup then
    answers with the partition's file gone), and none is kept past the budget."""
    output, version = str(tmp_path / "out"), "1.0.0+abc"
    rows = [(f"/data/{index:05d}.png", 100 + index, 1.7e9, version) for index in range(2800)]
    _write(output, "2026-11-01", rows, set(), True, version)
    keys = [f"/data/{index:05d}.png" for index in range(0, 2800, 7)]  # every row group asked
    ask = [keys, [100 + int(key[6:11]) for key in keys], [1.7e9] * len(keys)]
    lookup = fingerprints.AlreadyScored(output, "2026-11-10", version, {"images": ["/data"]})
    assert all(lookup.scored_by(*ask))
    assert all(lookup.scored_by(*ask))  # asked twice: kept
    os.remove(os.path.join(output, "dt=2026-11-01", "_inputs", "part-0.parquet"))
    assert all(lookup.scored_by(*ask))
    monkeypatch.setattr(fingerprints, "KEPT_BYTES", 0)
    nothing_kept = fingerprints.AlreadyScored(output, "2026-11-10", version, {"images": ["/data"]})
    _write(output, "2026-11-02", rows, set(), True, version)
    assert all(nothing_kept.scored_by(*ask)) and all(nothing_kept.scored_by(*ask))
    os.remove(os.path.join(output, "dt=2026-11-02", "_inputs", "part-0.parquet"))
    with pytest.raises(FileNotFoundError):  # read again each time
        nothing_kept.scored_by(*ask)
