"""Tests the README as a newcomer uses it: short enough to read at once, and its quick start run as written (score a
folder, read one night and every night back, open the report). tests/test_docs.py checks its other commands."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT, SAMPLE_INPUTS
from tests.test_docs import commands

pytestmark = pytest.mark.clock  # also run with the clock moved to another day and zone: make test-clock

README = open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8").read()
PYTHON = ".venv/bin/python"


def _blocks(language: str) -> list:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def _commands() -> list:
    return commands("README.md")


def test_the_readme_is_a_front_door():
    assert len(README.encode()) < 15_000
    for page in re.findall(r"\]\((docs/[^)#]+)", README):
        assert os.path.isfile(os.path.join(REPO_ROOT, page)), page


def test_the_quick_start_runs_as_written(tmp_path, monkeypatch):
    """From a folder holding sample_inputs/: the scoring command, the reading lines (one night, every night), the
    report's path."""
    shutil.copytree(os.path.join(SAMPLE_INPUTS, "images"), tmp_path / "sample_inputs" / "images")
    monkeypatch.chdir(tmp_path)
    scoring = [argv for argv in _commands() if argv[:3] == [PYTHON, "-m", "pipeline.score"]][0]
    done = subprocess.run([sys.executable, *scoring[1:]], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("report: out/scores/dt=2026-11-22/report.html")
    one_night, every_night = _blocks("python")[:2]
    found = {}
    exec(one_night, found)
    assert (found["scores"].num_rows, found["errors"].num_rows) == (55, 2)
    exec(every_night, found)
    assert found["scores"].column("dt").to_pylist() == ["2026-11-22"] * 55 and found["errors"].num_rows == 2
    opened = [argv for argv in _commands() if argv[0] == "xdg-open"][0]
    assert os.path.isfile(opened[1])


def test_the_readme_trains_your_own_classes_with_the_flags_the_test_trains_with():
    from tests.test_own_classes import SHAPE_FLAGS

    train = [argv for argv in _commands() if argv[:3] == [PYTHON, "-m", "model.train"]][0]
    flags = list(SHAPE_FLAGS[:SHAPE_FLAGS.index("--verbose")])
    assert train[3:] == ["--train-dir", "shapes/train", "--eval-dir", "shapes/held-out", *flags, "--export",
                         "shapes.keras"]
