"""Tests calibration: the expected calibration error, the temperature fit, and folding it into a real model."""

import numpy as np
import pytest

from model import evaluate
from model.runtimes import model_files
from model.training import calibration


def _overconfident(count=4000, seed=0):
    """Labels and probabilities of a model that is right 80% of the time but says 97%."""
    generator = np.random.default_rng(seed)
    labels = generator.integers(0, 10, count)
    predicted = np.where(generator.random(count) < 0.8, labels, (labels + 1) % 10)
    probabilities = np.full((count, 10), 0.03 / 9)
    probabilities[np.arange(count), predicted] = 0.97
    return labels, probabilities


def test_expected_calibration_error_is_the_gap_between_confidence_and_accuracy():
    labels, probabilities = _overconfident()
    accuracy = (probabilities.argmax(axis=1) == labels).mean()
    assert evaluate.expected_calibration_error(labels, probabilities) == pytest.approx(0.97 - accuracy)
    honest = probabilities.copy()
    honest[honest == 0.97] = accuracy
    honest[honest != accuracy] = (1 - accuracy) / 9
    assert evaluate.expected_calibration_error(labels, honest) == pytest.approx(0.0, abs=1e-9)


def test_a_fitted_temperature_makes_an_overconfident_model_honest():
    labels, probabilities = _overconfident()
    temperature = calibration.fit_temperature(labels, probabilities)
    assert temperature > 1.5  # overconfident: probabilities must be softened
    logits = np.log(probabilities) / temperature
    softened = np.exp(logits - logits.max(axis=1, keepdims=True))
    softened /= softened.sum(axis=1, keepdims=True)
    assert evaluate.expected_calibration_error(labels, softened) < 0.01


def test_folding_a_temperature_into_a_real_model_divides_its_logits(tiny_model_path, test_split):
    loaded = model_files.load(tiny_model_path)
    before = loaded.model.predict(test_split.images[:200], verbose=0)
    calibration.fold_temperature(loaded.model, 2.0)
    after = loaded.model.predict(test_split.images[:200], verbose=0)
    expected = np.exp(np.log(before) / 2.0)
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(after, expected, atol=1e-5)
    assert (after.argmax(axis=1) == before.argmax(axis=1)).all()
