"""Defines the progress lines a run prints: inputs done, of how many (known once the listing is complete), the rate
and the time left. Each worker process keeps its own tallies: the listing steps add what they hand on to scoring and
say when their task is done, the scoring step adds what it scored, so a one-process run (the default locally) shows
the whole run; with several worker processes each shows its own share.
"""

import os
import sys
import threading
import time

_lock = threading.Lock()
_tally = {"listed": 0, "tasks_planned": 0, "tasks_listed": 0, "planning_done": False}


def tasks_planned(count: int, finished: bool = False) -> None:
    """Planning made `count` more listing tasks (and, with finished, has made them all)."""
    with _lock:
        _tally["tasks_planned"] += count
        _tally["planning_done"] = _tally["planning_done"] or finished


def listed(count: int, task_done: bool = False) -> None:
    """A listing task handed `count` more inputs on to scoring (and, with task_done, has finished)."""
    with _lock:
        _tally["listed"] += count
        _tally["tasks_listed"] += int(task_done)


def total() -> tuple:
    """(inputs listed so far, whether the listing is complete) as this process saw it."""
    with _lock:
        complete = _tally["planning_done"] and _tally["tasks_listed"] >= _tally["tasks_planned"]
        return _tally["listed"], complete


def reset() -> None:
    with _lock:
        _tally.update(listed=0, tasks_planned=0, tasks_listed=0, planning_done=False)


class Progress:
    """Prints a progress line every few seconds (0 turns it off) as inputs are done."""

    def __init__(self, every_seconds: float):
        self.every_seconds = every_seconds
        self.started = self.last = time.monotonic()
        self.done = 0

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.every_seconds and now - self.last >= self.every_seconds:
            self.last = now
            print(f"progress: {line(self.done, now - self.started, *total())}", file=sys.stderr, flush=True)


def line(done: int, seconds: float, listed_so_far: int, complete: bool) -> str:
    """'12,345 of 50,000 inputs done (25%), 9,870 img/s, about 4 s left' and the like."""
    rate = done / max(seconds, 1e-9)
    if complete and listed_so_far >= done and listed_so_far:
        left = (listed_so_far - done) / max(rate, 1e-9)
        return (f"{done:,} of {listed_so_far:,} inputs done ({done / listed_so_far:.0%}), {rate:,.0f} img/s, "
                f"about {_duration(left)} left")
    if listed_so_far > done:
        return f"{done:,} inputs done of {listed_so_far:,} listed so far (still listing), {rate:,.0f} img/s"
    return f"{done:,} inputs done in {seconds:.0f} s, {rate:,.0f} img/s (worker pid {os.getpid()})"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
