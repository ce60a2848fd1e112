"""Tests the scoring CLI: every fail-fast message, and the real command end to end on sample_inputs/."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from model.runtimes import model_files
from model.training import data
from pipeline import options, score
from tests.helpers import REPO_ROOT, SAMPLE_INPUTS, partition, read_rows

pytestmark = pytest.mark.clock  # also run with the clock moved to another day and zone: make test-clock


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


@pytest.mark.parametrize("extra, message", [
    (["--runner=Bogus"], "--runner=Bogus is not a runner Beam knows"),
    (["--direct_num_workers=-1"], "--direct_num_workers=-1: give 1 or more"),
    (["--direct_running_mode=sideways"], "invalid choice: 'sideways'"),
    (["--model_threads", "-2"], "-2 is not a whole number of 0 or more"),
    (["--model_copies", "-1", "--share_model"], "-1 is not a whole number of 0 or more"),
    (["--max_file_bytes", "0"], "0 is not a positive whole number"),
    (["--compression", "bzip2"], "invalid choice: 'bzip2'"),
])
def test_runner_and_count_mistakes_fail_fast_without_a_traceback(capsys, tmp_path, tiny_model_path, extra, message):
    argv = ["--input", os.path.join(SAMPLE_INPUTS, "images", "fashion"), "--output", str(tmp_path / "out"),
            "--model", tiny_model_path, *extra]
    err = _fails(capsys, argv, score.EXIT_USAGE, message)
    assert "Traceback" not in err


def test_an_empty_input_is_a_usage_error_not_the_current_folder(capsys, tmp_path, tiny_model_path):
    _fails(capsys, ["--input", "", "--output", str(tmp_path / "out"), "--model", tiny_model_path], score.EXIT_USAGE,
           "an input is empty; give a folder, a file or a glob")


def test_a_folder_of_nothing_scoreable_exits_3_and_keeps_the_partition(capsys, tmp_path, tiny_model_path, test_split):
    from tests import samples

    hidden_only = tmp_path / "in"
    samples.write_pngs(test_split.images[:2], str(hidden_only), [".a.png", ".b.png"])
    samples.write_pngs(test_split.images[:1], str(hidden_only / ".thumbnails"), ["c.png"])
    out = tmp_path / "out"
    partition = out / "dt=2026-11-20"
    partition.mkdir(parents=True)
    (partition / "_SUCCESS").write_text("GOOD")
    err = _fails(capsys, ["--input", str(hidden_only), "--output", str(out), "--model", tiny_model_path,
                          "--run_date", "2026-11-20"], score.EXIT_NO_INPUT, "holds nothing to score (3 hidden skipped)")
    assert (partition / "_SUCCESS").read_text() == "GOOD" and "Traceback" not in err


def test_glob_matching_nothing_has_its_own_exit_code(capsys, tmp_path):
    err = _fails(capsys, ["--input", str(tmp_path / "*.png"), "--output", str(tmp_path / "out")], score.EXIT_NO_INPUT,
                 "matches no files")
    assert "quote the glob" in err
    _fails(capsys, ["--input_tfrecords", str(tmp_path / "none-*.tfrecord"), "--output", str(tmp_path / "out")],
           score.EXIT_NO_INPUT, "--input_tfrecords")


def _model_copy(tiny_model_path, folder, name, content=None, card_changes=None, card_text=None):
    """A copy of the tiny model (or other bytes) named `name`, with its card changed as asked."""
    path = folder / name
    if content is None:
        shutil.copy(tiny_model_path, path)
    else:
        path.write_bytes(content)
    card = json.load(open(model_files.card_path_for(tiny_model_path)))
    text = card_text if card_text is not None else json.dumps(dict(card, **(card_changes or {})))
    open(model_files.card_path_for(str(path)), "w").write(text)
    return str(path)


def _zip_without_config() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("metadata.json", "{}")
    return buffer.getvalue()


@pytest.mark.parametrize("name, make, message", [
    ("nope.keras", None, "not found; pass --model"),
    ("text.keras", dict(content=b"hello"), "is not a whole .keras archive"),
    ("cut.keras", "cut", "is not a whole .keras archive"),
    ("no-config.keras", dict(content=_zip_without_config()), "is a zip archive but not a Keras model"),
    ("list-card.keras", dict(card_text="[1, 2]"), "is not a JSON object"),
    ("not-json-card.keras", dict(card_text="{not json"), "is not valid JSON"),
    ("old-card.keras", dict(card_changes={"preprocessing_version": "old"}), "preprocessing"),
    ("shape-card.keras", dict(card_changes={"input_shape": [32, 32]}), "input shape [32, 32]"),
    ("other-weights.keras", dict(card_changes={"content_sha256": "0" * 64}), "do not match the card's content_sha256"),
    ("a-folder.keras", "folder", "is a folder"),
    ("no-card.keras", "no card", "no-card.json cannot be read"),
])
def test_model_mistakes_fail_before_any_work(capsys, tmp_path, tiny_model_path, name, make, message):
    images = os.path.join(SAMPLE_INPUTS, "images", "fashion")
    out = str(tmp_path / "out")
    if make == "cut":
        model = _model_copy(tiny_model_path, tmp_path, name, content=open(tiny_model_path, "rb").read()[:5000])
    elif make == "folder":
        (tmp_path / name).mkdir()
        model = str(tmp_path / name)
    elif make is None:
        model = str(tmp_path / name)
    elif make == "no card":
        model = str(tmp_path / name)
        shutil.copy(tiny_model_path, model)
    else:
        model = _model_copy(tiny_model_path, tmp_path, name, **make)
    _fails(capsys, ["--input", images, "--output", out, "--model", model], score.EXIT_USAGE, message)
    assert not os.path.exists(out) or not [name for name in os.listdir(out) if name.startswith("dt=")]


def test_a_card_that_does_not_fit_the_weights_fails_with_exit_2_in_worker_processes_too(capsys, tmp_path,
                                                                                      tiny_model_path):
    model = _model_copy(tiny_model_path, tmp_path, "other-weights.keras", card_changes={"content_sha256": "0" * 64})
    out = str(tmp_path / "out")
    # Worker processes check the weights against the card when they load the model, before they read any input.
    _fails(capsys, ["--input", os.path.join(SAMPLE_INPUTS, "images", "fashion"), "--output", out, "--model", model,
                    "--direct_running_mode=multi_processing", "--direct_num_workers=2", "--progress_seconds", "0"],
           score.EXIT_USAGE, "do not match the card's content_sha256")
    assert not [name for name in os.listdir(out) if name.startswith("dt=")]
    assert os.listdir(os.path.join(out, ".staging")) == []


def test_unwritable_output_fails_before_any_work(capsys, tmp_path, tiny_model_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    images = os.path.join(SAMPLE_INPUTS, "images", "fashion")
    _fails(capsys, ["--input", images, "--output", str(blocker), "--model", tiny_model_path], score.EXIT_USAGE,
           "is a file; give a folder")
    _fails(capsys, ["--input", images, "--output", str(blocker / "below"), "--model", tiny_model_path],
           score.EXIT_USAGE, "cannot write to --output")


def test_an_output_path_that_beam_would_read_as_a_glob_is_refused_before_any_work(capsys, tmp_path, tiny_model_path):
    # Beam's own Parquet writer finds the files it wrote with FOLDER/*: below `o[1]` it found none and failed the run
    # after scoring (and `o*` would also match other folders), so such an output is a usage error, found at once.
    images = os.path.join(SAMPLE_INPUTS, "images", "fashion")
    for name, character in (("o[1]", "'['"), ("o*", "'*'"), ("o?", "'?'")):
        _fails(capsys, ["--input", images, "--output", str(tmp_path / name), "--model", tiny_model_path],
               score.EXIT_USAGE, f"holds {character}, which Beam reads as a glob")
        assert not os.path.exists(tmp_path / name)
    assert score.run(["--input", images, "--output", str(tmp_path / "o(1) & ü"), "--model", tiny_model_path,
                      "--progress_seconds", "0"]) == score.EXIT_OK
    assert os.path.isfile(os.path.join(partition(tmp_path / "o(1) & ü"), "_SUCCESS"))


def test_a_run_leaves_no_autograph_file_in_the_temporary_folder(tiny_model_path, tmp_path):
    # TensorFlow's autograph writes __autograph_generated_file*.py there and removes it only at exit, in a handler
    # that the scorer's quick exit (pipeline.score.main) never runs; the forward pass is compiled without autograph.
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    command = [sys.executable, "-m", "pipeline.score", "--input", os.path.join(SAMPLE_INPUTS, "images", "fashion"),
               "--output", str(tmp_path / "out"), "--model", tiny_model_path, "--progress_seconds", "0"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, TMPDIR=str(temporary)))
    assert result.returncode == 0, result.stderr
    assert [name for name in os.listdir(temporary) if name.startswith("__autograph_generated_file")] == []


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
    expected = model_files.load(shipped_model, runtime="keras").model.predict(test_split.images[indices], verbose=0)
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


def test_local_worker_processes_share_the_cores_between_them(monkeypatch):
    from pipeline import options

    def threads(*flags):
        config, beam_args = options.parse(["--input", "a", "--output", "b", *flags])
        config = score.worker_threads(config, score.pipeline_options(beam_args))
        return config.model_threads, config.decode_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert threads() == (0, 8)  # one in-memory worker: TensorFlow's default, and every core decodes
    two = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert threads(*two) == (4, 4)
    assert threads("--direct_running_mode=multi_processing", "--direct_num_workers=3") == (2, 2)
    assert threads("--direct_running_mode=multi_processing", "--direct_num_workers=16") == (1, 1)  # at least one
    assert threads(*two, "--model_threads", "3", "--decode_threads", "2") == (3, 2)
    assert threads("--runner=PortableRunner", "--job_endpoint=localhost:1") == (0, 1)  # a process per core there


def test_reads_in_flight_reaches_the_config_and_must_be_positive(capsys):
    config, _ = options.parse(["--input", "a", "--output", "/tmp/x"])
    assert config.reads_in_flight == 64
    config, _ = options.parse(["--input", "a", "--output", "/tmp/x", "--reads_in_flight", "8"])
    assert config.reads_in_flight == 8
    with pytest.raises(SystemExit):
        options.parse(["--input", "a", "--output", "/tmp/x", "--reads_in_flight", "0"])
    assert "--reads_in_flight" in capsys.readouterr().err


def test_an_input_flag_given_twice_adds_to_the_inputs():
    config, _ = options.parse(["--input", "a", "b", "--input", "c", "--output", "/tmp/x"])
    assert config.inputs == ("a", "b", "c")
    config, _ = options.parse(["--input_tfrecords", "a", "--input_tfrecords", "b", "--output", "/tmp/x"])
    assert config.input_tfrecords == ("a", "b")
