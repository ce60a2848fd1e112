"""Defines the RunInference model handler: loads the `.keras` model once per worker and scores whole batches.

Beam's stock TFModelHandlerNumpy needs tensorflow_hub, cannot load a Keras 3 model, returns one tensor per record and
fails a whole batch for one bad record; this handler does none of that.
"""

import dataclasses
import hashlib
import os
import tempfile
from typing import Optional, Sequence

import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler

from model import model_files
from model.vocabulary import IMAGE_SHAPE, NUM_CLASSES

# Every model call gets exactly this many rows (the last block padded), so a record's probabilities never depend on
# how the runner happened to batch it with others: oneDNN may pick other kernels for other batch shapes.
MODEL_CALL_ROWS = 256
# When set, every load_model appends its process id to this file; the tests use it to prove one load per worker.
LOAD_LOG_ENV = "FASHION_SCORER_LOAD_LOG"


@dataclasses.dataclass
class ScoredBatch:
    """One batch's results: probabilities for the keys that scored, and (key, error type, message) for the rest."""

    keys: list
    probabilities: np.ndarray  # (len(keys), NUM_CLASSES) float32
    failures: list


class ServedModel:
    """What load_model returns: the Keras model behind one method, so that Beam can also serve it from another
    process (--share_model), where callers hold a proxy that forwards method calls but not attribute access."""

    def __init__(self, loaded: model_files.LoadedModel):
        self.loaded = loaded

    def predict_rows(self, pixels: np.ndarray) -> np.ndarray:
        return predict_fixed_rows(self.loaded.model, pixels)


class KerasModelHandler(ModelHandler):
    """Takes (key, uint8[28, 28]) records; returns one ScoredBatch per batch."""

    def __init__(self, model_uri: str, min_batch_size: int = 64, max_batch_size: int = 1024,
                 share_across_processes: bool = False, threads: int = 0, copies: int = 0):
        # TensorFlow reads its thread counts once, at start-up: Beam sets these in the worker before load_model.
        env_vars = {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1"} if threads else {}
        # large_model / model_copies are Beam's switches for one model per machine, served to its worker processes.
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size,
                         large_model=share_across_processes, model_copies=copies or None, env_vars=env_vars)
        self.model_uri = model_uri

    def load_model(self) -> ServedModel:
        loaded = model_files.load(localize(self.model_uri))
        log_path = os.environ.get(LOAD_LOG_ENV)
        if log_path:
            with open(log_path, "a", encoding="utf-8") as stream:
                stream.write(f"{os.getpid()}\n")
        return ServedModel(loaded)

    def run_inference(self, batch: Sequence, model: ServedModel, inference_args: Optional[dict] = None) -> list:
        keys = [key for key, _ in batch]
        pixels = np.stack([image for _, image in batch])
        probabilities, failed_rows = predict_isolating_failures(model.predict_rows, pixels)
        good = [row for row in range(len(keys)) if row not in failed_rows]
        failures = [(keys[row], type(error).__name__, str(error)) for row, error in sorted(failed_rows.items())]
        return [ScoredBatch([keys[row] for row in good], probabilities[good], failures)]

    def get_num_bytes(self, batch: Sequence) -> int:
        return len(batch) * int(np.prod(IMAGE_SHAPE))

    def get_metrics_namespace(self) -> str:
        return "fashion_scorer"


def predict_fixed_rows(model, pixels: np.ndarray) -> np.ndarray:
    """Runs the model over blocks of exactly MODEL_CALL_ROWS rows and returns float32 (N, NUM_CLASSES)."""
    count = len(pixels)
    padded = -count % MODEL_CALL_ROWS
    if padded:
        pixels = np.concatenate([pixels, np.zeros((padded,) + pixels.shape[1:], dtype=pixels.dtype)])
    blocks = [model.predict_on_batch(pixels[start:start + MODEL_CALL_ROWS])
              for start in range(0, len(pixels), MODEL_CALL_ROWS)]
    return np.concatenate(blocks)[:count].astype(np.float32, copy=False)


def predict_isolating_failures(predict, pixels: np.ndarray, offset: int = 0):
    """Calls predict(pixels); when it fails, splits the batch in halves until each failure is one record.

    Returns (float32 (N, NUM_CLASSES) with rows of failed records zeroed, {row: exception}).
    """
    try:
        return predict(pixels), {}
    except Exception as error:  # Any model error is isolated to its record; nothing escapes for the whole batch.
        if len(pixels) == 1:
            return np.zeros((1, NUM_CLASSES), dtype=np.float32), {offset: error}
    middle = len(pixels) // 2
    first, first_failed = predict_isolating_failures(predict, pixels[:middle], offset)
    second, second_failed = predict_isolating_failures(predict, pixels[middle:], offset + middle)
    return np.concatenate([first, second]), {**first_failed, **second_failed}


def localize(model_uri: str) -> str:
    """Returns a local path for a model on any Beam filesystem, copying it (and its card) to local disk once."""
    if os.path.isfile(model_uri):
        return model_uri
    # The cache is keyed by the file's URI, size and modification time, so a replaced model is copied again.
    metadata = FileSystems.metadata(model_uri)
    identity = f"{model_uri}|{metadata.size_in_bytes}|{metadata.last_updated_in_seconds}"
    folder = os.path.join(tempfile.gettempdir(), "fashion-scorer-models", hashlib.sha256(identity.encode()).hexdigest()[:16])
    local_model = os.path.join(folder, os.path.basename(model_uri))
    if os.path.isfile(local_model) and os.path.isfile(model_files.card_path_for(local_model)):
        return local_model
    os.makedirs(folder, exist_ok=True)
    for source, target in ((model_uri, local_model),
                           (model_files.card_path_for(model_uri), model_files.card_path_for(local_model))):
        partial = f"{target}.{os.getpid()}.partial"
        with FileSystems.open(source) as reader, open(partial, "wb") as writer:
            for chunk in iter(lambda: reader.read(1 << 20), b""):
                writer.write(chunk)
        os.replace(partial, target)  # Atomic, so a concurrent worker never loads half a file.
    return local_model
