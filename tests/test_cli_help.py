"""Tests that every command's --help answers without importing TensorFlow, Keras or Beam (each takes a second or
more to import), and says what the command does in whole sentences."""

import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.clock  # also run with the clock moved to another day and zone: make test-clock

COMMANDS = ("model.train", "model.evaluate", "model.predict", "model.weights_text", "model.card", "pipeline.score",
            "pipeline.report")
_PROBE = """
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit as stopped:
    code = stopped.code
print("imported:", sorted(name for name in ("tensorflow", "keras", "apache_beam") if name in sys.modules))
print("exit:", code)
"""


@pytest.mark.parametrize("command", COMMANDS)
def test_help_imports_no_heavy_library_and_is_complete(command):
    done = subprocess.run([sys.executable, "-c", _PROBE, command], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60)
    lines = done.stdout.splitlines()
    assert lines[-2:] == ["imported: []", "exit: 0"], done.stdout + done.stderr
    assert done.stderr == ""
    text = "\n".join(lines[:-2])
    description = text.split("\n\n")[1]  # after the usage lines
    assert description.rstrip().endswith("."), description  # a whole sentence, not cut at its first line
