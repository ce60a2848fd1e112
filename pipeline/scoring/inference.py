"""Defines inference over units of input: decoded into blocks (in the background) -> RunInference with our handler
-> scored blocks, with a progress line per worker."""

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from model.cards.card_spec import ModelSpec
from pipeline import progress, records
from pipeline.reading import object_reads
from pipeline.scoring.blocks import DecodeBlocks
from pipeline.records import ScoredBlock
from pipeline.scoring.model_handler import KerasModelHandler


class _ShowProgress(beam.DoFn):
    """Passes scored blocks on, printing a progress line per worker process every few seconds."""

    def __init__(self, progress_seconds: float):
        self.progress_seconds = progress_seconds

    def setup(self):
        self._progress = progress.Progress(self.progress_seconds)

    def process(self, block: ScoredBlock):
        # an input only a candidate failed on is also among the keys: counted once
        self._progress.add(len(block.keys) + sum(1 for row in block.errors if records.failed_by(row)[0]))
        yield block


class ScoreImages(beam.PTransform):
    """Units of input (see pipeline.reading.sources) -> ScoredBlocks, each with the error rows of its inputs.

    `read` turns a unit into (key, payload) records and error rows; decoding uses the card's recipe (`spec`) on
    `decode_threads` threads, in the background while the model scores the block before. With a `candidate` (its
    handler and spec), each block also holds its images by the candidate's recipe, which it scores after the model.
    """

    def __init__(self, handler: KerasModelHandler, read, spec: ModelSpec, max_pixels: int, decode_threads: int = 1,
                 progress_seconds: float = 10.0, reads_in_flight: int = object_reads.IN_FLIGHT,
                 candidate: tuple = None):
        super().__init__()
        self.candidate = candidate  # (its handler, its card's spec): pipeline.scoring.candidate
        self.reads_in_flight = reads_in_flight
        self.handler = handler
        self.read = read
        self.spec = spec
        self.max_pixels = max_pixels
        self.decode_threads = decode_threads
        self.progress_seconds = progress_seconds

    def expand(self, units):
        candidate_handler, candidate_spec = self.candidate or (None, None)
        decode = DecodeBlocks(self.read, self.spec, self.max_pixels, self.decode_threads, self.reads_in_flight,
                              candidate_spec)
        blocks = units | "Decode" >> beam.ParDo(decode)
        scored = blocks | "RunInference" >> RunInference(self.handler)
        if candidate_handler:
            scored = scored | "RunCandidate" >> RunInference(candidate_handler)
        return scored | "ShowProgress" >> beam.ParDo(_ShowProgress(self.progress_seconds))
