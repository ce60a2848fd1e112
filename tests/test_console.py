"""Tests what a person sees on the console: no TensorFlow start-up lines unless --verbose, progress with the total
and the time left, and the report's path at the end."""

import os
import re
import subprocess
import sys

import pytest

from pipeline import progress, score
from tests import samples
from tests.helpers import REPO_ROOT, SAMPLE_INPUTS

pytestmark = pytest.mark.clock  # also run with the clock moved to another day and zone: make test-clock

TENSORFLOW_LINES = ("oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard")


def _score(tmp_path, *flags):
    command = [sys.executable, "-m", "pipeline.score", "--input", os.path.join(SAMPLE_INPUTS, "images", "fashion"),
               "--output", str(tmp_path / "out"), "--progress_seconds", "0", *flags]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_tensorflow_start_up_lines_only_with_verbose(tmp_path):
    quiet = _score(tmp_path, "--runtime", "keras")  # served by TensorFlow, whatever the shipped card lists first
    assert quiet.returncode == 0, quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if any(text in line for text in TENSORFLOW_LINES)], \
        quiet.stderr
    partition = next((tmp_path / "out").glob("dt=*"))
    assert quiet.stdout.splitlines()[-1] == f"report: {partition}/report.html"
    verbose = _score(tmp_path, "--verbose", "--runtime", "keras")
    assert verbose.returncode == 0, verbose.stderr
    # What TensorFlow prints as it starts depends on the CPU (oneDNN's line only where it is on): --verbose shows
    # whatever a bare import prints on this machine.
    bare = subprocess.run([sys.executable, "-c", "import model, tensorflow"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    expected = [line for line in bare.stderr.splitlines() if any(text in line for text in TENSORFLOW_LINES)]
    shown = verbose.stderr.splitlines()
    assert all(any(line.split("]")[-1] in seen for seen in shown) for line in expected), (expected, verbose.stderr)


def test_progress_shows_the_total_and_the_time_left(test_split, tiny_model_path, tmp_path, capsys):
    folder = tmp_path / "in"
    samples.write_pngs(test_split.images[:3000], str(folder), [f"{i:04d}.png" for i in range(3000)])
    code = score.run(["--input", str(folder), "--output", str(tmp_path / "out"), "--model", tiny_model_path,
                      "--progress_seconds", "0.001"])
    assert code == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("progress: ")]
    assert any(re.fullmatch(r"progress: [\d,]+ of 3,000 inputs done \(\d+%\), [\d,]+ img/s, about \d+ s left", line)
               for line in lines), lines


def test_progress_line_wording():
    assert progress.line(12345, 1.25, 50000, True) == "12,345 of 50,000 inputs done (25%), 9,876 img/s, about 4 s left"
    assert progress.line(1000, 1.0, 30000, False) == (
        "1,000 inputs done of 30,000 listed so far (still listing), 1,000 img/s")
    assert "about 2 min left" in progress.line(100, 1.0, 12100, True)
