"""Runs the real scorer over a hostile corpus built here: odd but good images, broken files, files that are not
files, odd names and links, and damaged TFRecords. For every case: the run finishes with the README's exit code,
every good input is in `scores` exactly once, every bad one is in `errors` exactly once with its type, or counted as
skipped with its reason, and matched = scored + failed + skipped."""

import collections
import gzip
import io
import json
import os
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, features

from model.vocabulary import RECORD_KEY_RAW_PIXELS
from pipeline import score
from pipeline.reading import tfrecords
from tests import samples
from tests.helpers import partition, read_rows

SCORED = "scored"
MAX_FILE_BYTES = 400_000


def _encoded(image: Image.Image, file_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, file_format, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _image_cases(items) -> dict:
    """{file name: (bytes, expected)}: expected is SCORED or ("error", error type)."""
    grey = Image.fromarray(items[0])
    photo = samples.catalogue_photo(items[1], 1)
    png = _encoded(grey, "PNG")
    rotated = Image.Exif()
    rotated[0x0112] = 6
    animated = io.BytesIO()
    grey.save(animated, "GIF", save_all=True, append_images=[Image.fromarray(items[2])])
    text_bomb = _chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * (100 << 20)))
    huge = struct.pack(">IIBBBBB", 20000, 20000, 1, 0, 0, 0, 0)
    huge_png = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", huge) + _chunk(b"IDAT", zlib.compress(b"\x00" * 2501 * 8))
                + _chunk(b"IEND", b""))
    jpeg = _encoded(photo, "JPEG", quality=90)
    cases = {
        "native.png": (png, SCORED),
        "grey-rgb.png": (_encoded(Image.fromarray(np.dstack([items[3]] * 3)), "PNG"), SCORED),
        "catalogue.jpg": (jpeg, SCORED),
        "large-catalogue.jpg": (_encoded(samples.large_catalogue_photo(items[4], 4), "JPEG", quality=85), SCORED),
        "photo.webp": (_encoded(photo, "WEBP"), SCORED),
        "lossless.webp": (_encoded(grey, "WEBP", lossless=True), SCORED),
        "image.bmp": (_encoded(grey, "BMP"), SCORED),
        "image.tiff": (_encoded(grey, "TIFF"), SCORED),
        "image-lzw.tiff": (_encoded(photo, "TIFF", compression="tiff_lzw"), SCORED),
        "image.gif": (_encoded(grey, "GIF"), SCORED),
        "animated.gif": (animated.getvalue(), SCORED),
        "transparent.png": (_encoded(photo.convert("RGBA"), "PNG"), SCORED),
        "grey-alpha.png": (_encoded(grey.convert("LA"), "PNG"), SCORED),
        "palette.png": (_encoded(photo.quantize(32), "PNG", transparency=0), SCORED),
        "sixteen-bit.png": (_encoded(Image.fromarray(items[5].astype(np.uint16) * 257), "PNG"), SCORED),
        "cmyk.jpg": (_encoded(photo.convert("CMYK"), "JPEG"), SCORED),
        "rotated.jpg": (_encoded(photo, "JPEG", exif=rotated), SCORED),
        "progressive.jpg": (_encoded(photo, "JPEG", progressive=True), SCORED),
        "bilevel.png": (_encoded(grey.convert("1"), "PNG"), SCORED),
        "image.pgm": (_encoded(grey, "PPM"), SCORED),
        "one-pixel.png": (_encoded(Image.new("L", (1, 1), 200), "PNG"), SCORED),
        "panorama.png": (_encoded(photo.resize((3000, 20)), "PNG"), SCORED),
        "with spaces.png": (png, SCORED),
        "new\nline.png": (png, SCORED),
        "batch[1].png": (png, SCORED),
        "caf\xe9-\u65e5\u672c.png": (png, SCORED),
        "a-png-named.jpg": (png, SCORED),
        "no-extension": (png, SCORED),
        "with-text.png": (png[:33] + _chunk(b"tEXt", b"Comment\x00hello") + png[33:], SCORED),
        "empty.png": (b"", ("error", "not an image")),
        "notes.txt": (b"not an image at all\n", ("error", "not an image")),
        "cut.png": (png[: len(png) // 2], ("error", "truncated")),
        "cut.jpg": (jpeg[: len(jpeg) // 2], ("error", "truncated")),
        "drawing.eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nshowpage\n", ("error", "not an image")),
        "text-bomb.png": (png[:33] + text_bomb + png[33:], ("error", "too large")),
        "pixel-bomb.png": (huge_png, ("error", "too large")),
        "too-big.png": (png + os.urandom(MAX_FILE_BYTES), ("error", "too large")),
        "random.png": (os.urandom(5000), ("error", "not an image")),
        "page.png": (b"<!doctype html><html><body>404</body></html>", ("error", "not an image")),
        "archive.png": (_zip_bytes(), ("error", "not an image")),
        "bad-header-crc.png": (png[:29] + bytes([png[29] ^ 0xFF]) + png[30:], ("error", "truncated")),
        "cut.gif": (_encoded(grey, "GIF")[:30], ("error", "truncated")),
    }
    if features.check("avif"):  # Pillow decodes AVIF in process where it is built with libavif
        cases["photo.avif"] = (_encoded(photo, "AVIF", quality=90), SCORED)
        cases["cut.avif"] = (_encoded(photo, "AVIF")[:60], ("error", "truncated"))
    return cases


def _zip_bytes() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    return buffer.getvalue()


def _build_image_corpus(root, items) -> dict:
    """Writes the corpus; returns {key: expected} where expected is SCORED, ("error", type) or ("skipped", reason)."""
    expected = {}
    for name, (data, outcome) in _image_cases(items).items():
        path = os.path.join(root, name)
        with open(path, "wb") as stream:
            stream.write(data)
        expected[path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")] = outcome
    not_utf8 = os.path.join(root, os.fsdecode(b"latin-\xe9.png"))
    with open(not_utf8, "wb") as stream:
        stream.write(_image_cases(items)["native.png"][0])
    expected[os.path.join(root, "latin-\\xe9.png")] = SCORED
    deep = os.path.join(root, "a", "b", "c", "d")
    os.makedirs(deep)
    with open(os.path.join(deep, "deep.png"), "wb") as stream:
        stream.write(_image_cases(items)["native.png"][0])
    expected[os.path.join(deep, "deep.png")] = SCORED
    os.link(os.path.join(root, "native.png"), os.path.join(root, "hard-link.png"))
    expected[os.path.join(root, "hard-link.png")] = SCORED
    os.symlink(os.path.join(root, "native.png"), os.path.join(root, "link-to-file.png"))
    expected[os.path.join(root, "link-to-file.png")] = SCORED
    specials = {"pipe.png": "not a regular file", "endless.png": "not a regular file",
                "dangling.png": "dangling link", "loop.png": "link loop"}
    os.mkfifo(os.path.join(root, "pipe.png"))
    os.symlink("/dev/zero", os.path.join(root, "endless.png"))
    os.symlink(os.path.join(root, "nowhere.png"), os.path.join(root, "dangling.png"))
    os.symlink(os.path.join(root, "loop.png"), os.path.join(root, "loop.png"))
    expected.update({os.path.join(root, name): ("error", kind) for name, kind in specials.items()})
    with open(os.path.join(root, ".hidden.png"), "wb") as stream:
        stream.write(b"skipped")
    os.makedirs(os.path.join(root, ".thumbnails"))
    with open(os.path.join(root, ".thumbnails", "t.png"), "wb") as stream:
        stream.write(b"skipped with its folder")
    os.symlink(deep, os.path.join(root, "link-to-folder"))
    expected.update(_issue_19_cases(root, _image_cases(items)["native.png"][0]))
    return expected


SECRET = b"SECRET-TOKEN: hunter2\n"
# Names that would lie on a page or a terminal: a right-to-left override, ESC and OSC sequences, BEL, CR, a newline.
LYING_NAMES = ("rtl\u202egnp.exe", "esc\x1b[31mred.png", "osc\x1b]0;pwned\x07.png", "bell\x07.png", "cr\rname.png",
               "n" * 240 + ".png")


def _issue_19_cases(root: str, png: bytes) -> dict:
    """Issue 19's inputs, all in the same folder: two names one key apart before (a Latin-1 byte and its spelling
    with a backslash), links to a private file and to /etc/passwd, names that lie when shown, a TFRecord whose keys
    name private files, and crafted models; {key: expected}."""
    from pipeline.reading.listing import key_for

    expected = {}
    for name in (b"caf\xe9.png", b"caf\\xe9.png", *(name.encode() for name in LYING_NAMES)):
        path = os.path.join(os.fsencode(root), name)
        with open(path, "wb") as stream:
            stream.write(png)
        expected[key_for(path)] = SCORED
    private = os.path.join(os.path.dirname(root), "private")
    os.makedirs(private, exist_ok=True)
    with open(os.path.join(private, "token.txt"), "wb") as stream:
        stream.write(SECRET)
    for name, target in (("secret.png", os.path.join(private, "token.txt")), ("passwd.png", "/etc/passwd")):
        os.symlink(target, os.path.join(root, name))
        expected[os.path.join(root, name)] = ("error", "not an image")
    records = [samples.example_bytes(png, filename=key) for key in ("/etc/passwd", "../private/token.txt")]
    samples.write_tfrecord(os.path.join(root, "keys.tfrecord"), records)
    with open(os.path.join(root, "evil.h5"), "wb") as stream:
        stream.write(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    with open(os.path.join(root, "evil.keras"), "wb") as stream:
        stream.write(_zip_bytes())
    expected.update({os.path.join(root, name): ("error", "not an image")
                     for name in ("keys.tfrecord", "evil.h5", "evil.keras")})
    return expected


def _counts(output) -> dict:
    with open(os.path.join(partition(output), "manifest.json"), encoding="utf-8") as stream:
        return json.load(stream)["counts"]


def _check_outcomes(output, expected: dict, skipped: dict) -> None:
    scores = collections.Counter(row["key"] for row in read_rows(os.path.join(partition(output), "scores")))
    errors = {}
    for row in read_rows(os.path.join(partition(output), "errors")):
        assert row["key"] not in errors, f"{row['key']} has two error rows"
        errors[row["key"]] = row["error_type"]
    assert all(count == 1 for count in scores.values()), [k for k, c in scores.items() if c > 1]
    wanted_scores = {key for key, outcome in expected.items() if outcome == SCORED}
    wanted_errors = {key: outcome[1] for key, outcome in expected.items() if outcome != SCORED}
    assert set(scores) == wanted_scores, (set(scores) ^ wanted_scores)
    assert errors == wanted_errors
    counts = _counts(output)
    assert counts["skipped_by_reason"] == skipped
    assert counts["matched"] == counts["scored"] + counts["failed"] + counts["skipped"] and counts["invariant_holds"]


def test_a_hostile_image_folder(test_split, tiny_model_path, tmp_path, capsys):
    root = tmp_path / "hostile"
    root.mkdir()
    expected = _build_image_corpus(str(root), test_split.images[:10])
    assert len(expected) + 4 >= 50  # + the hidden file, the hidden folder, the folder link and the repeat below
    out = str(tmp_path / "out")
    argv = ["--input", str(root), str(root / "native.png"), "--output", out, "--model", tiny_model_path,
            "--max_file_bytes", str(MAX_FILE_BYTES), "--progress_seconds", "0"]
    # More than 5% of this folder is broken, so by default the run publishes everything and exits 4.
    assert score.run(argv) == score.EXIT_ERROR_RATE
    assert "above --max_error_rate" in capsys.readouterr().out
    _check_outcomes(out, expected, {"hidden": 2, "link to a folder": 1, "listed twice": 1})
    _check_nothing_leaks_or_lies(partition(out))
    assert score.run(argv + ["--max_error_rate", "0.5"]) == score.EXIT_OK


def _check_nothing_leaks_or_lies(folder: str) -> None:
    """No byte of the private file or /etc/passwd in any file of the partition; the report's names hide nothing."""
    for place, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(place, name), "rb") as stream:
                content = stream.read()
            assert SECRET[:8] not in content and b"root:x:0" not in content, name
    with open(os.path.join(folder, "report.html"), encoding="utf-8") as stream:
        page = stream.read()
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]", page)
    assert page.count("n" * 240) <= 1  # a long name is shortened on its card, whole once in its tooltip
    sheet = page[page.index("least confident predictions</h2>"):]  # the failures' messages come before it
    assert sheet.count("<img class='seen'") == 24 and "changed since" not in sheet and "cannot be read" not in sheet


def _records(items) -> tuple:
    """TFRecord files: {file name: (bytes, {record key: expected})}."""
    def example(index, key, feature=None, value=None):
        value = samples.png_bytes(items[index]) if value is None else value
        return samples.example_bytes(value, key, feature_name=feature or "image/encoded")

    def framed(records):
        out = io.BytesIO()
        for record in records:
            header = struct.pack("<Q", len(record))
            out.write(header + struct.pack("<I", tfrecords._masked_crc32c(header)) + record
                      + struct.pack("<I", tfrecords._masked_crc32c(record)))
        return out.getvalue()

    good = [example(i, f"good-{i}") for i in range(3)]
    int_pixels = _int64_pixels_example(items[6], "raw-ints")
    bad_crc = bytearray(framed([example(3, "before-bad-crc"), example(4, "bad-crc"), example(5, "after-bad-crc")]))
    second = len(framed([example(3, "before-bad-crc")]))
    bad_crc[second + 12 + 5] ^= 0xFF
    cut = framed([example(6, "before-cut"), example(7, "cut")])
    huge_length = struct.pack("<Q", 1 << 40)
    huge = framed([example(8, "before-huge")]) + huge_length + struct.pack("<I", tfrecords._masked_crc32c(huge_length))
    return {
        "good.tfrecord": (framed(good), {f"good-{i}": SCORED for i in range(3)}),
        "good.tfrecord.gz": (gzip.compress(framed([example(0, "gz-0"), example(1, "gz-1")])),
                             {"gz-0": SCORED, "gz-1": SCORED}),
        "good.tfrecord.zlib": (zlib.compress(framed([example(2, "zlib-2")])), {"zlib-2": SCORED}),
        "raw.tfrecord": (framed([example(5, "raw-bytes", RECORD_KEY_RAW_PIXELS, items[5].tobytes()), int_pixels,
                                 example(5, "raw-short", RECORD_KEY_RAW_PIXELS, b"\x00" * 100),
                                 example(5, "raw-in-encoded", value=items[5].tobytes())]),
                         {"raw-bytes": SCORED, "raw-ints": SCORED, "raw-short": ("error", "unsupported"),
                          "raw-in-encoded": ("error", "not an image")}),
        "names.tfrecord": (framed([example(0, "caf\xe9".encode("latin-1")), b"\xff\xfe not an example",
                                   example(1, "no-image", "image/other")]),
                           {"caf\\xe9": SCORED, "{path}:1": ("error", "not an Example"),
                            "no-image": ("error", "missing feature")}),
        "bad-crc.tfrecord": (bytes(bad_crc), {"before-bad-crc": SCORED, "{path}:1": ("error", "corrupt TFRecord"),
                                              "after-bad-crc": SCORED}),
        "cut.tfrecord": (cut[:-30], {"before-cut": SCORED, "{path}:1": ("error", "corrupt TFRecord")}),
        "huge-length.tfrecord": (huge, {"before-huge": SCORED, "{path}:1": ("error", "corrupt TFRecord")}),
        "broken.tfrecord.gz": (gzip.compress(framed(good))[:40], {"{path}:0": ("error", "corrupt TFRecord")}),
        "duplicates.tfrecord": (framed([example(7, "twice"), example(8, "twice")]), {"twice": SCORED}),
        "empty.tfrecord": (b"", {}),
    }


def _int64_pixels_example(pixels, key) -> bytes:
    import tensorflow as tf

    feature = {RECORD_KEY_RAW_PIXELS: tf.train.Feature(int64_list=tf.train.Int64List(value=pixels.ravel().tolist())),
               "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[key.encode()]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_a_hostile_tfrecord_folder(test_split, tiny_model_path, tmp_path):
    root = tmp_path / "records"
    root.mkdir()
    expected = {}
    for name, (data, records) in _records(test_split.images[:10]).items():
        path = str(root / name)
        with open(path, "wb") as stream:
            stream.write(data)
        expected.update({key.replace("{path}", path): outcome for key, outcome in records.items()})
    (root / ".hidden.tfrecord").write_bytes(b"skipped")
    assert len(expected) + 2 >= 20  # + the hidden file and the duplicate key
    out = str(tmp_path / "out")
    assert score.run(["--input_tfrecords", str(root / "*"), "--output", out, "--model", tiny_model_path,
                      "--max_error_rate", "0.9", "--progress_seconds", "0"]) == score.EXIT_OK
    scores = collections.Counter(row["key"] for row in read_rows(os.path.join(partition(out), "scores")))
    assert scores.pop("twice") == 2 and _counts(out)["duplicate_keys"] == 1  # both scored, and said
    expected.pop("twice")
    errors = {row["key"]: row["error_type"] for row in read_rows(os.path.join(partition(out), "errors"))}
    assert set(scores) == {key for key, outcome in expected.items() if outcome == SCORED}
    assert errors == {key: outcome[1] for key, outcome in expected.items() if outcome != SCORED}
    counts = _counts(out)
    assert counts["skipped_by_reason"] == {"hidden": 1} and counts["invariant_holds"]


@pytest.mark.parametrize("argv, code", [
    (["--input", "{missing}"], score.EXIT_NO_INPUT),
    (["--input", "{empty_folder}"], score.EXIT_NO_INPUT),
    (["--input", ""], score.EXIT_USAGE),
    (["--input", "{good}", "--input_tfrecords", "{good}"], score.EXIT_USAGE),
    (["--input", "{good}", "--model", "{good}"], score.EXIT_USAGE),
    (["--input", "{good}", "--output", "{good}/native.png"], score.EXIT_USAGE),
    (["--input", "{good}", "--max_pixels", "-5"], score.EXIT_USAGE),
    (["--input", "{good}", "--run_date", "yesterday"], score.EXIT_USAGE),
    (["--input", "{good}", "--no_such_flag"], score.EXIT_USAGE),
    (["--input", "{good}", "--output", ""], score.EXIT_USAGE),
    (["--input", "{good}", "--progress_seconds", "-1"], score.EXIT_USAGE),
    (["--input", "{good}", "--low_confidence", "nan"], score.EXIT_USAGE),
    (["--input", "{good}", "--model", "{good}/native.png"], score.EXIT_USAGE),
    (["--input", "{good}", "--skip_scored", "--input_tfrecords", "{good}"], score.EXIT_USAGE),
])
def test_command_line_mistakes_have_the_readmes_exit_codes(test_split, tiny_model_path, tmp_path, argv, code):
    good = tmp_path / "good"
    samples.write_pngs(test_split.images[:2], str(good), ["native.png", "other.png"])
    (tmp_path / "empty").mkdir()
    places = {"missing": str(tmp_path / "missing"), "empty_folder": str(tmp_path / "empty"), "good": str(good)}
    argv = [part.format(**places) for part in argv]
    full = argv + (["--output", str(tmp_path / "out")] if "--output" not in argv else []) + (
        ["--model", tiny_model_path] if "--model" not in argv else [])
    try:
        assert score.run(full) == code
    except SystemExit as stop:
        assert stop.code == code
