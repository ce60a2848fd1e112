"""Tests nightly runs: date partitions replaced whole, killed runs, incremental --skip_scored, and the exit policy."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pipeline import score
from tests import samples
from tests.helpers import REPO_ROOT, SAMPLE_INPUTS, read_rows

pytestmark = pytest.mark.clock  # also run with the clock moved to another day and zone: make test-clock

BROKEN = os.path.join(SAMPLE_INPUTS, "images", "broken")


def _images(test_split, folder, start, count):
    names = [samples.file_name(i, test_split.labels[i]) for i in range(start, start + count)]
    return samples.write_pngs(test_split.images[start:start + count], str(folder), names)


def _run(*argv):
    return score.run([*map(str, argv), "--progress_seconds", "0"])


def _manifest(output, date):
    with open(os.path.join(output, f"dt={date}", "manifest.json"), encoding="utf-8") as stream:
        return json.load(stream)


def _files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def test_rerun_of_a_date_replaces_the_partition_whole(test_split, tiny_model_path, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    _images(test_split, inputs, 0, 30)
    assert _run("--input", inputs, "--output", out, "--model", tiny_model_path, "--run_date", "2026-11-20") == 0
    partition = out / "dt=2026-11-20"
    # An earlier run with more shards left one that the new run does not write: it must not survive the rerun.
    stale = partition / "scores" / "part-00001-of-00002.parquet"
    shutil.copy(next((partition / "scores").glob("*.parquet")), stale)
    for path in inputs.glob("test-0001*.png"):
        path.unlink()
    assert _run("--input", inputs, "--output", out, "--model", tiny_model_path, "--run_date", "2026-11-20") == 0
    manifest = _manifest(out, "2026-11-20")
    assert (partition / "_SUCCESS").read_text() == manifest["run_id"]
    assert not stale.exists()
    assert sorted(os.listdir(out)) == [".locks", ".staging", ".trash", "dt=2026-11-20"]
    assert len(read_rows(str(partition / "scores"))) == manifest["counts"]["scored"] == 20
    assert not os.listdir(out / ".staging") and not os.listdir(out / ".trash")


def _wait_for_staging(out, process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        staging = out / ".staging"
        if staging.exists() and any(os.scandir(staging)):
            return
        time.sleep(0.05)
    raise AssertionError("the run never started writing its staging folder")


def test_killed_run_leaves_the_previous_partition_untouched(test_split, tiny_model_path, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    _images(test_split, inputs, 0, 20)
    assert _run("--input", inputs, "--output", out, "--model", tiny_model_path, "--run_date", "2026-11-21") == 0
    partition = out / "dt=2026-11-21"
    before = {name: (partition / name).read_bytes() for name in _files(partition)}
    _images(test_split, inputs, 20, 3000)
    command = [sys.executable, "-m", "pipeline.score", "--input", str(inputs), "--output", str(out), "--model",
               tiny_model_path, "--run_date", "2026-11-21", "--progress_seconds", "0"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_staging(out, process)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert {name: (partition / name).read_bytes() for name in _files(partition)} == before
    assert [p for p in _files(out) if p.endswith("_SUCCESS")] == ["dt=2026-11-21/_SUCCESS"]


def test_incremental_run_scores_only_new_and_changed_files(test_split, tiny_model_path, shipped_model, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    old = _images(test_split, inputs, 0, 40)
    shutil.copy(os.path.join(BROKEN, "notes.jpg"), inputs / "notes.jpg")
    assert _run("--input", inputs, "--output", out, "--model", tiny_model_path, "--run_date", "2026-11-20",
                "--skip_scored", "--max_error_rate", "0.5") == 0
    assert _manifest(out, "2026-11-20")["counts"]["scored"] == 40
    new = _images(test_split, inputs, 100, 10)
    os.utime(old[0], (time.time() + 5, time.time() + 5))  # a changed file is scored again
    assert _run("--input", inputs, "--output", out, "--model", tiny_model_path, "--run_date", "2026-11-21",
                "--skip_scored", "--max_error_rate", "0.5") == 0
    counts = _manifest(out, "2026-11-21")["counts"]
    assert (counts["matched"], counts["skipped"], counts["scored"], counts["failed"]) == (51, 39, 11, 1)
    scored = {row["key"] for row in read_rows(str(out / "dt=2026-11-21" / "scores"))}
    assert scored == set(new) | {old[0]}
    # Another model version has scored nothing yet, so it scores everything.
    assert _run("--input", inputs, "--output", out, "--model", shipped_model, "--run_date", "2026-11-22",
                "--skip_scored", "--max_error_rate", "0.5") == 0
    counts = _manifest(out, "2026-11-22")["counts"]
    assert (counts["skipped"], counts["scored"], counts["failed"]) == (0, 50, 1)


def _plant_partition(out, date, version, files, started, finished):
    """An earlier complete partition, as a run of `version` that read `files` between those times would leave it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.outputs import fingerprints
    from pipeline.outputs.errors import ERRORS_SCHEMA

    folder = out / f"dt={date}"
    (folder / "_inputs").mkdir(parents=True)
    (folder / "errors").mkdir()
    files = sorted(files)
    pq.write_table(fingerprints.table(files, [os.stat(f).st_size for f in files], [os.stat(f).st_mtime for f in files],
                                      version), folder / "_inputs" / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist([], schema=ERRORS_SCHEMA), folder / "errors" / "part-0.parquet")
    (folder / "manifest.json").write_text(json.dumps({"run_id": f"planted-{date}", "model": {"version": version},
                                                      "started_at": started, "finished_at": finished}))
    (folder / "_SUCCESS").write_text(f"planted-{date}")


