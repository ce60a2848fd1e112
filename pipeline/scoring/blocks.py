"""Defines blocks, what the scorer moves through Beam, and the DoFn that reads and decodes units of input into them.

A block holds up to a model call's rows of decoded images (their keys and one uint8 array of N rows of the card's
pixel shape, e.g. [N, 28, 28]) and the error rows of the inputs that were read with them, so the runner handles one
element per model call (1,024 small images), not one per image. Reading
and decoding run in a background thread, a few units ahead: while the model scores a block (TensorFlow lets go of
Python's lock while it computes), the next one is read and decoded.
"""

import dataclasses
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
from pipeline.outputs.errors import error_row
from pipeline.reading import object_reads
from pipeline.scoring import worker_process

# A block is exactly one model call (spec.model_call_rows), so only the last block of a bundle is padded.
# Inputs are decoded in groups of up to a block's rows of files or this many bytes, whichever comes first, so a folder of
# large photos never holds more than this much undecoded data per worker.
GROUP_BYTES = 64 << 20


@dataclasses.dataclass
class Block:
    """Decoded images and the error rows of the inputs read with them that could not be decoded."""

    keys: list  # one per row of pixels
    pixels: np.ndarray  # uint8 (len(keys), *spec.pixel_shape)
    errors: list  # error rows (pipeline.outputs.errors.error_row)
    sources: list = dataclasses.field(default_factory=list)  # where each row was read (pipeline.report.sheet.Source)


class _Assembler:
    """Collects decoded images and error rows into blocks of exactly `rows` images (the last one may be short)."""

    def __init__(self, rows: int, pixel_shape: tuple):
        self.rows, self.pixel_shape = rows, pixel_shape
        self.keys, self.images, self.errors, self.sources = [], [], [], []

    def full_blocks(self):
        while len(self.keys) >= self.rows:
            yield self._take(self.rows)

    def rest(self):
        if self.keys or self.errors:
            yield self._take(len(self.keys))

    def _take(self, rows: int) -> Block:
        pixels = np.stack(self.images[:rows]) if rows else np.zeros((0,) + self.pixel_shape, np.uint8)
        block = Block(self.keys[:rows], pixels, self.errors, self.sources[:rows])
        self.keys, self.images, self.errors = self.keys[rows:], self.images[rows:], []
        self.sources = self.sources[rows:]
        return block


class _UnitDecoder:
    """Reads units with `read` and decodes what they yield with the card's recipe, into an _Assembler.

    Inputs are decoded in groups of a block's rows (or GROUP_BYTES), gathered across units: native PNGs are decoded a
    group at a time, which costs less per image the larger the group.
    """

    def __init__(self, read, spec: ModelSpec, max_pixels: int, pool, read_pool):
        self.read, self.spec, self.max_pixels, self.pool, self.read_pool = read, spec, max_pixels, pool, read_pool
        self.assembler = _Assembler(spec.model_call_rows, spec.pixel_shape)
        self.pending, self.pending_bytes = [], 0

    def blocks(self, unit):
        for item in self.read(unit, self.read_pool):
            if isinstance(item, dict):  # an error row: the input could not be read
                self.assembler.errors.append(item)
                continue
            self.pending.append(item)
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
        results = [_checked_raw_pixels(payload, self.spec) if isinstance(payload, np.ndarray) else None
                   for _, payload, _ in records]
        encoded = [index for index, result in enumerate(results) if result is None]
        decoded = recipes.to_model_inputs(self.spec, [records[index][1] for index in encoded], self.max_pixels,
                                          self.pool.map if self.pool else map)
        for index, result in zip(encoded, decoded):
            results[index] = result
        for (key, _, source), result in zip(records, results):
            if isinstance(result, np.ndarray):
                self.assembler.keys.append(key)
                self.assembler.images.append(result)
                self.assembler.sources.append(source)
            else:
                reason = getattr(result, "reason", type(result).__name__)
                self.assembler.errors.append(error_row(key, "decode", reason, str(result)))


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
                 reads_in_flight: int = object_reads.IN_FLIGHT):
        self.read = read
        self.spec = spec
        self.max_pixels = max_pixels
        self.threads = threads
        self.reads_in_flight = reads_in_flight

    def setup(self):
        worker_process.exit_quickly_at_the_end()
        self._pool = ThreadPoolExecutor(self.threads, "decode-photos") if self.threads > 1 else None
        self._read_pool = ThreadPoolExecutor(self.reads_in_flight, "read-files")  # its threads start on first use
        self._background = self._started()

    def _started(self) -> _Background:
        return _Background(_UnitDecoder(self.read, self.spec, self.max_pixels, self._pool, self._read_pool))

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
