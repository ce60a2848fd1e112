"""Tests that the documentation cannot rot: every shell command shown in README.md and docs/*.md names a program
that exists here and flags that program accepts (ours, Beam's, make's targets), and every Python block compiles.
The README's quick start runs for real (tests/test_readme.py); so do the commands the tests of each feature run."""

import functools
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.clock  # also run with the clock moved to another day and zone: make test-clock

PAGES = ["README.md"] + sorted(os.path.relpath(path, REPO_ROOT) for path in glob.glob(os.path.join(REPO_ROOT,
                                                                                                    "docs", "*.md")))
# Programs documented for machines this one is not (a Docker daemon; a browser's opener): named, not run.
ELSEWHERE = {"docker", "xdg-open"}


def _blocks(page: str, language: str) -> list:
    text = open(os.path.join(REPO_ROOT, page), encoding="utf-8").read()
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def commands(page: str) -> list:
    """Each shell command a page shows, continuation lines joined, comments and VAR=value prefixes dropped, as argv."""
    found = []
    for block in _blocks(page, "sh"):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):
                argv = argv[1:]
            if argv:
                found.append(argv)
    return found


@functools.lru_cache(maxsize=None)
def _help(program: tuple) -> str:
    done = subprocess.run([sys.executable, *program, "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, (program, done.stderr)
    return done.stdout


def _check_python(argv: list) -> None:
    program = tuple(argv[1:3]) if argv[1] == "-m" else (argv[1],)
    flags = argv[1 + len(program):]
    if program == ("-m", "pipeline.score"):
        from pipeline import options

        # "..." stands for a flag's value after a flag, for more flags elsewhere.
        arguments = [("x" if previous.startswith("--") and "=" not in previous else None) if flag == "..." else flag
                     for previous, flag in zip(["", *flags], flags)]
        arguments = [flag for flag in arguments if flag is not None]
        if not {"--input", "--input_tfrecords", "--input_table"} & set(arguments):
            arguments += ["--input", "x"]
        _, beam_args = options.parse(arguments + (["--output", "x"] if "--output" not in arguments else []))
        assert options.unknown_beam_flags(beam_args) == [], argv
        return
    text = _help(program)
    for flag in flags:
        name = flag.split("=", 1)[0]
        if name.startswith("--"):
            assert re.search(rf"{re.escape(name)}\b", text), f"{' '.join(program)} has no {name}: {argv}"


@pytest.mark.parametrize("page", PAGES)
def test_every_command_a_page_shows_is_one_its_program_accepts(page):
    for argv in commands(page):
        if argv[0] in ELSEWHERE:
            continue
        if argv[0] == "make":
            targets = [word for word in argv[1:] if "=" not in word]
            done = subprocess.run(["make", "-n", *targets], cwd=REPO_ROOT, capture_output=True, text=True)
            assert done.returncode == 0, (argv, done.stderr)
        else:
            assert argv[0] in (".venv/bin/python", "python"), f"{page} shows a command of {argv[0]}: {argv}"
            _check_python(argv)


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_a_page_shows_compiles(page):
    for index, block in enumerate(_blocks(page, "python")):
        compile(block, f"{page}, python block {index + 1}", "exec")


def test_the_scorers_flags_are_all_in_its_documentation():
    from pipeline import options

    text = open(os.path.join(REPO_ROOT, "docs", "scoring.md"), encoding="utf-8").read()
    for action in options.build_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert f"`{action.option_strings[0]}" in text, action.option_strings[0]
