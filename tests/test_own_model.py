"""Tests scoring a model trained elsewhere: a plain Keras model (colour input in [0, 1], logits, four classes) is
carded with `python -m model.card` and scored by the real pipeline, in memory, with two worker processes and from
TFRecords, each row equal to softmax(model.predict) on the card's preprocessing of the same file."""

import base64
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from model import card, recipes, writing
from model.cards import card_spec
from model.runtimes import model_files
from model.vocabulary import RECORD_KEY_RAW_PIXELS
from pipeline import score
from tests import samples
from tests.helpers import REPO_ROOT, partition, read_rows, scored_in_memory_and_on_two_workers

CLASSES = ("lamp", "chair", "table", "vase")
INPUT_SHAPE = (48, 40, 3)  # not square, so height and width cannot be swapped unnoticed


def _plain_keras_model(path: str, input_shape=INPUT_SHAPE, classes: int = len(CLASSES), lambda_layer=False):
    """A small CNN as any Keras user writes it: float input in [0, 1], batch normalisation, logits out."""
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    if lambda_layer:
        x = keras.layers.Lambda(lambda tensor: tensor * 2.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes)(x)  # logits: no softmax
    model = keras.Model(inputs, outputs)
    # Batch normalisation with statistics of its own, so folding it (as the scorer does) has something to fold.
    norm = model.layers[2]
    norm.set_weights([np.linspace(0.5, 1.5, 8), np.linspace(-0.2, 0.2, 8), np.linspace(-0.1, 0.1, 8),
                      np.linspace(0.5, 2.0, 8)])
    model.save(path)
    return model


def _photos(test_split, folder: str) -> list:
    """Colour shop photos of real Fashion-MNIST items, tinted, as JPEG and PNG of several sizes (one with alpha)."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for index in range(24):
        tint = ((index * 40) % 256 / 255, 0.3 + (index % 3) * 0.2, 1 - (index % 5) * 0.15)
        photo = samples.catalogue_photo(test_split.images[index], index, tint=tint)
        photo = photo.resize((photo.width * (1 + index % 3) // 2, photo.height * (1 + index % 3) // 2))
        if index % 4 == 0:
            photo, suffix = photo.convert("RGBA"), ".png"
        else:
            suffix = ".jpg" if index % 2 else ".png"
        path = os.path.join(folder, f"photo-{index:02d}{suffix}")
        photo.save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def carded_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("own-model")
    path = str(folder / "furniture.keras")
    model = _plain_keras_model(path)
    code = card.main([path, "--classes", ",".join(CLASSES), "--preprocessing", "fit", "--resize", "pad",
                      "--fill", "255,255,255", "--input-range", "unit", "--outputs", "logits", "--version", "2.1.0",
                      "--repeat", "1"])
    assert code == card.EXIT_OK
    return path, model


def _expected(model, spec, paths: list) -> np.ndarray:
    """softmax(model.predict) on the card's preprocessing of each file, with plain Keras."""
    pixels = np.stack([recipes.to_model_input(spec, open(path, "rb").read()) for path in paths])
    logits = model.predict(pixels.astype(np.float32) / 255.0, verbose=0)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def test_the_card_says_what_was_declared_and_what_the_model_is(carded_model):
    path, model = carded_model
    written = json.loads(open(model_files.card_path_for(path)).read())
    assert written["card_format"] == card_spec.CARD_FORMAT and written["class_names"] == list(CLASSES)
    assert written["input_shape"] == list(INPUT_SHAPE) and written["input_range"] == "unit"
    assert written["outputs"] == "logits" and written["version"] == "2.1.0"
    assert written["preprocessing"] == {"name": "fit", "version": 2,
                                        "parameters": {"resize": "pad", "fill": [255, 255, 255]}}
    assert written["content_sha256"] == model_files.content_sha256(model)
    assert written["forward_cost"]["rows_per_call"] == 1024 and written["forward_cost"]["images_per_second"] > 0
    loaded = model_files.load(path)  # every loader's checks pass
    assert loaded.spec.class_names == CLASSES and loaded.spec.pixel_shape == INPUT_SHAPE


