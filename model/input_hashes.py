"""Defines the two hashes of a model input (the uint8 pixels a recipe gives), side by side. Both formulas are stored
in data that outlives a release, so neither may change, and they differ:

- a card's known answers record shape_and_pixels_sha256 of each reference image's pixels (model.cards.known_answers);
- a run's _sheet.parquet and _disagreements.parquet record shape_dtype_and_pixels_sha256 of each input they list,
  which the report checks before it shows a picture (pipeline.outputs.sheet, pipeline.report.pictures).
"""

import hashlib

import numpy as np


def shape_and_pixels_sha256(pixels: np.ndarray) -> str:
    """sha256 of the array's shape as Python prints it, "|", then its bytes in C order (cards' known answers)."""
    return hashlib.sha256(f"{pixels.shape}|".encode() + np.ascontiguousarray(pixels).tobytes()).hexdigest()


def shape_dtype_and_pixels_sha256(pixels: np.ndarray) -> str:
    """sha256 of the array's shape and dtype as Python prints them, each followed by "|", then its bytes in C order
    (the sheet and the disagreements of a run)."""
    return hashlib.sha256(f"{pixels.shape}|{pixels.dtype}|".encode() + np.ascontiguousarray(pixels).tobytes()
                          ).hexdigest()
