"""Tests reading TFRecords on real Examples: framing checked record by record, compressed files, raw pixels by
feature, and every kind of damage losing only what it must, with a message that says what was skipped."""

import gzip
import os
import struct
import zlib

import numpy as np
import pytest

from model.cards.card_spec import FASHION_MNIST
from model.recipes import preprocessing
from model.vocabulary import RECORD_KEY_RAW_PIXELS
from pipeline.reading import tfrecords
from pipeline.scoring import blocks
from tests import samples
from tests.helpers import SAMPLE_INPUTS


def _read(*paths, **options):
    """Every (key, payload) record and error row of the given files, in order."""
    read = tfrecords.ReadTFRecordFiles(options.pop("image_feature", "image/encoded"),
                                       options.pop("key_feature", "image/filename"),
                                       options.pop("raw_feature", RECORD_KEY_RAW_PIXELS), **options)
    items = [item for path in paths for item in read([(path, os.path.getsize(path), 0.0)])]
    return [i[:2] for i in items if not isinstance(i, dict)], [i for i in items if isinstance(i, dict)]


def test_sample_tfrecords_give_named_png_records_and_raw_pixel_records(test_split):
    folder = os.path.join(SAMPLE_INPUTS, "tfrecords")
    records, errors = _read(*sorted(os.path.join(folder, name) for name in os.listdir(folder)))
    assert errors == []
    named = [r for r in records if isinstance(r[1], bytes)]
    raw = [r for r in records if isinstance(r[1], np.ndarray)]
    assert len(named) == 20 and len(raw) == 10
    assert all(key.startswith("test-") and key.endswith(".png") for key, _ in named)
    raw_path = os.path.join(folder, "raw-pixels.tfrecord")
    assert sorted(key for key, _ in raw) == sorted(f"{raw_path}:{i}" for i in range(10))
    for key, pixels in raw:
        assert pixels.shape == (784,) and pixels.dtype == np.uint8  # flat: decoding shapes them as the card says
        assert any(np.array_equal(pixels.reshape(28, 28), image) for image in test_split.images[:200])


def _five_records(test_split, tmp_path) -> tuple:
    """A real TFRecord file of five PNG Examples; returns (path, its bytes, the byte offset of each record)."""
    path = str(tmp_path / "five.tfrecord")
    samples.write_tfrecord(path, [samples.example_bytes(samples.png_bytes(img)) for img in test_split.images[:5]])
    content = open(path, "rb").read()
    offsets, position = [], 0
    while position < len(content):
        offsets.append(position)
        position += 16 + struct.unpack_from("<Q", content, position)[0]
    return path, content, offsets


def test_each_record_is_read_back_from_the_place_it_was_read(test_split, tmp_path):
    path, _, offsets = _five_records(test_split, tmp_path)
    read = tfrecords.ReadTFRecordFiles("image/encoded", "image/filename", RECORD_KEY_RAW_PIXELS)
    records = list(read([(path, os.path.getsize(path), 123.0)]))
    assert [source.offset for _, _, source in records] == offsets
    assert [source.record for _, _, source in records] == list(range(5))
    for _, payload, source in records:
        assert source.modified == 123.0 and source.feature == "image/encoded"
        with open(path, "rb") as stream:
            assert tfrecords.record_at(stream, source) == payload


def test_records_match_tensorflows_reader(test_split, tmp_path):
    import tensorflow as tf

    path, _, _ = _five_records(test_split, tmp_path)
    ours = [frame.data for frame in tfrecords.frames(open(path, "rb"), os.path.getsize(path), 1 << 20)]
    assert ours == list(tf.data.TFRecordDataset(path).as_numpy_iterator())


def test_cut_tfrecord_keeps_good_records_and_says_what_was_skipped(test_split, tmp_path):
    path, content, offsets = _five_records(test_split, tmp_path)
    open(path, "wb").write(content[: len(content) - 40])  # the last record is cut short
    records, errors = _read(path)
    assert [key for key, _ in records] == [f"{path}:{i}" for i in range(4)]
    assert [(e["key"], e["stage"], e["error_type"]) for e in errors] == [(f"{path}:4", "read", "corrupt TFRecord")]
    skipped, claimed = len(content) - 40 - offsets[4], struct.unpack_from("<Q", content, offsets[4])[0]
    assert errors[0]["error_message"] == (f"the record at byte {offsets[4]:,} claims {claimed:,} bytes, more than "
                                          f"the file holds; the last {skipped:,} bytes of the file were skipped")


def test_bad_data_checksum_loses_only_that_record(test_split, tmp_path):
    path, content, offsets = _five_records(test_split, tmp_path)
    damaged = bytearray(content)
    damaged[offsets[2] + 12 + 20] ^= 0xFF  # a byte inside record 2's data
    open(path, "wb").write(bytes(damaged))
    records, errors = _read(path)
    assert [key for key, _ in records] == [f"{path}:{i}" for i in (0, 1, 3, 4)]
    assert [(e["key"], e["error_message"]) for e in errors] == [
        (f"{path}:2", f"the record at byte {offsets[2]:,} fails its data checksum")]


