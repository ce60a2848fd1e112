"""Loads Fashion-MNIST from its IDX files and a user's own labelled images, as uint8 arrays."""

import gzip
import hashlib
import os
from dataclasses import dataclass

import numpy as np

from model import preprocessing
from model.vocabulary import DATASET_INSTALL_HINT, DEFAULT_DATA_DIR, IDX_FILES, IMAGE_SHAPE, NUM_CLASSES, class_index

# IDX magic numbers: two zero bytes, the element type (0x08 = unsigned byte) and the number of dimensions.
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


@dataclass(frozen=True)
class LabelledImages:
    """Images as uint8[N, 28, 28] with int64[N] labels, and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    sources: tuple = ()


class DatasetError(ValueError):
    """A dataset file is missing, corrupt or inconsistent."""


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
    return LabelledImages(images, labels.astype(np.int64), (image_path, label_path))


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


def load_labelled_folder(root: str, max_pixels: int = preprocessing.DEFAULT_MAX_PIXELS) -> LabelledImages:
    """Loads a folder with one subfolder per class (named by class name or index) through the shared preprocessing."""
    if not os.path.isdir(root):
        raise DatasetError(f"{root} is not a folder; give a folder with one subfolder per class")
    pairs = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir():
            label = class_index(entry.name.replace("_", " "))
            for dirpath, _, filenames in sorted(os.walk(entry.path)):
                pairs.extend((os.path.join(dirpath, f), label) for f in sorted(filenames) if _is_image_name(f))
    return _load_pairs(pairs, max_pixels, where=root)


def load_list_file(list_path: str, max_pixels: int = preprocessing.DEFAULT_MAX_PIXELS) -> LabelledImages:
    """Loads images named in a text file of `relative/path label` lines (paths relative to the list file)."""
    base = os.path.dirname(os.path.abspath(list_path))
    pairs = []
    with open(list_path, encoding="utf-8") as stream:
        for line_number, line in enumerate(stream, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            path, separator, label = line.rstrip("\n").rpartition(" ")
            if not separator or not path.strip():
                raise DatasetError(f"{list_path}:{line_number}: expected `relative/path label`, got {line.strip()!r}")
            pairs.append((os.path.join(base, path.strip()), class_index(label)))
    return _load_pairs(pairs, max_pixels, where=list_path)


def _load_pairs(pairs: list, max_pixels: int, where: str) -> LabelledImages:
    if not pairs:
        raise DatasetError(f"{where}: no images found (looked for {', '.join(_IMAGE_SUFFIXES)})")
    images = np.empty((len(pairs),) + IMAGE_SHAPE, dtype=np.uint8)
    for row, (path, _) in enumerate(pairs):
        try:
            with open(path, "rb") as stream:
                images[row] = preprocessing.to_model_input(stream.read(), max_pixels=max_pixels)
        except (OSError, preprocessing.ImageDecodeError) as error:
            raise DatasetError(f"{path}: {error}") from error
    labels = np.array([label for _, label in pairs], dtype=np.int64)
    return LabelledImages(images, labels, tuple(path for path, _ in pairs))


def _is_image_name(filename: str) -> bool:
    return filename.lower().endswith(_IMAGE_SUFFIXES)
