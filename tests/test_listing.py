"""Tests listing and matching on real folders full of odd entries: every entry met is a file, an error row or a
counted skip, paths mean what they say, and a file two inputs name is listed once."""

import collections
import errno
import os

import pytest
from apache_beam.io.filesystem import FileMetadata, MatchResult
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.pvalue import TaggedOutput

from pipeline.reading import listing, matching
from tests import samples
from tests.helpers import too_long_to_list


def _list(*inputs, output=None, refuse_outside_links=False):
    """Plans and lists inputs as the pipeline's matching steps do (without a pipeline): (files as {key: size}, error
    rows as {key: error type}, skipped reasons, entries met)."""
    specs = [listing.input_spec(text) for text in inputs]
    rules = listing.Rules(output, listing.link_roots(specs) if refuse_outside_links else None)
    plan = matching._PlanTasks(rules)
    lister = matching._ListTasks(specs, 10**6, True, None, None, rules)
    files, errors, skipped, met = {}, {}, collections.Counter(), 0
    for numbered in enumerate(specs):
        for task in plan.process(numbered):
            for item in lister.process(task):
                if isinstance(item, TaggedOutput):
                    name, amount = item.value
                    met += amount if name == "matched" else 0
                    if name.startswith("skipped_by_reason/"):
                        skipped[name.split("/", 1)[1]] += amount
                    continue
                files.update((listing.key_for(e[0]), e[1]) for e in item if not isinstance(e, dict))
                errors.update((e["key"], e["error_type"]) for e in item if isinstance(e, dict))
    return files, errors, dict(skipped), met


def _png(folder, name, image) -> str:
    os.makedirs(folder, exist_ok=True)
    return samples.write_pngs(image[None], str(folder), [name])[0]


def test_every_entry_is_a_file_an_error_or_a_counted_skip(test_split, tmp_path):
    image = test_split.images[0]
    good = _png(tmp_path / "a", "good.png", image)
    _png(tmp_path / "a" / "b", "deep.png", image)
    _png(tmp_path, ".hidden.png", image)
    _png(tmp_path / ".thumbnails", "thumb.png", image)
    os.symlink(good, tmp_path / "link-to-file.png")
    os.symlink(tmp_path / "a", tmp_path / "link-to-folder")
    os.symlink(tmp_path / "nowhere.png", tmp_path / "dangling.png")
    os.symlink(tmp_path / "loop.png", tmp_path / "loop.png")
    os.mkfifo(tmp_path / "pipe.png")
    os.symlink("/dev/zero", tmp_path / "endless.png")
    files, errors, skipped, met = _list(str(tmp_path))
    assert sorted(files) == sorted([good, str(tmp_path / "a" / "b" / "deep.png"), str(tmp_path / "link-to-file.png")])
    assert errors == {str(tmp_path / "dangling.png"): "dangling link", str(tmp_path / "loop.png"): "link loop",
                      str(tmp_path / "pipe.png"): "not a regular file",
                      str(tmp_path / "endless.png"): "not a regular file"}
    assert skipped == {"hidden": 2, "link to a folder": 1}
    assert met == len(files) + len(errors) + sum(skipped.values()) == 10


