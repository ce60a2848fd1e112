"""Evaluates a saved model on the Fashion-MNIST test split and/or a user's own labelled images: metrics as JSON and
the figures as PNG.

    python -m model.evaluate --model model/artifacts/fashion_cnn.keras --output-dir reports/
    python -m model.evaluate --model my_model.keras --eval-dir my_test_photos --no-fashion-mnist
"""

import argparse
import json
import os
import sys

import numpy as np

from model import reading
from model.cli_types import help_texts
from model.display import visible
from model.runtimes import forward, model_files, quiet
from model.training import data, own_images


def metrics(labels: np.ndarray, probabilities: np.ndarray, class_names: tuple) -> dict:
    """Accuracy, log loss, per-class precision and recall, and the confusion matrix (rows true, columns predicted)."""
    predicted = probabilities.argmax(axis=1)
    matrix = np.zeros((len(class_names),) * 2, dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    true_positives = np.diag(matrix)
    precision = true_positives / np.maximum(matrix.sum(axis=0), 1)
    recall = true_positives / np.maximum(matrix.sum(axis=1), 1)
    picked = probabilities[np.arange(len(labels)), labels]
    return {
        "examples": int(len(labels)),
        "accuracy": float((predicted == labels).mean()),
        "loss": float(-np.log(np.clip(picked, 1e-7, 1.0)).mean()),
        "ece": expected_calibration_error(labels, probabilities),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "support": int(matrix[i].sum())}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": matrix.tolist(),
    }


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: over 15 equal-width bins of the top probability, the gap between the bin's mean
    confidence and its accuracy, weighted by the bin's share of the examples."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for index in range(bins):
        chosen = which == index
        if chosen.any():
            total += chosen.mean() * abs(confidence[chosen].mean() - correct[chosen].mean())
    return float(total)


def card_metrics(model, spec, test_data: list) -> dict:
    """What a model card says of a model's quality on labelled sets, scored as the scorer serves the model: loss,
    accuracy, calibration error, examples and accuracy per class."""
    test_set = data.concatenate(test_data)
    scores = metrics(test_set.labels, forward.served_predict(model, spec)(test_set.images), spec.class_names)
    return {"loss": round(scores["loss"], 6), "accuracy": round(scores["accuracy"], 6), "ece": round(scores["ece"], 6),
            "examples": scores["examples"],
            "per_class_accuracy": {name: round(values["recall"], 4) for name, values in scores["per_class"].items()}}


def evaluate(loaded: model_files.LoadedModel, model_path: str, test_data: list, output_dir: str,
             history_path: str = None) -> dict:
    """Scores the labelled sets together as the scorer serves the model, writes metrics.json (saying what the sets
    were) and the figures into output_dir, returns the metrics."""
    spec = loaded.spec
    test_set = data.concatenate(test_data)
    probabilities = forward.served_predict(loaded.model, spec)(test_set.images)
    result = {"model": model_path, "model_version": loaded.version,
              "data": [data.describe(part, spec.class_names) for part in test_data],
              **metrics(test_set.labels, probabilities, spec.class_names)}
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as stream:
        json.dump(result, stream, indent=2)
    _draw_figures(test_set, probabilities, result, output_dir, history_path, spec.class_names)
    return result


def across_classes(labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of up to `count` examples taken in turn from each class present (the first of each class, then the
    second of each, ...), so a figure of a few examples shows every class, not the first folder's."""
    order = np.argsort(labels, kind="stable")
    rank = np.empty(len(labels), dtype=np.int64)  # how many of its class come before each example
    starts = np.searchsorted(labels[order], labels[order], side="left")
    rank[order] = np.arange(len(labels)) - starts
    return np.lexsort((labels, rank))[:count]


def _draw_figures(test_set, probabilities, result, output_dir, history_path, class_names) -> None:
    from model.training import plots

    plots.confusion_matrix(result["confusion_matrix"], os.path.join(output_dir, "confusion_matrix.png"), class_names)
    shown = across_classes(test_set.labels, plots.GRID_IMAGES)
    plots.prediction_grid(test_set.images[shown], test_set.labels[shown], probabilities[shown],
                          os.path.join(output_dir, "predictions.png"), class_names)
    if history_path:
        try:
            history = json.loads(reading.read_regular_file(history_path))  # a regular file: a FIFO here would hang
        except reading.FileRefused as refused:
            raise data.DatasetError(f"--history {history_path}: {refused}") from refused
        plots.training_curves(history.get("history", history), os.path.join(output_dir, "training_curves.png"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fmnist-evaluate", **help_texts(__doc__))
    parser.add_argument("--model", default=model_files.DEFAULT_MODEL_PATH)
    own_images.add_arguments(parser, "eval")
    parser.add_argument("--output-dir", default="reports")
    parser.add_argument("--history", default=None, help="a run's state.json (or history JSON) to draw training curves")
    args = parser.parse_args(argv)
    own_images.check_arguments(parser, args, "eval")
    try:
        with quiet.quiet_tensorflow_start_up():
            loaded = model_files.load(args.model)
        test_data = own_images.load_sources("test", args.data_dir, args.fashion_mnist, args.folders, args.lists,
                                            spec=loaded.spec)
        own_images.report_skipped(test_data)
        result = evaluate(loaded, args.model, test_data, args.output_dir, args.history)
    except (data.DatasetError, model_files.ModelFileError, OSError) as error:
        print(f"error: {visible(str(error))}", file=sys.stderr)
        return 2
    print(f"test accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f} on {result['examples']} images")
    for name, scores in result["per_class"].items():
        print(f"  {visible(name):12s} precision {scores['precision']:.3f}  recall {scores['recall']:.3f}")
    print(f"wrote {args.output_dir}/metrics.json, confusion_matrix.png, predictions.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
