"""Defines blocks, what the scorer moves through Beam, and the DoFn that reads and decodes units of input into them.

A block holds up to a model call's rows of decoded images (their keys and one uint8 array of N rows of the card's
pixel shape, e.g. [N, 28, 28]) and the error rows of the inputs that were read with them, so the runner handles one
element per model call (1,024 small images), not one per image. Reading
and decoding run in a background thread, a few units ahead: while the model scores a block (TensorFlow lets go of
Python's lock while it computes), the next one is read and decoded.
"""

import bisect
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindows

from model import recipes
from model.cards.card_spec import ModelSpec
from model.recipes import preprocessing
from pipeline import timeline
from pipeline.records import Block, error_row
from pipeline.reading import object_reads
from pipeline.scoring import worker_process

# A block is exactly one model call (spec.model_call_rows), so only the last block of a bundle is padded.
# Inputs are decoded in groups of up to a block's rows of files or this many bytes, whichever comes first, so a folder
# of large photos never holds more than this much undecoded data per worker.
GROUP_BYTES = 64 << 20


class _Lane:
    """One model's decoded images, in the order their inputs were read (`order`: each one's place in the run)."""

    def __init__(self, pixel_shape: tuple):
        self.pixel_shape = pixel_shape
        self.keys, self.images, self.sources, self.order = [], [], [], []
        self.errors = []  # (place, error row)

    def add(self, place: int, key, image: np.ndarray, source) -> None:
        self.order.append(place)
        self.keys.append(key)
        self.images.append(image)
        self.sources.append(source)

    def take(self, last: float) -> Block:
        """The images and errors up to place `last`, as a block."""
        rows = bisect.bisect_right(self.order, last)
        pixels = np.stack(self.images[:rows]) if rows else np.zeros((0,) + self.pixel_shape, np.uint8)
        errors = [row for place, row in self.errors if place <= last]
        block = Block(self.keys[:rows], pixels, errors, self.sources[:rows])
        self.keys, self.images, self.sources, self.order = (
            self.keys[rows:], self.images[rows:], self.sources[rows:], self.order[rows:])
        self.errors = [(place, row) for place, row in self.errors if place > last]
        return block


class _Assembler:
    """Collects decoded images and error rows into blocks of exactly `rows` images of the model (the last one may be
    short). With a candidate model, each block also carries the candidate's images of the same inputs."""

    def __init__(self, rows: int, pixel_shape: tuple, candidate_shape: tuple = None):
        self.rows = rows
        self.model = _Lane(pixel_shape)
        self.candidate = _Lane(candidate_shape) if candidate_shape else None
        self.places = 0  # inputs seen so far

    def place(self) -> int:
        """The next input's place in the run."""
        self.places += 1
        return self.places

    def full_blocks(self):
        while len(self.model.keys) >= self.rows:
            yield self._take(self.model.order[self.rows - 1])

    def rest(self):
        lanes = [lane for lane in (self.model, self.candidate) if lane]
        if any(lane.keys or lane.errors for lane in lanes):
            yield self._take(float("inf"))

    def _take(self, last: float) -> Block:
        block = self.model.take(last)
        if self.candidate:
            block.candidate = self.candidate.take(last)
        return block


def same_recipe(first: ModelSpec, second: ModelSpec) -> bool:
    """Whether two cards preprocess an input to the same pixels (then it is decoded once for both)."""
    return ((first.preprocessing, first.preprocessing_version, first.parameters, first.input_shape)
            == (second.preprocessing, second.preprocessing_version, second.parameters, second.input_shape))


class _UnitDecoder:
    """Reads units with `read` and decodes what they yield with the card's recipe, into an _Assembler; with a
    candidate model, also with the candidate card's recipe (the same pixels, when the recipes agree).

    Inputs are decoded in groups of a block's rows (or GROUP_BYTES), gathered across units: native PNGs are decoded a
    group at a time, which costs less per image the larger the group.
    """

    def __init__(self, read, spec: ModelSpec, max_pixels: int, pool, read_pool, candidate_spec: ModelSpec = None):
        self.read, self.spec, self.max_pixels, self.pool, self.read_pool = read, spec, max_pixels, pool, read_pool
        self.candidate_spec = candidate_spec
        self.assembler = _Assembler(spec.model_call_rows, spec.pixel_shape,
                                    candidate_spec.pixel_shape if candidate_spec else None)
        self.pending, self.pending_bytes = [], 0

    def blocks(self, unit):
        for item in self.read(unit, self.read_pool):
            if isinstance(item, dict):  # an error row: the input could not be read
                self.assembler.model.errors.append((self.assembler.place(), item))
                continue
            self.pending.append((self.assembler.place(), *item))
            self.pending_bytes += len(item[1]) if isinstance(item[1], bytes) else 0
            if len(self.pending) >= self.spec.model_call_rows or self.pending_bytes >= GROUP_BYTES:
                self._decode_pending()
                yield from self.assembler.full_blocks()

    def rest(self):
        self._decode_pending()
        yield from self.assembler.full_blocks()
        yield from self.assembler.rest()

    def _decode_pending(self) -> None:
        self._decode(self.pending)
        self.pending, self.pending_bytes = [], 0

    def _decode(self, records: list) -> None:
        results = self._decoded(records, self.spec)
        candidate = self.assembler.candidate
        if candidate is None:
            candidate_results = [None] * len(records)
        else:
            candidate_results = (results if same_recipe(self.spec, self.candidate_spec)
                                 else self._decoded(records, self.candidate_spec))
        model = self.assembler.model
        for (place, key, _, source), result, candidate_result in zip(records, results, candidate_results):
            if isinstance(result, np.ndarray):
                model.add(place, key, result, source)
            else:  # the model's error row: the input's one row when the candidate cannot decode it either
                model.errors.append((place, _decode_error(key, result, source)))
            if isinstance(candidate_result, np.ndarray):
                candidate.add(place, key, candidate_result, source)
            elif candidate is not None and isinstance(result, np.ndarray):  # the candidate alone could not
                candidate.errors.append((place, _decode_error(key, candidate_result, source)))

    def _decoded(self, records: list, spec: ModelSpec) -> list:
        """Each record's pixels by `spec`'s recipe, or the error that stopped it."""
        results = [_checked_raw_pixels(payload, spec) if isinstance(payload, np.ndarray) else None
                   for _, _, payload, _ in records]
        encoded = [index for index, result in enumerate(results) if result is None]
        decoded = recipes.to_model_inputs(spec, [records[index][2] for index in encoded], self.max_pixels,
                                          self.pool.map if self.pool else map)
        for index, result in zip(encoded, decoded):
            results[index] = result
        return results


