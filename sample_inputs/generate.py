"""Regenerates sample_inputs/ from the real Fashion-MNIST test split (run from the repo root; needs the dataset).

    python sample_inputs/generate.py
"""

import csv
import io
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model.training import data  # noqa: E402
from model.vocabulary import CLASS_NAMES, NUM_CLASSES, RECORD_KEY_RAW_PIXELS  # noqa: E402
from tests import samples  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PER_CLASS = 5


def first_indices(labels: np.ndarray, per_class: int, skip: int = 0) -> list:
    """The first `per_class` test indices of every class (after skipping `skip` of each), in index order."""
    picked = [np.flatnonzero(labels == label)[skip:skip + per_class] for label in range(NUM_CLASSES)]
    return sorted(int(i) for group in picked for i in group)


def main() -> None:
    test = data.load_split("test")
    rows = []
    fashion = first_indices(test.labels, PER_CLASS)
    names = [samples.file_name(i, test.labels[i]) for i in fashion]
    samples.write_pngs(test.images[fashion], os.path.join(HERE, "images", "fashion"), names)
    rows += [(f"images/fashion/{n}", int(test.labels[i])) for n, i in zip(names, fashion)]

    photos = first_indices(test.labels, 1, skip=PER_CLASS)[::2]  # five classes, items not used above
    os.makedirs(os.path.join(HERE, "images", "photos"), exist_ok=True)
    for i in photos:
        name = samples.file_name(i, test.labels[i], ".jpg").replace("test-", "photo-")
        samples.catalogue_photo(test.images[i], i).save(os.path.join(HERE, "images", "photos", name), quality=90)
        rows.append((f"images/photos/{name}", int(test.labels[i])))

    _write_broken(samples.catalogue_photo(test.images[photos[0]], 0))
    _write_tfrecords(test)
    with open(os.path.join(HERE, "labels.csv"), "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "label_index", "label"])
        writer.writerows((path, label, CLASS_NAMES[label]) for path, label in rows)
    _write_catalogue([path for path, _ in rows] + ["images/broken/cut-in-half.png", "images/broken/notes.jpg"])
    print(f"wrote {len(rows)} labelled images, 2 broken files, 2 TFRecord files and a catalogue under {HERE}")


def _write_catalogue(paths: list) -> None:
    """catalogue.csv: the images as a shop's catalogue lists them (--input_table), one per row with its product id and
    title, by paths relative to this folder."""
    with open(os.path.join(HERE, "catalogue.csv"), "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["image", "product_id", "title"])
        writer.writerows((path, 10_000 + number, f"listing {number}: {os.path.basename(path)}")
                         for number, path in enumerate(paths))


def _write_broken(photo) -> None:
    folder = os.path.join(HERE, "images", "broken")
    os.makedirs(folder, exist_ok=True)
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    with open(os.path.join(folder, "cut-in-half.png"), "wb") as stream:
        stream.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with open(os.path.join(folder, "notes.jpg"), "w", encoding="utf-8") as stream:
        stream.write("This is a text file with an image's name: the scorer must report it, not crash.\n")


def _write_tfrecords(test) -> None:
    """20 PNG-encoded records with file names and labels, and 10 records of raw 784-byte pixels without names."""
    encoded = first_indices(test.labels, 2, skip=PER_CLASS + 1)
    samples.write_tfrecord(os.path.join(HERE, "tfrecords", "test-images.tfrecord"), (
        samples.example_bytes(samples.png_bytes(test.images[i]), samples.file_name(i, test.labels[i]), test.labels[i])
        for i in encoded))
    raw = first_indices(test.labels, 1, skip=PER_CLASS + 3)
    samples.write_tfrecord(os.path.join(HERE, "tfrecords", "raw-pixels.tfrecord"), (
        samples.example_bytes(test.images[i].tobytes(), label=test.labels[i], feature_name=RECORD_KEY_RAW_PIXELS)
        for i in raw))


if __name__ == "__main__":
    main()
