"""Keeps the console to what the user needs: drops Beam's known noise, and its echoes of a failing step's traceback
(the run prints one line saying what failed, and logs the traceback itself when the cause is not a known one).
TensorFlow's C++ start-up lines are held back by model.runtimes.quiet, as in every command of the project."""

import logging
import os
import warnings

from model.runtimes.quiet import VERBOSE_ENV

# Warnings Beam 2.77 logs on every run here that say nothing about the user's job.
_NOISE = ("apitools not found", "Resource module is not available")
# Loggers through which Beam reports, again and again, a step that failed: in the process that ran it, in the SDK
# worker that ran the bundle, and in the local runner that forwards its workers' logs.
# Beam's retries of a failing store call warn, with a traceback, before each pause: a store that is away for good is
# said in one line by the run (pipeline.store_watch), and one that comes back needs no word.
_RETRY_LOGGER = "apache_beam.utils.retry"
_FAILURE_ECHOES = ("apache_beam.runners.common", "apache_beam.runners.worker.sdk_worker",
                   "apache_beam.runners.portability.local_job_service")


# Google's client libraries, which Beam imports for gs://, warn on import once the calendar passes a date they carry
# for this Python version (its end of life): the same command would print more lines on a later day.
_DATED_WARNINGS = r"google\.api_core\._python_version_support"


class _KnownNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NOISE)


class _StoreClientErrors(logging.Filter):
    """Beam's S3 and GCS clients log each failed request as an error of the root logger, on top of raising it: a
    file that cannot be read is already its error row, and a run that fails says why in its one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        path = record.pathname.replace(os.sep, "/")
        return not (record.levelno >= logging.ERROR and ("apache_beam/io/aws/" in path or
                                                          "apache_beam/io/gcp/gcsio" in path)
                    and not os.environ.get(VERBOSE_ENV))


class _FailureEcho(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        return "[while running" not in message and "Error processing instruction" not in message


def quiet_beam_logging() -> None:
    """Installs the filters (idempotent). Call it before importing Beam: the first warning comes with the import."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=_DATED_WARNINGS)
    root = logging.getLogger()
    if not any(isinstance(f, _KnownNoise) for f in root.filters):
        root.addFilter(_KnownNoise())
        root.addFilter(_StoreClientErrors())
    if not os.environ.get(VERBOSE_ENV):
        logging.getLogger(_RETRY_LOGGER).setLevel(logging.ERROR)
    for name in _FAILURE_ECHOES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _FailureEcho) for f in logger.filters):
            logger.addFilter(_FailureEcho())
