"""Loads Fashion-MNIST from its IDX files (checked) as labelled uint8 arrays, and defines what a labelled set is and
how it is described; a user's own labelled images are in model.training.own_images."""

import gzip
import hashlib
import os
from dataclasses import dataclass

import numpy as np

from model.vocabulary import CLASS_NAMES, IMAGE_SHAPE, NUM_CLASSES

# The four IDX files of the dataset, by split.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
DATASET_INSTALL_HINT = "sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist"

# IDX magic numbers: two zero bytes, the element type (0x08 = unsigned byte) and the number of dimensions.
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801


@dataclass(frozen=True)
class LabelledImages:
    """Images as uint8[N, H, W] (grey) or [N, H, W, 3] with int64[N] labels, where they came from, and the files that
    had to be skipped."""

    images: np.ndarray
    labels: np.ndarray
    sources: tuple = ()
    origin: str = ""  # what the set is: "fashion-mnist train", "fashion-mnist test", "folder" or "list"
    location: str = ""  # the IDX folder, class-folder root or list file it came from
    skipped: tuple = ()  # an Unreadable per file left out


class DatasetError(ValueError):
    """A dataset file is missing, corrupt or inconsistent, or a user's labelled images cannot be used."""


def load_split(split: str, data_dir: str = DEFAULT_DATA_DIR) -> LabelledImages:
    """Loads the 'train' (60,000) or 'test' (10,000) split from the four IDX files in data_dir."""
    if split not in IDX_FILES:
        raise ValueError(f"unknown split {split!r}: use one of {sorted(IDX_FILES)}")
    image_path, label_path = (os.path.join(data_dir, name) for name in IDX_FILES[split])
    for path in (image_path, label_path):
        if not os.path.isfile(path):
            raise DatasetError(
                f"Fashion-MNIST file {path} not found. Install the dataset with `{DATASET_INSTALL_HINT}` "
                f"or pass --data-dir pointing at a folder holding {', '.join(IDX_FILES[split])}."
            )
    images = read_idx(image_path, _IDX_IMAGES_MAGIC)
    labels = read_idx(label_path, _IDX_LABELS_MAGIC)
    if images.shape[1:] != IMAGE_SHAPE:
        raise DatasetError(f"{image_path}: images are {images.shape[1:]}, expected {IMAGE_SHAPE}")
    if len(images) != len(labels):
        raise DatasetError(f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DatasetError(f"{label_path}: label {labels.max()} is outside 0-{NUM_CLASSES - 1}")
    return LabelledImages(images, labels.astype(np.int64), (image_path, label_path), f"fashion-mnist {split}", data_dir)


def read_idx(path: str, expected_magic: int) -> np.ndarray:
    """Reads one (optionally gzipped) IDX file, checking its magic number and that its size matches its header."""
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError) as error:
        raise DatasetError(f"{path}: cannot read ({error}); the file is corrupt or truncated") from error
    if len(raw) < 4:
        raise DatasetError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise DatasetError(f"{path}: magic number {magic:#010x}, expected {expected_magic:#010x}; not this IDX file")
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DatasetError(f"{path}: the header is cut short")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_size = header_size + int(np.prod(shape))
    if len(raw) != expected_size:
        raise DatasetError(
            f"{path}: {len(raw)} bytes but the header {shape} needs {expected_size}; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def file_sha256(path: str) -> str:
    """Returns the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def concatenate(sets) -> LabelledImages:
    """One set holding every set's images and labels, in order."""
    if len(sets) == 1:
        return sets[0]
    images = np.concatenate([part.images for part in sets])
    return LabelledImages(images, np.concatenate([part.labels for part in sets]))


def fingerprint(labelled: LabelledImages) -> str:
    """The sha256 of a set's pixels and labels: equal exactly when the images and labels are."""
    digest = hashlib.sha256(np.ascontiguousarray(labelled.images, dtype=np.uint8).tobytes())
    digest.update(labelled.labels.astype("<i8").tobytes())
    return digest.hexdigest()


def describe(labelled: LabelledImages, class_names: tuple = CLASS_NAMES) -> dict:
    """What a loaded set is, for model cards and metrics.json: where it came from, its images per class (of
    class_names), the files left out and its fingerprint."""
    per_class = np.bincount(labelled.labels, minlength=len(class_names)).tolist()
    return {"origin": labelled.origin, "location": os.path.abspath(labelled.location),
            "images": int(len(labelled.labels)), "per_class": dict(zip(class_names, per_class)),
            "skipped": len(labelled.skipped), "sha256": fingerprint(labelled)}
