"""Tests the sources on real files: matching folders into units, reading image files and TFRecords into
(key, payload) records, with unreadable input as error rows."""

import os
import struct
import threading
import time

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.testing.util import assert_that, equal_to

from model import samples
from pipeline import sources
from tests.conftest import SAMPLE_INPUTS, local_pipeline


def test_folder_input_matches_every_file_once_with_full_paths(test_split, tmp_path):
    paths = samples.write_pngs(test_split.images[:7], str(tmp_path / "a" / "b"), [f"{i}.png" for i in range(7)])
    (tmp_path / ".hidden.png").write_bytes(b"ignored")
    (tmp_path / "notes.txt").write_text("not an image, still an input")
    expected = sorted(paths + [str(tmp_path / "notes.txt")])
    with local_pipeline() as pipeline:
        matched = pipeline | sources.MatchFiles([str(tmp_path)], chunk_size=3)
        assert_that(matched.counts, equal_to([("matched", 8)]), label="matched")
        entries = matched.units | beam.FlatMap(lambda unit: [(path, size) for path, size, _ in unit])
        assert_that(entries, equal_to([(path, os.path.getsize(path)) for path in expected]), label="fingerprints")
        assert_that(matched.units | beam.Map(len), equal_to([3, 3, 2]), label="unit sizes")


def test_image_files_are_read_whole_and_a_vanished_one_is_a_read_error(test_split, tmp_path):
    good = samples.write_pngs(test_split.images[:2], str(tmp_path), ["0.png", "1.png"])
    missing = str(tmp_path / "deleted-after-matching.png")
    unit = [(good[0], 1, 0.0), (missing, 1, 0.0), (good[1], 1, 0.0)]
    read = list(sources.read_image_files(unit))
    assert read[0] == (good[0], open(good[0], "rb").read()) and read[2] == (good[1], open(good[1], "rb").read())
    assert (read[1]["key"], read[1]["stage"], read[1]["error_type"]) == (missing, "read", "FileNotFoundError")


def _read_tfrecords(pattern, image_feature="image/encoded", key_feature="image/filename"):
    """Every (key, payload) record and error row of the files a pattern matches, in file order."""
    import glob

    read = sources.ReadTFRecordFile(image_feature, key_feature)  # its pool is not used
    items = [item for path in sorted(glob.glob(pattern)) for item in read([(path, os.path.getsize(path), 0.0)])]
    return [i for i in items if not isinstance(i, dict)], [i for i in items if isinstance(i, dict)]


def test_sample_tfrecords_give_named_png_records_and_raw_pixel_records(test_split):
    folder = os.path.join(SAMPLE_INPUTS, "tfrecords")
    records, errors = _read_tfrecords(os.path.join(folder, "*.tfrecord"))
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


def test_records_match_tensorflows_reader(test_split, tmp_path):
    import tensorflow as tf

    path, _, _ = _five_records(test_split, tmp_path)
    ours = [frame.data for frame in sources.tfrecord_frames(open(path, "rb"), os.path.getsize(path))]
    assert ours == list(tf.data.TFRecordDataset(path).as_numpy_iterator())


def test_cut_tfrecord_keeps_good_records_and_says_what_was_skipped(test_split, tmp_path):
    path, content, offsets = _five_records(test_split, tmp_path)
    open(path, "wb").write(content[: len(content) - 40])  # the last record is cut short
    records, errors = _read_tfrecords(path)
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
    records, errors = _read_tfrecords(path)
    assert [key for key, _ in records] == [f"{path}:{i}" for i in (0, 1, 3, 4)]
    assert [(e["key"], e["error_message"]) for e in errors] == [
        (f"{path}:2", f"the record at byte {offsets[2]:,} fails its data checksum")]


