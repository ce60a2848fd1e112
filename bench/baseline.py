"""The hand-written baseline the benchmark compares against: PIL-decode every file, one batched predict, one Parquet.

    python bench/baseline.py IMAGE_FOLDER OUTPUT.parquet [MODEL]

This is the script a data engineer writes first; it holds every image in memory, so its memory grows with N.
"""

import glob
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model import model_files  # noqa: E402
from model.vocabulary import CLASS_NAMES  # noqa: E402


def main(folder: str, output: str, model_path: str = model_files.DEFAULT_MODEL_PATH) -> None:
    paths = sorted(glob.glob(os.path.join(folder, "**", "*.png"), recursive=True))
    images = np.stack([np.asarray(Image.open(path).convert("L")) for path in paths])
    model = model_files.load(model_path).model
    probabilities = model.predict(images, batch_size=1024, verbose=0)
    index = probabilities.argmax(axis=1)
    table = pa.table({
        "key": paths,
        "label": [CLASS_NAMES[i] for i in index],
        "label_index": index.astype(np.int32),
        "confidence": probabilities.max(axis=1),
        "probabilities": list(probabilities),
    })
    pq.write_table(table, output, compression="snappy")


if __name__ == "__main__":
    main(*sys.argv[1:])
