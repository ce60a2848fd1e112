"""Tests the counters a runner's console shows while a job runs (Beam Metrics, namespace fashion_scorer): read from
the pipeline result on the local runner, they equal the counts the manifest is made from, and RunInference's own
model-call latency sits beside them."""

import glob
import json
import os

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter

from model.runtimes import model_files
from pipeline import graph, options, score
from pipeline.outputs import counts
from tests import helpers
from tests.helpers import SAMPLE_INPUTS


def _run_graph(argv, folder: str):
    """The scoring graph on the local runner, as pipeline.score builds it; returns the finished pipeline's result."""
    config, beam_args = options.parse(argv)
    loaded = model_files.load(config.model)
    pipeline = beam.Pipeline(options=score.pipeline_options(beam_args))
    graph.build(pipeline, config, loaded.card, loaded.version, folder)
    result = pipeline.run()
    result.wait_until_finish()
    return result


def test_the_runners_counters_equal_the_counts_of_the_manifest(tmp_path):
    folder = str(tmp_path / "staging")
    os.makedirs(folder)
    result = _run_graph(["--input", os.path.join(SAMPLE_INPUTS, "images"), "--output", str(tmp_path / "out"),
                         "--progress_seconds", "0"], folder)
    with open(os.path.join(folder, counts.COUNTS_FILE), encoding="utf-8") as stream:
        written = json.load(stream)  # what counts.read completes into the manifest's counts
    queried = result.metrics().query(MetricsFilter().with_namespace(counts.NAMESPACE))
    counters = {entry.key.metric.name: entry.committed for entry in queried["counters"]}
    assert written["scored"] == 55 and written["failed"] == 2 and written["failed_by_type/truncated"] == 1
    assert {name: counters.get(name, 0) for name in written} == written  # never added to: zero
    # RunInference's own, in the same namespace, count blocks (one model call each): 57 files make one.
    assert counters["num_inferences"] == 1
    latency = {entry.key.metric.name: entry.committed for entry in queried["distributions"]}
    assert latency["inference_batch_latency_micro_secs"].count >= 1
    assert latency["inference_batch_latency_micro_secs"].min > 0


def test_a_run_says_which_device_scored_and_require_gpu_refuses_a_worker_without_one(tmp_path, capsys):
    from model.runtimes import devices

    device = devices.scoring_device()
    output = str(tmp_path / "out")
    argv = ["--input", os.path.join(SAMPLE_INPUTS, "images"), "--output", output, "--progress_seconds", "0"]
    assert score.run(argv) == score.EXIT_OK
    manifest = json.load(open(os.path.join(helpers.partition(output), "manifest.json")))
    assert manifest["counts"]["scored_on"] == {device: manifest["counts"]["scored"]}
    assert f"img/s) on {device}\n" in capsys.readouterr().out
    code = score.run(argv + ["--require_gpu", "--output", str(tmp_path / "gpu-only")])
    if device == "CPU":
        assert code == score.EXIT_USAGE and not glob.glob(str(tmp_path / "gpu-only" / "dt=*"))
        err = capsys.readouterr().err
        assert err.startswith("error: --require_gpu: this worker sees no GPU") and err.count("\n") == 1
    else:  # a machine with a GPU scores on it
        assert code == score.EXIT_OK


def test_the_progress_lines_end_at_the_counts_the_counters_hold(test_split, tmp_path, capsys):
    """Two blocks of real images: a progress line after each, the last one at the run's scored + failed of matched."""
    import re

    from tests import samples

    folder = str(tmp_path / "images")
    samples.write_pngs(test_split.images[:1500], folder, [f"{index:04d}.png" for index in range(1500)])
    (tmp_path / "images" / "broken.png").write_bytes(b"not a picture")
    output = str(tmp_path / "out")
    assert score.run(["--input", folder, "--output", output, "--progress_seconds", "0.000001"]) == score.EXIT_OK
    lines = re.findall(r"progress: ([\d,]+) of ([\d,]+) inputs done", capsys.readouterr().err)
    assert len(lines) == 2
    done, of = (int(value.replace(",", "")) for value in lines[-1])
    manifest_counts = json.load(open(os.path.join(helpers.partition(output), "manifest.json")))["counts"]
    assert (done, of) == (manifest_counts["scored"] + manifest_counts["failed"], manifest_counts["matched"]) == (
        1501, 1501)
