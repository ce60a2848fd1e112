"""Runs the real model CLIs and the scorer on hostile models, cards, files and names made here: a Lambda layer that
would write a marker file as it loads, a legacy .h5 file, an archive member outside its folder, cards whose fields
have the wrong type or unsafe text, a FIFO and a link to /dev/zero among the images, names with terminal escapes, and
a planted or tampered model cache. Each is refused or skipped in one line saying why; nothing hangs or runs code."""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import pytest
from apache_beam.io.localfilesystem import LocalFileSystem

from model import predict
from model.runtimes import model_files
from model.training import own_images
from model.vocabulary import IMAGE_SHAPE, NUM_CLASSES
from pipeline.scoring import served_model
from tests import samples
from tests.helpers import REPO_ROOT, SAMPLE_INPUTS

pytestmark = pytest.mark.clock  # also run with the clock moved to another day and zone: make test-clock

_CLIS = ("model.predict", "model.evaluate", "pipeline.score")
# TensorFlow's C++ start-up log lines (absl's format), which the model CLIs let through as TensorFlow writes them: not
# the CLI's own output. The scorer holds them back itself.
_TENSORFLOW_LOG_LINE = re.compile(r"WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} \d\d:\d\d:\d\d")


def _run(module: str, *arguments, timeout: int = 240) -> subprocess.CompletedProcess:
    """Runs a CLI; its stderr without TensorFlow's start-up log lines."""
    result = subprocess.run([sys.executable, "-m", module, *map(str, arguments)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=timeout)
    result.stderr = "".join(line for line in result.stderr.splitlines(keepends=True)
                            if not _TENSORFLOW_LOG_LINE.match(line))
    return result


def _cli_arguments(module: str, model: str, folder: str, output) -> list:
    """The arguments that make `module` load `model` and use the images of `folder` (class folders)."""
    if module == "model.predict":
        return [os.path.join(folder, "8", "0.png"), "--model", model]
    if module == "model.evaluate":
        return ["--model", model, "--no-fashion-mnist", "--eval-dir", folder, "--output-dir", output]
    return ["--input", os.path.join(SAMPLE_INPUTS, "images"), "--output", output, "--model", model,
            "--progress_seconds", "0"]


def _refused_in_one_line(result: subprocess.CompletedProcess, *fragments) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "\x1b" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def own_folder(test_split, tmp_path_factory) -> str:
    """Two real test images per class, as class folders named by index."""
    root = tmp_path_factory.mktemp("own-images")
    for label in range(NUM_CLASSES):
        images = test_split.images[np.flatnonzero(test_split.labels == label)[:2]]
        samples.write_pngs(images, str(root / str(label)), ["0.png", "1.png"])
    return str(root)


def _copy_model(tiny_model_path, folder, name="copy.keras") -> str:
    target = os.path.join(str(folder), name)
    shutil.copy(tiny_model_path, target)
    shutil.copy(model_files.card_path_for(tiny_model_path), model_files.card_path_for(target))
    return target


def _lambda_model(marker: str):
    """A model whose Lambda layer creates `marker` whenever it is called, as Keras does while loading it."""
    import keras

    touch = eval(f"lambda x: (__import__('pathlib').Path({marker!r}).touch(), x)[1]")  # code the file carries
    inputs = keras.Input(shape=IMAGE_SHAPE)
    hidden = keras.layers.Lambda(touch)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(NUM_CLASSES, activation="softmax")(hidden))


@pytest.mark.parametrize("module", _CLIS)
def test_a_lambda_layer_in_a_keras_file_is_refused_by_safe_mode(module, own_folder, tmp_path):
    marker = str(tmp_path / "lambda-ran")
    path = str(tmp_path / "evil.keras")
    model_files.save(_lambda_model(marker), path, {"name": "evil"})
    os.remove(marker)  # building the model here called the layer once
    result = _run(module, *_cli_arguments(module, path, own_folder, tmp_path / "out"))
    _refused_in_one_line(result, "evil.keras", "cannot load the Keras model", "Lambda")
    assert not os.path.exists(marker)


@pytest.mark.parametrize("module", _CLIS)
def test_a_legacy_h5_model_is_refused_before_keras_reads_it(module, tiny_model_path, own_folder, tmp_path):
    marker = str(tmp_path / "lambda-ran")
    path = str(tmp_path / "evil.h5")
    _lambda_model(marker).save(path)
    os.remove(marker)
    shutil.copy(model_files.card_path_for(tiny_model_path), model_files.card_path_for(path))
    result = _run(module, *_cli_arguments(module, path, own_folder, tmp_path / "out"))
    # Every command refuses it by name (model.runtimes.registry), before anything reads it.
    _refused_in_one_line(result, "evil.h5", "only .keras and .onnx model files are loaded")
    assert not os.path.exists(marker)


