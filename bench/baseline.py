"""The plain script a data engineer writes first: PIL-decode every file, one batched predict, one Parquet file.

    python bench/baseline.py IMAGE_FOLDER OUTPUT.parquet [MODEL]

It holds every image in memory, so its memory grows with N.
"""

import glob
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.peer_output import write_scores  # noqa: E402
from model.runtimes import model_files  # noqa: E402


def main(folder: str, output: str, model_path: str = model_files.DEFAULT_MODEL_PATH) -> None:
    paths = sorted(glob.glob(os.path.join(folder, "**", "*.png"), recursive=True))
    images = np.stack([np.asarray(Image.open(path).convert("L")) for path in paths])
    model = model_files.load(model_path, runtime="keras").model  # the script a TensorFlow user writes
    write_scores(paths, model.predict(images, batch_size=1024, verbose=0), output)


if __name__ == "__main__":
    main(*sys.argv[1:])
