"""Tests keeping the output folder in order: one run per date at a time (a lock no crash can leave stuck), and what
killed runs left behind cleared or put back by the next run, of any date."""

import os
import subprocess
import sys
import textwrap

import pytest

from pipeline import score
from pipeline.outputs import housekeeping
from tests.helpers import REPO_ROOT, SAMPLE_INPUTS

pytestmark = pytest.mark.clock  # also run with the clock moved to another day and zone: make test-clock


def _partition(out, date, run_id):
    folder = out / f"dt={date}"
    folder.mkdir(parents=True)
    (folder / "_SUCCESS").write_text(run_id)
    return folder


def test_a_partition_left_in_trash_comes_back_with_the_next_run_of_any_date(tmp_path):
    out = tmp_path / "out"
    aside = out / ".trash" / "dt=2026-11-21.RUN1"
    aside.mkdir(parents=True)
    (aside / "_SUCCESS").write_text("RUN1")
    (aside / "manifest.json").write_text("{}")
    _partition(out, "2026-11-19", "RUN0")
    leftover = out / ".trash" / "dt=2026-11-19.RUN9"  # a swap that finished, but whose old copy was not deleted
    leftover.mkdir()
    (leftover / "_SUCCESS").write_text("RUN9")
    housekeeping.clear_leftovers(str(out), "2026-11-25")
    assert (out / "dt=2026-11-21" / "_SUCCESS").read_text() == "RUN1"
    assert (out / "dt=2026-11-19" / "_SUCCESS").read_text() == "RUN0"
    assert os.listdir(out / ".trash") == []


def test_a_killed_runs_staging_is_cleared_once_its_date_is_free(tmp_path):
    out = tmp_path / "out"
    for date in ("2026-11-20", "2026-11-21"):
        (out / ".staging" / f"dt={date}.KILLED" / "scores").mkdir(parents=True)
    with housekeeping.date_lock(str(out), "2026-11-21"):  # a run of that date is still going
        housekeeping.clear_leftovers(str(out), "2026-11-22")
    assert os.listdir(out / ".staging") == ["dt=2026-11-21.KILLED"]
    housekeeping.clear_leftovers(str(out), "2026-11-22")
    assert os.listdir(out / ".staging") == []


_HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from pipeline.outputs import housekeeping
    with housekeeping.date_lock(sys.argv[1], "2026-11-20"):
        print("held", flush=True)
        time.sleep(60)
""")


def test_a_second_run_of_a_date_fails_clearly_and_a_killed_holder_leaves_no_lock(tiny_model_path, tmp_path, capsys):
    out = str(tmp_path / "out")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, out], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = ["--input", os.path.join(SAMPLE_INPUTS, "images", "fashion"), "--output", out, "--model",
                tiny_model_path, "--progress_seconds", "0"]
        assert score.run(argv + ["--run_date", "2026-11-20"]) == score.EXIT_BUSY
        err = capsys.readouterr().err
        assert "another run is writing dt=2026-11-20" in err and f'"pid": {holder.pid}' in err
        assert score.run(argv + ["--run_date", "2026-11-21"]) == score.EXIT_OK  # other dates run meanwhile
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert score.run(argv + ["--run_date", "2026-11-20"]) == score.EXIT_OK  # the kernel released the dead holder's lock


def test_a_full_disk_is_one_clear_line_and_no_staging(tiny_model_path, tmp_path, capsys, monkeypatch):
    import errno

    import pyarrow.parquet as pq

    real_write = pq.ParquetWriter.write_table

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    out = tmp_path / "out"
    code = score.run(["--input", os.path.join(SAMPLE_INPUTS, "images", "fashion"), "--output", str(out), "--model",
                      tiny_model_path, "--progress_seconds", "0"])
    monkeypatch.setattr(pq.ParquetWriter, "write_table", real_write)
    assert code == score.EXIT_FAILED
    err = capsys.readouterr().err
    assert "error: the disk is full (no space left on device)" in err and "Traceback" not in err
    assert os.listdir(out / ".staging") == [] and not list(out.glob("dt=*"))


def test_a_report_lost_to_a_full_disk_is_not_advised_to_be_rebuilt_for_a_partition_never_published(
        tiny_model_path, tmp_path, capsys, monkeypatch):
    import errno

    from pipeline.report import report
    from pipeline import publish

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    real_write = publish._write
    argv = ["--input", os.path.join(SAMPLE_INPUTS, "images", "fashion"), "--model", tiny_model_path,
            "--progress_seconds", "0"]
    with monkeypatch.context() as patch:  # the disk fills while the report is written: neither it nor its stand-in fit
        patch.setattr(report, "write", full)
        patch.setattr(publish, "_write", lambda path, data: full() if path.endswith(report.REPORT)
                      else real_write(path, data))
        assert score.run(argv + ["--output", str(tmp_path / "full")]) == score.EXIT_FAILED
    err = capsys.readouterr().err
    assert "error: the disk is full" in err and "nothing was published" in err and "rebuild" not in err
    assert not list((tmp_path / "full").glob("dt=*"))
    def broken(*args):
        raise RuntimeError("the page cannot be drawn")

    with monkeypatch.context() as patch:  # the report alone fails: the partition is published, then the advice given
        patch.setattr(report, "write", broken)
        assert score.run(argv + ["--output", str(tmp_path / "published")]) == score.EXIT_OK
    published = list((tmp_path / "published").glob("dt=*"))
    assert len(published) == 1 and (published[0] / "_SUCCESS").is_file()
    err = capsys.readouterr().err
    assert "WARNING: the report could not be built (RuntimeError: the page cannot be drawn); rebuild it with " \
           f"`python -m pipeline.report {published[0]}`" in err
