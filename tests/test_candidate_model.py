"""Tests rolling out a new model: a candidate scored beside the run's model (--candidate_model) on the real sample
images, and both measured against labels. scores/ is what a run without the candidate writes; candidate/ is what the
candidate alone scores; agreement, flips, class mix, confidence, the strongest disagreements and both accuracies equal
numbers computed here from the two tables and the labels, independently of the scorer."""

import collections
import csv
import glob
import json
import os
import re
import shutil
import subprocess

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter

from model import card, recipes
from model.cards import card_spec
from model.runtimes import model_files
from pipeline import graph, options, score
from pipeline.outputs import comparison, counts, labels
from model.input_hashes import shape_dtype_and_pixels_sha256
from pipeline.report import report
from tests.helpers import SAMPLE_INPUTS, partition, read_rows
from tests.test_own_model import CLASSES as OTHER_CLASSES
from tests.test_own_model import _plain_keras_model

IMAGES = os.path.join(SAMPLE_INPUTS, "images")
NIGHT = "2026-11-20"


def _write_labels(path: str, rows: list) -> str:
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["key", "label"])
        writer.writerows(rows)
    return path


def _truth() -> dict:
    """The sample images' true classes, keyed as the scores table writes them (the path given to --input)."""
    with open(os.path.join(SAMPLE_INPUTS, "labels.csv"), encoding="utf-8") as stream:
        return {os.path.join(SAMPLE_INPUTS, row["path"]): row["label"] for row in csv.DictReader(stream)}


def _score(*arguments) -> int:
    return score.run(["--progress_seconds", "0", "--run_date", NIGHT, *arguments])


@pytest.fixture(scope="module")
def runs(tiny_model_path, tmp_path_factory):
    """The shipped model alone; with the tiny model (a second Fashion-MNIST model trained by the test run) as its
    candidate and labels for most inputs, some unusable; and the tiny model alone."""
    folder = tmp_path_factory.mktemp("candidate")
    truth = _truth()
    keys = sorted(truth)
    rows = [(key, truth[key]) for key in keys[:45]]
    rows += [(keys[1], truth[keys[1]]), (keys[2], "Coat" if truth[keys[2]] != "Coat" else "Bag"),
             (keys[46], "Sofa"), (os.path.join(IMAGES, "never-scored.png"), "Bag")]
    labels_file = _write_labels(str(folder / "labels.csv"), rows)
    assert _score("--input", IMAGES, "--output", str(folder / "alone")) == 0
    assert _score("--input", IMAGES, "--output", str(folder / "both"), "--candidate_model", tiny_model_path,
                  "--labels", labels_file) == 0
    assert _score("--input", IMAGES, "--output", str(folder / "candidate"), "--model", tiny_model_path) == 0
    return {"alone": partition(str(folder / "alone")), "both": partition(str(folder / "both")),
            "candidate": partition(str(folder / "candidate")), "labels": labels_file, "folder": folder,
            "usable": {key: label for key, label in rows[:45] if key != keys[2]}}


def _manifest(night: str) -> dict:
    with open(os.path.join(night, "manifest.json"), encoding="utf-8") as stream:
        return json.load(stream)


def test_scores_are_bit_for_bit_those_of_a_run_without_the_candidate(runs):
    alone, both = (os.path.join(runs[name], "scores") for name in ("alone", "both"))
    assert read_rows(both) == read_rows(alone)  # every float exactly, every label and version
    assert pq.read_schema(glob.glob(both + "/*.parquet")[0]).metadata == \
        pq.read_schema(glob.glob(alone + "/*.parquet")[0]).metadata


def test_the_candidate_table_holds_what_the_candidate_scores_alone_under_its_own_version(runs):
    candidate = read_rows(os.path.join(runs["both"], "candidate"))
    assert candidate == read_rows(os.path.join(runs["candidate"], "scores")) and len(candidate) == 55
    versions = {row["model_version"] for row in read_rows(os.path.join(runs["both"], "scores"))}
    assert {row["model_version"] for row in candidate} != versions
    assert _manifest(runs["both"])["candidate"]["model"]["version"] == candidate[0]["model_version"]


def test_an_input_that_fails_for_both_models_is_one_error_row(runs):
    errors = read_rows(os.path.join(runs["both"], "errors"))
    assert errors == read_rows(os.path.join(runs["alone"], "errors")) and len(errors) == 2
    found = _manifest(runs["both"])
    assert found["counts"]["invariant_holds"] and found["counts"]["failed"] == 2
    assert found["candidate"]["failed"] == 2 and found["candidate"]["scored"] == 55