def test_each_run_carries_the_scored_files_forward_so_one_partition_answers(test_split, tiny_model_path, tmp_path):
    import pyarrow.parquet as pq

    inputs, out = tmp_path / "in", tmp_path / "out"
    old = _images(test_split, inputs, 0, 20)
    argv = ["--input", inputs, "--output", out, "--model", tiny_model_path, "--skip_scored"]
    assert _run(*argv, "--run_date", "2026-11-01") == 0
    first = _manifest(out, "2026-11-01")
    assert first["inputs_indexed"]
    new = _images(test_split, inputs, 100, 3)
    assert _run(*argv, "--run_date", "2026-11-02") == 0
    second = _manifest(out, "2026-11-02")
    assert (second["counts"]["scored"], second["counts"]["skipped"]) == (3, 20)
    rows = pq.read_table(out / "dt=2026-11-02" / "_inputs").to_pylist()
    assert {row["key"]: row["scored_by_run"] for row in rows} == {**{key: first["run_id"] for key in old},
                                                                    **{key: None for key in new}}
    version = second["model"]["version"]
    later = _images(test_split, inputs, 200, 2)
    # A partition finished before the newest index began is covered by it: its claims are not asked for.
    _plant_partition(out, "2026-10-20", version, later[:1], "2026-10-20T01:00:00+00:00", "2026-10-20T01:05:00+00:00")
    # One finished after the index began (another date's run at the same time) is asked.
    _plant_partition(out, "2026-10-21", version, later[1:], second["started_at"], "2099-01-01T00:00:00+00:00")
    shutil.rmtree(out / "dt=2026-11-01")  # the scores of the 20 carried files are gone with it: scored again
    assert _run(*argv, "--run_date", "2026-11-03") == 0
    third = _manifest(out, "2026-11-03")
    scored = {row["key"] for row in read_rows(str(out / "dt=2026-11-03" / "scores"))}
    assert scored == set(old) | {later[0]}
    assert (third["counts"]["scored"], third["counts"]["skipped"]) == (21, 4)
    rows = pq.read_table(out / "dt=2026-11-03" / "_inputs").to_pylist()
    assert {row["key"]: row["scored_by_run"] for row in rows if row["scored_by_run"]} == {
        **{key: second["run_id"] for key in new}, later[1]: "planted-2026-10-21"}


def test_error_rate_above_the_limit_writes_everything_then_exits_4(test_split, tiny_model_path, tmp_path, capsys):
    inputs, out = tmp_path / "in", tmp_path / "out"
    _images(test_split, inputs, 0, 8)
    for name in os.listdir(BROKEN):
        shutil.copy(os.path.join(BROKEN, name), inputs / name)
    argv = ["--input", inputs, "--output", out, "--model", tiny_model_path, "--run_date", "2026-11-20"]
    assert _run(*argv, "--max_error_rate", "0.1") == score.EXIT_ERROR_RATE
    assert "above --max_error_rate 10.0%" in capsys.readouterr().out
    manifest = _manifest(out, "2026-11-20")
    assert manifest["error_rate"] == pytest.approx(0.2) and manifest["error_rate_exceeded"]
    assert len(read_rows(str(out / "dt=2026-11-20" / "scores"))) == 8
    assert len(read_rows(str(out / "dt=2026-11-20" / "errors"))) == 2
    assert (out / "dt=2026-11-20" / "_SUCCESS").exists()
    assert _run(*argv, "--max_error_rate", "0.25") == score.EXIT_OK


def test_empty_input_has_its_own_exit_code_and_writes_nothing(tiny_model_path, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    assert _run("--input", tmp_path / "empty", "--output", out, "--model", tiny_model_path) == score.EXIT_NO_INPUT
    assert "matches no files" in capsys.readouterr().err
    assert not out.exists() or not list(out.glob("dt=*"))


def test_bad_run_date_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        score.run(["--input", "x", "--output", "y", "--run_date", "2026-13-01"])
    assert stop.value.code == score.EXIT_USAGE
    assert "is not a date like 2026-11-22" in capsys.readouterr().err


def test_the_default_run_date_is_taken_when_the_run_starts_and_no_text_holds_a_date():
    """--run_date defaults to the day the clock says when the flags are parsed (injected here); the parser's text
    (--help, the Flex Template's metadata) says "today" in words, so it reads the same on every day."""
    import datetime
    import re

    from pipeline import options

    leap_day = datetime.date(2028, 2, 29)
    config, _ = options.parse(["--input", "a", "--output", "b"], today=lambda: leap_day)
    assert config.run_date == "2028-02-29"
    config, _ = options.parse(["--input", "a", "--output", "b", "--run_date", "2026-11-22"], today=lambda: leap_day)
    assert config.run_date == "2026-11-22"
    text = options.build_parser().format_help()
    assert "default: today, by this machine's clock in its time zone" in " ".join(text.split())
    assert not re.search(r"\d{4}-\d{2}-\d{2}", text), "a date in the scorer's help text"
