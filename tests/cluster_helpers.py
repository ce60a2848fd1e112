"""Helpers of the cluster tests: the scoring graph run on any runner with its counters, processes of the cluster by
kind, and what a run that lost a worker left."""

import collections
import glob
import json
import os
import time
import types
import urllib.request

from tests.helpers import partition, read_rows

# A healthy cluster run of the sample takes under a minute; an SDK worker that cannot start makes the job wait for it
# forever, so the client's timeout bounds every test.
CLIENT_TIMEOUT = 300


def run_graph(argv: list, folder: str) -> types.SimpleNamespace:
    """The scoring graph, as pipeline.score builds it, run to completion into `folder` on the runner the Beam flags
    in `argv` name: the counts it wrote and the runner's counters (namespace fashion_scorer) from the result."""
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter

    from model.runtimes import model_files
    from pipeline import graph, options, score
    from pipeline.outputs import counts

    os.makedirs(folder)
    config, beam_args = options.parse(argv + ["--output", os.path.join(folder, "unused"), "--progress_seconds", "0"])
    loaded = model_files.load(config.model)
    pipeline = beam.Pipeline(options=score.pipeline_options(beam_args))
    graph.build(pipeline, config, loaded.card, loaded.version, folder)
    result = pipeline.run()
    result.wait_until_finish()
    with open(os.path.join(folder, counts.COUNTS_FILE), encoding="utf-8") as stream:
        written = json.load(stream)
    queried = result.metrics().query(MetricsFilter().with_namespace(counts.NAMESPACE))
    # One entry per step that counts (a TFRecord run counts `matched` where it lists and where it reads), summed;
    # committed where the runner reports it, attempted where it reports only that (Spark's portable runner).
    counters = collections.Counter()
    for entry in queried["counters"]:
        counters[entry.key.metric.name] += entry.attempted if entry.committed is None else entry.committed
    return types.SimpleNamespace(folder=folder, counts=written, counters=counters)


def manifest(output: str) -> dict:
    with open(os.path.join(partition(output), "manifest.json"), encoding="utf-8") as stream:
        return json.load(stream)


def children(pid: int) -> list:
    """The pids whose parent is `pid`."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat, encoding="utf-8") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.split("/")[2]))
    return found


def sdk_workers_left(pool: int, timeout: float = 150.0) -> list:
    """The SDK workers still running under the worker pool `pool` once `timeout` seconds have passed (or at once,
    when none runs). An idle worker goes after the scorer's environment cache time (score.ENVIRONMENT_CACHE_MILLIS)."""
    deadline = time.monotonic() + timeout
    while children(pool) and time.monotonic() < deadline:
        time.sleep(0.5)
    return children(pool)


def engine_worker_to_kill(cluster) -> int:
    """A Spark executor JVM (a Spark worker's child), or the Flink TaskManager that holds the job's tasks."""
    if cluster.engine == "spark":
        executors = [pid for name, worker in cluster.processes.items() if name.startswith("worker")
                     for pid in children(worker) if b"CoarseGrainedExecutorBackend" in _command_line(pid)]
        return executors[0]
    with urllib.request.urlopen(f"{cluster.web_ui}/taskmanagers", timeout=5) as response:
        managers = json.load(response)["taskmanagers"]
    busy = [manager["id"] for manager in managers if manager["freeSlots"] < manager["slotsNumber"]]
    return cluster.processes[(busy or [managers[0]["id"]])[0]]


def _command_line(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            return stream.read()
    except OSError:
        return b""


def exactly_once_or_nothing(result, output: str, inputs: list) -> str:
    """What a run that lost a worker left, asserted to be one of the two allowed outcomes: it succeeded and its
    partition holds each input exactly once (a scores or errors row), or it exited 1 and published nothing."""
    if result.returncode == 1:
        assert not glob.glob(os.path.join(output, "dt=*")), f"a failed run published:\n{result.stderr[-3000:]}"
        return "the run exited 1 and published nothing"
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
    keys = collections.Counter(row["key"] for table in ("scores", "errors")
                               for row in read_rows(os.path.join(partition(output), table)))
    assert keys == collections.Counter(inputs), "an input is missing or appears twice"
    return "the engine retried and every input is in the partition once"
