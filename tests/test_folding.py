"""Tests folding batch normalisation into the layer before it: fewer layers, the same probabilities, on the real
shipped CNN and test images; models without anything to fold, or with nothing safe to fold, are served as they are."""

import keras
import numpy as np
import pytest

from model.runtimes import folding, model_files
from model.vocabulary import IMAGE_SHAPE, NUM_CLASSES


def _layer_types(model) -> list:
    return [type(layer).__name__ for layer in model.layers]


def test_shipped_cnn_folds_and_keeps_its_probabilities(shipped_model, test_split):
    model = model_files.load(shipped_model, runtime="keras").model
    folded = folding.fold_batch_norms(model)
    assert _layer_types(model).count("BatchNormalization") == _layer_types(model).count("Conv2D") == 3
    assert "BatchNormalization" not in _layer_types(folded)
    expected = model.predict(test_split.images, batch_size=1024, verbose=0)
    found = folded.predict(test_split.images, batch_size=1024, verbose=0)
    # Measured: at most 2.7e-06 apart over the 10,000 test images, every label the same.
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-5)
    assert (found.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_model_without_batch_normalisation_is_served_as_it_is(tiny_model_path):
    model = model_files.load(tiny_model_path).model
    assert folding.fold_batch_norms(model) is model


def _model_with(norm_after_activation: bool, shared_output: bool):
    keras.utils.set_random_seed(0)  # the same weights every run
    inputs = keras.Input(shape=IMAGE_SHAPE)
    x = keras.layers.Reshape(IMAGE_SHAPE + (1,))(inputs)
    conv = keras.layers.Conv2D(4, 3, activation="relu" if norm_after_activation else None)(x)
    normed = keras.layers.BatchNormalization()(conv)
    merged = keras.layers.Add()([normed, conv]) if shared_output else normed
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax")(keras.layers.Flatten()(merged))
    model = keras.Model(inputs, outputs)
    norm = model.layers[3]
    norm.moving_mean.assign(np.linspace(-1, 1, 4))
    norm.moving_variance.assign(np.linspace(0.5, 2, 4))
    return model


def test_unsafe_pairs_are_left_alone():
    # A convolution with its own activation, or whose output is also read elsewhere, cannot take the shift.
    for model in (_model_with(True, False), _model_with(False, True)):
        assert folding._foldable_pairs(model, keras) == []
        assert folding.fold_batch_norms(model) is model


def test_a_plain_pair_folds_with_its_moving_statistics(test_split):
    model = _model_with(False, False)
    assert [(a.name, b.name) for a, b in folding._foldable_pairs(model, keras)] == [(model.layers[2].name,
                                                                                   model.layers[3].name)]
    folded = folding.fold_batch_norms(model)
    assert folded is not model and "BatchNormalization" not in _layer_types(folded)
    # Raw 0-255 pixels into random weights: large logits, so float32 rounding shows; fold_batch_norms itself accepts a
    # fold only within folding.TOLERANCE of the model, the bar this test holds it to.
    np.testing.assert_allclose(folded.predict(test_split.images[:200], verbose=0),
                               model.predict(test_split.images[:200], verbose=0), rtol=0, atol=folding.TOLERANCE)


def test_every_architecture_with_augmentation_folds_for_serving(test_split):
    """Augmentation layers pass images through when serving, and batch normalisation still folds away."""
    from model.training import architectures

    for name in architectures.ARCHITECTURES:
        keras.utils.set_random_seed(1)
        model = architectures.build(name, augment="shift-flip-erase", seed=1)
        model(test_split.images[:64], training=True)  # moving statistics move off their start
        folded = folding.fold_batch_norms(model)
        assert model.output_shape == (None, NUM_CLASSES)
        np.testing.assert_allclose(folded.predict(test_split.images[:256], verbose=0),
                                   model.predict(test_split.images[:256], verbose=0), rtol=0, atol=folding.TOLERANCE)
        assert "BatchNormalization" not in _layer_types(folded)


def test_a_wrong_fold_is_caught_by_the_few_rows_probe_and_the_model_served_as_it_is(monkeypatch):
    """The probe is a few rows (folding._PROBE_ROWS), cheap at 224x224: a fold whose weights are off by 1% in one
    channel is still found, and the original model served."""
    model = _model_with(False, False)
    right = folding._folded_weights

    def off_by_one_percent(producer, norm):
        kernel, bias = right(producer, norm)
        kernel[..., 0] *= 1.01
        return [kernel, bias]

    monkeypatch.setattr(folding, "_folded_weights", off_by_one_percent)
    assert folding._PROBE_ROWS <= 8
    assert folding.fold_batch_norms(model) is model


def test_a_normalization_layer_is_served_as_a_fixed_rescaling_and_exports_to_onnx_with_one_input(test_split,
                                                                                                   tmp_path):
    """keras.applications' EfficientNet normalises inside the model: its Normalization layer's mean and variance are
    variables, which Keras's ONNX export (tf2onnx) would leave as more graph inputs; served, it is a Rescaling with
    the same per-channel scale and offset."""
    pytest.importorskip("onnxruntime")
    from model.runtimes import choosing, onnx_checks

    pixels = np.repeat(test_split.images[:64, ..., None], 3, axis=-1).astype(np.float32)
    pixels[..., 1] *= 0.5
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(pixels)
    inputs = keras.Input(shape=(28, 28, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(norm(inputs))
    model = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES, activation="softmax")(keras.layers.Flatten()(x)))
    served = folding.fold_batch_norms(model)
    assert "Normalization" not in _layer_types(served) and "Rescaling" in _layer_types(served)
    np.testing.assert_allclose(np.asarray(served(pixels)), np.asarray(model(pixels)), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(folding.folded_call(model)(pixels)), np.asarray(served(pixels)), rtol=0,
                               atol=1e-6)  # as the scorer serves it, with no copy
    path = str(tmp_path / "normalised.onnx")
    choosing.export_onnx(model, path)
    checked = onnx_checks.check_file(path)  # one image input, or refused
    import onnxruntime

    session = onnxruntime.InferenceSession(checked.data, providers=["CPUExecutionProvider"])
    found = session.run(None, {checked.input_name: pixels})[0]
    np.testing.assert_allclose(found, np.asarray(model(pixels)), rtol=0, atol=1e-5)


def _serve(path):
    from pipeline.scoring.served_model import ServedModel

    return ServedModel(model_files.load(path, runtime="keras"))


def test_the_scorer_checks_its_fold_by_the_known_answers_alone(shipped_model, test_split, monkeypatch):
    """Serving skips folding's own eager comparison (0.44 s of MobileNetV3Small's start-up): the card's known answers
    check the folded forward pass."""
    def never(model, folded):
        raise AssertionError("the scorer compared the fold eagerly")

    monkeypatch.setattr(folding, "_same_function", never)
    served = _serve(shipped_model)
    expected = model_files.load(shipped_model, runtime="keras").model.predict(test_split.images[:300], verbose=0)
    np.testing.assert_allclose(served.predict_rows(test_split.images[:300]), expected, rtol=0, atol=1e-5)


def test_a_wrong_fold_fails_the_known_answers_and_the_scorer_serves_the_model_as_loaded(shipped_model, test_split,
                                                                                      monkeypatch):
    right = folding._folded_weights

    def off_by_ten_percent(producer, norm):
        kernel, bias = right(producer, norm)
        return [kernel * 1.1, bias]

    monkeypatch.setattr(folding, "_folded_weights", off_by_ten_percent)
    wrongly_folded = folding.fold_batch_norms(model_files.load(shipped_model, runtime="keras").model, compare=False)
    served = _serve(shipped_model)
    model = model_files.load(shipped_model, runtime="keras").model
    expected = model.predict(test_split.images[:300], verbose=0)
    assert np.abs(wrongly_folded.predict(test_split.images[:300], verbose=0) - expected).max() > 1e-3
    np.testing.assert_allclose(served.predict_rows(test_split.images[:300]), expected, rtol=0, atol=1e-5)


def test_serving_folds_without_a_copy_and_computes_what_the_folded_copy_does(shipped_model, tiny_model_path,
                                                                              test_split):
    from model.training import architectures

    models = [model_files.load(shipped_model, runtime="keras").model, _model_with(False, False)]
    for name in architectures.ARCHITECTURES:
        keras.utils.set_random_seed(1)
        model = architectures.build(name, augment="shift-flip-erase", seed=1)
        model(test_split.images[:64], training=True)  # moving statistics move off their start
        models.append(model)
    for model in models:
        pixels = test_split.images[:256].astype(str(model.inputs[0].dtype))
        call = folding.folded_call(model)
        copy = folding.fold_batch_norms(model, compare=False)
        assert call is not None and copy is not model
        np.testing.assert_allclose(np.asarray(call(pixels)), np.asarray(copy(pixels, training=False)), rtol=0,
                                   atol=1e-6)
    assert folding.folded_call(model_files.load(tiny_model_path).model) is None  # nothing to fold