def test_a_folder_is_no_model_whatever_its_name(tiny_model_path, tmp_path):
    saved_model = tmp_path / "saved.keras"  # a folder Keras would load as an unzipped model
    saved_model.mkdir()
    with zipfile.ZipFile(tiny_model_path) as archive:
        archive.extractall(saved_model)
    shutil.copy(model_files.card_path_for(tiny_model_path), tmp_path / "saved.json")
    with pytest.raises(model_files.ModelFileError, match="only regular files are read .this is a folder."):
        model_files.load(str(saved_model))
    with pytest.raises(model_files.ModelFileError, match="only .keras and .onnx model files are loaded"):
        model_files.load(str(tmp_path / "saved_model"))


@pytest.mark.parametrize("module", _CLIS)
def test_an_archive_member_outside_its_folder_is_refused(module, tiny_model_path, own_folder, tmp_path):
    path = _copy_model(tiny_model_path, tmp_path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("../evil", b"written outside the folder it is unpacked into")
    result = _run(module, *_cli_arguments(module, path, own_folder, tmp_path / "out"))
    _refused_in_one_line(result, "copy.keras", "its member '../evil' would unpack outside its folder")


@pytest.mark.filterwarnings("ignore:Duplicate name")  # a second config.json is the point
@pytest.mark.parametrize("name", ["/etc/evil", "assets/extra.txt", "config.json"])
def test_archive_members_other_than_a_models_own_are_refused(tiny_model_path, tmp_path, name):
    path = _copy_model(tiny_model_path, tmp_path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(name, b"{}")
    with pytest.raises(model_files.ModelFileError, match="refused, (its )?member"):
        model_files.load(path)


_HOSTILE_CARDS = {
    "hash-a-number": ({"content_sha256": 12345}, "content_sha256 must be 64 lowercase hex digits, not 12345"),
    "version-markup-escape": ({"version": "1.0.0<script>alert(1)</script>\x1b[31m"},
                              r"version must be a string of 1-64 letters, digits and . _ + -, not "
                              r"'1.0.0<script>alert(1)</script>\x1b[31m'"),
    "version-an-object": ({"version": {"x": 1}}, "version must be a string of 1-64 letters, digits and . _ + -, "
                                                 "not {'x': 1}"),
}


@pytest.mark.parametrize("module", _CLIS)
@pytest.mark.parametrize("case", sorted(_HOSTILE_CARDS))
def test_a_card_field_of_the_wrong_type_is_refused_in_one_line(case, module, tiny_model_path, own_folder,
                                                               tmp_path):
    changes, message = _HOSTILE_CARDS[case]
    path = _copy_model(tiny_model_path, tmp_path)
    card_path = model_files.card_path_for(path)
    with open(card_path) as stream:
        card = json.load(stream)
    with open(card_path, "w") as stream:
        json.dump({**card, **changes}, stream)
    result = _run(module, *_cli_arguments(module, path, own_folder, tmp_path / "out"))
    _refused_in_one_line(result, "copy.json", message)
    assert not os.path.exists(tmp_path / "out" / "metrics.json")


def test_predict_answers_every_file_and_names_what_it_could_not_read(tiny_model_path, test_split, tmp_path):
    """A FIFO would block an ordinary open for ever, and /dev/zero never ends; each is a line with its reason."""
    good = samples.write_pngs(test_split.images[:2], str(tmp_path), ["a.png", "b.png"])
    fifo, zero = str(tmp_path / "pipe.png"), str(tmp_path / "zero.png")
    os.mkfifo(fifo)
    os.symlink("/dev/zero", zero)
    result = _run("model.predict", good[0], fifo, zero, good[1], "--model", tiny_model_path, timeout=120)
    assert result.returncode == predict.EXIT_SOME_FAILED, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == [good[0], fifo, zero, good[1]]
    assert lines[1] == f"{fifo}: error: not a regular file: only regular files are read (this is a FIFO)"
    assert lines[2] == f"{zero}: error: not a regular file: only regular files are read (this is a character device)"
    assert "%" in lines[0] and "%" in lines[3]
    assert result.stderr == "2 of 4 files could not be classified\n"


def test_training_skips_a_fifo_a_device_link_and_a_folder_link_in_a_class_folder(test_split, tmp_path):
    own = tmp_path / "own"
    for label in range(NUM_CLASSES):
        samples.write_pngs(test_split.images[np.flatnonzero(test_split.labels == label)[:2]], str(own / str(label)),
                           ["0.png", "1.png"])
    os.mkfifo(own / "8" / "pipe.png")
    os.symlink("/dev/zero", own / "8" / "zero.png")
    samples.write_pngs(test_split.images[:3], str(tmp_path / "elsewhere"), ["x.png", "y.png", "z.png"])
    os.symlink(tmp_path / "elsewhere", own / "8" / "linked")  # not followed: its three images are not trained on
    export = tmp_path / "own.keras"
    result = _run("model.train", "--no-fashion-mnist", "--train-dir", own, "--architecture", "mlp", "--epochs", "1",
                  "--batch-size", "8", "--data-dir", tmp_path / "no-dataset", "--run-dir", tmp_path / "run",
                  "--export", export, "--verbose", "0", timeout=120)
    assert result.returncode == 0, result.stderr
    first = own / "8" / "linked"
    assert result.stderr == (f"{own}: skipped 3 of 23 files: 3 not a regular file (first: {first}: not a regular "
                             "file: only regular files are read (this is a folder))\n")
    assert model_files.load(str(export)).card["training_data"][0]["images"] == 2 * NUM_CLASSES


def test_evaluate_refuses_a_fifo_list_file_at_once(tiny_model_path, tmp_path):
    os.mkfifo(tmp_path / "labels.txt")
    result = _run("model.evaluate", "--model", tiny_model_path, "--no-fashion-mnist", "--eval-list",
                  tmp_path / "labels.txt", "--output-dir", tmp_path / "out", timeout=120)
    _refused_in_one_line(result, "labels.txt: cannot read the list file (only regular files are read (this is a FIFO))")


_HOSTILE_NAMES = {
    "osc\x1b]0;pwned\x07.png": "osc\\x1b]0;pwned\\x07.png",
    "two\nlines.png": "two\\x0alines.png",
    "rtl\u202egnp.png": "rtl\\u202egnp.png",
}


def test_predict_shows_control_characters_in_names_as_escapes(tiny_model_path, test_split, tmp_path, capsys):
    names = sorted(_HOSTILE_NAMES)
    paths = samples.write_pngs(test_split.images[:3], str(tmp_path), names)
    broken = str(tmp_path / "broken\x1b[2J.png")
    with open(broken, "wb") as stream:
        stream.write(b"not an image")
    assert predict.main(paths + [broken, "--model", tiny_model_path]) == predict.EXIT_SOME_FAILED
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    for line, name in zip(lines, names):
        assert line.startswith(f"{tmp_path}/{_HOSTILE_NAMES[name]}: ") and "%" in line
    assert lines[3].startswith(f"{tmp_path}/broken\\x1b[2J.png: error: not an image")
    assert not any(ch in "".join(lines) for ch in "\x1b\x07\u202e")


def test_skip_reports_show_control_characters_in_names_as_escapes(test_split, tmp_path, capsys):
    samples.write_pngs(test_split.images[:1], str(tmp_path / "own" / "Bag"), ["good.png"])
    (tmp_path / "own" / "Bag" / "osc\x1b]0;pwned\x07\n.png").write_bytes(b"not an image")
    own_images.report_skipped([own_images.load_labelled_folder(str(tmp_path / "own"))])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "osc\\x1b]0;pwned\\x07\\x0a.png: not an image" in err and "\x1b" not in err


def test_a_linked_class_folder_is_refused(own_folder, tmp_path):
    shutil.copytree(own_folder, tmp_path / "own")
    os.symlink(tmp_path / "own" / "8", tmp_path / "own" / "Bag")
    with pytest.raises(own_images.DatasetError, match="Bag: the class folder is a link"):
        own_images.load_labelled_folder(str(tmp_path / "own"))


class _ModelStore(LocalFileSystem):
    """A stand-in for an object store: local files behind `modelstoretest://`, so that the model is copied."""

    PREFIX = "modelstoretest://"

    @classmethod
    def scheme(cls):
        return "modelstoretest"

    def metadata(self, path):
        return super().metadata(path[len(self.PREFIX):])

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        return super().open(path[len(self.PREFIX):], mime_type, compression_type)


@pytest.fixture()
def private_tmp(tmp_path, monkeypatch) -> str:
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return str(folder)


def test_a_remote_model_is_cached_privately_and_a_tampered_copy_is_copied_again(tiny_model_path, private_tmp,
                                                                                tmp_path):
    uri = _ModelStore.PREFIX + tiny_model_path
    local = served_model.localize(uri)
    cache = served_model.private_cache()
    assert cache == os.path.join(private_tmp, f"fashion-scorer-models-{os.getuid()}")
    assert local.startswith(cache + os.sep) and stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    original = model_files.load(local).version
    # Another model put in the copy's place (and a card to match it) must not be what the next run loads.
    other = str(tmp_path / "other.keras")
    model_files.save(model_files.load(tiny_model_path).model, other, {"version": "9.9.9"})
    shutil.copy(other, local)
    shutil.copy(model_files.card_path_for(other), model_files.card_path_for(local))
    assert served_model.localize(uri) == local
    assert model_files.load(local).version == original
    with open(local, "rb") as copied, open(tiny_model_path, "rb") as source:
        assert copied.read() == source.read()


@pytest.mark.parametrize("plant", ["open to all", "another owner", "a link"])
def test_a_model_cache_folder_not_private_to_this_user_is_refused(private_tmp, tmp_path, plant):
    cache = os.path.join(private_tmp, f"fashion-scorer-models-{os.getuid()}")
    if plant == "a link":
        (tmp_path / "attacker").mkdir(mode=0o700)
        os.symlink(tmp_path / "attacker", cache)
    else:
        os.mkdir(cache, 0o700)
        if plant == "open to all":
            os.chmod(cache, 0o777)
        elif os.getuid() == 0:
            os.chown(cache, 12345, -1)
        else:
            pytest.skip("only root can give a folder to another owner")
    with pytest.raises(model_files.ModelFileError, match="is not a private folder of this user"):
        served_model.private_cache()
