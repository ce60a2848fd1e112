"""Tests decoding into blocks: real images read and decoded in the background, gathered into full blocks across
units, with every input either a row or an error row, and a bug in reading failing the run rather than hiding."""

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from model.cards.card_spec import FASHION_MNIST
from pipeline.scoring import blocks
from pipeline.scoring.blocks import DecodeBlocks
from tests import samples
from tests.helpers import local_pipeline

ROWS = FASHION_MNIST.model_call_rows  # a block is one model call


def records_as_they_are(unit, pool=None):
    """A reader of (key, payload) pairs, each read from nowhere in particular."""
    yield from (item if isinstance(item, dict) else (*item, None) for item in unit)


def broken_reader(unit, pool=None):
    yield (*unit[0], None)
    raise RuntimeError("a bug in a reader")


def test_units_become_full_blocks_with_every_input_accounted_for(test_split, monkeypatch):
    monkeypatch.setattr(blocks, "UNITS_AHEAD", 3)  # fewer units than in flight at times, more at others
    count = 2 * ROWS + 300
    records = [(f"{i:05d}", samples.png_bytes(test_split.images[i])) for i in range(count)]
    records[10] = ("bad-a", b"not an image")
    records[ROWS + 5] = ("bad-b", samples.png_bytes(test_split.images[0])[:50])
    records.append(("raw", test_split.images[7]))  # raw pixels, as TFRecords may hold
    units = [records[start:start + 100] for start in range(0, len(records), 100)]
    with local_pipeline() as pipeline:
        decoded = pipeline | beam.Create(units) | beam.ParDo(DecodeBlocks(records_as_they_are, FASHION_MNIST, 10_000_000))

        def check(block):
            for key, pixels in zip(block.keys, block.pixels):
                expected = test_split.images[7] if key == "raw" else test_split.images[int(key)]
                assert np.array_equal(pixels, expected), key
            assert block.pixels.shape == (len(block.keys), 28, 28) and block.pixels.dtype == np.uint8
            return len(block.keys), len(block.errors)

        sizes = decoded | "Sizes" >> beam.Map(check)
        # One bundle here: every block is full but the last, and nothing is lost or doubled.
        assert_that(sizes | "Rows" >> beam.combiners.ToList() | beam.Map(
            lambda found: (sorted((r for r, _ in found), reverse=True), sum(e for _, e in found))),
            equal_to([([ROWS, ROWS, count + 1 - 2 - 2 * ROWS], 2)]), label="sizes")
        keys = decoded | "Keys" >> beam.FlatMap(lambda block: block.keys + [row["key"] for row in block.errors])
        assert_that(keys, equal_to([key for key, _ in records]), label="keys")


def test_photos_decode_on_several_threads(test_split):
    import io

    def jpeg(index):
        buffer = io.BytesIO()
        samples.large_catalogue_photo(test_split.images[index], index).save(buffer, "JPEG", quality=90)
        return buffer.getvalue()

    from model.recipes.preprocessing import to_model_input

    records = [(f"photo-{i}", jpeg(i)) for i in range(6)]
    with local_pipeline() as pipeline:
        decoded = (pipeline | beam.Create([records[:3], records[3:]])
                   | beam.ParDo(DecodeBlocks(records_as_they_are, FASHION_MNIST, 10_000_000, threads=3)))
        pairs = decoded | beam.FlatMap(lambda block: [(k, p.tobytes()) for k, p in zip(block.keys, block.pixels)])
        assert_that(pairs, equal_to([(key, to_model_input(data).tobytes()) for key, data in records]))


def test_a_bug_while_reading_fails_the_run():
    with pytest.raises(Exception, match="a bug in a reader"):
        with local_pipeline() as pipeline:
            _ = (pipeline | beam.Create([[("a", b"x"), ("b", b"y")]])
                 | beam.ParDo(DecodeBlocks(broken_reader, FASHION_MNIST, 10_000_000)))