def test_the_comparison_equals_what_the_two_tables_say(runs):
    model = {row["key"]: row for row in read_rows(os.path.join(runs["both"], "scores"))}
    candidate = {row["key"]: row for row in read_rows(os.path.join(runs["both"], "candidate"))}
    both = sorted(set(model) & set(candidate))
    found = _manifest(runs["both"])["candidate"]
    agreed = sum(model[key]["label"] == candidate[key]["label"] for key in both)
    assert 0 < agreed < len(both)  # two real models that mostly, not always, agree
    assert (found["compared"], found["agreed"], found["agreement"]) == (len(both), agreed, round(agreed / len(both), 6))
    flips = collections.Counter((model[key]["label"], candidate[key]["label"]) for key in both)
    assert {(a, b): amount for a, row in found["flips"].items() for b, amount in row.items()} == dict(flips)
    assert found["class_mix"]["candidate"] == {name: sum(row["label"] == name for row in candidate.values())
                                               for name in found["class_mix"]["candidate"]}
    for side, rows in (("model", model), ("candidate", candidate)):
        mean = np.mean([np.float64(rows[key]["confidence"]) for key in both])
        assert found["mean_confidence"][side] == pytest.approx(mean, abs=2e-6)
    strongest = sorted((key for key in both if model[key]["label"] != candidate[key]["label"]),
                       key=lambda key: (-min(model[key]["confidence"], candidate[key]["confidence"]), key))
    assert [row["key"] for row in found["disagreements"]] == strongest[:comparison.KEPT]
    assert found["disagreements"][0]["candidate_label"] == candidate[strongest[0]]["label"]


def test_both_accuracies_equal_what_the_tables_and_labels_give_and_what_cannot_be_used_is_counted(runs):
    usable = runs["usable"]
    measured = _manifest(runs["both"])["labels"]
    assert json.loads(open(os.path.join(runs["both"], labels.FILE), encoding="utf-8").read()) == measured
    for side, table in (("model", "scores"), ("candidate", "candidate")):
        predicted = {row["key"]: row["label"] for row in read_rows(os.path.join(runs["both"], table))}
        correct = sum(predicted[key] == label for key, label in usable.items())
        found = measured["models"][side]["accuracy"]
        assert (found["labelled"], found["correct"]) == (len(usable), correct)
        assert found["interval"] == labels.interval(correct, len(usable))
        assert found["left_out"] == {"label_not_a_class": 1, "key_not_in_run": 1, "duplicate_keys": 2,
                                     "conflicting_keys": 1}
    page = open(os.path.join(runs["both"], report.REPORT), encoding="utf-8").read()
    headings = re.findall(r"<h2>([^<]*)</h2>", page)
    assert headings[1].startswith("Failures") and headings[2] == "Candidate model"
    assert "Accuracy on labelled inputs" in headings and "class=heat" in page


def test_the_disagreements_are_shown_as_each_model_saw_them(runs):
    kept = comparison.read_disagreements(runs["both"])
    manifest = _manifest(runs["both"])
    specs = {side: card_spec.spec_described(described) for side, described in
             (("model", manifest["model"]), ("candidate", manifest["candidate"]["model"]))}
    assert kept and [row["key"] for row in kept] == [row["key"] for row in manifest["candidate"]["disagreements"]]
    for row in kept:
        data = open(row["key"], "rb").read()
        for side, spec in specs.items():
            assert row[f"{side}_input_sha256"] == shape_dtype_and_pixels_sha256(recipes.to_model_input(spec, data))
    page = open(os.path.join(runs["both"], report.REPORT), encoding="utf-8").read()
    section = page[page.index("<h2>Candidate model</h2>"):page.index("<h2>Accuracy on labelled inputs</h2>")]
    assert section.count("class='card pair'") == len(kept)
    assert section.count("class='seen'") == 2 * len(kept) and "changed since" not in section


@pytest.fixture(scope="module")
def colour_candidate(tmp_path_factory):
    """A colour 48x40 model of other classes (lamp, chair, ...) carded with `python -m model.card`."""
    path = str(tmp_path_factory.mktemp("colour") / "furniture.keras")
    _plain_keras_model(path)
    assert card.main([path, "--classes", ",".join(OTHER_CLASSES), "--preprocessing", "fit", "--resize", "pad",
                      "--input-range", "unit", "--outputs", "logits", "--version", "2.0.0", "--repeat", "1"]) == 0
    return path


