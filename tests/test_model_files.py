"""Tests that a model and its card round-trip, and that a card that does not describe its model is refused."""

import json
import shutil

import keras
import numpy as np
import pytest

from model.runtimes import model_files
from model.vocabulary import CLASS_NAMES, IMAGE_SHAPE, PREPROCESSING_VERSION


def test_card_round_trips_with_training_facts(tiny_model_path):
    loaded = model_files.load(tiny_model_path)
    card = loaded.card
    assert card["class_names"] == list(CLASS_NAMES)
    assert card["input_shape"] == list(IMAGE_SHAPE)
    assert card["preprocessing_version"] == PREPROCESSING_VERSION
    assert card["parameter_count"] == loaded.model.count_params()
    assert card["architecture"] == "mlp" and card["training_config"]["epochs"] == 2
    assert "--architecture mlp" in card["training_command"]
    assert set(card["dataset_files"]) == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    assert 0.0 < card["test_metrics"]["accuracy"] <= 1.0 and card["test_metrics"]["examples"] == 1000
    assert card["content_sha256"] == model_files.content_sha256(loaded.model)
    assert loaded.version == f"{card['version']}+{card['content_sha256'][:12]}"
    assert card["tensorflow_version"] and card["keras_version"] == keras.__version__
    # The MLP's forward pass is a fraction of the reference CNN's, measured side by side at export.
    cost = card["forward_cost"]
    assert cost["reference_architecture"] == "cnn" and cost["rows_per_call"] == 1024
    # Rounded to 3 decimals in the card, from rates rounded to whole images a second.
    assert cost["relative_cost"] == pytest.approx(cost["reference_images_per_second"] / cost["images_per_second"],
                                                  abs=6e-4)
    assert cost["relative_cost"] < 0.8
    assert 0 < card["training_seconds"] < 600


def test_saving_again_gives_the_same_content_hash(tiny_model_path, tmp_path):
    loaded = model_files.load(tiny_model_path)
    again = model_files.save(loaded.model, str(tmp_path / "again.keras"), {"name": "again"})
    assert again["content_sha256"] == loaded.card["content_sha256"]
    reloaded = model_files.load(str(tmp_path / "again.keras"))
    pixels = np.random.default_rng(0).integers(0, 256, (4,) + IMAGE_SHAPE, dtype=np.uint8)
    np.testing.assert_array_equal(reloaded.model.predict(pixels, verbose=0), loaded.model.predict(pixels, verbose=0))


def _copy_model(tiny_model_path, tmp_path):
    target = str(tmp_path / "copy.keras")
    shutil.copy(tiny_model_path, target)
    shutil.copy(model_files.card_path_for(tiny_model_path), model_files.card_path_for(target))
    return target


def _edit_card(path, **changes):
    card_path = model_files.card_path_for(path)
    with open(card_path) as stream:
        card = json.load(stream)
    card.update(changes)
    with open(card_path, "w") as stream:
        json.dump(card, stream)


@pytest.mark.parametrize("changes, message", [
    ({"content_sha256": "0" * 64}, "do not match the card's content_sha256"),
    ({"class_names": list(reversed(CLASS_NAMES))}, "class names"),
    ({"preprocessing_version": "something-else"}, "trained with preprocessing"),
    ({"input_shape": [32, 32]}, "input shape"),
])
def test_card_that_disagrees_is_refused(tiny_model_path, tmp_path, changes, message):
    path = _copy_model(tiny_model_path, tmp_path)
    _edit_card(path, **changes)
    with pytest.raises(model_files.ModelFileError, match=message):
        model_files.load(path)


def test_card_of_the_previous_preprocessing_version_still_loads(tiny_model_path, tmp_path):
    """v2 only converts large photos at reduced scale; images that pass through are the same, so v1 models still fit."""
    path = _copy_model(tiny_model_path, tmp_path)
    _edit_card(path, preprocessing_version="fmnist-catalogue-v1")
    assert model_files.load(path).card["preprocessing_version"] == "fmnist-catalogue-v1"


def test_missing_model_and_missing_card_say_what_to_do(tiny_model_path, tmp_path):
    with pytest.raises(model_files.ModelFileError, match="not found; pass --model"):
        model_files.load(str(tmp_path / "nowhere.keras"))
    lonely = str(tmp_path / "lonely.keras")
    shutil.copy(tiny_model_path, lonely)
    with pytest.raises(model_files.ModelFileError, match="model card .* not found"):
        model_files.load(lonely)


def test_not_a_keras_file_is_a_clear_error(tiny_model_path, tmp_path):
    """Checked as an archive before Keras sees it."""
    path = _copy_model(tiny_model_path, tmp_path)
    with open(path, "wb") as stream:
        stream.write(b"this is not a zip archive")
    with pytest.raises(model_files.ModelFileError, match="is not a whole .keras archive"):
        model_files.load(path)


@pytest.mark.parametrize("changes, message", [
    ({"content_sha256": 12345}, "content_sha256 must be 64 lowercase hex digits, not 12345"),
    ({"content_sha256": "ABCDEF" * 10 + "ABCD"}, "content_sha256 must be 64 lowercase hex digits"),
    ({"version": {"x": 1}}, r"version must be a string of 1-64 letters, digits and \. _ \+ -, not \{'x': 1\}"),
    ({"version": "1.0.0<script>"}, "version must be a string"),
    ({"version": ""}, "version must be a string"),
    ({"class_names": [1, 2]}, "class_names must be a list of strings"),
    ({"class_names": "T-shirt/top"}, "class_names must be a list of strings"),
    ({"input_shape": [28.0, 28]}, "input_shape must be a list of whole numbers"),
    ({"input_shape": [True, 28]}, "input_shape must be a list of whole numbers"),
    ({"preprocessing_version": ["fmnist-catalogue-v2"]}, "preprocessing_version must be a string"),
    ({"card_format": "1"}, "card_format must be a whole number"),
    ({"test_metrics": [0.9]}, "test_metrics must be an object or null"),
])
def test_card_fields_of_the_wrong_type_are_refused_in_one_line(tiny_model_path, tmp_path, changes, message):
    path = _copy_model(tiny_model_path, tmp_path)
    _edit_card(path, **changes)
    with pytest.raises(model_files.ModelFileError, match=message) as raised:
        model_files.read_card(path)
    assert "\n" not in str(raised.value)


def test_a_card_nested_too_deep_is_not_json_not_a_crash(tiny_model_path, tmp_path):
    path = _copy_model(tiny_model_path, tmp_path)
    with open(model_files.card_path_for(path), "w") as stream:
        stream.write("[" * 100_000 + "]" * 100_000)
    with pytest.raises(model_files.ModelFileError, match="is not valid JSON"):
        model_files.load(path)


def test_the_shipped_card_passes_every_field_check(shipped_model):
    card = model_files.read_card(shipped_model)
    assert model_files.model_version(card) == "1.0.0+9663468da04c"


def test_lambda_layers_are_refused_by_safe_mode(tmp_path):
    inputs = keras.Input(shape=IMAGE_SHAPE)
    outputs = keras.layers.Dense(len(CLASS_NAMES))(keras.layers.Lambda(lambda x: x * 2)(keras.layers.Flatten()(inputs)))
    path = str(tmp_path / "lambda.keras")
    model_files.save(keras.Model(inputs, outputs), path, {"name": "unsafe"})
    with pytest.raises(model_files.ModelFileError, match="cannot load"):
        model_files.load(path)
