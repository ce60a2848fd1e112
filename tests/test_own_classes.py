"""Tests training a model of the user's own classes with the project's CLI: a labelled folder of colour pictures of
three shapes (JPEG and PNG, 56-120 px, rendered here) trains a 48x48x3 CNN without Fashion-MNIST, is measured on
held-out pictures, exported with a format-2 card, evaluated, used by model.predict and scored by the pipeline, whose
report names the shapes and shows the pictures in colour as the model saw them."""

import base64
import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from model import evaluate, predict, train, weights_text
from model.cards import card_spec
from model.runtimes import forward, model_files
from model.training import own_images
from pipeline import score
from tests import samples
from tests.helpers import partition, read_rows

SHAPE_FLAGS = ("--no-fashion-mnist", "--input-shape", "48x48x3", "--architecture", "cnn", "--epochs", "15",
               "--batch-size", "32", "--augment", "shift-flip", "--verbose", "0")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Pictures of circles, squares and triangles: 300 of each to train on, 30 held out (another seed)."""
    root = tmp_path_factory.mktemp("shapes")
    samples.write_shapes(str(root / "train"), 300, seed=1)
    samples.write_shapes(str(root / "held-out"), 30, seed=2)
    return root


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    """The shapes model trained by the CLI, measured on the held-out pictures for its card."""
    export = str(tmp_path_factory.mktemp("model") / "shapes.keras")
    code = train.main(["--train-dir", str(shapes / "train"), "--eval-dir", str(shapes / "held-out"), *SHAPE_FLAGS,
                       "--run-dir", str(shapes / "run"), "--export", export])
    assert code == 0
    return export


@pytest.mark.slow
def test_own_classes_train_and_the_card_says_what_the_model_learnt(trained, shapes):
    card = model_files.load(trained).card
    assert card["card_format"] == card_spec.CARD_FORMAT and card["class_names"] == list(samples.SHAPES)
    assert card["input_shape"] == [48, 48, 3] and card["input_range"] == "uint8" and card["outputs"] == "probabilities"
    assert card["preprocessing"] == {"name": "fit", "version": 2, "parameters": {"resize": "pad", "fill": [0, 0, 0]}}
    assert card["test_metrics"]["accuracy"] >= 0.9 and card["test_metrics"]["examples"] == 90
    assert set(card["test_metrics"]["per_class_accuracy"]) == set(samples.SHAPES)
    assert [part["per_class"] for part in card["training_data"]] == [dict.fromkeys(samples.SHAPES, 300)]
    assert card["test_data"][0]["location"] == str(shapes / "held-out") and "dataset_files" not in card
    assert card["forward_cost"]["rows_per_call"] == 1024 and len(card["known_answers"]) == 3


@pytest.mark.slow
def test_own_classes_evaluate_predict_and_weights_use_the_cards_classes(trained, shapes, tmp_path, capsys):
    reports = tmp_path / "reports"
    assert evaluate.main(["--model", trained, "--no-fashion-mnist", "--eval-dir", str(shapes / "held-out"),
                          "--output-dir", str(reports)]) == 0
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9 and list(metrics["per_class"]) == list(samples.SHAPES)
    assert np.array(metrics["confusion_matrix"]).shape == (3, 3)
    assert round(metrics["accuracy"], 6) == model_files.load(trained).card["test_metrics"]["accuracy"]
    for figure in ("predictions.png", "confusion_matrix.png"):
        assert Image.open(reports / figure).size[0] > 300

    pictures = [str(shapes / "held-out" / shape / f"{shape}-00{index}.{'jpg' if index % 2 else 'png'}")
                for shape, index in zip(samples.SHAPES, (0, 1, 2))]
    capsys.readouterr()
    assert predict.main([*pictures, "--model", trained, "--top", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for line, shape in zip(lines, samples.SHAPES):
        ranked = re.findall(r"(circle|square|triangle) (\d+\.\d)%", line)
        assert [name for name, _ in ranked][0] == shape and len(ranked) == 3, line  # --top 5 of 3 classes: all 3

    assert weights_text.main(["--model", trained, "--output", str(tmp_path / "weights.txt")]) == 0
    assert "probabilities/kernel shape=[128, 3]" in (tmp_path / "weights.txt").read_text()


@pytest.mark.slow
def test_own_classes_score_end_to_end_with_the_folder_names_and_a_colour_report(trained, shapes, tmp_path):
    held_out = str(shapes / "held-out")
    output = str(tmp_path / "scores")
    assert score.run(["--input", held_out, "--output", output, "--model", trained, "--progress_seconds", "0"]) == 0
    rows = read_rows(os.path.join(partition(output), "scores"))
    assert len(rows) == 90 and {len(row["probabilities"]) for row in rows} == {3}
    truth = [os.path.basename(os.path.dirname(row["key"])) for row in rows]
    assert np.mean([row["label"] == name for row, name in zip(rows, truth)]) >= 0.9
    assert {row["label"] for row in rows} <= set(samples.SHAPES)
    # The scorer's probabilities are the model's on the same preprocessing the training used.
    loaded = model_files.load(trained)
    images = own_images.load_labelled_folder(held_out, spec=loaded.spec)
    expected = forward.served_predict(loaded.model, loaded.spec)(images.images)
    by_key = {row["key"]: row["probabilities"] for row in rows}
    np.testing.assert_allclose([by_key[path] for path in images.sources], expected, rtol=0, atol=1e-5)

    page = open(os.path.join(partition(output), "report.html"), encoding="utf-8").read()
    for name in samples.SHAPES:
        assert f">{name}<" in page
    assert "T-shirt" not in page and "the 3 probabilities" in page
    seen = re.findall(r"<img class='seen' src='data:image/png;base64,([^']+)'", page)
    pictures = [Image.open(io.BytesIO(base64.b64decode(data))) for data in seen]
    assert pictures and all(picture.mode == "RGB" and picture.size == (48, 48) for picture in pictures)


def _tiny_run(tmp_path, *flags):
    """Flags of a one-epoch MLP run on a few pictures, for what the CLI decides rather than what it learns."""
    return ["--architecture", "mlp", "--epochs", "1", "--batch-size", "8", "--verbose", "0", "--data-dir",
            str(tmp_path / "no-dataset"), "--run-dir", str(tmp_path / "run"), *flags]


def test_classes_come_from_the_folders_sorted_or_from_classes_in_its_order(tmp_path):
    samples.write_shapes(str(tmp_path / "few"), 4, seed=3)
    sorted_export, ordered_export = str(tmp_path / "sorted.keras"), str(tmp_path / "ordered.keras")
    assert train.main(_tiny_run(tmp_path, "--no-fashion-mnist", "--train-dir", str(tmp_path / "few"),
                                "--input-shape", "32x24x1", "--resize", "crop", "--fill", "255,255,255",
                                "--export", sorted_export)) == 0
    card = model_files.load(sorted_export).card
    assert card["class_names"] == ["circle", "square", "triangle"] and card["input_shape"] == [32, 24, 1]
    assert card["preprocessing"]["parameters"] == {"resize": "crop", "fill": [255, 255, 255]}
    assert card["test_metrics"] is None

    # A list file labels by any of the named classes; --classes fixes the names and their order.
    listed = [f"few/{shape}/{shape}-00{index}.{'jpg' if index % 2 else 'png'} {shape}"
              for shape in ("triangle", "square") for index in range(4)]
    (tmp_path / "labels.txt").write_text("\n".join(listed) + "\n")
    assert train.main(_tiny_run(tmp_path, "--no-fashion-mnist", "--train-list", str(tmp_path / "labels.txt"),
                                "--classes", "triangle,square,circle", "--run-dir", str(tmp_path / "run2"),
                                "--export", ordered_export)) == 0
    card = model_files.load(ordered_export).card
    assert card["class_names"] == ["triangle", "square", "circle"] and card["input_shape"] == [64, 64, 3]
    assert card["training_data"][0]["per_class"] == {"triangle": 4, "square": 4, "circle": 0}


def test_own_classes_refusals_are_one_line_exit_2(tmp_path, small_data_dir, capsys):
    samples.write_shapes(str(tmp_path / "few"), 2, seed=4)
    cases = [
        (["--train-dir", str(tmp_path / "few"), "--input-shape", "48x48x3", "--data-dir", small_data_dir],
         "error: with Fashion-MNIST the model learns its ten classes from 28x28 grey images; add --no-fashion-mnist "
         "to train your own classes or input shape"),
        (["--no-fashion-mnist", "--train-dir", str(tmp_path / "few"), "--classes", "circle,square"],
         f"error: {tmp_path / 'few' / 'triangle'}: unknown class 'triangle': use an index 0-1 or one of circle, "
         "square"),
        (["--no-fashion-mnist", "--train-dir", str(tmp_path / "few"), "--classes", "circle,square,circle"],
         "error: class name 'circle' is given more than once"),
    ]
    # A folder name is a class name shown in every row, terminal and page: one with hidden characters is refused, and
    # the line shows them as escapes.
    hostile = tmp_path / "hostile"
    samples.write_shapes(str(hostile), 1, seed=5)
    os.rename(hostile / "circle", hostile / "circle\x1b[2J\u202egnp.exe")
    cases.append((["--no-fashion-mnist", "--train-dir", str(hostile)],
                  "error: class name 'circle\\x1b[2J\\u202egnp.exe' must be 1-200 characters, none hidden (no "
                  "control, format or separator characters) and no space at either end"))
    for flags, line in cases:
        assert train.main(_tiny_run(tmp_path, *flags)) == 2
        err = capsys.readouterr().err
        assert err == line + "\n", err
    with pytest.raises(SystemExit) as stopped:
        train.main(_tiny_run(tmp_path, "--no-fashion-mnist", "--train-dir", str(tmp_path / "few"),
                             "--input-shape", "48x48x2"))
    assert stopped.value.code == 2
    assert "'48x48x2' is not HxWxC with C 1 or 3, e.g. 64x64x3 or 28x28x1" in capsys.readouterr().err
