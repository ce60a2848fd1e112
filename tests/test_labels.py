"""Tests reading labels files (CSV and Parquet, written here as a team would) and a model's accuracy against them:
the numbers equal ones computed independently, and every kind of bad file or row is counted or refused in one line."""

import csv
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.outputs import labels

CLASSES = ("lamp", "chair", "table")


def _csv(rows, header=("key", "label")) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _parquet(rows, names=("key", "label")) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({name: [row[i] for row in rows] for i, name in enumerate(names)}), buffer)
    return buffer.getvalue()


def test_accuracy_equals_what_is_counted_by_hand_from_csv_and_parquet_alike():
    rng = np.random.default_rng(4)
    keys = [f"s3://shop/in/{i:04d}.jpg" for i in range(300)]
    truth = {key: CLASSES[i] for key, i in zip(keys, rng.integers(0, 3, 300))}
    predicted = {key: (label if rng.random() < 0.7 else CLASSES[(CLASSES.index(label) + 1) % 3])
                 for key, label in truth.items()}
    labelled = keys[:200]  # the truth for some inputs only
    rows = [(key, truth[key]) for key in labelled]
    for data in (_csv(rows), _parquet(rows)):
        found = labels.accuracy(predicted, labels.parse(data, "labels"), CLASSES)
        right = [predicted[key] == truth[key] for key in labelled]
        assert found["labelled"] == 200 and found["correct"] == sum(right)
        assert found["accuracy"] == round(sum(right) / 200, 6)
        low, high = found["interval"]
        assert low < found["accuracy"] < high and high - low < 0.15
        for name in CLASSES:
            of_class = [key for key in labelled if truth[key] == name]
            expected = sum(predicted[key] == name for key in of_class) / len(of_class)
            assert found["per_class"][name]["labelled"] == len(of_class)
            assert found["per_class"][name]["accuracy"] == round(expected, 6)


def test_the_wilson_interval_matches_its_formula_and_its_edges():
    assert labels.interval(0, 0) == [0.0, 1.0]
    low, high = labels.interval(10, 10)
    assert high == 1.0 and round(low, 3) == 0.722  # 10/10: the 95% interval's lower end, by the Wilson formula
    low, high = labels.interval(50, 100)
    assert (round(low, 4), round(high, 4)) == (0.4038, 0.5962)


def test_what_cannot_be_used_is_counted_not_fatal():
    predicted = {"a.png": "lamp", "b.png": "chair", "c.png": "table", "d.png": "lamp"}
    rows = [("a.png", "lamp"), ("b.png", "sofa"), ("x.png", "lamp"), ("c.png", "table"), ("c.png", "table"),
            ("d.png", "lamp"), ("d.png", "chair")]
    found = labels.accuracy(predicted, labels.parse(_csv(rows), "labels"), CLASSES)
    assert found["labelled"] == 2 and found["correct"] == 2  # a.png and c.png (given twice, the same label)
    assert found["left_out"] == {"label_not_a_class": 1, "key_not_in_run": 1, "duplicate_keys": 2,
                                 "conflicting_keys": 1}


@pytest.mark.parametrize("data, message", [
    (_csv([("a", "lamp")], header=("file", "label")), "has no key column (its header is ['file', 'label'])"),
    (_csv([("a", "lamp")], header=("key", "class")), "has no label column"),
    (_parquet([("a", "lamp")], names=("path", "class")), "has no key and no label column"),
    ("key,label\nä.png,lamp\n".encode("latin-1"), "is not UTF-8 text (byte 10 cannot be decoded)"),
    (b"PAR1" + b"\x00" * 100, "is not a whole Parquet file"),
])
def test_a_file_that_is_not_labels_is_one_line_saying_what_to_change(data, message):
    with pytest.raises(labels.LabelsError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")) as raised:
        labels.parse(data, "labels.csv")
    assert "\n" not in str(raised.value)


def test_a_huge_labels_file_is_refused_before_it_is_parsed():
    with pytest.raises(labels.LabelsError, match="over the limit of 268,435,456"):
        labels.parse(b"key,label\n" + b"x" * labels.MAX_LABELS_BYTES, "labels.csv")


def test_labels_given_days_later_go_into_the_nights_report_and_nothing_else_changes(tiny_model_path, tmp_path, capsys):
    import os

    from pipeline import score
    from pipeline.report import report
    from tests.helpers import SAMPLE_INPUTS, partition, read_rows

    output = str(tmp_path / "out")
    assert score.run(["--input", os.path.join(SAMPLE_INPUTS, "images"), "--output", output, "--model",
                      tiny_model_path, "--run_date", "2026-11-20"]) == 0
    night = partition(output)
    before = {name: open(os.path.join(night, name), "rb").read() for name in ("manifest.json", "_SUCCESS")}
    rows = read_rows(os.path.join(night, "scores"))
    truth = {row["key"]: (row["label"] if i % 4 else "Bag") for i, row in enumerate(rows[:40])}
    labelled = [(key, label) for key, label in truth.items()] + [("not-in-run.png", "Bag"), (rows[0]["key"], "Coat"),
                                                                  (rows[50]["key"], "Sofa")]
    (tmp_path / "labels.csv").write_bytes(_csv(labelled))
    capsys.readouterr()
    assert report.main([night, "--labels", str(tmp_path / "labels.csv")]) == 0
    printed = capsys.readouterr().out
    predicted = {row["key"]: row["label"] for row in rows}
    usable = {key: label for key, label in truth.items() if key != rows[0]["key"]}  # given twice, differently
    correct = sum(predicted[key] == label for key, label in usable.items())
    assert f"accuracy {correct / len(usable):.4f} on {len(usable):,} labelled inputs" in printed
    measured = __import__("json").loads(open(os.path.join(night, labels.FILE)).read())["models"]["model"]
    assert measured["accuracy"]["correct"] == correct and measured["accuracy"]["labelled"] == len(usable)
    assert measured["accuracy"]["left_out"] == {"label_not_a_class": 1, "key_not_in_run": 1, "duplicate_keys": 1,
                                                "conflicting_keys": 1}  # "Sofa" is no class
    page = open(os.path.join(night, "report.html"), encoding="utf-8").read()
    assert "Accuracy on labelled inputs" in page and f"{correct / len(usable):.1%}" in page
    assert {name: open(os.path.join(night, name), "rb").read() for name in before} == before
    (tmp_path / "bad.csv").write_bytes(b"file,class\na,b\n")
    assert report.main([night, "--labels", str(tmp_path / "bad.csv")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
