"""Tests the architectures: the training-only augmentation (what random erasing hides, that it saves and serves) and the
dropout option."""

import keras
import numpy as np
import pytest

from model.training import architectures
from model.vocabulary import IMAGE_SHAPE


def test_erasing_hides_one_background_rectangle_in_about_half_the_images_while_training():
    erase = architectures.augmentation(seed=3, kind="shift-flip-erase").layers[-1]
    assert isinstance(erase, keras.layers.RandomErasing)
    images = np.ones((2000,) + IMAGE_SHAPE + (1,), dtype=np.float32)
    erased = np.asarray(erase(images, training=True))[..., 0] == 0  # (N, 28, 28): True where set to the background
    touched = erased.any(axis=(1, 2))
    assert 0.45 < touched.mean() < 0.55
    for mask in erased[touched][:200]:
        rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        # One rectangle: its bounding box is all erased; it covers 2-25% of the image (whole pixels, so a little more).
        assert mask[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1].all()
        assert 0.01 <= mask.mean() <= 0.27
    np.testing.assert_array_equal(np.asarray(erase(images, training=False)), images)


def test_a_model_trained_with_erasing_saves_loads_in_safe_mode_and_serves_unaugmented(tmp_path):
    keras.utils.set_random_seed(2)
    model = architectures.build("cnn3", augment="shift-flip-erase", seed=2)
    path = str(tmp_path / "erasing.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    pixels = np.random.default_rng(0).integers(0, 256, (32,) + IMAGE_SHAPE, dtype=np.uint8)
    served = loaded.predict(pixels, verbose=0)
    np.testing.assert_array_equal(served, model.predict(pixels, verbose=0))
    np.testing.assert_array_equal(served, loaded.predict(pixels, verbose=0))  # no randomness when serving


def test_dropout_rate_reaches_every_dropout_layer_and_the_mlp_refuses_one():
    model = architectures.build("cnn3-wide", dropout_rate=0.1)
    assert [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [0.1, 0.1]
    assert [layer.rate for layer in architectures.build("cnn3-wide").layers
            if isinstance(layer, keras.layers.Dropout)] == [0.3, 0.3]
    with pytest.raises(ValueError, match="^the mlp architecture has no dropout: leave out --dropout-rate$"):
        architectures.build("mlp", dropout_rate=0.1)


def test_the_clis_names_are_the_architectures_built():
    """model.train offers the names without importing Keras; they must be exactly what architectures builds."""
    from model.training import architecture_names

    assert architecture_names.ARCHITECTURES == tuple(architectures.ARCHITECTURES)
    assert architecture_names.HAS_DROPOUT == architectures.HAS_DROPOUT
    assert architecture_names.DEFAULT_ARCHITECTURE in architectures.ARCHITECTURES
    for kind in architecture_names.AUGMENTATIONS[1:]:
        assert len(architectures.augmentation(0, kind).layers) >= 2


def test_every_architecture_builds_for_any_input_and_classes_and_stays_the_same_at_28x28():
    import dataclasses

    from model.cards.card_spec import FASHION_MNIST

    shipped_layers = [layer.name for layer in architectures.build("cnn3-wide").layers]
    for shape in ((28, 28, 1), (48, 40, 3), (224, 224, 3)):
        spec = dataclasses.replace(FASHION_MNIST, class_names=("a", "b", "c"), input_shape=shape)
        for name in architectures.ARCHITECTURES:
            model = architectures.build(name, spec=spec, steps_per_epoch=12)
            assert model.output_shape == (None, 3) and model.input_shape[1:3] == shape[:2]
            head = [layer for layer in model.layers if layer.name == "flatten"][0]
            assert name == "mlp" or head.output.shape[1] <= architectures.MAX_HEAD_INPUTS
            norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
            assert all(abs(norm.momentum - (1 - 1 / 12)) < 1e-9 for norm in norms)
    assert [layer.name for layer in architectures.build("cnn3-wide", steps_per_epoch=422).layers] == shipped_layers
    assert all(layer.momentum == 0.99 for layer in architectures.build("cnn", steps_per_epoch=422).layers
               if isinstance(layer, keras.layers.BatchNormalization))
