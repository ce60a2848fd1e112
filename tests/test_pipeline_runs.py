"""Tests whole pipeline runs on real data: parity with the model on the IDX arrays, TFRecords vs PNGs, and local
multi-process runs that load the model once per worker and give the same rows."""

import os

import numpy as np
import pytest

from model.runtimes import model_files

from pipeline import score
from pipeline import timeline
from tests import samples
from tests.helpers import SAMPLE_INPUTS, partition, read_rows


@pytest.fixture(scope="module")
def test_pngs(test_split, tmp_path_factory):
    """All 10,000 real test images as PNG files; returns (folder, paths in test-set order)."""
    folder = str(tmp_path_factory.mktemp("test-pngs"))
    names = [samples.file_name(i, label) for i, label in enumerate(test_split.labels)]
    return folder, samples.write_pngs(test_split.images, folder, names)


def _score(argv):
    assert score.run(argv + ["--progress_seconds", "0"]) == score.EXIT_OK


def test_png_route_matches_the_model_on_idx_arrays(shipped_model, test_split, test_pngs, tmp_path):
    folder, paths = test_pngs
    _score(["--input", folder, "--output", str(tmp_path / "out")])
    rows = read_rows(os.path.join(partition(tmp_path / "out"), "scores"))
    assert [r["key"] for r in rows] == sorted(paths)
    by_key = {r["key"]: r for r in rows}
    scored = np.array([by_key[path]["probabilities"] for path in paths], dtype=np.float32)
    expected = model_files.load(shipped_model, runtime="keras").model.predict(test_split.images, batch_size=1024, verbose=0)
    np.testing.assert_allclose(scored, expected, rtol=0, atol=1e-5)
    pipeline_accuracy = (scored.argmax(axis=1) == test_split.labels).mean()
    idx_accuracy = (expected.argmax(axis=1) == test_split.labels).mean()
    assert abs(pipeline_accuracy - idx_accuracy) <= 0.0005
    assert read_rows(os.path.join(partition(tmp_path / "out"), "errors")) == []


def test_tfrecord_route_gives_the_same_rows_as_png_files(test_split, test_pngs, tmp_path):
    _, paths = test_pngs
    chosen = range(0, 10_000, 20)  # 500 images; the key feature holds the PNG's path so rows can be compared
    records = [samples.example_bytes(open(paths[i], "rb").read(), filename=paths[i]) for i in chosen]
    half = len(records) // 2
    samples.write_tfrecord(str(tmp_path / "tf" / "a.tfrecord"), records[:half])
    samples.write_tfrecord(str(tmp_path / "tf" / "b.tfrecord"), records[half:])
    listing = tmp_path / "pngs"
    listing.mkdir()
    for i in chosen:
        os.symlink(paths[i], listing / os.path.basename(paths[i]))
    _score(["--input_tfrecords", str(tmp_path / "tf" / "*.tfrecord"), "--output", str(tmp_path / "from-tfrecords")])
    _score(["--input", str(listing / "*.png"), "--output", str(tmp_path / "from-pngs")])
    from_records = read_rows(os.path.join(partition(tmp_path / "from-tfrecords"), "scores"))
    from_files = read_rows(os.path.join(partition(tmp_path / "from-pngs"), "scores"))
    for row in from_files:
        row["key"] = os.path.realpath(row["key"])
    assert len(from_records) == 500
    assert from_records == sorted(from_files, key=lambda r: r["key"])


def test_multi_process_run_loads_once_per_worker_and_gives_the_same_rows(test_pngs, tmp_path, monkeypatch):
    folder, _ = test_pngs
    subset = os.path.join(folder, "test-0[0-2]*.png")  # 3,000 images
    log = tmp_path / "loads.log"
    monkeypatch.setenv(timeline.TIMELINE_ENV, str(log))

    def model_loads():
        return [pid for _, pid, phase in timeline.read(str(log)) if phase == "model loaded"]

    _score(["--input", subset, "--output", str(tmp_path / "single")])
    single_loads = model_loads()
    log.unlink()
    _score(["--input", subset, "--output", str(tmp_path / "multi"), "--files_per_chunk", "100",
            "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    worker_loads = model_loads()
    assert single_loads == [os.getpid()]
    assert len(worker_loads) == 2 and len(set(worker_loads)) == 2, worker_loads
    assert os.getpid() not in worker_loads
    multi, single = (read_rows(os.path.join(partition(tmp_path / run), "scores")) for run in ("multi", "single"))
    assert multi == single


def test_shared_model_run_gives_the_same_rows(tiny_model_path, tmp_path):
    """--share_model serves one model copy from a separate process; callers reach it through a proxy."""
    sample = os.path.join(SAMPLE_INPUTS, "images")
    for name, extra in (("own", []), ("shared", ["--share_model"])):
        _score(["--input", sample, "--output", str(tmp_path / name), "--model", tiny_model_path, *extra])
    for table in ("scores", "errors"):
        assert read_rows(os.path.join(partition(tmp_path / "shared"), table)) == read_rows(
            os.path.join(partition(tmp_path / "own"), table))
    assert len(read_rows(os.path.join(partition(tmp_path / "shared"), "scores"))) == 55
