"""Runs the scorer on real engines on loopback: a Spark standalone cluster (master and two workers) and a Flink
cluster (JobManager and two TaskManagers), each behind Beam's job server with SDK workers from an external worker
pool (deploy/cluster/cluster.py), and checks every run against the same run on the local runner."""

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from pipeline import timeline
from tests import samples
from tests.cluster_helpers import (
    CLIENT_TIMEOUT, engine_worker_to_kill, exactly_once_or_nothing, manifest, run_graph, sdk_workers_left)
from tests.helpers import REPO_ROOT, SAMPLE_INPUTS, SHIPPED_MODEL, log_tails, partition, read_rows

CLUSTER_SCRIPT = os.path.join(REPO_ROOT, "deploy", "cluster", "cluster.py")
sys.path.insert(0, os.path.dirname(CLUSTER_SCRIPT))
import cluster as loopback_cluster  # noqa: E402 (deploy/cluster is a folder of scripts, found by the line above)
import cluster_fetch  # noqa: E402

pytestmark = pytest.mark.cluster

IMAGES = os.path.join(SAMPLE_INPUTS, "images")  # 55 images (catalogue items and photos) and 2 broken files


@pytest.fixture(scope="module", params=sorted(cluster_fetch.ENGINES))
def cluster(request, tmp_path_factory):
    """A running cluster of one engine, shared by this module's tests; its SDK workers log to a timeline."""
    missing = cluster_fetch.missing_tools()
    if missing:
        pytest.skip(f"a loopback cluster needs {', '.join(missing)} (Java 17, Maven and a C compiler)")
    state = str(tmp_path_factory.mktemp(f"{request.param}-cluster"))
    loads = os.path.join(state, "timeline.txt")
    # As docs/cluster.md shows it (make cluster-up runs the same); the SDK workers inherit the timeline's variable.
    command = [sys.executable, CLUSTER_SCRIPT, "up", request.param, "--state", state]
    try:
        done = subprocess.run(command, env=dict(os.environ, **{timeline.TIMELINE_ENV: loads}), capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}\n{log_tails(state)}"
        assert "web UI http://127.0.0.1:" in done.stdout, done.stdout
        started = loopback_cluster.load(state)
        started.timeline = loads
        yield started
    finally:
        subprocess.run([sys.executable, CLUSTER_SCRIPT, "down", "--state", state], timeout=120, check=True)


def _score(cluster, output: str, *argv, expect: int = 0) -> subprocess.CompletedProcess:
    """`python -m pipeline.score ARGV --output OUTPUT` on `cluster` (or locally when cluster is None), bounded."""
    command = [sys.executable, "-m", "pipeline.score", *argv, "--output", output, "--progress_seconds", "0",
               *(cluster.submit_flags() if cluster else [])]
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    logs = log_tails(cluster.state) if cluster and result.returncode != expect else ""
    assert result.returncode == expect, f"{command}\n{result.stdout}\n{result.stderr[-6000:]}\n{logs}"
    return result


def _tables(output: str, names=("scores", "errors")) -> dict:
    return {name: read_rows(os.path.join(partition(output), name)) for name in names}


def _assert_rows_equal(cluster_rows: list, local_rows: list) -> None:
    """Rows sorted by key, equal field by field, probabilities to 1e-6 (the engines run the same Python workers)."""
    assert [row["key"] for row in cluster_rows] == [row["key"] for row in local_rows]
    for ours, theirs in zip(cluster_rows, local_rows):
        assert ours.keys() == theirs.keys()
        for field in ours:
            if field == "probabilities":
                assert max(abs(a - b) for a, b in zip(ours[field], theirs[field])) <= 1e-6, ours["key"]
            else:
                assert ours[field] == theirs[field], (ours["key"], field)


def test_two_nights_with_a_candidate_and_skip_scored_equal_a_local_run(cluster, test_split, tmp_path):
    """The sample images and their broken files, a candidate model beside the model, then a second night over the
    folder grown by 20 images that skips what the first scored; published by the same atomic publish as locally."""
    new_images = str(tmp_path / "new")
    # The two broken files are 2 of the second night's 22 tries: over the default error rate that fails a run.
    flags = ["--candidate_model", SHIPPED_MODEL, "--skip_scored", "--max_error_rate", "0.2", "--input", IMAGES]
    runs = {}
    for where in ("cluster", "local"):
        output = str(tmp_path / where)
        started = time.time()
        _score(cluster if where == "cluster" else None, output, *flags, "--run_date", "2026-11-21")
        runs[where] = (output, started, time.time())
    cluster_tables = _tables(runs["cluster"][0], ("scores", "errors", "candidate"))
    local_tables = _tables(runs["local"][0], ("scores", "errors", "candidate"))
    for name in cluster_tables:
        _assert_rows_equal(cluster_tables[name], local_tables[name])
    counts = manifest(runs["cluster"][0])["counts"]
    assert counts == manifest(runs["local"][0])["counts"] and counts["invariant_holds"]
    assert (counts["scored"], counts["failed"]) == (55, 2)
    assert manifest(runs["cluster"][0])["candidate"] == manifest(runs["local"][0])["candidate"]

    # Each SDK worker process that scored loaded the model and the candidate once each, never again.
    _, started, finished = runs["cluster"]
    loads = collections.Counter(pid for seconds, pid, phase in timeline.read(cluster.timeline)
                                if phase == "model loaded" and started <= seconds <= finished)
    assert loads and set(loads.values()) == {2}, loads

    samples.write_pngs(test_split.images[:20], new_images, [f"new-{index}.png" for index in range(20)])
    output = runs["cluster"][0]
    _score(cluster, output, *flags, new_images, "--run_date", "2026-11-22")
    second = os.path.join(output, "dt=2026-11-22")
    counts = json.load(open(os.path.join(second, "manifest.json"), encoding="utf-8"))["counts"]
    # The broken files failed, so they are tried again (and fail again).
    assert (counts["matched"], counts["skipped"], counts["scored"], counts["failed"]) == (77, 55, 20, 2)
    assert [row["key"] for row in read_rows(os.path.join(second, "scores"))] == \
        sorted(os.path.join(new_images, f"new-{index}.png") for index in range(20))
    assert os.path.isfile(os.path.join(second, "_SUCCESS"))
    # Every SDK worker of both nights exits once the engine is done with it: none is left holding a model.
    assert sdk_workers_left(cluster.processes["pool"]) == []


