"""Tests the scoring CLI: every fail-fast message, and the real command end to end on sample_inputs/."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from model import data, model_files
from pipeline import score
from tests.conftest import REPO_ROOT, SAMPLE_INPUTS, partition, read_rows


def _fails(capsys, argv, code, message):
    try:
        assert score.run(argv) == code
    except SystemExit as stop:  # argparse reports flag mistakes by exiting with status 2
        assert stop.code == code
    err = capsys.readouterr().err
    assert message in err, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["--output", "/tmp/x"], "give exactly one kind of input"),
    (["--input", "a", "--input_tfrecords", "b", "--output", "/tmp/x"], "give exactly one kind of input"),
    (["--input", "a", "--output", "/tmp/x", "--files_per_chunk", "0"], "is not a positive whole number"),
    (["--input", "a", "--output", "/tmp/x", "--decode_threads", "-1"], "is not a whole number of 0 or more"),
    (["--input", "a", "--output", "/tmp/x", "--low_confidence", "2"], "is not between 0 and 1"),
    (["--input", "a", "--output", "/tmp/x", "--direct_num_wrokers", "2"], "unrecognised arguments: --direct_num_wrokers"),
    (["--input", "a"], "the following arguments are required: --output"),
    (["--input", "a", "--output", "/tmp/x", "--model_copies", "2"], "--model_copies only applies with --share_model"),
    (["--input_tfrecords", "a", "--output", "/tmp/x", "--skip_scored"], "--skip_scored works with --input image"),
    (["--input", "a", "--output", "/tmp/x", "--max_error_rate", "-1"], "is not between 0 and 1"),
])
def test_flag_mistakes_fail_fast(capsys, argv, message):
    _fails(capsys, argv, score.EXIT_USAGE, message)


def test_glob_matching_nothing_has_its_own_exit_code(capsys, tmp_path):
    err = _fails(capsys, ["--input", str(tmp_path / "*.png"), "--output", str(tmp_path / "out")], score.EXIT_NO_INPUT,
                 "matches no files")
    assert "quote the glob" in err
    _fails(capsys, ["--input_tfrecords", str(tmp_path / "none-*.tfrecord"), "--output", str(tmp_path / "out")],
           score.EXIT_NO_INPUT, "--input_tfrecords")


def test_missing_or_wrong_model_fails_before_any_work(capsys, tmp_path, tiny_model_path):
    images = os.path.join(SAMPLE_INPUTS, "images", "fashion")
    out = str(tmp_path / "out")
    _fails(capsys, ["--input", images, "--output", out, "--model", str(tmp_path / "nope.keras")], score.EXIT_USAGE,
           "not found; pass --model")
    not_zip = tmp_path / "text.keras"
    not_zip.write_text("hello")
    shutil.copy(model_files.card_path_for(tiny_model_path), model_files.card_path_for(str(not_zip)))
    _fails(capsys, ["--input", images, "--output", out, "--model", str(not_zip)], score.EXIT_USAGE, "not a zip archive")
    no_card = tmp_path / "no-card.keras"
    shutil.copy(tiny_model_path, no_card)
    _fails(capsys, ["--input", images, "--output", out, "--model", str(no_card)], score.EXIT_USAGE, "cannot be read")
    other = tmp_path / "other.keras"
    shutil.copy(tiny_model_path, other)
    card = json.load(open(model_files.card_path_for(tiny_model_path)))
    json.dump(dict(card, preprocessing_version="old"), open(model_files.card_path_for(str(other)), "w"))
    _fails(capsys, ["--input", images, "--output", out, "--model", str(other)], score.EXIT_USAGE, "preprocessing")
    assert not os.path.exists(out) or not [name for name in os.listdir(out) if name.startswith("dt=")]


def test_unwritable_output_fails_before_any_work(capsys, tmp_path, tiny_model_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    images = os.path.join(SAMPLE_INPUTS, "images", "fashion")
    _fails(capsys, ["--input", images, "--output", str(blocker), "--model", tiny_model_path], score.EXIT_USAGE,
           "is a file; give a folder")
    _fails(capsys, ["--input", images, "--output", str(blocker / "below"), "--model", tiny_model_path],
           score.EXIT_USAGE, "cannot write to --output")


def _labels():
    with open(os.path.join(SAMPLE_INPUTS, "labels.csv"), encoding="utf-8") as stream:
        return {os.path.join(SAMPLE_INPUTS, row["path"]): row["label"] for row in csv.DictReader(stream)}


def test_real_cli_scores_sample_inputs_with_the_shipped_model(shipped_model, test_split, tmp_path):
    out = str(tmp_path / "out")
    command = [sys.executable, "-m", "pipeline.score", "--input", os.path.join(SAMPLE_INPUTS, "images"),
               "--output", out, "--run_date", "2026-11-22"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "scored 55 of 57 inputs, 2 failed" in result.stdout
    published = partition(out)
    assert os.path.basename(published) == "dt=2026-11-22"
    scores, errors = read_rows(os.path.join(published, "scores")), read_rows(os.path.join(published, "errors"))
    every_file = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(SAMPLE_INPUTS, "images")) for f in fs)
    assert sorted([r["key"] for r in scores] + [r["key"] for r in errors]) == every_file
    assert {(os.path.basename(r["key"]), r["stage"], r["error_type"]) for r in errors} == {
        ("cut-in-half.png", "decode", "truncated"), ("notes.jpg", "decode", "not an image")}
    labels = _labels()
    correct = sum(labels[r["key"]] == r["label"] for r in scores)
    assert correct >= 45, f"only {correct} of 55 sample images labelled right"
    # The sample PNGs are test images: the pipeline must give exactly what the model gives on the IDX arrays.
    fashion = [r for r in scores if "/fashion/test-" in r["key"]]
    indices = [int(os.path.basename(r["key"]).split("-")[1]) for r in fashion]
    expected = model_files.load(shipped_model).model.predict(test_split.images[indices], verbose=0)
    np.testing.assert_allclose([r["probabilities"] for r in fashion], expected, rtol=0, atol=1e-5)
    for row in scores:
        assert len(row["probabilities"]) == 10 and abs(sum(row["probabilities"]) - 1) < 1e-4
        assert row["confidence"] == max(row["probabilities"])
    manifest = json.load(open(os.path.join(published, "manifest.json")))
    counts = manifest["counts"]
    assert (counts["matched"], counts["scored"], counts["failed"], counts["invariant_holds"]) == (57, 55, 2, True)
    assert sum(counts["per_class"].values()) == 55
    assert manifest["model"]["sha256"] == data.file_sha256(shipped_model)
    assert manifest["model"]["version"] == scores[0]["model_version"]
    assert open(os.path.join(published, "_SUCCESS")).read() == manifest["run_id"]
    assert not os.listdir(os.path.join(out, ".staging"))


def test_local_worker_processes_share_the_cores_between_them():
    from pipeline import options

    def threads(*flags):
        config, beam_args = options.parse(["--input", "a", "--output", "b", *flags])
        config = score.worker_threads(config, score.pipeline_options(beam_args))
        return config.model_threads, config.decode_threads

    cores = os.cpu_count()
    assert threads() == (0, cores)  # one in-memory worker: TensorFlow's default, and every core decodes
    two = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert threads(*two) == (max(1, cores // 2), max(1, cores // 2))
    assert threads(*two, "--model_threads", "3", "--decode_threads", "2") == (3, 2)
    assert threads("--runner=PortableRunner", "--job_endpoint=localhost:1") == (0, 1)  # a process per core there
