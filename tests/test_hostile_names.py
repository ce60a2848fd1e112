"""Runs the real scorer over hostile names, links and globs: keys stay one-to-one with names, equal keys are counted
rather than fatal, no byte of a linked file reaches any output, links outside the inputs are refused when asked, and
a glob never walks into folders it cannot match."""

import json
import os

import pyarrow.parquet as pq
from apache_beam.io.filesystem import MatchResult

from pipeline import score
from tests import samples
from tests.helpers import partition, read_rows, too_long_to_list
from tests.test_listing import _StoreFileSystem


def _run(tiny_model_path, out, *inputs, flags=()) -> int:
    return score.run(["--input", *inputs, "--output", str(out), "--model", tiny_model_path, "--progress_seconds", "0",
                      *flags])


def _keys(out, folder: str = "scores") -> list:
    return [row["key"] for row in read_rows(os.path.join(partition(out), folder))]


def _manifest(out) -> dict:
    with open(os.path.join(partition(out), "manifest.json"), encoding="utf-8") as stream:
        return json.load(stream)


def test_a_latin1_name_and_the_same_name_spelled_with_a_backslash_are_two_keys(test_split, tiny_model_path,
                                                                               tmp_path):
    folder = tmp_path / "photos"
    # b"caf\xe9.png" (Latin-1 é) and a name spelled with a backslash, x, e, 9: once both keyed caf\xe9.png, and the
    # listing's sort then compared bytes with text and failed the run.
    names = [os.fsdecode(b"caf\xe9.png"), "caf\\xe9.png"]
    samples.write_pngs(test_split.images[:2], str(folder), names)
    out = tmp_path / "out"
    assert _run(tiny_model_path, out, str(folder)) == score.EXIT_OK
    assert _keys(out) == sorted([f"{folder}/caf\\xe9.png", f"{folder}/caf\\\\xe9.png"])
    assert _manifest(out)["counts"]["duplicate_keys"] == 0


def test_names_with_backslashes_keep_them_doubled_in_their_keys(test_split, tiny_model_path, tmp_path):
    folder = tmp_path / "photos"
    names = ["back\\slash.png", "\\x41.png", "two\\\\.png", "end\\"]
    samples.write_pngs(test_split.images[:4], str(folder), names)
    out = tmp_path / "out"
    assert _run(tiny_model_path, out, str(folder)) == score.EXIT_OK
    assert _keys(out) == sorted(f"{folder}/{name.replace(chr(92), chr(92) * 2)}" for name in names)
    # TFRecord key features are keyed the same way.
    records = samples.write_tfrecord(str(tmp_path / "records" / "a.tfrecord"), [
        samples.example_bytes(samples.png_bytes(test_split.images[0]), b"a\\b"),
        samples.example_bytes(samples.png_bytes(test_split.images[1]), b"a\xe9")])
    out = tmp_path / "records-out"
    assert score.run(["--input_tfrecords", records, "--output", str(out), "--model", tiny_model_path,
                      "--progress_seconds", "0"]) == score.EXIT_OK
    assert _keys(out) == ["a\\\\b", "a\\xe9"]


class _ListsTwiceFileSystem(_StoreFileSystem):
    """A filesystem whose listing names every file twice (as a faulty object store might): local files behind
    `liststwice://`."""

    PREFIX = "liststwice://"

    @classmethod
    def scheme(cls):
        return "liststwice"

    def match(self, patterns, limits=None):
        return [MatchResult(result.pattern, [found for found in result.metadata_list for _ in range(2)])
                for result in super().match(patterns, limits)]


def test_equal_keys_from_one_listing_are_counted_and_each_file_is_scored(test_split, tiny_model_path, tmp_path,
                                                                         capsys):
    samples.write_pngs(test_split.images[:3], str(tmp_path / "a"), ["0.png", "1.png", "2.png"])
    out = tmp_path / "out"
    assert _run(tiny_model_path, out, f"liststwice://{tmp_path / 'a'}/*.png") == score.EXIT_OK
    assert _keys(out) == sorted(f"liststwice://{tmp_path / 'a'}/{i}.png" for i in range(3) for _ in range(2))
    counts = _manifest(out)["counts"]
    assert (counts["matched"], counts["scored"], counts["duplicate_keys"]) == (6, 6, 3) and counts["invariant_holds"]
    assert "WARNING: 3 files carry a key another file also carries" in capsys.readouterr().out


