"""Writes a peer script's predictions as one Parquet file with the scorer's columns, so every way does the same work."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model.vocabulary import CLASS_NAMES


def write_scores(keys: list, probabilities: np.ndarray, output: str, class_names: tuple = CLASS_NAMES) -> None:
    index = probabilities.argmax(axis=1)
    table = pa.table({
        "key": [key.decode() if isinstance(key, bytes) else key for key in keys],
        "label": [class_names[i] for i in index],
        "label_index": index.astype(np.int32),
        "confidence": probabilities.max(axis=1),
        "probabilities": list(probabilities),
    })
    pq.write_table(table, output, compression="snappy")
