"""Loaded by every Python process of `make test-clock` (PYTHONPATH), which runs the tests under Debian's faketime with
the wall clock moved and the monotonic clock true: Python 3.11 sleeps until a deadline on the monotonic clock
(clock_nanosleep with TIMER_ABSTIME), which libfaketime 0.9.10 shifts by the wall clock's offset, so every
time.sleep failed with EINVAL. Here time.sleep waits in select() for the time left instead, as a relative wait that
libfaketime passes through unchanged. Nothing outside that make target loads this file."""

import select
import time


def _sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        select.select([], [], [], left)


time.sleep = _sleep