def _linked_corpus(test_split, tmp_path) -> tuple:
    """(input folder, its good image, links in it to: a secret outside, an image outside, its own image)."""
    inside, outside = tmp_path / "inputs", tmp_path / "elsewhere"
    good = samples.write_pngs(test_split.images[:1], str(inside), ["good.png"])[0]
    image = samples.write_pngs(test_split.images[1:2], str(outside), ["image.png"])[0]
    (outside / "secret.txt").write_bytes(b"SECRET-TOKEN: hunter2\n")
    links = {"secret.png": outside / "secret.txt", "image-outside.png": image, "own.png": good}
    for name, target in links.items():
        os.symlink(target, inside / name)
    if os.path.isfile("/etc/passwd"):
        os.symlink("/etc/passwd", inside / "passwd.png")
    return inside, good


def _assert_nowhere_in(folder: str, leaks: tuple) -> None:
    """No file below `folder` holds any of `leaks`, as bytes or in any Parquet value read back with pyarrow."""
    for below, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(below, name)
            with open(path, "rb") as stream:
                content = stream.read()
            assert not any(leak in content for leak in leaks), path
            if name.endswith(".parquet"):
                values = json.dumps(pq.read_table(path).to_pylist(), default=str).encode()
                assert not any(leak in values for leak in leaks), path


def test_links_to_files_outside_are_followed_and_leak_no_byte_of_them(test_split, tiny_model_path, tmp_path):
    inside, good = _linked_corpus(test_split, tmp_path)
    out = tmp_path / "out"
    assert _run(tiny_model_path, out, str(inside), flags=["--max_error_rate", "0.9"]) == score.EXIT_OK
    assert _keys(out) == sorted([good, str(inside / "image-outside.png"), str(inside / "own.png")])
    errors = {row["key"]: row for row in read_rows(os.path.join(partition(out), "errors"))}
    assert errors[str(inside / "secret.png")]["error_type"] == "not an image"
    assert errors[str(inside / "secret.png")]["error_message"].endswith("in these 22 bytes")
    _assert_nowhere_in(partition(out), (b"SECRET-T", b"hunter2", b"root:x:0"))


def test_refuse_outside_links_makes_links_outside_the_inputs_error_rows(test_split, tiny_model_path, tmp_path):
    inside, good = _linked_corpus(test_split, tmp_path)
    out = tmp_path / "out"
    assert _run(tiny_model_path, out, str(inside), flags=["--refuse_outside_links", "--max_error_rate", "0.9"]) == 0
    assert _keys(out) == sorted([good, str(inside / "own.png")])
    errors = {row["key"]: row["error_type"] for row in read_rows(os.path.join(partition(out), "errors"))}
    outside = ["secret.png", "image-outside.png"] + (["passwd.png"] if os.path.lexists(inside / "passwd.png") else [])
    assert errors == {str(inside / name): "link outside the inputs" for name in outside}
    assert _manifest(out)["refuse_outside_links"] is True
    _assert_nowhere_in(partition(out), (b"SECRET-T", b"hunter2", b"root:x:0"))


def test_a_glob_never_walks_into_folders_it_cannot_match(test_split, tiny_model_path, tmp_path, capsys):
    root = tmp_path / "images"
    for index, (folder, name) in enumerate((("", "top.png"), ("sub", "x1.png"), ("sub/deeper", "x2.png"))):
        samples.write_pngs(test_split.images[index:index + 1], str(root / folder), [name])
    too_long_to_list(str(root))
    out = tmp_path / "out"
    assert _run(tiny_model_path, out, str(root / "*.nothing")) == score.EXIT_NO_INPUT
    assert "matches no files" in capsys.readouterr().err and not list(out.glob("dt=*"))
    assert _run(tiny_model_path, out, str(root / "*/x*.png")) == score.EXIT_OK
    assert _keys(out) == [str(root / "sub" / "x1.png")] and _keys(out, "errors") == []
    # `**` may match at any depth, so the folders too long to list are walked, and said to be.
    assert _run(tiny_model_path, out, str(root / "**.png"), flags=["--max_error_rate", "0.5"]) == score.EXIT_OK
    assert _keys(out) == sorted(str(root / name) for name in ("top.png", "sub/x1.png", "sub/deeper/x2.png"))
    assert [row["error_type"] for row in read_rows(os.path.join(partition(out), "errors"))] == ["path too long"]