def test_an_own_model_scores_as_plain_keras_predicts_in_memory_and_on_two_workers(carded_model, test_split,
                                                                                    tmp_path):
    path, model = carded_model
    paths = _photos(test_split, str(tmp_path / "photos"))
    scored = scored_in_memory_and_on_two_workers(str(tmp_path / "photos"), path, tmp_path)
    assert [row["key"] for row in scored] == sorted(paths)
    expected = _expected(model, model_files.load(path).spec, sorted(paths))
    found = np.array([row["probabilities"] for row in scored])
    assert found.shape == (len(paths), len(CLASSES))
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-5)
    assert [row["label"] for row in scored] == [CLASSES[i] for i in found.argmax(axis=1)]
    assert {row["model_version"] for row in scored} == {model_files.load(path).version}
    manifest = json.loads(open(os.path.join(partition(str(tmp_path / "memory")), "manifest.json")).read())
    assert list(manifest["counts"]["per_class"]) == list(CLASSES)
    assert manifest["model"]["class_names"] == list(CLASSES) and manifest["model"]["input_shape"] == list(INPUT_SHAPE)


def test_an_own_model_scores_tfrecords_of_encoded_images_and_raw_pixels(carded_model, test_split, tmp_path):
    path, model = carded_model
    spec = model_files.load(path).spec
    paths = _photos(test_split, str(tmp_path / "photos"))[:8]
    raw = [recipes.to_model_input(spec, open(p, "rb").read()) for p in paths]
    records = [samples.example_bytes(open(p, "rb").read(), os.path.basename(p)) for p in paths]
    records += [samples.example_bytes(pixels.tobytes(), f"raw-{i}", feature_name=RECORD_KEY_RAW_PIXELS)
                for i, pixels in enumerate(raw)]
    records.append(samples.example_bytes(b"\x00" * 100, "raw-short", feature_name=RECORD_KEY_RAW_PIXELS))
    samples.write_tfrecord(str(tmp_path / "in.tfrecord"), records)
    output = str(tmp_path / "out")
    assert score.run(["--input_tfrecords", str(tmp_path / "in.tfrecord"), "--output", output, "--model", path,
                      "--raw_feature", RECORD_KEY_RAW_PIXELS, "--max_error_rate", "0.5"]) == 0
    rows = {row["key"]: row["probabilities"] for row in read_rows(os.path.join(partition(output), "scores"))}
    expected = _expected(model, spec, paths)
    for index, file_path in enumerate(paths):
        np.testing.assert_allclose(rows[os.path.basename(file_path)], expected[index], rtol=0, atol=1e-5)
        np.testing.assert_allclose(rows[f"raw-{index}"], expected[index], rtol=0, atol=1e-5)
    errors = read_rows(os.path.join(partition(output), "errors"))
    assert [(e["key"], e["error_type"]) for e in errors] == [("raw-short", "unsupported")]
    assert "100 raw pixel values, the model takes 48x40x3 = 5,760" in errors[0]["error_message"]


def test_the_report_names_the_models_classes_and_shows_colour_as_the_model_saw_it(carded_model, test_split, tmp_path):
    path, _ = carded_model
    _photos(test_split, str(tmp_path / "photos"))
    output = str(tmp_path / "out")
    assert score.run(["--input", str(tmp_path / "photos"), "--output", output, "--model", path]) == 0
    page = open(os.path.join(partition(output), "report.html"), encoding="utf-8").read()
    for name in CLASSES:
        assert f">{name}<" in page
    assert "T-shirt" not in page and "48 × 40" in page and "the 4 probabilities" in page
    seen = re.findall(r"<img class='seen' src='data:image/png;base64,([^']+)'", page)
    assert seen
    pictures = [Image.open(io.BytesIO(base64.b64decode(data))) for data in seen]
    assert all(picture.mode == "RGB" and picture.size == (40, 48) for picture in pictures)