def test_a_candidate_of_another_size_colour_and_classes_scores_as_it_would_alone(colour_candidate, tmp_path):
    assert _score("--input", IMAGES, "--output", str(tmp_path / "both"), "--candidate_model", colour_candidate) == 0
    assert _score("--input", IMAGES, "--output", str(tmp_path / "alone"), "--model", colour_candidate) == 0
    both = partition(str(tmp_path / "both"))
    candidate = read_rows(os.path.join(both, "candidate"))
    assert candidate == read_rows(os.path.join(partition(str(tmp_path / "alone")), "scores"))
    assert {row["label"] for row in candidate} <= set(OTHER_CLASSES)
    found = _manifest(both)["candidate"]
    assert found["agreement"] == 0.0 and found["compared"] == 55  # no class name in common
    assert sum(amount for row in found["flips"].values() for amount in row.values()) == 55
    spec = card_spec.spec_described(found["model"])
    row = comparison.read_disagreements(both)[0]
    assert row["candidate_input_sha256"] == shape_dtype_and_pixels_sha256(
        recipes.to_model_input(spec, open(row["key"], "rb").read()))
    assert spec.pixel_shape == (48, 40, 3)


def test_raw_pixels_the_candidate_cannot_take_are_its_failures_and_the_model_still_scores_them(colour_candidate,
                                                                                                tmp_path):
    records = os.path.join(SAMPLE_INPUTS, "tfrecords", "*.tfrecord*")
    assert _score("--input_tfrecords", records, "--output", str(tmp_path / "alone")) == 0
    assert _score("--input_tfrecords", records, "--output", str(tmp_path / "both"), "--candidate_model",
                  colour_candidate) == 0
    alone, both = partition(str(tmp_path / "alone")), partition(str(tmp_path / "both"))
    assert read_rows(os.path.join(both, "scores")) == read_rows(os.path.join(alone, "scores"))
    errors = read_rows(os.path.join(both, "errors"))
    only_candidate = [row for row in errors if row["stage"] == "candidate:decode"]
    assert len(only_candidate) == 10 and all("48x40x3" in row["error_message"] for row in only_candidate)
    scored = {row["key"] for row in read_rows(os.path.join(both, "scores"))}
    assert {row["key"] for row in only_candidate} <= scored
    found = _manifest(both)
    assert found["counts"]["invariant_holds"] and found["counts"]["failed"] == _manifest(alone)["counts"]["failed"]
    assert found["candidate"]["failed_by_stage"]["decode"] >= 10
    assert found["candidate"]["scored"] + found["candidate"]["failed"] == found["counts"]["matched"]


def test_the_runners_counters_hold_the_comparison(tiny_model_path, tmp_path):
    config, beam_args = options.parse(["--input", IMAGES, "--output", str(tmp_path / "out"), "--progress_seconds",
                                       "0", "--candidate_model", tiny_model_path])
    loaded, candidate = model_files.load(config.model), model_files.load(tiny_model_path)
    folder = str(tmp_path / "staging")
    os.makedirs(folder)
    pipeline = beam.Pipeline(options=score.pipeline_options(beam_args))
    graph.build(pipeline, config, loaded.card, loaded.version, folder, (candidate.card, candidate.version))
    result = pipeline.run()
    result.wait_until_finish()
    with open(os.path.join(folder, counts.COUNTS_FILE), encoding="utf-8") as stream:
        written = json.load(stream)
    queried = result.metrics().query(MetricsFilter().with_namespace(counts.NAMESPACE))
    counters = {entry.key.metric.name: entry.committed for entry in queried["counters"]}
    assert written["candidate/compared"] == 55 and 0 < written["candidate/agreed"] < 55
    assert {name: counters.get(name, 0) for name in written} == written  # never added to: zero
    assert sum(amount for name, amount in written.items() if name.startswith("candidate_flips/")) == 55


def test_labels_arriving_later_measure_both_models_and_change_nothing_else(runs, tiny_model_path, capsys):
    output = str(runs["folder"] / "later")
    assert _score("--input", IMAGES, "--output", output, "--candidate_model", tiny_model_path) == 0
    night = partition(output)
    before = {name: open(os.path.join(night, name), "rb").read() for name in ("manifest.json", "_SUCCESS")}
    assert "labels" not in json.loads(before["manifest.json"])
    capsys.readouterr()
    assert report.main([night, "--labels", runs["labels"]]) == 0
    printed = capsys.readouterr().out
    assert printed.count("labels, model") == 1 and printed.count("labels, candidate") == 1
    measured = json.loads(open(os.path.join(night, labels.FILE), encoding="utf-8").read())
    assert measured["models"] == _manifest(runs["both"])["labels"]["models"]
    assert {name: open(os.path.join(night, name), "rb").read() for name in before} == before


