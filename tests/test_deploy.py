"""Tests that the scheduling files in deploy/ run the scorer with flags it accepts, every night."""

import os
import re
import shlex

import pytest

from pipeline import options
from tests.helpers import REPO_ROOT

DEPLOY = os.path.join(REPO_ROOT, "deploy")


def _scorer_arguments(command: str) -> list:
    """The arguments after `-m pipeline.score` in a shell command line (shell substitutions replaced by a date)."""
    words = shlex.split(re.sub(r'"\$\(date \+\\?%F\)"', "2026-11-22", command))
    words = words[words.index("pipeline.score") + 1:]
    return words[:words.index(">>")] if ">>" in words else words  # the log redirection is the shell's


def _cron_command() -> str:
    with open(os.path.join(DEPLOY, "fashion-scorer.cron"), encoding="utf-8") as stream:
        lines = [line for line in stream if line.strip() and not line.startswith(("#", "SHELL="))]
    assert len(lines) == 1
    schedule = lines[0].split()[:6]
    assert schedule[:5] == ["15", "2", "*", "*", "*"] and schedule[5] == "scorer"
    return lines[0]


def _service_command() -> str:
    with open(os.path.join(DEPLOY, "fashion-scorer.service"), encoding="utf-8") as stream:
        return next(line.split("=", 1)[1] for line in stream if line.startswith("ExecStart="))


@pytest.mark.parametrize("command", [_cron_command(), _service_command()], ids=["cron", "systemd"])
def test_scheduled_command_is_a_valid_nightly_run(command):
    config, beam_args = options.parse(_scorer_arguments(command))
    assert config.skip_scored and config.inputs and config.output and beam_args == []


def test_timer_fires_nightly_and_catches_up():
    with open(os.path.join(DEPLOY, "fashion-scorer.timer"), encoding="utf-8") as stream:
        timer = stream.read()
    assert "OnCalendar=*-*-* 02:15:00" in timer and "Persistent=true" in timer
    assert "WantedBy=timers.target" in timer
