"""Tests the predict, evaluate and weights-to-text CLIs on real images with a small trained model."""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from model import evaluate, predict, weights_text
from model.vocabulary import CLASS_NAMES

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write_examples(test_split, folder, count=3):
    paths = []
    for index in range(count):
        path = folder / f"item{index}.png"
        Image.fromarray(test_split.images[index]).save(path)
        paths.append(str(path))
    return paths


def test_predict_cli_answers_good_files_and_reports_broken_ones(tiny_model_path, test_split, tmp_path, capsys):
    good = _write_examples(test_split, tmp_path)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole jpeg")
    missing = str(tmp_path / "missing.png")
    code = predict.main([good[0], str(broken), good[1], missing, good[2], "--model", tiny_model_path, "--top", "3"])
    out = capsys.readouterr()
    assert code == predict.EXIT_SOME_FAILED
    lines = out.out.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [good[0], str(broken), good[1], missing, good[2]]
    for line in (lines[0], lines[2], lines[4]):
        ranked = re.findall(r"(" + "|".join(re.escape(n) for n in CLASS_NAMES) + r") (\d+\.\d)%", line)
        assert len(ranked) == 3
        assert [float(p) for _, p in ranked] == sorted((float(p) for _, p in ranked), reverse=True)
    # The reason once, then Pillow's own words.
    assert lines[1] == f"{broken}: error: truncated: Truncated File Read"
    assert lines[3] == f"{missing}: error: cannot read: No such file or directory"
    assert out.err == "2 of 5 files could not be classified\n"


def test_predict_cli_all_good_exits_zero_and_matches_the_model(tiny_model_path, test_split, tmp_path, capsys):
    from model.runtimes import model_files

    good = _write_examples(test_split, tmp_path, count=2)
    assert predict.main(good + ["--model", tiny_model_path, "--top", "1"]) == predict.EXIT_OK
    expected = model_files.load(tiny_model_path).model.predict(test_split.images[:2], verbose=0)
    for line, probabilities in zip(capsys.readouterr().out.strip().splitlines(), expected):
        assert line.endswith(f"{CLASS_NAMES[int(np.argmax(probabilities))]} {100 * probabilities.max():.1f}%")


def test_predict_cli_missing_model_is_a_usage_error(tmp_path, capsys):
    assert predict.main(["x.png", "--model", str(tmp_path / "none.keras")]) == predict.EXIT_USAGE
    assert "pass --model" in capsys.readouterr().err


def test_every_model_cli_refuses_a_legacy_h5_file_by_name(tiny_model_path, small_data_dir, tmp_path, capsys):
    """One loader for every command: a .h5 file is refused before Keras reads it, even with a valid card beside it."""
    import shutil

    from model.runtimes import model_files

    legacy = tmp_path / "legacy.h5"
    legacy.write_bytes(b"\x89HDF\r\n\x1a\n")
    shutil.copy(model_files.card_path_for(tiny_model_path), tmp_path / "legacy.json")
    for main, arguments in ((predict.main, ["x.png"]), (weights_text.main, ["--output", str(tmp_path / "w.txt")]),
                            (evaluate.main, ["--data-dir", small_data_dir, "--output-dir", str(tmp_path / "out")])):
        assert main([*arguments, "--model", str(legacy)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {legacy}: only .keras and .onnx model files are loaded (not legacy .h5 files or SavedModel "
        "folders); pass a .keras file that `python -m model.train` wrote, or a .onnx file with its card"] * 3
    assert not (tmp_path / "w.txt").exists() and not (tmp_path / "out").exists()


def test_evaluate_writes_metrics_and_nonempty_figures(tiny_model_path, small_data_dir, tmp_path):
    run_state = os.path.join(os.path.dirname(tiny_model_path), "run", "state.json")
    out = tmp_path / "reports"
    assert evaluate.main(["--model", tiny_model_path, "--data-dir", small_data_dir, "--output-dir", str(out),
                          "--history", run_state]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert [(part["origin"], part["location"], part["images"]) for part in result["data"]] == [
        ("fashion-mnist test", small_data_dir, 1000)]
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == result["examples"] == 1000
    assert result["accuracy"] == pytest.approx(np.trace(matrix) / 1000)
    for name in CLASS_NAMES:
        scores = result["per_class"][name]
        assert 0 <= scores["precision"] <= 1 and 0 <= scores["recall"] <= 1
    assert sum(s["support"] for s in result["per_class"].values()) == 1000
    for figure in ("confusion_matrix.png", "predictions.png", "training_curves.png"):
        content = (out / figure).read_bytes()
        assert content.startswith(_PNG_SIGNATURE) and len(content) > 10_000, figure
        with Image.open(out / figure) as image:
            assert image.width > 400 and image.height > 300
            assert len(set(image.convert("L").getdata())) > 10, f"{figure} looks blank"


def test_metrics_on_known_predictions():
    labels = np.array([0, 0, 1, 2])
    probabilities = np.eye(10)[[0, 1, 1, 2]]
    result = evaluate.metrics(labels, probabilities, CLASS_NAMES)
    assert result["accuracy"] == 0.75
    assert result["per_class"]["T-shirt/top"] == {"precision": 1.0, "recall": 0.5, "support": 2}
    assert result["per_class"]["Trouser"]["precision"] == 0.5
    assert result["confusion_matrix"][0][1] == 1


def test_weights_text_lists_every_trainable_variable(tiny_model_path, tmp_path, capsys):
    from model.runtimes import model_files

    out = tmp_path / "weights.txt"
    assert weights_text.main(["--model", tiny_model_path, "--output", str(out)]) == 0
    text = out.read_text()
    model = model_files.load(tiny_model_path).model
    for variable in model.trainable_weights:
        assert f"## {variable.path} shape={list(variable.shape)}" in text
    kernel = np.asarray(model.trainable_weights[-1])
    assert "..." not in text
    numbers = re.findall(r"-?\d+\.\d+(?:e[-+]\d+)?", text.split(f"## {model.trainable_weights[-1].path}")[1])
    np.testing.assert_allclose(np.array(numbers, dtype=float), kernel.ravel(), atol=1e-7)
    assert f"wrote {model.count_params()} values" in capsys.readouterr().out


def test_the_prediction_grid_takes_its_examples_from_every_class_in_turn(test_split):
    """With --eval-dir, images come folder by folder: the grid's 15 must not all be the first folder's."""
    from model.evaluate import across_classes

    labels = np.sort(test_split.labels[:300], kind="stable")  # as a class-folder set is ordered
    shown = across_classes(labels, 15)
    assert len(shown) == 15 and len(set(shown)) == 15
    assert set(labels[shown[:10]]) == set(range(10))  # one of each class first
    assert list(shown[:10]) == [int(np.flatnonzero(labels == label)[0]) for label in range(10)]
    few = np.array([2, 2, 2, 2, 5])
    picked = few[across_classes(few, 3)]
    assert sorted(picked) == [2, 2, 5] and picked[0] == 2
