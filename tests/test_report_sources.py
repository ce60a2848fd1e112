"""Tests that the report shows only what the run itself scored: pictures read back from where the run read them
(TFRecord records by their place in the file, names that are not UTF-8), never from a key, and a file changed or a
link re-pointed since the run shown as changed. Hostile names are rendered visibly, in the file and in Chromium."""

import base64
import contextlib
import html
import io
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from model import display
from model.vocabulary import RECORD_KEY_RAW_PIXELS
from pipeline import score
from pipeline.report import report
from tests import samples
from tests.helpers import partition

pytestmark = pytest.mark.clock  # also run with the clock moved to another day and zone: make test-clock

DATE = "2026-11-20"


def _score(arguments: list, output: str, model: str) -> str:
    code = score.run([*arguments, "--output", output, "--model", model, "--run_date", DATE, "--progress_seconds", "0",
                      "--max_error_rate", "1"])
    assert code == score.EXIT_OK
    return partition(output)


def _report(folder: str) -> str:
    with open(os.path.join(folder, report.REPORT), encoding="utf-8") as stream:
        return stream.read()


def _seen_pictures(page: str) -> list:
    """The model inputs the page shows, in order, as uint8 arrays."""
    found = re.findall(r"<img class='seen' src='data:image/png;base64,([^']+)'", page)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))) for data in found]


def _recording_hook(state: dict):
    """An audit hook that records every path Python opens (open(), os.open and Pillow alike) while state["paths"] is
    a list. Hooks cannot be removed, so it holds its state in a closure and stays quiet at interpreter exit."""
    def hook(event, arguments):
        if event == "open" and state["paths"] is not None and isinstance(arguments[0], (str, bytes)):
            state["paths"].append(os.fsdecode(arguments[0]))
    return hook


_OPENED = {"paths": None, "hooked": False}


@contextlib.contextmanager
def _opened_paths():
    if not _OPENED["hooked"]:
        sys.addaudithook(_recording_hook(_OPENED))
        _OPENED["hooked"] = True
    _OPENED["paths"] = []
    try:
        yield _OPENED["paths"]
    finally:
        _OPENED["paths"] = None


def test_tfrecord_keys_that_name_files_never_make_the_report_open_them(test_split, tiny_model_path, tmp_path,
                                                                       monkeypatch):
    private = tmp_path / "private"
    private.mkdir()
    secret_picture = str(private / "photo.png")
    samples.write_pngs(test_split.images[100:101], str(private), ["photo.png"])
    inputs = tmp_path / "records"
    inputs.mkdir()
    monkeypatch.chdir(inputs)  # so that ../private/photo.png names the private picture too
    keys = [secret_picture, "../private/photo.png", "/etc/passwd", "/proc/self/environ", "file:///etc/hostname"]
    records = [samples.example_bytes(samples.png_bytes(test_split.images[i]), filename=key)
               for i, key in enumerate(keys)]
    records.append(samples.example_bytes(test_split.images[7].tobytes(), feature_name=RECORD_KEY_RAW_PIXELS))
    samples.write_tfrecord(str(inputs / "hostile.tfrecord"), records)
    folder = _score(["--input_tfrecords", str(inputs / "*.tfrecord")], str(tmp_path / "out"), tiny_model_path)
    page = _report(folder)
    shown = _seen_pictures(page)
    assert len(shown) == 6 and "cannot be read" not in page and "changed since" not in page
    own = [test_split.images[i] for i in range(5)] + [test_split.images[7]]
    for picture in shown:  # each is one of the records' own images, never the private one
        assert any(np.array_equal(picture, image) for image in own)
        assert not np.array_equal(picture, test_split.images[100])
    target = str(tmp_path / "rebuilt.html")
    with _opened_paths() as opened:
        assert report.main([folder, "--to", target]) == 0
    named = {os.path.normpath(os.path.join(str(inputs), key)) for key in keys} | {"/etc/hostname"}
    assert named.isdisjoint(os.path.normpath(path) for path in opened)
    assert str(inputs / "hostile.tfrecord") in opened  # the pictures came from the records' own file
    assert len(_seen_pictures(open(target, encoding="utf-8").read())) == 6


def test_sample_tfrecords_get_their_contact_sheet(tiny_model_path, tmp_path):
    folder = _score(["--input_tfrecords", os.path.join(os.path.dirname(__file__), "..", "sample_inputs", "tfrecords",
                                                       "*.tfrecord")], str(tmp_path / "out"), tiny_model_path)
    page = _report(folder)
    assert len(_seen_pictures(page)) == 24 and "not found" not in page and "cannot be read" not in page


def test_gzip_tfrecords_are_read_back_by_record(test_split, tiny_model_path, tmp_path):
    import tensorflow as tf

    path = str(tmp_path / "in" / "packed.tfrecord.gz")
    os.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for i in range(30):
            writer.write(samples.example_bytes(samples.png_bytes(test_split.images[i]), filename=f"item-{i}"))
    page = _report(_score(["--input_tfrecords", path], str(tmp_path / "out"), tiny_model_path))
    shown = _seen_pictures(page)
    assert len(shown) == 24 and all(any(np.array_equal(s, image) for image in test_split.images[:30]) for s in shown)


