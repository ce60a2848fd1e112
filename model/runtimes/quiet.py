"""Holds back TensorFlow's C++ start-up lines (oneDNN, CPU features, absl) for every command of the project, unless
it runs verbose: they say nothing about the user's job and drown the command's own output."""

import contextlib
import os
import sys
import tempfile

VERBOSE_ENV = "FASHION_SCORER_VERBOSE"  # set by --verbose; worker processes inherit it
# What TensorFlow's C++ side writes to the process's stderr as it starts, whatever TF_CPP_MIN_LOG_LEVEL says.
_TENSORFLOW_START_UP = ("WARNING: All log messages before absl::InitializeLog()", "oneDNN custom operations are on",
                        "cpu_feature_guard", "To enable the following instructions", "This TensorFlow binary is",
                        "Unable to register cu", "computation placer already registered", "TF-TRT Warning")


@contextlib.contextmanager
def quiet_tensorflow_start_up():
    """Holds back what is written to the process's stderr (file descriptor 2, where TensorFlow's C++ logging goes)
    while TensorFlow is imported and the model loaded, then writes it out without TensorFlow's start-up lines.
    Anything else written meanwhile (a Python warning, a traceback) still appears, a moment later."""
    if os.environ.get(VERBOSE_ENV) or "tensorflow" in sys.modules:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = [line for line in lines if not any(marker in line for marker in _TENSORFLOW_START_UP)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
