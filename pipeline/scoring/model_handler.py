"""Defines the RunInference model handler: loads the model once per worker (on the runtime its card and the worker's
install choose, model.runtimes), scores whole blocks.

Beam's stock TFModelHandlerNumpy needs tensorflow_hub, cannot load a Keras 3 model, returns one tensor per record and
fails a whole batch for one bad record; this handler does none of that.
"""

from typing import Optional, Sequence

import numpy as np
from apache_beam.ml.inference.base import ModelHandler

from pipeline import timeline
from pipeline.outputs import sheet
from pipeline.records import NAMESPACE, Block, ScoredBlock, error_row
from pipeline.scoring.served_model import ServedModel, load_served_model, thread_settings


class KerasModelHandler(ModelHandler):
    """Takes Blocks, one per RunInference batch (a block is already a model call's worth); returns ScoredBlocks."""

    def __init__(self, model_uri: str, num_classes: int, share_across_processes: bool = False, threads: int = 0,
                 copies: int = 0, require_gpu: bool = False, runtime: str = None):
        # TensorFlow reads its thread counts once, at start-up: Beam sets these in the worker before load_model.
        env_vars = thread_settings(threads)
        # large_model / model_copies are Beam's switches for one model per machine, served to its worker processes.
        super().__init__(min_batch_size=1, max_batch_size=1, large_model=share_across_processes,
                         model_copies=copies or None, env_vars=env_vars)
        self.model_uri = model_uri
        self.num_classes = num_classes
        self.require_gpu = require_gpu
        self.runtime = runtime  # --runtime; None: the card's choice
        self._predicted = False  # per worker process: each unpickles its own handler
        self._device = None  # asked of the model once: a shared model (--share_model) answers across processes

    def load_model(self) -> ServedModel:
        return load_served_model(self.model_uri, self.require_gpu, self.runtime)

    def run_inference(self, batch: Sequence[Block], model: ServedModel, inference_args: Optional[dict] = None) -> list:
        if self._device is None:
            self._device = model.device()
        scored = [score_block(block, model.predict_rows, self.num_classes, self._device) for block in batch]
        if not self._predicted:
            self._predicted = True
            timeline.mark("first block scored")
        return scored

    def get_num_bytes(self, batch: Sequence[Block]) -> int:
        return sum(block.pixels.nbytes for block in batch)

    def get_metrics_namespace(self) -> str:
        return NAMESPACE


def score_block(block: Block, predict, num_classes: int, device: str = "", for_sheet: bool = True) -> ScoredBlock:
    """Scores a block's pixels with predict (N rows -> (N, num_classes)) on `device` (as the model says where it
    scores); a record the model fails on fails alone. A block with a candidate's images keeps them for it; with
    `for_sheet`, the block's contact-sheet candidates are chosen."""
    kept = block if block.candidate is not None else None
    if not block.keys:
        return ScoredBlock([], np.zeros((0, num_classes), np.float32), list(block.errors), device=device, inputs=kept)
    probabilities, failed_rows = predict_isolating_failures(predict, block.pixels, num_classes)
    good = [row for row in range(len(block.keys)) if row not in failed_rows]
    tables = [source.table if source is not None else None for source in block.sources] or [None] * len(block.keys)
    failures = [error_row(block.keys[row], "predict", type(error).__name__, str(error), tables[row])
                for row, error in sorted(failed_rows.items())]
    candidates = (sheet.candidates(block.keys, block.sources, block.pixels, probabilities, skip=failed_rows)
                  if for_sheet else [])
    return ScoredBlock([block.keys[row] for row in good], probabilities[good], list(block.errors) + failures,
                       candidates, device, inputs=kept,
                       tables=[tables[row] for row in good] if any(tables) else None)


def predict_isolating_failures(predict, pixels: np.ndarray, num_classes: int, offset: int = 0):
    """Calls predict(pixels); when it fails, splits the batch in halves until each failure is one record.

    Returns (float32 (N, num_classes) with rows of failed records zeroed, {row: exception}).
    """
    try:
        return predict(pixels), {}
    except Exception as error:  # Any model error is isolated to its record; nothing escapes for the whole batch.
        if len(pixels) == 1:
            return np.zeros((1, num_classes), dtype=np.float32), {offset: error}
    middle = len(pixels) // 2
    first, first_failed = predict_isolating_failures(predict, pixels[:middle], num_classes, offset)
    second, second_failed = predict_isolating_failures(predict, pixels[middle:], num_classes, offset + middle)
    return np.concatenate([first, second]), {**first_failed, **second_failed}