def _decode_error(key, result, source=None) -> dict:
    return error_row(key, "decode", getattr(result, "reason", type(result).__name__), str(result),
                     getattr(source, "table", None))


def _checked_raw_pixels(pixels: np.ndarray, spec: ModelSpec):
    """Raw pixels (a TFRecord's) as the model takes them: H * W * C bytes in the card's shape."""
    if pixels.dtype != np.uint8 or pixels.size != spec.pixel_bytes:
        return preprocessing.UnsupportedImageError(f"{pixels.size:,} raw pixel values, the model takes "
                                                   f"{'x'.join(map(str, spec.input_shape))} = {spec.pixel_bytes:,}")
    return pixels.reshape(spec.pixel_shape)


_DONE = object()  # after the last block of a unit
_FLUSH = object()  # asks for the blocks still being assembled
_STOP = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


# How many units the background thread may have on hand. Units are small (256 names by default), so several are
# needed to keep it busy for the length of a model call; the blocks it may hold back are limited separately.
UNITS_AHEAD = 16


class _Background:
    """Runs a _UnitDecoder in one thread, up to UNITS_AHEAD units ahead of the caller, with at most two decoded
    blocks waiting to be taken."""

    def __init__(self, decoder: _UnitDecoder):
        self.decoder = decoder
        # The outbox holds blocks and the markers that end units; only blocks count against the limit of two.
        self.inbox, self.outbox = queue.Queue(), queue.Queue()
        self.block_slots = threading.Semaphore(2)
        self.in_flight = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="decode-blocks", daemon=True)
        self.thread.start()

    def put(self, unit):
        """Hands a unit over. Blocks are only taken (and so scored) once UNITS_AHEAD units are on hand: the caller
        feeds units first, so the thread never runs dry while the model scores what it took."""
        self.inbox.put(unit)
        self.in_flight += 1
        while self.in_flight >= UNITS_AHEAD:
            yield from self._take()

    def flush(self):
        """Yields every block still to come, the last short one included."""
        self.inbox.put(_FLUSH)
        self.in_flight += 1
        while self.in_flight:
            yield from self._take()

    def stop(self) -> None:
        """Ends the thread, dropping whatever it had not handed over (after a failed bundle, nothing of it counts)."""
        self.stopping = True
        self.inbox.put(_STOP)
        self.thread.join()

    def _take(self):
        item = self.outbox.get()
        if item is _DONE:
            self.in_flight -= 1
        elif isinstance(item, _Failed):
            raise item.error  # a bug, not a bad input (those are error rows): fail the bundle so the runner retries
        else:
            self.block_slots.release()
            yield item

    def _run(self) -> None:
        while True:
            unit = self.inbox.get()
            if unit is _STOP or self.stopping:
                return
            try:
                for block in (self.decoder.rest() if unit is _FLUSH else self.decoder.blocks(unit)):
                    while not self.block_slots.acquire(timeout=0.1):
                        if self.stopping:
                            return
                    self.outbox.put(block)
            except BaseException as error:  # handed to the caller's thread, which owns the bundle
                self.outbox.put(_Failed(error))
            self.outbox.put(_DONE)


class DecodeBlocks(beam.DoFn):
    """Units of input -> Blocks: reads each unit with `read(unit, read_pool)` and decodes it with the card's recipe
    (`spec`), in a background thread, using `threads` threads for photos (Pillow decodes and resizes without Python's
    lock)."""

    def __init__(self, read, spec: ModelSpec, max_pixels: int, threads: int = 1,
                 reads_in_flight: int = object_reads.IN_FLIGHT, candidate_spec: ModelSpec = None):
        self.read = read
        self.spec = spec
        self.candidate_spec = candidate_spec
        self.max_pixels = max_pixels
        self.threads = threads
        self.reads_in_flight = reads_in_flight

    def setup(self):
        worker_process.exit_quickly_at_the_end()
        self._pool = ThreadPoolExecutor(self.threads, "decode-photos") if self.threads > 1 else None
        self._read_pool = ThreadPoolExecutor(self.reads_in_flight, "read-files")  # its threads start on first use
        self._background = self._started()

    def _started(self) -> _Background:
        return _Background(_UnitDecoder(self.read, self.spec, self.max_pixels, self._pool, self._read_pool,
                                        self.candidate_spec))

    def start_bundle(self):
        if self._background.in_flight:  # an earlier bundle failed half way: start afresh, keeping none of it
            self._background.stop()
            self._background = self._started()

    def process(self, unit):
        yield from self._background.put(unit)

    def finish_bundle(self):
        for block in self._background.flush():
            yield GlobalWindows.windowed_value(block)
        timeline.mark("bundle scored")

    def teardown(self):
        self._background.stop()
        self._read_pool.shutdown()
        if self._pool:
            self._pool.shutdown()
