"""Records when each phase of a run happens, in every process of it, when asked to: FASHION_SCORER_TIMELINE=FILE.

Each line is `wall-clock-seconds pid phase`; each process first writes when it started (from /proc, so the time
spent importing before any of our code ran is counted). The benchmark reads these to show where start-up time goes,
and the tests to prove the model loads once per worker process. Unset, marking costs one dictionary lookup.
"""

import os
import time

TIMELINE_ENV = "FASHION_SCORER_TIMELINE"
_started_pids = set()


def mark(phase: str) -> None:
    path = os.environ.get(TIMELINE_ENV)
    if not path:
        return
    pid = os.getpid()
    lines = []
    if pid not in _started_pids:  # a forked or spawned process starts its own record
        _started_pids.add(pid)
        lines.append(f"{_process_start():.3f} {pid} process started\n")
    lines.append(f"{time.time():.3f} {pid} {phase}\n")
    with open(path, "a", encoding="utf-8") as stream:  # one short append per call: whole lines from every process
        stream.write("".join(lines))


def read(path: str) -> list:
    """[(seconds, pid, phase)] in time order."""
    with open(path, encoding="utf-8") as stream:
        rows = [line.rstrip("\n").split(" ", 2) for line in stream if line.strip()]
    return sorted((float(seconds), int(pid), phase) for seconds, pid, phase in rows)


def _process_start() -> float:
    """Wall-clock time this process started: /proc's boot-relative start, or now where there is no /proc."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stream:
            ticks = int(stream.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as stream:
            uptime = float(stream.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()
