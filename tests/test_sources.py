"""Tests the sources on real files: image folders and TFRecords to (key, payload), with unreadable input as errors."""

import os

import numpy as np
from apache_beam.testing.util import assert_that, equal_to

from model import samples
from pipeline import sources
from tests.conftest import SAMPLE_INPUTS, local_pipeline


def test_folder_input_reads_every_file_once_with_full_paths(test_split, tmp_path):
    paths = samples.write_pngs(test_split.images[:7], str(tmp_path / "a" / "b"), [f"{i}.png" for i in range(7)])
    (tmp_path / ".hidden.png").write_bytes(b"ignored")
    (tmp_path / "notes.txt").write_text("not an image, still an input")
    expected = [(p, open(p, "rb").read()) for p in paths] + [(str(tmp_path / "notes.txt"), b"not an image, still an input")]
    with local_pipeline() as pipeline:
        records, errors, counts, chunks = pipeline | sources.ReadImageFiles([str(tmp_path)], chunk_size=3)
        assert_that(records, equal_to(expected), label="records")
        assert_that(errors, equal_to([]), label="errors")
        assert_that(counts, equal_to([("matched", 8)]), label="matched")
        import apache_beam as beam

        sizes = chunks | beam.FlatMap(lambda chunk: [(path, size) for path, size, _ in chunk])
        assert_that(sizes, equal_to([(path, len(content)) for path, content in expected]), label="fingerprints")
        assert_that(chunks | beam.Map(len), equal_to([3, 3, 2]), label="chunk sizes")


def test_unreadable_file_becomes_a_read_error(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(b"bytes")
    missing = str(tmp_path / "deleted-after-matching.png")
    with local_pipeline() as pipeline:
        import apache_beam as beam

        chunk = [(str(good), 5, 0.0), (missing, 1, 0.0)]
        read = pipeline | beam.Create([chunk]) | beam.ParDo(sources._ReadFiles()).with_outputs(
            sources.ERRORS, main="records")
        assert_that(read.records, equal_to([(str(good), b"bytes")]), label="records")
        assert_that(read[sources.ERRORS] | beam.Map(lambda row: (row["key"], row["stage"])),
                    equal_to([(missing, "read")]), label="errors")


def _tfrecord_records(patterns, **features):
    """Runs ReadTFRecords and returns (records, errors), collected through a Parquet-free materialisation."""
    import pickle
    import tempfile

    import apache_beam as beam

    folder = tempfile.mkdtemp()
    with local_pipeline() as pipeline:
        records, errors, _, _ = pipeline | sources.ReadTFRecords(patterns, **features)
        for name, collection in (("records", records), ("errors", errors)):
            (collection
             | f"One{name}" >> beam.combiners.ToList()
             | f"Pickle{name}" >> beam.Map(pickle.dumps)
             | f"Write{name}" >> beam.Map(lambda blob, n=name: open(os.path.join(folder, n), "wb").write(blob)))
    return tuple(pickle.load(open(os.path.join(folder, name), "rb")) for name in ("records", "errors"))


def test_sample_tfrecords_give_named_png_records_and_raw_pixel_records(test_split):
    folder = os.path.join(SAMPLE_INPUTS, "tfrecords")
    records, errors = _tfrecord_records([os.path.join(folder, "*.tfrecord")], image_feature="image/encoded",
                                        key_feature="image/filename")
    assert errors == []
    named = [r for r in records if isinstance(r[1], bytes)]
    raw = [r for r in records if isinstance(r[1], np.ndarray)]
    assert len(named) == 20 and len(raw) == 10
    assert all(key.startswith("test-") and key.endswith(".png") for key, _ in named)
    raw_path = os.path.join(folder, "raw-pixels.tfrecord")
    assert sorted(key for key, _ in raw) == sorted(f"{raw_path}:{i}" for i in range(10))
    for key, pixels in raw:
        assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
        assert any(np.array_equal(pixels, image) for image in test_split.images[:200])


def test_corrupt_tfrecord_keeps_good_records_and_reports_the_rest(test_split, tmp_path):
    path = str(tmp_path / "cut.tfrecord")
    samples.write_tfrecord(path, [samples.example_bytes(samples.png_bytes(img)) for img in test_split.images[:5]])
    with open(path, "rb") as stream:
        content = stream.read()
    with open(path, "wb") as stream:
        stream.write(content[: len(content) - 40])  # the last record is cut short
    records, errors = _tfrecord_records([path], image_feature="image/encoded", key_feature="image/filename")
    assert sorted(key for key, _ in records) == [f"{path}:{i}" for i in range(4)]
    assert [(e["key"], e["stage"]) for e in errors] == [(f"{path}:4", "read")]


def test_missing_image_feature_is_a_read_error(test_split, tmp_path):
    path = samples.write_tfrecord(str(tmp_path / "x.tfrecord"), [samples.example_bytes(b"\x89PNG...", "a.png")])
    records, errors = _tfrecord_records([path], image_feature="image/raw", key_feature="image/filename")
    assert records == []
    assert errors[0]["key"] == "a.png" and errors[0]["error_type"] == "MissingFeature"
    assert "--image_feature" in errors[0]["error_message"]


def test_raw_pixels_or_bytes():
    assert isinstance(sources.raw_pixels_or_bytes(bytes(784)), np.ndarray)
    png_like = b"\x89PNG" + bytes(780)
    assert sources.raw_pixels_or_bytes(png_like) is png_like
    assert sources.raw_pixels_or_bytes(b"short") == b"short"