def test_unreadable_folder_is_an_error_row_not_a_silent_gap(test_split, tmp_path, monkeypatch):
    _png(tmp_path / "open", "a.png", test_split.images[0])
    _png(tmp_path / "locked", "b.png", test_split.images[0])
    real_scandir = os.scandir

    def scandir(path):  # the tests run as root, whom permissions do not stop, so the refusal is simulated
        if str(path).endswith("locked"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    files, errors, _, _ = _list(str(tmp_path))
    assert list(files) == [str(tmp_path / "open" / "a.png")]
    assert errors == {str(tmp_path / "locked"): "unreadable folder"}


def test_a_path_too_long_for_the_system_is_an_error_row(test_split, tmp_path):
    too_long_to_list(str(tmp_path))
    files, errors, _, _ = _list(str(tmp_path))
    assert files == {} and list(errors.values()) == ["path too long"]


def test_names_that_are_not_utf8_survive_as_keys(test_split, tmp_path):
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1, not UTF-8
    _png(tmp_path, name, test_split.images[0])
    files, _, _, _ = _list(str(tmp_path))
    assert list(files) == [str(tmp_path / "caf\\xe9.png")]


def test_keys_are_one_to_one_with_names(test_split, tmp_path):
    latin1, spelled = os.fsdecode(b"caf\xe9.png"), "caf\\xe9.png"  # the Latin-1 byte, and a backslash, x, e, 9
    assert listing.key_for(latin1) == "caf\\xe9.png" and listing.key_for(spelled) == "caf\\\\xe9.png"
    assert listing.key_for(b"a\\b\xff") == listing.key_for(os.fsdecode(b"a\\b\xff")) == "a\\\\b\\xff"
    for name in (latin1, spelled):
        _png(tmp_path, name, test_split.images[0])
    files, errors, _, met = _list(str(tmp_path))
    assert sorted(files) == [str(tmp_path / "caf\\\\xe9.png"), str(tmp_path / "caf\\xe9.png")] and met == 2


def _walked(monkeypatch) -> list:
    """The folders listings open from now on (os.scandir), in order."""
    walked, real_scandir = [], os.scandir

    def scandir(path):
        walked.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return walked


def test_a_glob_walks_only_the_folders_that_could_hold_a_match(test_split, tmp_path, monkeypatch):
    from apache_beam.io.filesystems import FileSystems

    for folder, name in (("", "a.png"), ("sub", "x1.png"), ("sub/deeper", "x2.png"), ("other", "y.png")):
        _png(tmp_path / folder, name, test_split.images[0])
    root, walked = str(tmp_path), _walked(monkeypatch)
    everything = [os.path.join(root, folder) for folder in ("", "sub", "sub/deeper", "other")]
    # glob: (folders walked, files found); Beam's `?` matches any character, `/` too, so from it on all are walked.
    cases = {"*.nothing": ([root], []), "*/x*.png": ([root, everything[1], everything[3]], ["sub/x1.png"]),
             "**.png": (everything, ["a.png", "sub/x1.png", "sub/deeper/x2.png", "other/y.png"]),
             "su?/x*.png": (everything, ["sub/x1.png"])}
    for glob, (folders, found) in cases.items():
        walked.clear()
        files = _list(os.path.join(root, glob))[0]
        assert sorted(os.path.normpath(folder) for folder in walked) == sorted(map(os.path.normpath, folders)), glob
        assert sorted(files) == sorted(os.path.join(root, name) for name in found), glob
        beams = FileSystems.match([os.path.join(root, glob)])[0].metadata_list
        assert sorted(files) == sorted(found.path for found in beams), glob  # what Beam's own match finds


def test_links_outside_the_inputs_are_refused_only_when_asked(test_split, tmp_path):
    inside, outside = tmp_path / "inputs", tmp_path / "elsewhere"
    image = _png(inside, "a.png", test_split.images[0])
    other = _png(outside, "b.png", test_split.images[1])
    (outside / "secret.txt").write_text("SECRET-TOKEN")
    for name, target in (("in.png", image), ("out.png", other), ("secret.png", outside / "secret.txt"),
                         ("zero.png", "/dev/zero"), ("folder", outside)):
        os.symlink(target, inside / name)
    files, errors, skipped, _ = _list(str(inside))
    assert sorted(files) == sorted(str(inside / name) for name in ("a.png", "in.png", "out.png", "secret.png"))
    assert errors == {str(inside / "zero.png"): "not a regular file"} and skipped == {"link to a folder": 1}
    files, errors, skipped, _ = _list(str(inside), refuse_outside_links=True)
    assert sorted(files) == [image, str(inside / "in.png")] and skipped == {"link to a folder": 1}
    assert errors == {str(inside / name): "link outside the inputs" for name in ("out.png", "secret.png", "zero.png")}
    # A file another input names is inside the inputs, and so is a link named on the command line.
    files, errors, _, _ = _list(str(inside), other, str(inside / "secret.png"), refuse_outside_links=True)
    assert sorted(files) == sorted([image, str(inside / "in.png"), str(inside / "out.png"), other,
                                    str(inside / "secret.png")])


def test_existing_names_with_glob_characters_are_taken_literally(test_split, tmp_path):
    wanted = _png(tmp_path / "batch[1]", "a.png", test_split.images[0])
    _png(tmp_path / "batch1", "sibling.png", test_split.images[1])
    assert list(_list(str(tmp_path / "batch[1]"))[0]) == [wanted]
    assert list(_list(wanted)[0]) == [wanted]
    assert list(_list(str(tmp_path / "batch?" / "*.png"))[0]) == [str(tmp_path / "batch1" / "sibling.png")]


def test_a_file_two_inputs_name_is_listed_once(test_split, tmp_path):
    path = _png(tmp_path, "a.png", test_split.images[0])
    files, _, skipped, met = _list(str(tmp_path), path, str(tmp_path / "*.png"), os.path.relpath(path))
    assert list(files) == [path] and skipped == {"listed twice": 3} and met == 4


def test_the_runs_own_output_below_an_input_is_skipped(test_split, tmp_path):
    wanted = _png(tmp_path / "photos", "a.png", test_split.images[0])
    _png(tmp_path / "scores" / "dt=2026-11-20" / "scores", "part-0.parquet", test_split.images[0])
    files, errors, skipped, _ = _list(str(tmp_path), output=str(tmp_path / "scores"))
    assert files == {wanted: os.path.getsize(wanted)} and errors == {}
    assert skipped == {"the run's own output folder": 1}


def test_an_empty_input_is_refused():
    with pytest.raises(ValueError, match="an input is empty"):
        listing.input_spec("")


def test_folder_listing_is_beams_listing_where_beam_sees_the_files(test_split, tmp_path):
    from apache_beam.io.filesystems import FileSystems

    samples.write_pngs(test_split.images[:4], str(tmp_path / "a" / "b"), ["0.png", "1.png", "2.png", "3.png"])
    (tmp_path / "notes.txt").write_text("still an input")
    os.symlink(tmp_path / "a" / "b" / "0.png", tmp_path / "link-to-file.png")
    beams = sorted((m.path, m.size_in_bytes, m.last_updated_in_seconds)
                   for m in FileSystems.match([os.path.join(str(tmp_path), "**")])[0].metadata_list)
    found = [entry for _, entry in listing.spec_entries(listing.input_spec(str(tmp_path)))]
    assert sorted(found) == beams


class _StoreFileSystem(LocalFileSystem):
    """A stand-in for an object store: local files behind `storetest://`, listed by prefix as a bucket is."""

    PREFIX = "storetest://"

    @classmethod
    def scheme(cls):
        return "storetest"

    def match(self, patterns, limits=None):
        results = super().match([pattern[len(self.PREFIX):] for pattern in patterns], limits)
        return [MatchResult(pattern, [FileMetadata(self.PREFIX + found.path, found.size_in_bytes,
                                                   found.last_updated_in_seconds) for found in result.metadata_list])
                for pattern, result in zip(patterns, results)]

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        return super().open(path[len(self.PREFIX):], mime_type, compression_type)


def test_an_object_store_input_is_listed_by_the_worker_that_gets_its_task(test_split, tiny_model_path, tmp_path):
    from pipeline import score
    from tests.helpers import partition, read_rows

    for shelf in ("a", "b"):
        samples.write_pngs(test_split.images[:30], str(tmp_path / shelf), [f"{i:02d}.png" for i in range(30)])
    inputs = [f"storetest://{tmp_path / 'a'}/*.png", f"storetest://{tmp_path / 'b'}/*.png"]
    tasks = [task for numbered in enumerate(listing.input_spec(text) for text in inputs)
             for task in matching._PlanTasks(listing.Rules()).process(numbered)]
    assert [(task.folder, task.entries) for task in tasks] == [(text, ()) for text in inputs]  # planning lists nothing
    out = str(tmp_path / "out")
    assert score.run(["--input", *inputs, "--output", out, "--model", tiny_model_path, "--progress_seconds", "0"]) == 0
    rows = read_rows(os.path.join(partition(out), "scores"))
    assert [row["key"] for row in rows] == sorted(f"storetest://{tmp_path / shelf}/{i:02d}.png"
                                                  for shelf in "ab" for i in range(30))
