"""Tests inference: decoding into blocks, failure isolation in the model handler, and the Arrow rows, with real
images."""

import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from model.runtimes import model_files
from model.cards.card_spec import FASHION_MNIST
from model.runtimes.keras_runtime import compiled_forward
from model.vocabulary import CLASS_NAMES
from pipeline.outputs import counts, scores_output
from pipeline.scoring.model_handler import KerasModelHandler, predict_isolating_failures
from pipeline.scoring.inference import ScoreImages
from model.runtimes.forward import predict_fixed_rows
from pipeline.scoring.served_model import ServedModel
from tests import samples
from tests.helpers import local_pipeline

POISON = 255  # a pixel value in the top-left corner that the fake model below refuses

MODEL_CALL_ROWS = FASHION_MNIST.model_call_rows


class _ModelThatFailsOnPoison:
    """Stands in for a Keras model that cannot score some records: any block holding a poisoned row fails."""

    def __init__(self, real_model):
        self.real_model = real_model

    def predict_on_batch(self, pixels):
        if (pixels[:, 0, 0] == POISON).any():
            raise ValueError("poisoned record")
        return self.real_model.predict_on_batch(pixels)


def records_as_they_are(unit, pool=None):
    """A reader of (key, payload) pairs, each read from nowhere in particular."""
    yield from ((*item, None) for item in unit)


class _PoisonedServedModel(ServedModel):
    """The real served model, except that any call holding a poisoned row fails, as _ModelThatFailsOnPoison."""

    def predict_rows(self, pixels):
        if (pixels[:, 0, 0] == POISON).any():
            raise ValueError("poisoned record")
        return super().predict_rows(pixels)


class _PoisonAwareHandler(KerasModelHandler):
    def load_model(self):
        return _PoisonedServedModel(super().load_model().loaded)


def test_isolation_fails_only_the_bad_records(tiny_model_path, test_split):
    model = model_files.load(tiny_model_path).model
    pixels = test_split.images[:700].copy()
    pixels[[3, 400, 401], 0, 0] = POISON
    poisoned = _ModelThatFailsOnPoison(model)
    probabilities, failed = predict_isolating_failures(lambda rows: predict_fixed_rows(poisoned.predict_on_batch, rows, MODEL_CALL_ROWS), pixels, 10)
    assert sorted(failed) == [3, 400, 401] and all("poisoned" in str(e) for e in failed.values())
    good = [i for i in range(700) if i not in failed]
    np.testing.assert_allclose(probabilities[good], predict_fixed_rows(model.predict_on_batch, pixels[good], MODEL_CALL_ROWS), rtol=0, atol=1e-6)


def test_fixed_row_calls_make_results_independent_of_batching(tiny_model_path, test_split):
    model = model_files.load(tiny_model_path).model
    whole = predict_fixed_rows(model.predict_on_batch, test_split.images[:600], MODEL_CALL_ROWS)
    pieces = np.concatenate([predict_fixed_rows(model.predict_on_batch, test_split.images[i:min(i + 37, 600)], MODEL_CALL_ROWS) for i in range(0, 600, 37)])
    np.testing.assert_array_equal(whole, pieces)
    assert whole.dtype == np.float32 and whole.shape == (600, 10) and MODEL_CALL_ROWS > 37


def test_compiled_forward_gives_predict_on_batchs_probabilities_exactly(shipped_model, test_split):
    model = model_files.load(shipped_model, runtime="keras").model
    pixels = test_split.images[:2 * MODEL_CALL_ROWS]
    compiled = compiled_forward(model, FASHION_MNIST)
    for start in (0, MODEL_CALL_ROWS):
        block = pixels[start:start + MODEL_CALL_ROWS]
        np.testing.assert_array_equal(compiled(block), model.predict_on_batch(block))


def test_score_images_keeps_every_good_neighbour_of_a_bad_record(tiny_model_path, test_split):
    images = test_split.images[:40].copy()
    images[[5, 17], 0, 0] = POISON
    records = [(f"img{i:02d}", samples.png_bytes(img)) for i, img in enumerate(images)]
    cut_photo = samples.png_bytes(np.asarray(samples.catalogue_photo(test_split.images[50], 0).convert("L")))
    records += [("broken.png", cut_photo[: len(cut_photo) // 2]), ("notes.jpg", b"hello")]
    units = [records[start:start + 7] for start in range(0, len(records), 7)]
    handler = _PoisonAwareHandler(tiny_model_path, FASHION_MNIST.num_classes)
    with local_pipeline() as pipeline:
        scored = pipeline | beam.Create(units) | ScoreImages(handler, records_as_they_are, FASHION_MNIST,
                                                                       max_pixels=10_000_000)
        keys = scored | "Keys" >> beam.FlatMap(lambda block: block.keys)
        expected_keys = [f"img{i:02d}" for i in range(40) if i not in (5, 17)]
        assert_that(keys, equal_to(expected_keys), label="scored")
        errors = scored | "Errors" >> beam.FlatMap(lambda block: block.errors)
        assert_that(errors | beam.Map(lambda r: (r["key"], r["stage"], r["error_type"])), equal_to([
            ("img05", "predict", "ValueError"), ("img17", "predict", "ValueError"),
            ("broken.png", "decode", "truncated"), ("notes.jpg", "decode", "not an image")]), label="errors")


def test_rows_follow_the_output_contract(tiny_model_path, test_split):
    loaded = model_files.load(tiny_model_path)
    probabilities = predict_fixed_rows(loaded.model.predict_on_batch, test_split.images[:5], MODEL_CALL_ROWS)
    from pipeline.records import ScoredBlock

    table = scores_output.to_table(ScoredBlock([f"k{i}" for i in range(5)], probabilities, []),
                                   scores_output.scores_schema(loaded.card), loaded.version,
                                   np.array(CLASS_NAMES, dtype=object))
    assert table.schema.field("probabilities").type == pa.list_(pa.float32())
    assert table.schema.field("label_index").type == pa.int32()
    rows = table.to_pylist()
    for row, expected in zip(rows, probabilities):
        assert row["label_index"] == int(np.argmax(expected)) and row["label"] == CLASS_NAMES[row["label_index"]]
        assert row["confidence"] == pytest.approx(float(expected.max()), abs=0) and len(row["probabilities"]) == 10
        np.testing.assert_array_equal(np.array(row["probabilities"], dtype=np.float32), expected)
        assert row["model_version"] == loaded.version
    assert json.loads(table.schema.metadata[b"class_names"]) == list(CLASS_NAMES)
    assert json.loads(table.schema.metadata[b"model_card"]) == loaded.card


def test_nest_counts():
    assert counts.nest({"class/Bag": 3, "scored": 9, "failed_by_type/truncated": 1}) == {
        "class": {"Bag": 3}, "scored": 9, "failed_by_type": {"truncated": 1}}
