"""Tests reading image files: whole regular files only, never past --max_file_bytes, nothing that can hang, and remote
files several at a time; every refusal is an error row with its reason."""

import os
import threading
import time

from apache_beam.io.localfilesystem import LocalFileSystem

from pipeline.reading import sources
from pipeline.records import error_row
from tests import samples


def _entry(path):
    return path, os.path.getsize(path) if os.path.isfile(path) else 1, 0.0


def test_files_are_read_whole_and_refusals_are_error_rows(test_split, tmp_path):
    good = samples.write_pngs(test_split.images[:2], str(tmp_path), ["0.png", "1.png"])
    missing = str(tmp_path / "deleted-after-listing.png")
    listed_error = error_row(str(tmp_path / "x"), "read", "dangling link", "the link points nowhere")
    unit = [_entry(good[0]), (missing, 1, 0.0), listed_error, _entry(good[1])]
    read = list(sources.ReadImageFiles()(unit))
    assert read[0][:2] == (good[0], open(good[0], "rb").read()) and read[3][:2] == (good[1], open(good[1], "rb").read())
    assert read[3][2] == (good[1], os.path.getsize(good[1]), 0.0, -1, -1, "none", "", False, None)  # where it was read
    assert (read[1]["key"], read[1]["stage"], read[1]["error_type"]) == (missing, "read", "gone")
    assert read[2] is listed_error


def test_a_file_swapped_for_a_fifo_after_listing_is_refused_not_waited_for(tmp_path):
    path = str(tmp_path / "photo.png")
    os.mkfifo(path)  # listed as a file, then replaced: opening it for reading must not block
    started = time.monotonic()
    read = list(sources.ReadImageFiles()([(path, 100, 0.0)]))
    assert read[0]["error_type"] == "not a regular file" and time.monotonic() - started < 5
    assert list(sources.ReadImageFiles()([("/dev/zero", 0, 0.0)]))[0]["error_type"] == "not a regular file"


def test_files_over_the_limit_are_refused_before_reading(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(b"\x89PNG" + bytes(2000))
    read = list(sources.ReadImageFiles(max_file_bytes=1000)([_entry(str(path))]))
    assert read[0]["error_type"] == "too large"
    assert read[0]["error_message"] == ("the file is 2,004 bytes, over the limit of 1,000 (--max_file_bytes)")
    assert list(sources.ReadImageFiles(max_file_bytes=2004)([_entry(str(path))]))[0][1] == path.read_bytes()


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
    unit.append(("slowtest://" + paths[0], 10**9, 0.0))  # listed as huge: refused without opening it
    with ThreadPoolExecutor(8) as pool:
        read = list(sources.ReadImageFiles()(unit, pool))
    assert [item[0] for item in read[:40]] == [f"slowtest://{path}" for path in paths]
    assert all(item[1] == open(path, "rb").read() for item, path in zip(read, paths))
    assert read[40]["key"] == "slowtest:///nowhere/gone.png" and read[40]["stage"] == "read"
    assert read[41]["error_type"] == "too large"
    assert _SlowFileSystem.most_open_at_once > 1  # local files, by contrast, are read one at a time


def test_a_link_re_pointed_outside_after_listing_is_refused_when_read(test_split, tmp_path):
    inside, outside = tmp_path / "in", tmp_path / "out"
    good = samples.write_pngs(test_split.images[:1], str(inside), ["good.png"])[0]
    secret = samples.write_pngs(test_split.images[1:2], str(outside), ["private.png"])[0]
    os.symlink(good, inside / "link.png")  # listed while it pointed inside
    entry = _entry(str(inside / "link.png"))
    os.remove(inside / "link.png")
    os.symlink(secret, inside / "link.png")  # then re-pointed outside before it was read
    refused = list(sources.ReadImageFiles(inside=(str(inside),))([entry]))[0]
    assert refused["error_type"] == "link outside the inputs" and "private" not in refused["error_message"]
    assert list(sources.ReadImageFiles()([entry]))[0][1] == open(secret, "rb").read()  # without the flag: followed
