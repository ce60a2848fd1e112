"""Draws the figures: training curves, the tutorials' prediction grid, and the confusion matrix (PNG files)."""

import os

import matplotlib

matplotlib.use("Agg")  # Files only: no screen is needed or assumed.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402



def training_curves(history: dict, path: str) -> str:
    """Train vs validation accuracy and loss per epoch, side by side."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric in zip(axes, ("accuracy", "loss")):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            values = history.get(prefix + metric)
            if values:
                axis.plot(range(1, len(values) + 1), values, style, label=("validation " if prefix else "train ") + metric)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("Training curves")
    return _save(figure, path)


GRID_IMAGES = 15  # the prediction grid's 5 rows of 3


def prediction_grid(images, labels, probabilities, path: str, class_names: tuple, rows: int = 5,
                    columns: int = 3) -> str:
    """The tutorials' grid: each image (grey or colour) with 'predicted confidence% (true)' in blue when right, red
    when wrong, and the probability bar chart over the classes beside it (predicted bar red, true bar blue)."""
    count = min(rows * columns, len(images))
    figure = plt.figure(figsize=(2 * 2 * columns, 2 * rows))
    for i in range(count):
        predicted = int(np.argmax(probabilities[i]))
        colour = "blue" if predicted == labels[i] else "red"
        image_axis = figure.add_subplot(rows, 2 * columns, 2 * i + 1)
        image_axis.imshow(images[i], cmap=plt.cm.binary if images[i].ndim == 2 else None)
        image_axis.set_xticks([])
        image_axis.set_yticks([])
        image_axis.set_xlabel(
            f"{class_names[predicted]} {100 * np.max(probabilities[i]):2.0f}% ({class_names[labels[i]]})", color=colour)
        bar_axis = figure.add_subplot(rows, 2 * columns, 2 * i + 2)
        bars = bar_axis.bar(range(len(class_names)), probabilities[i], color="#777777")
        bar_axis.set_ylim([0, 1])
        bar_axis.set_xticks(range(len(class_names)))
        bar_axis.set_yticks([])
        bars[predicted].set_color("red")
        bars[labels[i]].set_color("blue")
    figure.tight_layout()
    return _save(figure, path)


def confusion_matrix(matrix, path: str, class_names: tuple) -> str:
    """Rows are true classes, columns predicted; each cell shows its count."""
    matrix = np.asarray(matrix)
    figure, axis = plt.subplots(figsize=(9, 8))
    shown = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(shown, ax=axis)
    axis.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axis.set_yticks(range(len(class_names)), class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(column, row, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    axis.set_title("Confusion matrix")
    figure.tight_layout()
    return _save(figure, path)


def _save(figure, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
