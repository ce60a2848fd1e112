"""Defines scoring: decode with the shared preprocessing, RunInference with our handler, dead letters for failures."""

import os
import sys
import time

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import RunInference
from apache_beam.metrics import Metrics

from model import preprocessing
from model.vocabulary import IMAGE_SHAPE
from pipeline.model_handler import KerasModelHandler, ScoredBatch
from pipeline.sources import ERRORS, error_row

_NAMESPACE = "fashion_scorer"


class _Decode(beam.DoFn):
    """(key, bytes or uint8 array) -> (key, uint8[28, 28]); a record that cannot be decoded becomes an error row."""

    def __init__(self, max_pixels: int):
        self.max_pixels = max_pixels
        self.failed = Metrics.counter(_NAMESPACE, "decode_failed")

    def process(self, record):
        key, payload = record
        try:
            if isinstance(payload, np.ndarray):
                if payload.shape != IMAGE_SHAPE or payload.dtype != np.uint8:
                    raise preprocessing.UnsupportedImageError(f"raw pixels of shape {payload.shape}, need {IMAGE_SHAPE}")
                yield key, payload
            else:
                yield key, preprocessing.to_model_input(payload, max_pixels=self.max_pixels)
        except preprocessing.ImageDecodeError as error:
            self.failed.inc()
            yield beam.pvalue.TaggedOutput(ERRORS, error_row(key, "decode", error.reason, str(error)))
        except Exception as error:  # Never let one odd file crash the run: it is reported like any bad input.
            self.failed.inc()
            yield beam.pvalue.TaggedOutput(ERRORS, error_row(key, "decode", type(error).__name__, str(error)))


class _SplitScoredBatch(beam.DoFn):
    """ScoredBatch -> the batch itself (main) and one error row per record the model failed on (tag 'errors')."""

    def __init__(self, progress_seconds: float):
        self.progress_seconds = progress_seconds
        self.scored = Metrics.counter(_NAMESPACE, "scored")
        self.failed = Metrics.counter(_NAMESPACE, "predict_failed")

    def setup(self):
        self._progress = Progress(self.progress_seconds)

    def process(self, batch: ScoredBatch):
        self.scored.inc(len(batch.keys))
        self._progress.add(len(batch.keys))
        for key, error_type, message in batch.failures:
            self.failed.inc()
            yield beam.pvalue.TaggedOutput(ERRORS, error_row(key, "predict", error_type, message))
        if batch.keys:
            yield batch


class Progress:
    """Prints a line with images done and the rate every few seconds, per worker process (0 turns it off)."""

    def __init__(self, every_seconds: float):
        self.every_seconds = every_seconds
        self.started = self.last = time.monotonic()
        self.done = 0

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.every_seconds and now - self.last >= self.every_seconds:
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            print(f"progress: {self.done:,} images scored in {now - self.started:.0f} s ({rate:,.0f} img/s, "
                  f"worker pid {os.getpid()})", file=sys.stderr, flush=True)


class ScoreImages(beam.PTransform):
    """(key, payload) -> ScoredBatch (main) and error rows (tag 'errors') from decoding and prediction."""

    def __init__(self, handler: KerasModelHandler, max_pixels: int, progress_seconds: float = 10.0):
        super().__init__()
        self.handler = handler
        self.max_pixels = max_pixels
        self.progress_seconds = progress_seconds

    def expand(self, records):
        decoded = records | "Decode" >> beam.ParDo(_Decode(self.max_pixels)).with_outputs(ERRORS, main="images")
        predicted = decoded.images | "RunInference" >> RunInference(self.handler)
        split = predicted | "SplitFailures" >> beam.ParDo(_SplitScoredBatch(self.progress_seconds)).with_outputs(
            ERRORS, main="batches")
        errors = (decoded[ERRORS], split[ERRORS]) | "FlattenErrors" >> beam.Flatten()
        return split.batches, errors
