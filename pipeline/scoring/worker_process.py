"""Lets a Beam SDK worker process that ran the scorer exit without taking TensorFlow apart first (and keeps its
console as quiet as the launcher's: see console).

Beam's local multi-process runner stops its worker processes one after the other and waits for each to exit. A Python
process that has loaded TensorFlow spends about a second tearing its modules down at exit, so a 2-worker run sat idle
for ~2.5 s after its last image (measured). Once Beam's worker main has returned, all the worker's output has been
handed to the runner and nothing is left to save, so the worker leaves at once with the exit status it would have had.
"""

import atexit
import logging
import os
import sys

from pipeline import console

_WORKER_MAIN = "apache_beam.runners.worker.sdk_worker_main"
_exit_installed = []


def in_sdk_worker() -> bool:
    """True in a process whose main program is Beam's SDK worker (local multi-process, portable, Dataflow)."""
    main = sys.modules.get("__main__")
    return getattr(getattr(main, "__spec__", None), "name", None) == _WORKER_MAIN


def exit_quickly_at_the_end() -> None:
    """In a Beam SDK worker process (and only there), skips interpreter teardown at exit; idempotent."""
    if _exit_installed or not in_sdk_worker():
        return
    _exit_installed.append(True)
    console.quiet_beam_logging()
    failed = []
    previous_hook = sys.excepthook

    def remember_failure(*exc_info):
        failed.append(True)  # The harness raised out of its main: the exit status must say so.
        previous_hook(*exc_info)

    def leave():
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1 if failed else 0)

    sys.excepthook = remember_failure
    atexit.register(leave)  # registered last, so it runs first
