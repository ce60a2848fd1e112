"""Defines inference over units of input: decoded into blocks (in the background) -> RunInference with our handler
-> scored blocks, with a progress line per worker."""

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from model.cards.card_spec import ModelSpec
from pipeline import progress
from pipeline.reading import object_reads
from pipeline.scoring.blocks import DecodeBlocks
from pipeline.scoring.model_handler import KerasModelHandler, ScoredBlock


class _ShowProgress(beam.DoFn):
    """Passes scored blocks on, printing a progress line per worker process every few seconds."""

    def __init__(self, progress_seconds: float):
        self.progress_seconds = progress_seconds

    def setup(self):
        self._progress = progress.Progress(self.progress_seconds)

    def process(self, block: ScoredBlock):
        self._progress.add(len(block.keys) + len(block.errors))
        yield block


class ScoreImages(beam.PTransform):
    """Units of input (see pipeline.reading.sources) -> ScoredBlocks, each with the error rows of its inputs.

    `read` turns a unit into (key, payload) records and error rows; decoding uses the card's recipe (`spec`) on
    `decode_threads` threads, in the background while the model scores the block before.
    """

    def __init__(self, handler: KerasModelHandler, read, spec: ModelSpec, max_pixels: int, decode_threads: int = 1,
                 progress_seconds: float = 10.0, reads_in_flight: int = object_reads.IN_FLIGHT):
        super().__init__()
        self.reads_in_flight = reads_in_flight
        self.handler = handler
        self.read = read
        self.spec = spec
        self.max_pixels = max_pixels
        self.decode_threads = decode_threads
        self.progress_seconds = progress_seconds

    def expand(self, units):
        decode = DecodeBlocks(self.read, self.spec, self.max_pixels, self.decode_threads, self.reads_in_flight)
        blocks = units | "Decode" >> beam.ParDo(decode)
        scored = blocks | "RunInference" >> RunInference(self.handler)
        return scored | "ShowProgress" >> beam.ParDo(_ShowProgress(self.progress_seconds))
