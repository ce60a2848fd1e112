"""Decodes, many at once, the PNGs that preprocessing passes through unchanged: 8-bit grey 28x28 Fashion-MNIST files.

Pillow spends ~40 us on such a file, mostly in Python around a few hundred bytes of pixels. Here the chunks are
walked with struct, the pixels inflated with zlib, and PNG's row filters undone with numpy across the whole batch at
once: ~20 us a file, all of it exact integer arithmetic, so the pixels are Pillow's to the bit.

Only files whose header and chunks promise exactly what `preprocessing.to_model_input` would pass through are taken:
8-bit grey 28x28, not interlaced, nothing that changes pixels (palette, transparency, gamma, colour profile) and no
orientation tag. For every other file, and every file whose pixel data does not inflate to exactly 28 filtered rows,
the answer is None and the caller uses `to_model_input` itself, so the result is the same array or the same error
either way (tests/test_native_png.py checks this on damaged files too).
"""

import struct
import zlib

import numpy as np

from model.vocabulary import IMAGE_HEIGHT, IMAGE_WIDTH

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The first chunk, IHDR: width, height, bit depth 8, colour type 0 (grey), compression 0, filter 0, no interlacing.
_NATIVE_HEADER = struct.pack(">I4sIIBBBBB", 13, b"IHDR", IMAGE_WIDTH, IMAGE_HEIGHT, 8, 0, 0, 0, 0)
_PREFIX = _SIGNATURE + _NATIVE_HEADER
# Chunks that never change the pixels Pillow decodes, and which Pillow reads without complaint when they are small.
# Anything else (PLTE, tRNS, gAMA, iCCP, sBIT, eXIf, compressed text that Pillow inflates and may refuse as too
# large, unknown chunks...) sends the file through the full conversion, which knows what to do with it.
_HARMLESS = frozenset({b"pHYs", b"tIME", b"tEXt"})
_HARMLESS_BYTES = 1 << 16
# Text chunks under these keywords carry EXIF or XMP, where an orientation tag may rotate the image.
_ORIENTATION_KEYWORDS = (b"Raw profile type exif\x00", b"XML:com.adobe.xmp\x00")
_CHUNK_HEAD = struct.Struct(">I4s")
_ROW_BYTES = 1 + IMAGE_WIDTH  # each row starts with its filter type
_NONE, _SUB, _UP, _AVERAGE, _PAETH = range(5)


def native_pixels(payloads: list) -> list:
    """For each payload: uint8[28, 28] if it is a native PNG (decoded here, as Pillow would), else None."""
    results = [None] * len(payloads)
    rows, found = [], []
    for index, data in enumerate(payloads):
        compressed = _pixel_data(data)
        if compressed is None:
            continue
        try:
            filtered = zlib.decompress(compressed)
        except zlib.error:
            continue  # Pillow has its own opinion on broken pixel data; it gives the answer
        if len(filtered) == IMAGE_HEIGHT * _ROW_BYTES and max(filtered[::_ROW_BYTES]) <= _PAETH:
            rows.append(filtered)
            found.append(index)
    if found:
        filtered = np.frombuffer(b"".join(rows), np.uint8).reshape(len(found), IMAGE_HEIGHT, _ROW_BYTES)
        for index, pixels in zip(found, _unfiltered(filtered)):
            results[index] = pixels
    return results


def _pixel_data(data: bytes):
    """The concatenated IDAT bytes of a whole native PNG, or None if the file is not one (or is damaged)."""
    if not isinstance(data, bytes) or not data.startswith(_PREFIX):
        return None
    position, end, pixel_data = len(_SIGNATURE), len(data), []
    while position + 12 <= end:
        length, kind = _CHUNK_HEAD.unpack_from(data, position)
        body_end = position + 8 + length
        if body_end + 4 > end:
            return None  # cut short: Pillow reports it as truncated
        if kind == b"IDAT":
            pixel_data.append(data[position + 8:body_end])  # Pillow does not check pixel data CRCs either
        elif not _crc_ok(data, position, body_end):
            return None
        elif kind == b"IEND":
            return b"".join(pixel_data) if pixel_data and body_end + 4 == end else None
        elif position > len(_SIGNATURE) and not _harmless(data, kind, position):
            return None
        position = body_end + 4
    return None


def _harmless(data: bytes, kind: bytes, position: int) -> bool:
    length = _CHUNK_HEAD.unpack_from(data, position)[0]
    return kind in _HARMLESS and length <= _HARMLESS_BYTES and not data.startswith(_ORIENTATION_KEYWORDS, position + 8)


def _crc_ok(data: bytes, position: int, body_end: int) -> bool:
    """Checks a chunk's CRC (over its type and body), as Pillow does for every chunk before the pixel data."""
    return zlib.crc32(data[position + 4:body_end]) == int.from_bytes(data[body_end:body_end + 4], "big")


def _unfiltered(filtered: np.ndarray) -> np.ndarray:
    """Undoes PNG's per-row filters (one byte per pixel) for a batch: (N, 28, 29) -> uint8 (N, 28, 28).

    Rows depend on the row above, so rows go one at a time, each for every image at once; within a row, Sub is a
    running sum, and Average and Paeth, which depend on the pixel to the left, go one column at a time.
    """
    kinds = filtered[:, :, 0]
    coded = filtered[:, :, 1:].astype(np.int16)
    above = np.zeros((len(filtered), IMAGE_WIDTH), np.int16)
    pixels = np.empty((len(filtered), IMAGE_HEIGHT, IMAGE_WIDTH), np.uint8)
    for row in range(IMAGE_HEIGHT):
        current = coded[:, row].copy()
        kind = kinds[:, row]
        sub, up = kind == _SUB, kind == _UP
        current[sub] = np.cumsum(current[sub], axis=1) & 0xFF
        current[up] = (current[up] + above[up]) & 0xFF
        for left_dependent, predict in ((_AVERAGE, _average), (_PAETH, _paeth)):
            chosen = kind == left_dependent
            if chosen.any():
                current[chosen] = _left_to_right(current[chosen], above[chosen], predict)
        pixels[:, row] = current
        above = current
    return pixels


def _left_to_right(coded: np.ndarray, above: np.ndarray, predict) -> np.ndarray:
    left = np.zeros(len(coded), np.int16)
    upper_left = np.zeros(len(coded), np.int16)
    for column in range(IMAGE_WIDTH):
        up = above[:, column]
        left = (coded[:, column] + predict(left, up, upper_left)) & 0xFF
        coded[:, column] = left
        upper_left = up
    return coded


def _average(left, up, upper_left):
    return (left + up) >> 1


def _paeth(left, up, upper_left):
    """The neighbour closest to left + up - upper_left; ties go to left, then up (the PNG specification's order)."""
    estimate = left + up - upper_left
    to_left, to_up, to_upper_left = np.abs(estimate - left), np.abs(estimate - up), np.abs(estimate - upper_left)
    return np.where((to_left <= to_up) & (to_left <= to_upper_left), left, np.where(to_up <= to_upper_left, up,
                                                                                     upper_left))
