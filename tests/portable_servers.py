"""Starts and stops Beam's local portable job service and worker pool on loopback ports, bounded in time."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

JOB_SERVICE_MODULE = "apache_beam.runners.portability.local_job_service_main"
# Beam's worker_pool_main, bound to 127.0.0.1 instead of every interface.
WORKER_POOL_MODULE = "tests.loopback_worker_pool"


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (released again, so the server can bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def job_service_command(port: int) -> list:
    # The job service binds `localhost:PORT` (LocalJobServicer.get_bind_address), so it is loopback-only already.
    return [sys.executable, "-m", JOB_SERVICE_MODULE, "--port", str(port)]


def worker_pool_command(port: int) -> list:
    return [sys.executable, "-m", WORKER_POOL_MODULE, f"--service_port={port}"]


def project_env(repo_root: str) -> dict:
    """The environment for the client and the worker pool: the venv's python and this checkout importable.

    The worker pool starts each SDK worker as a bare `python -c ...` found on PATH, not as sys.executable, so the
    venv's bin must come first. PYTHONPATH makes `pipeline` and `model` importable in the workers even when the venv
    lacks the editable install (the workers unpickle DoFns that reference those modules).
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo_root, env.get("PYTHONPATH")]))
    return env


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Returns once 127.0.0.1:port accepts a connection; raises if the server died or the time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{process.args} did not listen on {port} within {timeout:.0f} s")


def start(command: list, folder: str, name: str, env: dict) -> subprocess.Popen:
    """Starts a server in `folder` (not the checkout, so only PYTHONPATH can make the project importable), in its own
    process group (so its SDK worker children can be stopped with it), logging to folder/name.log."""
    with open(os.path.join(folder, f"{name}.log"), "wb") as log:
        return subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM to the server's process group, then SIGKILL to what is left of it after `timeout` seconds."""
    group = process.pid  # start_new_session made the server the leader of a group with its own pid.
    _signal_group(group, signal.SIGTERM)
    _wait_unreaped(process.pid, timeout)
    # Workers may outlive a server that exited on SIGTERM. The leader is not reaped yet, so the group id cannot have
    # been reused by an unrelated process.
    _signal_group(group, signal.SIGKILL)
    process.wait(timeout=timeout)


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


def _wait_unreaped(pid: int, timeout: float) -> None:
    """Waits up to `timeout` seconds for `pid` to exit, leaving it a zombie so its pid and group id stay reserved."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _exited(pid):
        time.sleep(0.1)


def _exited(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # Already reaped (by Popen.poll in wait_for_port).
        return True


@contextlib.contextmanager
def portable_servers(log_folder: str, env: dict, pool_env: dict = None, timeout: float = 60.0):
    """Yields (job service port, worker pool port) once both servers listen; always stops both, and their workers.

    `pool_env` (default `env`) is the worker pool's environment, which its SDK workers inherit.
    """
    job_port, pool_port = free_port(), free_port()
    started = []
    try:
        started.append(start(job_service_command(job_port), log_folder, "job_service", env))
        started.append(start(worker_pool_command(pool_port), log_folder, "worker_pool", pool_env or env))
        wait_for_port(job_port, started[0], timeout)
        wait_for_port(pool_port, started[1], timeout)
        yield job_port, pool_port
    finally:
        for process in reversed(started):
            stop(process)