@pytest.mark.parametrize("damage, message", [
    (lambda header: header[:8] + b"\x00\x00\x00\x00", "fails its checksum"),  # length CRC wrong
    (lambda header: struct.pack("<Q", 1 << 40) + header[8:], "fails its checksum"),  # length changed, CRC not
    (lambda header: struct.pack("<QI", 1 << 40, sources._masked_crc32c(struct.pack("<Q", 1 << 40))),
     "claims 1,099,511,627,776 bytes, more than the file holds"),  # a huge length with a valid checksum
])
def test_untrustworthy_length_ends_the_file_with_one_error(test_split, tmp_path, damage, message):
    path, content, offsets = _five_records(test_split, tmp_path)
    header = content[offsets[1]:offsets[1] + 12]
    open(path, "wb").write(content[:offsets[1]] + damage(header) + content[offsets[1] + 12:])
    records, errors = _read_tfrecords(path)
    assert [key for key, _ in records] == [f"{path}:0"]
    assert len(errors) == 1 and message in errors[0]["error_message"]
    assert f"the last {len(content) - offsets[1]:,} bytes of the file were skipped" in errors[0]["error_message"]


def test_missing_image_feature_is_a_read_error(tmp_path):
    path = samples.write_tfrecord(str(tmp_path / "x.tfrecord"), [samples.example_bytes(b"\x89PNG...", "a.png")])
    records, errors = _read_tfrecords(path, image_feature="image/raw")
    assert records == []
    assert errors[0]["key"] == "a.png" and errors[0]["error_type"] == "MissingFeature"
    assert "--image_feature" in errors[0]["error_message"]


def test_raw_pixels_or_bytes():
    assert isinstance(sources.raw_pixels_or_bytes(bytes(784)), np.ndarray)
    png_like = b"\x89PNG" + bytes(780)
    assert sources.raw_pixels_or_bytes(png_like) is png_like
    assert sources.raw_pixels_or_bytes(b"short") == b"short"


class _SlowFileSystem(LocalFileSystem):
    """A stand-in for an object store: local files behind `slowtest://`, each open waiting as a network read would."""

    open_now = 0
    most_open_at_once = 0
    lock = threading.Lock()

    @classmethod
    def scheme(cls):
        return "slowtest"

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        cls = type(self)
        with cls.lock:
            cls.open_now += 1
            cls.most_open_at_once = max(cls.most_open_at_once, cls.open_now)
        try:
            time.sleep(0.02)
            return super().open(path[len("slowtest://"):], mime_type, compression_type)
        finally:
            with cls.lock:
                cls.open_now -= 1


def test_remote_files_are_read_several_at_a_time_and_yielded_in_order(test_split, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    paths = samples.write_pngs(test_split.images[:40], str(tmp_path), [f"{i:02d}.png" for i in range(40)])
    unit = [(f"slowtest://{path}", 1, 0.0) for path in paths] + [("slowtest:///nowhere/gone.png", 1, 0.0)]
    with ThreadPoolExecutor(8) as pool:
        read = list(sources.read_image_files(unit, pool))
    assert [item[0] for item in read[:40]] == [f"slowtest://{path}" for path in paths]
    assert all(item[1] == open(path, "rb").read() for item, path in zip(read, paths))
    assert read[40]["key"] == "slowtest:///nowhere/gone.png" and read[40]["stage"] == "read"
    assert _SlowFileSystem.most_open_at_once > 1  # local files, by contrast, are read one at a time


def test_folder_listing_is_beams_listing(test_split, tmp_path):
    from apache_beam.io.filesystems import FileSystems

    samples.write_pngs(test_split.images[:4], str(tmp_path / "a" / "b"), ["0.png", "1.png", ".2.png", "3.png"])
    samples.write_pngs(test_split.images[:1], str(tmp_path / ".hidden"), ["4.png"])
    (tmp_path / "notes.txt").write_text("still an input")
    os.symlink(tmp_path / "a" / "b" / "0.png", tmp_path / "link-to-file.png")
    os.symlink(tmp_path / "a", tmp_path / "link-to-folder")
    os.symlink(tmp_path / "nowhere.png", tmp_path / "dangling.png")
    pattern = sources.as_pattern(str(tmp_path))
    beams = sorted((m.path, m.size_in_bytes, m.last_updated_in_seconds)
                   for m in FileSystems.match([pattern])[0].metadata_list)
    assert sorted(sources.list_files(pattern)) == beams
    assert len(beams) == 7  # 4 + 1 hidden + notes + the link to a file; not the linked folder, not the dangling link
