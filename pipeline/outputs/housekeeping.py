"""Keeps the output folder in order across runs: one run per date at a time, and what killed runs left, cleared.

    OUTPUT/.locks/dt=2026-11-22.lock     held by the run writing that date (readers never look here)

On a local disk the lock is an flock on that file: the kernel releases it when its holder exits, however it exits,
so a crashed run can never leave a date locked. Runs of different dates hold different locks and run side by side.
Object stores have no such lock; there the file is an advisory marker that its run rewrites every minute and that
counts as abandoned once it is ten minutes old, or at once when it names a process of this host that has gone (a run
killed on the machine that runs every night does not keep the next one waiting). Two runs starting the same second
on different hosts can both take it: do not start two runs of one date at once on object stores.

A run that holds a date's lock knows no other run is writing that date, so it may clear the date's leftovers: staging
folders of killed runs, and a partition that a crash between the swap's two renames left in .trash (put back when
the date has no partition, else deleted). It clears other dates' leftovers too, each under that date's lock, taken
only if free.
"""

import contextlib
import datetime
import json
import os
import re
import socket
import threading
import time

from apache_beam.io.filesystems import FileSystems

from pipeline.outputs import partitions

LOCKS = ".locks"
_HEARTBEAT_SECONDS = 60
_ABANDONED_SECONDS = 600
_LEFTOVER = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})\.")


class DateLocked(Exception):
    """Another run is writing the same date."""


def _lock_path(output: str, run_date: str) -> str:
    return FileSystems.join(output, LOCKS, f"dt={run_date}.lock")


def _holder() -> str:
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": now})


@contextlib.contextmanager
def date_lock(output: str, run_date: str, wait: bool = True):
    """Holds the date's lock for the block; raises DateLocked if another run holds it (or, with wait=False, yields
    False instead of raising)."""
    lock = _local_lock if partitions.is_local(output) else _marker_lock
    with lock(output, run_date) as held:
        if not held and wait:
            raise DateLocked(f"another run is writing dt={run_date} under {output} ({held.holder}); wait for it to "
                             "finish, or write another --run_date")
        yield bool(held)


class _Held:
    def __init__(self, held: bool, holder: str = ""):
        self.held, self.holder = held, holder

    def __bool__(self):
        return self.held


@contextlib.contextmanager
def _local_lock(output: str, run_date: str):
    import fcntl

    path = _lock_path(output, run_date)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield _Held(False, os.pread(descriptor, 4096, 0).decode("utf-8", "replace").strip() or "unknown")
            return
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, _holder().encode(), 0)  # who holds it, for the message another run prints
        yield _Held(True)
    finally:
        os.close(descriptor)  # releases the flock


@contextlib.contextmanager
def _marker_lock(output: str, run_date: str):
    path = _lock_path(output, run_date)
    found = FileSystems.match([path])[0].metadata_list
    if found and time.time() - found[0].last_updated_in_seconds < _ABANDONED_SECONDS:
        with FileSystems.open(path, compression_type="uncompressed") as stream:
            holder = stream.read(4096).decode("utf-8", "replace")
        if not _gone_from_this_host(holder):
            yield _Held(False, holder)
            return
    stop = threading.Event()

    def beat():
        while True:
            try:
                with FileSystems.create(path) as stream:
                    stream.write(_holder().encode())
            except Exception:  # noqa: BLE001 - the store is away; the run finds out itself, and says so
                pass
            if stop.wait(_HEARTBEAT_SECONDS):
                return

    beat_thread = threading.Thread(target=beat, name="date-lock-heartbeat", daemon=True)
    beat_thread.start()
    try:
        yield _Held(True)
    finally:
        stop.set()
        beat_thread.join()
        with contextlib.suppress(Exception):  # a store that is away keeps the marker: the next run here takes it
            FileSystems.delete([path])


def _gone_from_this_host(holder: str) -> bool:
    """Whether a marker's holder ({"host", "pid", ...}) was a process of this host that no longer runs."""
    try:
        said = json.loads(holder)
        host, pid = said["host"], int(said["pid"])
    except (ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def clear_leftovers(output: str, run_date: str) -> None:
    """Clears what killed runs left: the run's own date's (it holds that lock) and every other date's under that
    date's lock, if it is free (a date whose run is still going keeps its folders)."""
    for date, found in sorted(_leftovers(output).items()):
        if date == run_date:
            _clear(output, date, found)
        else:
            with date_lock(output, date, wait=False) as held:
                if held:
                    _clear(output, date, found)


def _leftovers(output: str) -> dict:
    """{date: [(".staging" or ".trash", path)]} of every run folder left in .staging and .trash."""
    found = {}
    for folder in (".staging", ".trash"):
        root = FileSystems.join(output, folder)
        if partitions.is_local(output):
            names = sorted(os.listdir(root)) if os.path.isdir(root) else []
        else:
            names = sorted({m.path[len(root) + 1:].split("/")[0]
                            for m in FileSystems.match([FileSystems.join(root, "**")])[0].metadata_list})
        for name in names:
            matched = _LEFTOVER.match(name)
            if matched:
                found.setdefault(matched.group(1), []).append((folder, FileSystems.join(root, name)))
    return found


def _clear(output: str, run_date: str, found: list) -> None:
    """A complete partition left in .trash goes back where the date has none that is complete (a swap cut short:
    between its two renames locally, or part way through on an object store); everything else left goes."""
    final = partitions.partition_path(output, run_date)
    for folder, path in sorted(found, key=lambda item: item[0] != ".trash"):  # trash first: it may be put back
        if folder == ".trash" and partitions.is_complete(path) and not partitions.is_complete(final):
            if partitions.is_local(final):
                partitions.remove(final)
            else:
                partitions.retract(final)  # what the cut-short swap had already brought in
            partitions.move_into_place(path, final)
        partitions.remove(path)
