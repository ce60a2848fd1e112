"""Tests the own-dataset path end to end: a folder of real PNG and JPEG images, one sub-folder per class, trains a
model without Fashion-MNIST, is evaluated, and is scored by the pipeline with that model; and its clear errors."""

import json
import os

import numpy as np
import pytest

from model import evaluate, train
from model.recipes import preprocessing
from model.runtimes import model_files
from model.training import data, own_images

from model.vocabulary import CLASS_NAMES, NUM_CLASSES
from tests import samples
from tests.helpers import partition, read_rows

_PER_CLASS = 4


def _folder_name(label: int) -> str:
    """Even classes by name ('/' written '-'), odd ones by index: both ways docs/training.md documents."""
    return CLASS_NAMES[label].replace("/", "-") if label % 2 == 0 else str(label)


@pytest.fixture(scope="module")
def own_folder(test_split, tmp_path_factory) -> str:
    """Real test images, a few per class: half as grey PNGs, half as JPEG catalogue photos; and one broken file."""
    root = tmp_path_factory.mktemp("own") / "my photos"
    for label in range(NUM_CLASSES):
        folder = root / _folder_name(label)
        indices = np.flatnonzero(test_split.labels == label)[:_PER_CLASS]
        half = _PER_CLASS // 2
        samples.write_pngs(test_split.images[indices[:half]], str(folder),
                           [samples.file_name(index, label) for index in indices[:half]])
        for index in indices[half:]:
            samples.catalogue_photo(test_split.images[index], int(index)).save(
                folder / samples.file_name(index, label, ".jpg"), "JPEG", quality=90)
    (root / "Bag" / "broken.png").write_bytes(b"a note saved under an image's name")
    return str(root)


def _image_paths(root: str) -> list:
    return sorted(os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names
                  if name != "broken.png")


def _train_arguments(tmp_path, *flags, data_dir=None):
    """Flags for a tiny, fast run. Without data_dir the --data-dir holds no dataset, so Fashion-MNIST cannot be read by
    mistake."""
    return ["--architecture", "mlp", "--epochs", "2", "--batch-size", "8", "--run-dir", str(tmp_path / "run"),
            "--data-dir", data_dir or str(tmp_path / "no-dataset"), "--verbose", "0", *flags]


def test_own_folder_trains_evaluates_exports_and_scores(own_folder, tmp_path, capsys):
    from pipeline import score

    export = str(tmp_path / "own.keras")
    assert train.main(_train_arguments(tmp_path, "--no-fashion-mnist", "--train-dir", own_folder,
                                       "--export", export)) == 0
    broken = os.path.join(own_folder, "Bag", "broken.png")
    formats = ", ".join(preprocessing.ALLOWED_FORMATS)
    assert capsys.readouterr().err == (f"{own_folder}: skipped 1 of 41 files: 1 not an image (first: {broken}: "
                                       f"not an image: no allowed image format ({formats}) in these 34 bytes)\n")

    card = model_files.load(export).card
    loaded = own_images.load_labelled_folder(own_folder)
    assert card["training_data"] == [{
        "origin": "folder", "location": own_folder, "images": NUM_CLASSES * _PER_CLASS,
        "per_class": {name: _PER_CLASS for name in CLASS_NAMES}, "skipped": 1, "sha256": data.fingerprint(loaded)}]
    assert card["training_config"]["fashion_mnist"] is False and card["training_config"]["train_dirs"] == [own_folder]
    assert card["test_metrics"] is None and "dataset_files" not in card and card["epochs_trained"] == 2

    reports = tmp_path / "reports"
    assert evaluate.main(["--model", export, "--no-fashion-mnist", "--eval-dir", own_folder, "--data-dir",
                          str(tmp_path / "no-idx"), "--output-dir", str(reports)]) == 0
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["examples"] == NUM_CLASSES * _PER_CLASS and metrics["data"] == card["training_data"]

    out = str(tmp_path / "scores")
    assert score.run(["--input", own_folder, "--output", out, "--model", export, "--progress_seconds", "0"]) == 0
    rows = read_rows(os.path.join(partition(out), "scores"))
    assert [row["key"] for row in rows] == _image_paths(own_folder)
    assert [row["key"] for row in read_rows(os.path.join(partition(out), "errors"))] == [broken]
    # Training and scoring share the preprocessing: the pipeline's probabilities are the model's on the loaded images.
    expected = model_files.load(export).model.predict(loaded.images, verbose=0)
    by_key = {row["key"]: row["probabilities"] for row in rows}
    np.testing.assert_allclose([by_key[source] for source in loaded.sources], expected, rtol=0, atol=1e-5)


