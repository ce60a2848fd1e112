"""Compares trained models side by side: test accuracy, expected calibration error, accuracy on the project's
catalogue-photo test set (overall, and recall and precision per class), parameters, the forward pass's images a second
in fixed 1,024-row calls (as the scorer calls it, interleaved and repeated) and the training minutes from each card.

    .venv/bin/python bench/model_quality.py OLD.keras NEW.keras [--photos 2000] [--repeat 5]

The catalogue photos are rendered from the test split (tests/samples.catalogue_photo: coloured ink on white, ten
times larger, off-centre), saved as JPEG (quality 90) and converted back by the shared preprocessing, as a shop's
photos are; the same photos for every model.
"""

import argparse
import io
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model import evaluate  # noqa: E402
from model.recipes.preprocessing import to_model_input  # noqa: E402
from model.runtimes import model_files  # noqa: E402
from model.runtimes.forward import forward_cost  # noqa: E402
from model.training import data  # noqa: E402
from model.vocabulary import CLASS_NAMES  # noqa: E402
from tests import samples  # noqa: E402


def catalogue_set(test: data.LabelledImages, count: int) -> tuple:
    """(images as the model sees them, labels) of `count` catalogue photos, an equal number per class."""
    per_class = count // len(CLASS_NAMES)
    chosen = np.sort(np.concatenate([np.flatnonzero(test.labels == label)[:per_class]
                                     for label in range(len(CLASS_NAMES))]))
    images = []
    for index in chosen:
        buffer = io.BytesIO()
        samples.catalogue_photo(test.images[index], int(index)).save(buffer, "JPEG", quality=90)
        images.append(to_model_input(buffer.getvalue()))
    return np.stack(images), test.labels[chosen]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    test = data.load_split("test")
    photos, photo_labels = catalogue_set(test, args.photos)
    loaded = {path: model_files.load(path, runtime="keras") for path in args.models}  # compares Keras models
    rates = forward_cost({path: model.model for path, model in loaded.items()}, args.repeat, calls=20)
    print(f"{'model':44s} {'test acc':>8s} {'ECE':>7s} {'photos':>7s} {'params':>8s} {'img/s':>8s} {'train min':>9s}")
    on_photos = {}
    for path, model in loaded.items():
        names = model.spec.class_names
        scores = evaluate.metrics(test.labels, model.model.predict(test.images, batch_size=1024, verbose=0), names)
        on_photos[path] = evaluate.metrics(photo_labels, model.model.predict(photos, batch_size=1024, verbose=0),
                                           names)
        seconds = model.card.get("training_seconds")
        print(f"{os.path.relpath(path):44s} {scores['accuracy']:8.4f} {scores['ece']:7.4f} "
              f"{on_photos[path]['accuracy']:7.4f} {model.model.count_params():8,d} {rates[path]:8,.0f} "
              f"{seconds / 60 if seconds else float('nan'):9.1f}")
    first = args.models[0]
    print(f"\nforward cost against {os.path.relpath(first)} (median img/s ratio, {args.repeat} interleaved runs):")
    for path in args.models[1:]:
        print(f"  {os.path.relpath(path)}: {rates[first] / rates[path]:.2f}x the cost per image")
    for measure in ("recall", "precision"):
        what = "accuracy (recall)" if measure == "recall" else "precision (right when it says so)"
        print(f"\ncatalogue-photo {what} per class ({args.photos:,} photos):")
        print("  " + " ".join(f"{name[:8]:>9s}" for name in CLASS_NAMES))
        for path in args.models:
            values = [on_photos[path]["per_class"][name][measure] for name in CLASS_NAMES]
            print("  " + " ".join(f"{value:9.3f}" for value in values) + f"  {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