def _graph_on_cluster_as_locally(cluster, argv: list, tmp_path):
    """The scoring graph of `argv` run on the cluster and on the local runner: the same scores and errors (rows
    equal), the same counts, and the engine's counters equal to those counts; returns the cluster's run."""
    on_cluster = run_graph(argv + cluster.submit_flags(), str(tmp_path / "cluster"))
    local = run_graph(argv, str(tmp_path / "local"))
    for name in ("scores", "errors"):
        _assert_rows_equal(read_rows(os.path.join(on_cluster.folder, name)),
                           read_rows(os.path.join(local.folder, name)))
    assert on_cluster.counts == local.counts
    # A counter never added to (skipped: 0) is not reported: zero.
    assert {name: on_cluster.counters.get(name, 0) for name in on_cluster.counts} == on_cluster.counts
    return on_cluster


def test_tfrecords_with_a_duplicate_key_and_the_runners_counters(cluster, test_split, tmp_path):
    """TFRecords (the sample file and one with two records of one name and a record that is no image) through the
    scoring graph on the cluster: the same tables and counts as on the local runner, and the counters the engine
    reports through Beam's job API equal the counts the manifest is made from."""
    records = samples.write_tfrecord(str(tmp_path / "records" / "odd.tfrecord"), [
        samples.example_bytes(samples.png_bytes(test_split.images[0]), filename="twice.png"),
        samples.example_bytes(samples.png_bytes(test_split.images[1]), filename="twice.png"),
        samples.example_bytes(b"not an image at all", filename="notes.png")])
    argv = ["--input_tfrecords", os.path.join(SAMPLE_INPUTS, "tfrecords", "test-images.tfrecord"), records]
    on_cluster = _graph_on_cluster_as_locally(cluster, argv, tmp_path)
    assert on_cluster.counts["duplicate_keys"] == 1 and on_cluster.counts["failed"] >= 1


def test_a_table_of_images_with_its_columns_and_the_runners_counters(cluster, tmp_path):
    """sample_inputs/catalogue.csv (relative URIs, the two broken files among them) with its ids kept, through the
    scoring graph on the cluster: the same rows (table_row and kept columns included) and counts as on the local
    runner, and the engine's counters equal them."""
    argv = ["--input_table", os.path.join(SAMPLE_INPUTS, "catalogue.csv"), "--uri_column", "image",
            "--keep_columns", "product_id,title", "--files_per_chunk", "8"]
    on_cluster = _graph_on_cluster_as_locally(cluster, argv, tmp_path)
    assert (on_cluster.counts["matched"], on_cluster.counts["failed"]) == (57, 2)


@pytest.mark.parametrize("victim", ["engine worker", "SDK worker"])
def test_a_worker_killed_mid_run_leaves_every_input_once_or_nothing(cluster, victim, test_split, tmp_path):
    """SIGKILL, by pid, once the first SDK worker has loaded the model: a Spark executor or a Flink TaskManager, or
    an SDK worker process. The engine retries the lost work and the partition holds every input exactly once, or
    the run exits 1 and publishes nothing."""
    folder = str(tmp_path / "images")
    names = [f"{index:05d}.png" for index in range(3000)]
    samples.write_pngs(test_split.images[:3000], folder, names)
    killed = []

    def kill_when_scoring(started: float):
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while time.monotonic() < deadline and not killed:
            marks = timeline.read(cluster.timeline) if os.path.isfile(cluster.timeline) else []
            scoring = [pid for seconds, pid, phase in marks if phase == "model loaded" and seconds >= started]
            if scoring:
                victim_pid = scoring[0] if victim == "SDK worker" else engine_worker_to_kill(cluster)
                os.kill(victim_pid, signal.SIGKILL)
                killed.append(victim_pid)
            time.sleep(0.1)

    output = str(tmp_path / "out")
    killer = threading.Thread(target=kill_when_scoring, args=(time.time(),), daemon=True)
    killer.start()
    command = [sys.executable, "-m", "pipeline.score", "--input", folder, "--output", output,
               "--run_date", "2026-11-23", "--progress_seconds", "0", *cluster.submit_flags()]
    result = subprocess.run(command, cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=REPO_ROOT),
                            capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    killer.join(timeout=1)
    assert killed, f"nothing was killed: the run ended first\n{result.stdout}{result.stderr[-3000:]}"
    outcome = exactly_once_or_nothing(result, output, [os.path.join(folder, name) for name in names])
    print(f"{cluster.engine}, {victim} {killed[0]} killed: {outcome}")  # shown with -s or -rA
    left = sdk_workers_left(cluster.processes["pool"])
    if cluster.engine == "flink":
        # After a failover (a lost TaskManager, or a lost SDK worker failing its task) Flink's runner may keep an
        # environment of the cancelled attempt on a surviving TaskManager (its reference is never released): those SDK
        # workers stay until that TaskManager stops, at most one per TaskManager (docs/cluster.md).
        assert len(left) <= loopback_cluster.WORKERS, left
    else:
        assert left == []