@pytest.mark.parametrize("damage, message", [
    (lambda header: header[:8] + b"\x00\x00\x00\x00", "fails its checksum"),  # length CRC wrong
    (lambda header: struct.pack("<Q", 1 << 40) + header[8:], "fails its checksum"),  # length changed, CRC not
    (lambda header: struct.pack("<QI", 1 << 40, tfrecords._masked_crc32c(struct.pack("<Q", 1 << 40))),
     "claims 1,099,511,627,776 bytes, more than the file holds"),  # a huge length with a valid checksum
])
def test_untrustworthy_length_ends_the_file_with_one_error(test_split, tmp_path, damage, message):
    path, content, offsets = _five_records(test_split, tmp_path)
    header = content[offsets[1]:offsets[1] + 12]
    open(path, "wb").write(content[:offsets[1]] + damage(header) + content[offsets[1] + 12:])
    records, errors = _read(path)
    assert [key for key, _ in records] == [f"{path}:0"]
    assert len(errors) == 1 and message in errors[0]["error_message"]
    assert f"the last {len(content) - offsets[1]:,} bytes of the file were skipped" in errors[0]["error_message"]


@pytest.mark.parametrize("name, compress", [
    ("five.tfrecord.gz", gzip.compress),
    ("five.tfrecord.zlib", zlib.compress),
])
def test_compressed_files_are_read_by_extension(test_split, tmp_path, name, compress):
    plain, content, _ = _five_records(test_split, tmp_path)
    path = str(tmp_path / name)
    open(path, "wb").write(compress(content))
    assert _read(path) == ([(f"{path}:{i}", r[1]) for i, r in enumerate(_read(plain)[0])], [])
    flagged = str(tmp_path / "no-extension")
    open(flagged, "wb").write(compress(content))
    assert len(_read(flagged, compression=tfrecords.compression_of(name, "auto"))[0]) == 5


def test_broken_compressed_file_keeps_what_came_before(test_split, tmp_path):
    _, content, _ = _five_records(test_split, tmp_path)
    path = str(tmp_path / "cut.tfrecord.gz")
    packed = gzip.compress(content)
    open(path, "wb").write(packed[: len(packed) * 2 // 3])
    records, errors = _read(path)
    assert 1 <= len(records) < 5 and len(errors) == 1
    assert errors[0]["error_type"] == "corrupt TFRecord" and "the rest of the file was skipped" in \
        errors[0]["error_message"]
    not_gzip = str(tmp_path / "plain-named.gz")
    open(not_gzip, "wb").write(content)
    records, errors = _read(not_gzip)
    assert records == [] and "compressed data is broken at byte 0" in errors[0]["error_message"]


def test_raw_pixels_are_recognised_by_their_feature_not_their_bytes(test_split, tmp_path):
    pixels = test_split.images[0].copy()
    pixels.flat[:2] = (ord("B"), ord("M"))  # starts like a BMP file, still pixels
    path = samples.write_tfrecord(str(tmp_path / "raw.tfrecord"), [
        samples.example_bytes(pixels.tobytes(), "raw-bm", feature_name=RECORD_KEY_RAW_PIXELS),
        samples.example_bytes(test_split.images[1].tobytes(), "encoded-but-raw"),  # raw bytes in the wrong feature
        samples.example_bytes(b"\x00" * 100, "too-short", feature_name=RECORD_KEY_RAW_PIXELS)])
    records, errors = _read(path)
    assert [key for key, _ in records] == ["raw-bm", "encoded-but-raw", "too-short"] and not errors
    assert np.array_equal(records[0][1], pixels.ravel()) and isinstance(records[1][1], bytes)  # the decoder refuses it
    refused = blocks._checked_raw_pixels(records[2][1], FASHION_MNIST)  # decoding checks the model's H * W * C
    assert isinstance(refused, preprocessing.UnsupportedImageError)
    assert "100 raw pixel values, the model takes 28x28x1 = 784" in str(refused)


def test_records_that_are_not_examples_or_lack_the_image_fail_alone(test_split, tmp_path):
    good = samples.example_bytes(samples.png_bytes(test_split.images[0]), "good.png")
    path = samples.write_tfrecord(str(tmp_path / "mixed.tfrecord"), [
        b"\xff\xff\xff not a protobuf", samples.example_bytes(b"\x89PNG...", "a.png", feature_name="image/other"),
        good])
    records, errors = _read(path)
    assert [key for key, _ in records] == ["good.png"]
    assert [(e["key"], e["error_type"]) for e in errors] == [(f"{path}:0", "not an Example"),
                                                             ("a.png", "missing feature")]
    assert "--image_feature or --raw_feature" in errors[1]["error_message"]


def test_key_feature_bytes_that_are_not_utf8_survive(test_split, tmp_path):
    path = samples.write_tfrecord(str(tmp_path / "names.tfrecord"), [
        samples.example_bytes(samples.png_bytes(test_split.images[0]), "caf\xe9.png".encode("latin-1"))])
    records, _ = _read(path)
    assert records[0][0] == "caf\\xe9.png"
