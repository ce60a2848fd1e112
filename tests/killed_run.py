"""Runs the scorer and SIGKILLs it at one exact point of writing or publishing, for the tests of what a killed run
leaves behind:

    python -m tests.killed_run WHEN OPERATION PATTERN -- SCORER ARGUMENTS...
    python -m tests.killed_run -- SCORER ARGUMENTS...          (not killed: as `python -m pipeline.score` runs)

WHEN is `before` or `after`; OPERATION one of Beam's FileSystems calls (create, copy, rename, delete); PATTERN a
regular expression searched for in the paths the call is given. The first call that matches kills the process with
SIGKILL, before or after it does its work: no finally block, no atexit, nothing of the scorer's own runs after it.
"""

import os
import re
import signal
import sys

from apache_beam.io.filesystems import FileSystems


def _paths(arguments) -> str:
    found = []
    for argument in arguments:
        found.extend(argument if isinstance(argument, (list, tuple)) else [argument])
    return " ".join(str(path) for path in found)


def arm(when: str, operation: str, pattern: str) -> None:
    original = getattr(FileSystems, operation)
    wanted = re.compile(pattern)

    def killing(*arguments, **keywords):
        hit = bool(wanted.search(_paths(arguments)))
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*arguments, **keywords)
        if hit:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(FileSystems, operation, staticmethod(killing))


def main(argv: list) -> int:
    if argv[:1] == ["--"]:
        arguments = argv[1:]
    else:
        when, operation, pattern, separator, *arguments = argv
        if when not in ("before", "after") or separator != "--":
            raise SystemExit(__doc__)
        arm(when, operation, pattern)
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from tests.object_store_servers import emulator_shims

        emulator_shims()
    from pipeline import score

    return score.run(arguments)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