@pytest.mark.parametrize("content, said", [
    (b"file,class\na.png,Bag\n", "no key and no label column"),
    (b"key,label\n\xff\xfe,Bag\n", "not UTF-8"),
])
def test_a_labels_file_that_is_not_one_stops_the_run_in_one_line(content, said, tiny_model_path, tmp_path, capsys):
    (tmp_path / "labels.csv").write_bytes(content)
    capsys.readouterr()
    assert _score("--input", IMAGES, "--output", str(tmp_path / "out"), "--candidate_model", tiny_model_path,
                  "--labels", str(tmp_path / "labels.csv")) == score.EXIT_USAGE
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: --labels:") and said in error
    assert not glob.glob(str(tmp_path / "out" / "dt=*"))


def test_a_huge_labels_file_is_refused_before_the_run_reads_it_whole(tmp_path, capsys):
    huge = tmp_path / "labels.csv"
    with open(huge, "wb") as stream:
        stream.write(b"key,label\n")
        stream.truncate(labels.MAX_LABELS_BYTES + 10)  # sparse: no disk, but every byte of it would be read
    capsys.readouterr()
    assert _score("--input", IMAGES, "--output", str(tmp_path / "out"), "--labels", str(huge)) == score.EXIT_USAGE
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "over the limit of 268,435,456" in error


def test_a_missing_candidate_is_refused_before_anything_runs(tmp_path, capsys):
    capsys.readouterr()
    assert _score("--input", IMAGES, "--output", str(tmp_path / "out"), "--candidate_model",
                  str(tmp_path / "new.keras")) == score.EXIT_USAGE
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: --candidate_model: model file")


@pytest.mark.slow
def test_two_workers_sharing_both_models_score_as_one_process(runs, tiny_model_path, tmp_path):
    output = str(tmp_path / "shared")
    assert _score("--input", IMAGES, "--output", output, "--candidate_model", tiny_model_path, "--share_model",
                  "--direct_running_mode=multi_processing", "--direct_num_workers=2", "--files_per_chunk", "5") == 0
    for table in ("scores", "candidate", "errors"):
        assert read_rows(os.path.join(partition(output), table)) == read_rows(os.path.join(runs["both"], table))
    assert _manifest(partition(output))["candidate"]["agreed"] == _manifest(runs["both"])["candidate"]["agreed"]


@pytest.mark.slow
def test_the_candidate_report_renders_in_chromium(runs, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Chromium is missing: `apt-get install -y chromium` (.ci/run installs it)")
    url = "file://" + os.path.join(runs["both"], report.REPORT)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    section = dom[dom.index(">Candidate model<"):dom.index(">Accuracy on labelled inputs<")]
    assert section.count("<img ") == 3 * len(comparison.read_disagreements(runs["both"]))  # two seen, one original
    shot = str(tmp_path / "report.png")
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1280,3400", url], capture_output=True,
                   timeout=120, check=True)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=int)
    blue = (pixels[..., 2] > 200) & (pixels[..., 0] < 80)  # the heat map's diagonal and the bars
    red = (pixels[..., 0] > 190) & (pixels[..., 1] < 200) & (pixels[..., 2] < 200) & (pixels[..., 1] > 120)
    assert blue.sum() > 2000 and red.sum() > 200  # agreement and flips both drawn


def test_hostile_labels_are_counted_never_opened_or_shown(tmp_path, capsys):
    """Keys that name files outside the run and labels that hold terminal escapes and bidirectional controls: counted
    as what they are; nothing is read from them and the page and console show no raw control character."""
    output = str(tmp_path / "out")
    assert _score("--input", IMAGES, "--output", output) == 0
    night = partition(output)
    key = sorted(_truth())[0]
    hostile = _write_labels(str(tmp_path / "labels\x1b[2J.csv"), [
        ("/etc/passwd", "Bag"), ("../../../../etc/shadow", "Coat"), (key, "Bag\x1b[31m\u202egnp.exe"),
        ("\x1b]0;owned\x07", "Sandal")])
    capsys.readouterr()
    assert report.main([night, "--labels", hostile]) == 0
    printed = capsys.readouterr()
    measured = json.loads(open(os.path.join(night, labels.FILE), encoding="utf-8").read())["models"]["model"]
    assert measured["accuracy"]["labelled"] == 0
    assert measured["accuracy"]["left_out"]["key_not_in_run"] == 3
    assert measured["accuracy"]["left_out"]["label_not_a_class"] == 1
    page = open(os.path.join(night, report.REPORT), encoding="utf-8").read()
    assert "\x1b" not in page and "\u202e" not in page and "root:" not in page
    assert "\x1b" not in printed.out + printed.err
