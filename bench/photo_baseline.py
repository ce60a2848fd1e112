"""The naive photo script: Pillow opens each photo, turns it upright, greys it, shrinks it to 28 px and inverts it.

    python bench/photo_baseline.py PHOTO_FOLDER OUTPUT.parquet [MODEL]

No trimming and no Fashion-MNIST-style fitting: fast to write, and it shows what that costs in accuracy.
"""

import glob
import os
import sys

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.peer_output import write_scores  # noqa: E402
from model.runtimes import model_files  # noqa: E402


def to_pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        grey = ImageOps.exif_transpose(image).convert("L")
    grey.thumbnail((28, 28))
    canvas = Image.new("L", (28, 28), 255)
    canvas.paste(grey, ((28 - grey.width) // 2, (28 - grey.height) // 2))
    return 255 - np.asarray(canvas)


def main(folder: str, output: str, model_path: str = model_files.DEFAULT_MODEL_PATH) -> None:
    paths = sorted(glob.glob(os.path.join(folder, "**", "*.jpg"), recursive=True))
    images = np.stack([to_pixels(path) for path in paths])
    model = model_files.load(model_path, runtime="keras").model  # the script a TensorFlow user writes
    write_scores(paths, model.predict(images, batch_size=1024, verbose=0), output)


if __name__ == "__main__":
    main(*sys.argv[1:])