def _card_command(tmp_path, *arguments):
    return subprocess.run([sys.executable, "-m", "model.card", *arguments], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


def test_model_card_with_eval_dir_measures_the_model_on_labelled_pictures(test_split, tmp_path, capsys):
    path = str(tmp_path / "furniture.keras")
    model = _plain_keras_model(path)
    photos = _photos(test_split, str(tmp_path / "photos"))
    held_out, labels = tmp_path / "held-out", []
    for index, photo in enumerate(photos):  # filed under a class by index: what the model says is its own business
        label = index % len(CLASSES)
        os.makedirs(held_out / CLASSES[label], exist_ok=True)
        os.replace(photo, held_out / CLASSES[label] / os.path.basename(photo))
        labels.append(label)
    assert card.main([path, "--classes", ",".join(CLASSES), "--input-range", "unit", "--outputs", "logits",
                      "--eval-dir", str(held_out), "--repeat", "1"]) == card.EXIT_OK
    assert capsys.readouterr().out.endswith(" held-out pictures\n")
    loaded = model_files.load(path)
    files = sorted(os.path.join(folder, name) for folder, _, names in os.walk(held_out) for name in names)
    truth = np.array([CLASSES.index(os.path.basename(os.path.dirname(file))) for file in files])
    predicted = _expected(model, loaded.spec, files).argmax(axis=1)
    metrics = loaded.card["test_metrics"]
    assert metrics["examples"] == len(photos) and list(metrics["per_class_accuracy"]) == list(CLASSES)
    assert metrics["accuracy"] == round(float(np.mean(predicted == truth)), 6)
    assert metrics["per_class_accuracy"]["chair"] == round(float(np.mean(predicted[truth == 1] == 1)), 4)
    assert loaded.card["test_data"][0]["per_class"] == dict.fromkeys(CLASSES, len(photos) // len(CLASSES))


def test_model_card_refuses_what_does_not_fit_in_one_line_exit_2(tmp_path):
    path = str(tmp_path / "m.keras")
    _plain_keras_model(path)
    wrong_count = _card_command(tmp_path, path, "--classes", "a,b,c", "--outputs", "logits")
    assert wrong_count.returncode == 2 and wrong_count.stderr.count("\n") == 1
    assert "gives 4 values per image, but --classes names 3" in wrong_count.stderr
    not_probabilities = _card_command(tmp_path, path, "--classes", "a,b,c,d")
    assert not_probabilities.returncode == 2 and "pass --outputs logits" in not_probabilities.stderr
    repeated = _card_command(tmp_path, path, "--classes", "a,b,a,d", "--outputs", "logits")
    assert repeated.returncode == 2 and "class_names must be a list of 2-100,000 different names" in repeated.stderr
    hidden = _card_command(tmp_path, path, "--classes", "a,b\u202egnp.exe,c,d\x1b[2J", "--outputs", "logits")
    assert hidden.returncode == 2 and "none hidden" in hidden.stderr  # names shown in terminals and pages
    assert "\u202e" not in hidden.stderr and "\x1b" not in hidden.stderr  # the line itself shows them as escapes
    assert not os.path.exists(model_files.card_path_for(path))
    lambda_path = str(tmp_path / "lambda.keras")
    _plain_keras_model(lambda_path, lambda_layer=True)
    refused = _card_command(tmp_path, lambda_path, "--classes", "a,b,c,d", "--outputs", "logits")
    assert refused.returncode == 2 and "cannot load the Keras model" in refused.stderr
    assert "Lambda" in refused.stderr and not os.path.exists(model_files.card_path_for(lambda_path))


def _altered_copy(path: str, folder, change) -> str:
    """A copy of the model (with the copies its card lists) with its card changed by change(card)."""
    import shutil

    os.makedirs(folder, exist_ok=True)
    target = os.path.join(str(folder), os.path.basename(path))
    shutil.copy(path, target)
    altered = json.loads(open(model_files.card_path_for(path)).read())
    for name in model_files.copies(path, altered):
        shutil.copy(os.path.join(os.path.dirname(path), name), os.path.join(str(folder), name))
    change(altered)
    writing.write_json_atomically(model_files.card_path_for(target), altered)
    return target


def _score_command(*arguments):
    return subprocess.run([sys.executable, "-m", "pipeline.score", *arguments], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


def test_the_known_answer_check_refuses_a_card_whose_answers_this_worker_does_not_give(carded_model, test_split,
                                                                                       tmp_path):
    path, _ = carded_model
    references = json.loads(open(model_files.card_path_for(path)).read())["known_answers"]
    assert [reference["what"] for reference in references] == ["PNG", "JPEG", "PNG with transparency"]
    assert len(json.dumps(references)) < 20_000  # small enough to travel in every card
    _photos(test_split, str(tmp_path / "photos"))

    def other_probabilities(altered):
        altered["known_answers"][1]["probabilities"][0] += 0.01

    def other_pixels(altered):
        altered["known_answers"][2]["input_sha256"] = "0" * 64

    cases = [(other_probabilities, [], "probabilities for the card's reference images differ from the card's by up "
                                       "to 0.01"),
             (other_pixels, [], "reference 3 (PNG with transparency) preprocesses to other pixels here"),
             (other_probabilities, ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
              "differ from the card's by up to 0.01")]  # checked by each worker process, not only the first
    for number, (change, extra, said) in enumerate(cases):
        altered = _altered_copy(path, tmp_path / f"altered-{number}", change)
        output = tmp_path / f"out-{number}"
        run = _score_command("--input", str(tmp_path / "photos"), "--output", str(output), "--model", altered, *extra)
        assert run.returncode == score.EXIT_USAGE, run.stderr
        lines = run.stderr.strip().splitlines()
        assert lines[-1].startswith("error: known-answer check failed") and said in lines[-1], run.stderr
        assert not list(output.glob("dt=*"))
        if not extra:  # one process: refused before the pipeline starts, in that one line
            assert len(lines) == 1, run.stderr