def test_names_that_are_not_utf8_show_their_picture(test_split, tiny_model_path, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index, name in enumerate([b"caf\xe9.png", b"\xff\xfe.png", "plain.png".encode()]):
        with open(os.path.join(os.fsencode(str(inputs)), name), "wb") as stream:
            stream.write(samples.png_bytes(test_split.images[index]))
    page = _report(_score(["--input", str(inputs)], str(tmp_path / "out"), tiny_model_path))
    assert len(_seen_pictures(page)) == 3 and "<img class='original'" in page
    assert "caf\\xe9.png" in html.unescape(page)


def _bmp(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="BMP")
    return buffer.getvalue()


def test_a_file_changed_or_a_link_re_pointed_after_the_run_shows_as_changed(test_split, tiny_model_path, tmp_path):
    inputs, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    inputs.mkdir()
    elsewhere.mkdir()
    (elsewhere / "scored.bmp").write_bytes(_bmp(test_split.images[0]))
    (elsewhere / "other.bmp").write_bytes(_bmp(test_split.images[1]))  # a BMP: the same size, other pixels
    os.symlink(elsewhere / "scored.bmp", inputs / "link.bmp")
    (inputs / "same-size.bmp").write_bytes(_bmp(test_split.images[2]))
    folder = _score(["--input", str(inputs)], str(tmp_path / "out"), tiny_model_path)
    assert len(_seen_pictures(_report(folder))) == 2
    os.remove(inputs / "link.bmp")
    os.symlink(elsewhere / "other.bmp", inputs / "link.bmp")  # re-pointed: same size; its time set to match below
    scored = os.stat(elsewhere / "scored.bmp")
    os.utime(elsewhere / "other.bmp", ns=(scored.st_atime_ns, scored.st_mtime_ns))
    before = os.stat(inputs / "same-size.bmp")
    (inputs / "same-size.bmp").write_bytes(_bmp(test_split.images[3]))  # rewritten in place, its time kept
    os.utime(inputs / "same-size.bmp", ns=(before.st_atime_ns, before.st_mtime_ns))
    target = str(tmp_path / "rebuilt.html")
    assert report.main([folder, "--to", target]) == 0
    rebuilt = open(target, encoding="utf-8").read()
    assert rebuilt.count("changed since it was scored") == 2 and _seen_pictures(rebuilt) == []


HOSTILE_NAMES = ["rtl\u202egnp.exe", "esc\x1b[31mred.png", "bell\x07.png", "carriage\rreturn.png", "two\nlines.png",
                 "osc\x1b]0;pwned\x07.png", "tag<b>bold.png", "quote'\"amp&.png"]


def _hostile_run(test_split, model: str, tmp_path) -> tuple:
    """A folder of images with hostile names, and a TFRecord run whose keys are very long; their report pages."""
    inputs = tmp_path / "names"
    inputs.mkdir()
    for index, name in enumerate(HOSTILE_NAMES):
        (inputs / name).write_bytes(samples.png_bytes(test_split.images[index]))
    (inputs / "broken\x1b[2J.png").write_bytes(b"\x89PNG not really")  # a failure with a hostile name
    names_folder = _score(["--input", str(inputs)], str(tmp_path / "out-names"), model)
    long_keys = ["k" * 5_000, "x" * 200_000] + [f"short-{i}" for i in range(11)]
    records = [samples.example_bytes(samples.png_bytes(test_split.images[i]), filename=key)
               for i, key in enumerate(long_keys)]
    samples.write_tfrecord(str(tmp_path / "long" / "long.tfrecord"), records)
    long_folder = _score(["--input_tfrecords", str(tmp_path / "long" / "long.tfrecord")], str(tmp_path / "out-long"),
                         model)
    return names_folder, long_folder, long_keys


def test_hostile_names_are_shown_visibly_once_and_short(test_split, tiny_model_path, tmp_path):
    names_folder, long_folder, long_keys = _hostile_run(test_split, tiny_model_path, tmp_path)
    page = _report(names_folder)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]", page)
    text = html.unescape(page.replace("<wbr>", ""))
    for name in HOSTILE_NAMES:
        assert display.visible(str(tmp_path / "names" / name)) in text
    assert "rtl\\u202egnp.exe" in text and "esc\\x1b[31mred.png" in text and "two\\x0alines.png" in text
    assert "broken\\x1b[2J.png" in text  # the failure's example key, escaped the same way
    long_page = _report(long_folder)
    assert len(long_page) < 205_000 + 100_000  # the long keys once each, in a tooltip (448 KB before), + 13 pictures
    assert long_page.count("x" * 200_000) == 1 and long_page.count("k" * 5_000) == 1
    assert len(re.findall("x{1000,}", long_page)) == 1  # the line on the card is shortened


@pytest.mark.slow
def test_hostile_names_render_in_chromium_as_the_file_says(test_split, tiny_model_path, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Chromium is missing: `apt-get install -y chromium` (.ci/run installs it)")
    names_folder, _, _ = _hostile_run(test_split, tiny_model_path, tmp_path)
    url = "file://" + os.path.join(names_folder, report.REPORT)
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120).stdout
    shown = [html.unescape(re.sub(r"<wbr>", "", found)) for found in
             re.findall(r"<div class=\"key\">(.*?)</div>", dom)]  # the cards' names
    expected = {display.visible(str(tmp_path / "names" / name)) for name in HOSTILE_NAMES}
    assert expected <= set(shown)  # each card's name, as the file says, escapes visible
    assert "<b>bold" not in dom and "\u202e" not in dom and "\x1b" not in dom
    cards = re.findall(r"<div class=\"card\">", dom)
    assert len(cards) == len(HOSTILE_NAMES)  # no name broke the page into more or fewer cards
