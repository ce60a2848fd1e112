"""Defines inference over units of input: decoded into blocks (in the background) -> RunInference with our handler
-> scored blocks, with a progress line per worker."""

import os
import sys
import time

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from pipeline.blocks import DecodeBlocks
from pipeline.model_handler import KerasModelHandler, ScoredBlock


class _ShowProgress(beam.DoFn):
    """Passes scored blocks on, printing a progress line per worker process every few seconds."""

    def __init__(self, progress_seconds: float):
        self.progress_seconds = progress_seconds

    def setup(self):
        self._progress = Progress(self.progress_seconds)

    def process(self, block: ScoredBlock):
        self._progress.add(len(block.keys) + len(block.errors))
        yield block


class Progress:
    """Prints a line with inputs done and the rate every few seconds, per worker process (0 turns it off)."""

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
            print(f"progress: {self.done:,} inputs done in {now - self.started:.0f} s ({rate:,.0f} img/s, "
                  f"worker pid {os.getpid()})", file=sys.stderr, flush=True)


class ScoreImages(beam.PTransform):
    """Units of input (see pipeline.sources) -> ScoredBlocks, each with the error rows of its inputs.

    `read` turns a unit into (key, payload) records and error rows; decoding uses the shared preprocessing on
    `decode_threads` threads, in the background while the model scores the block before.
    """

    def __init__(self, handler: KerasModelHandler, read, max_pixels: int, decode_threads: int = 1,
                 progress_seconds: float = 10.0):
        super().__init__()
        self.handler = handler
        self.read = read
        self.max_pixels = max_pixels
        self.decode_threads = decode_threads
        self.progress_seconds = progress_seconds

    def expand(self, units):
        blocks = units | "Decode" >> beam.ParDo(DecodeBlocks(self.read, self.max_pixels, self.decode_threads))
        scored = blocks | "RunInference" >> RunInference(self.handler)
        return scored | "ShowProgress" >> beam.ParDo(_ShowProgress(self.progress_seconds))