def test_own_list_mixes_with_fashion_mnist(own_folder, small_data_dir, tmp_path):
    """A list file (labels by name or index, paths relative to the list file) adds to Fashion-MNIST's images."""
    relative = {os.path.relpath(path, tmp_path): os.path.basename(os.path.dirname(path))
                for path in _image_paths(own_folder)}
    lines = [f"{path} {'Bag' if folder == 'Bag' else 1}" for path, folder in relative.items() if folder in ("Bag", "1")]
    (tmp_path / "labels.txt").write_text("# my bags and trousers\n" + "\n".join(lines) + "\n")
    export = str(tmp_path / "mixed.keras")
    assert train.main(_train_arguments(tmp_path, "--train-list", str(tmp_path / "labels.txt"), "--epochs", "1",
                                       "--export", export, data_dir=small_data_dir)) == 0
    card = model_files.load(export).card
    assert [(part["origin"], part["images"]) for part in card["training_data"]] == [
        ("fashion-mnist train", 3000), ("list", 2 * _PER_CLASS)]
    per_class = card["training_data"][1]["per_class"]
    assert per_class["Bag"] == per_class["Trouser"] == _PER_CLASS and sum(per_class.values()) == 2 * _PER_CLASS
    assert card["test_metrics"]["examples"] == 1000 and len(card["dataset_files"]) == 4


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err.rstrip("\n")


def test_unknown_class_folder_is_an_error_with_fashion_mnist(small_data_dir, tmp_path, capsys):
    """With Fashion-MNIST's images the folders must name its classes; without them, a folder of another class is one
    of the user's own classes, and one class alone is not a model."""
    (tmp_path / "own" / "Spaceship").mkdir(parents=True)
    (tmp_path / "own" / "Spaceship" / "x.png").write_bytes(samples.png_bytes(np.zeros((28, 28), np.uint8)))
    assert train.main(_train_arguments(tmp_path, "--no-fashion-mnist", "--train-dir", str(tmp_path / "own"))) == 2
    assert _error_line(capsys) == (f"error: {tmp_path / 'own'}: the class folders name one class (Spaceship); a model "
                                   "needs two or more: add a folder of images for each class")
    assert train.main(_train_arguments(tmp_path, "--train-dir", str(tmp_path / "own"), data_dir=small_data_dir)) == 2
    assert _error_line(capsys) == (
        f"error: {tmp_path / 'own' / 'Spaceship'}: unknown class 'Spaceship': use an index 0-9 or one of "
        f"{', '.join(CLASS_NAMES)} (in a folder name, write '/' as '-': T-shirt-top)")


def test_empty_class_folder_is_an_error(tmp_path, capsys):
    (tmp_path / "own" / "T-shirt-top").mkdir(parents=True)
    assert evaluate.main(["--no-fashion-mnist", "--eval-dir", str(tmp_path / "own")]) == 2
    assert _error_line(capsys) == (
        f"error: {tmp_path / 'own' / 'T-shirt-top'}: the class folder is empty; add images of T-shirt/top or remove it")


def test_list_file_with_a_bad_label_is_an_error(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(samples.png_bytes(np.zeros((28, 28), np.uint8)))
    (tmp_path / "labels.txt").write_text("a.png Sneaker\na.png 10\n")
    arguments = _train_arguments(tmp_path, "--no-fashion-mnist", "--train-list", str(tmp_path / "labels.txt"))
    assert train.main(arguments) == 2
    assert _error_line(capsys) == (
        f"error: {tmp_path / 'labels.txt'}:2: unknown class '10': use an index 0-9 or one of {', '.join(CLASS_NAMES)}")


def test_changed_own_images_are_refused_on_resume(test_split, tmp_path, capsys):
    own = tmp_path / "own"
    samples.write_pngs(test_split.images[:3], str(own / "Bag"), ["a.png", "b.png", "c.png"])
    arguments = _train_arguments(tmp_path, "--no-fashion-mnist", "--train-dir", str(own), "--epochs", "1")
    assert train.main(arguments) == 0
    samples.write_pngs(test_split.images[3:4], str(own / "Bag"), ["d.png"])
    capsys.readouterr()
    assert train.main(arguments) == 2
    line = _error_line(capsys)
    run_dir = tmp_path / "run"
    assert line.startswith(f"error: {run_dir} holds a run trained with other settings (training_data_sha256: ")
    assert line.endswith("); use another --run-dir, or delete that folder to start over")


def test_class_folders_are_walked_in_os_walks_order_without_following_links(test_split, tmp_path):
    """The same files, in the same order, as the os.walk this replaced (a resumed run's data fingerprint depends on
    it), except that a link to a folder is an entry refused when read instead of a folder left out unsaid."""
    bag = tmp_path / "own" / "Bag"
    names = ["z.png", "a.png", "sub/b.png", "sub-x/c.png", "sub/deep/d.png", ".hidden.png", ".cache/e.png"]
    for index, name in enumerate(names):
        samples.write_pngs(test_split.images[index:index + 1], str((bag / name).parent), [(bag / name).name])
    samples.write_pngs(test_split.images[:1], str(tmp_path / "elsewhere"), ["x.png"])
    os.symlink(tmp_path / "elsewhere", bag / "linked")
    expected = [os.path.join(folder, name) for folder, _, found in sorted(os.walk(bag)) for name in sorted(found)
                if not name.startswith(".")]
    loaded = own_images.load_labelled_folder(str(tmp_path / "own"))
    assert loaded.sources == tuple(expected) and len(expected) == 6
    assert [(item.path, item.reason) for item in loaded.skipped] == [(str(bag / "linked"), "not a regular file")]
