"""Tests the IDX loader on the real files, its checks on corrupt files, and loading a user's labelled images."""

import gzip
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from model.training import data, own_images
from model.training.data import IDX_FILES
from model.vocabulary import CLASS_NAMES, NUM_CLASSES
from tests.helpers import write_idx


@pytest.mark.parametrize("split, total, per_class", [("train", 60000, 6000), ("test", 10000, 1000)])
def test_real_splits_have_the_published_sizes(data_dir, split, total, per_class):
    loaded = data.load_split(split, data_dir)
    assert loaded.images.shape == (total, 28, 28) and loaded.images.dtype == np.uint8
    assert loaded.labels.shape == (total,)
    assert np.bincount(loaded.labels, minlength=NUM_CLASSES).tolist() == [per_class] * NUM_CLASSES
    # Fashion-MNIST items are bright on a dark background: the corners are black in nearly every image.
    assert (loaded.images[:, 0, 0] == 0).mean() > 0.95


def test_missing_dataset_names_the_apt_command(tmp_path):
    with pytest.raises(data.DatasetError, match="apt-get install -y dataset-fashion-mnist"):
        data.load_split("test", str(tmp_path))


def _copy_test_split(data_dir, folder):
    for name in IDX_FILES["test"]:
        shutil.copy(os.path.join(data_dir, name), folder / name)
    return folder / IDX_FILES["test"][0]


def test_truncated_idx_is_rejected(data_dir, tmp_path):
    images_path = _copy_test_split(data_dir, tmp_path)
    with gzip.open(images_path) as stream:
        raw = stream.read()
    with gzip.open(images_path, "wb") as stream:
        stream.write(raw[: len(raw) - 784 * 3])  # three images short of what the header promises
    with pytest.raises(data.DatasetError, match="truncated or corrupt"):
        data.load_split("test", str(tmp_path))


def test_wrong_magic_is_rejected(data_dir, tmp_path):
    images_path = _copy_test_split(data_dir, tmp_path)
    labels = data.read_idx(os.path.join(data_dir, IDX_FILES["test"][1]), 0x801)
    write_idx(str(images_path), labels)  # a labels file where the images should be
    with pytest.raises(data.DatasetError, match="magic number"):
        data.load_split("test", str(tmp_path))


def test_cut_gzip_stream_is_rejected(data_dir, tmp_path):
    images_path = _copy_test_split(data_dir, tmp_path)
    raw = images_path.read_bytes()
    images_path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(data.DatasetError, match="corrupt or truncated"):
        data.load_split("test", str(tmp_path))


def test_labels_images_count_mismatch_is_rejected(data_dir, tmp_path):
    _copy_test_split(data_dir, tmp_path)
    labels = data.read_idx(os.path.join(data_dir, IDX_FILES["test"][1]), 0x801)
    write_idx(str(tmp_path / IDX_FILES["test"][1]), labels[:-1])
    with pytest.raises(data.DatasetError, match="10000 images but"):
        data.load_split("test", str(tmp_path))


def _save_examples(test_split, folder, per_class=2):
    """Saves real test images as PNGs in class folders named as documented; returns [(relative path, label, index)]."""
    saved = []
    for label in range(NUM_CLASSES):
        for index in np.flatnonzero(test_split.labels == label)[:per_class]:
            relative = f"{CLASS_NAMES[label].replace('/', '-')}/{index}.png"
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(test_split.images[index]).save(folder / relative)
            saved.append((relative, label, index))
    return saved


def test_labelled_folder_loads_through_shared_preprocessing(test_split, tmp_path):
    saved = _save_examples(test_split, tmp_path)
    loaded = own_images.load_labelled_folder(str(tmp_path))
    assert len(loaded.labels) == len(saved) and loaded.skipped == ()
    by_source = {os.path.relpath(source, tmp_path): (image, label)
                 for source, image, label in zip(loaded.sources, loaded.images, loaded.labels)}
    for relative, label, index in saved:
        image, loaded_label = by_source[relative]
        assert loaded_label == label
        assert np.array_equal(image, test_split.images[index])


def test_unreadable_files_are_skipped_and_counted(test_split, tmp_path):
    saved = _save_examples(test_split, tmp_path, per_class=1)
    (tmp_path / "Bag" / "notes.txt").write_text("not an image")
    whole = (tmp_path / saved[0][0]).read_bytes()
    (tmp_path / "Bag" / "cut.png").write_bytes(whole[: len(whole) // 2])
    loaded = own_images.load_labelled_folder(str(tmp_path))
    assert len(loaded.labels) == NUM_CLASSES
    assert [(os.path.basename(item.path), item.reason) for item in loaded.skipped] == [
        ("cut.png", "truncated"), ("notes.txt", "not an image")]
    summary = own_images.skipped_summary(loaded.skipped, NUM_CLASSES + 2)
    assert summary == (f"skipped 2 of 12 files: 1 not an image, 1 truncated "
                       f"(first: {tmp_path / 'Bag' / 'cut.png'}: {loaded.skipped[0].message})")
    assert loaded.skipped[0].message.startswith("truncated: ") and not loaded.skipped[0].message.startswith(
        "truncated: truncated")


def test_list_file_with_indices_names_and_spaces(test_split, tmp_path):
    saved = _save_examples(test_split, tmp_path / "my pics", per_class=1)
    lines = [f"my pics/{rel} {label if label % 2 else CLASS_NAMES[label]}" for rel, label, _ in saved]
    (tmp_path / "list.txt").write_text("# path label\n" + "\n".join(lines) + "\n\n")
    loaded = own_images.load_list_file(str(tmp_path / "list.txt"))
    assert loaded.labels.tolist() == [label for _, label, _ in saved]
    assert np.array_equal(loaded.images, test_split.images[[index for _, _, index in saved]])
    assert CLASS_NAMES[9] == "Ankle boot" and loaded.labels[-1] == 9  # a two-word class name after a path with a space


def test_list_file_errors_name_the_line(tmp_path):
    (tmp_path / "list.txt").write_text("a.png Sneaker\nb.png Spaceship\n")
    expected = f"{tmp_path / 'list.txt'}:2: unknown class 'Spaceship': use an index 0-9"
    with pytest.raises(data.DatasetError, match="^" + re.escape(expected)):
        own_images.load_list_file(str(tmp_path / "list.txt"))
    (tmp_path / "list.txt").write_text("lonely.png\n")
    with pytest.raises(data.DatasetError, match=r"list.txt:1: expected `PATH LABEL`, got 'lonely.png'$"):
        own_images.load_list_file(str(tmp_path / "list.txt"))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "list.txt").write_text("broken.png 3\nmissing.png 4\n")
    with pytest.raises(data.DatasetError, match=r"list.txt: no usable images; skipped 2 of 2 files: 1 cannot read, "
                                                r"1 not an image \(first: .*broken.png: not an image: "):
        own_images.load_list_file(str(tmp_path / "list.txt"))


def test_class_folders_must_be_named_after_classes_and_hold_images(test_split, tmp_path):
    _save_examples(test_split, tmp_path, per_class=1)
    (tmp_path / "Spaceship").mkdir()
    with pytest.raises(data.DatasetError, match=r"Spaceship: unknown class 'Spaceship': .* \(in a folder name, write "
                                                r"'/' as '-': T-shirt-top\)$"):
        own_images.load_labelled_folder(str(tmp_path))
    (tmp_path / "Spaceship").rename(tmp_path / "9")
    with pytest.raises(data.DatasetError, match=r"/9: the class folder is empty; add images of Ankle boot or remove"):
        own_images.load_labelled_folder(str(tmp_path))
