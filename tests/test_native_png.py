"""Tests the native-PNG fast path: decoding many files at once gives exactly what to_model_input gives for each,
on real test images and on every kind of damaged or unusual PNG."""

import io
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from model.recipes.native_png import native_pixels
from model.recipes.preprocessing import to_model_input, to_model_inputs
from tests import samples


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _with_chunk(png: bytes, chunk: bytes) -> bytes:
    """Inserts a chunk right after IHDR (8 bytes of signature + 25 of IHDR)."""
    return png[:33] + chunk + png[33:]


def _same(batch_result, single) -> bool:
    if isinstance(single, Exception):
        return type(batch_result) is type(single) and str(batch_result) == str(single)
    return isinstance(batch_result, np.ndarray) and np.array_equal(batch_result, single)


def _single(data: bytes):
    try:
        return to_model_input(data)
    except Exception as error:
        return error


def test_real_test_pngs_are_native_and_decode_to_the_idx_arrays(test_split):
    pngs = [samples.png_bytes(image) for image in test_split.images[:2000]]
    assert all(pixels is not None for pixels in native_pixels(pngs))
    results = to_model_inputs(pngs)
    assert all(np.array_equal(result, image) for result, image in zip(results, test_split.images[:2000]))


def _variants(item: np.ndarray) -> dict:
    """PNGs the fast path must send through the full conversion, or decode to the same pixels."""
    plain = samples.png_bytes(item)
    exif_text = PngImagePlugin.PngInfo()
    exif_text.add_text("Raw profile type exif", "exif\n   0\n")
    sideways = Image.Exif()
    sideways[0x0112] = 6  # rotated: the full conversion turns it upright, so passing it through would be wrong
    with_text = io.BytesIO()
    Image.fromarray(item).save(with_text, "PNG", pnginfo=exif_text)
    return {
        "plain": plain,
        "light background": samples.png_bytes(255 - item),
        "rgb grey": _encoded(Image.fromarray(np.dstack([item] * 3))),
        "16-bit": _encoded(Image.fromarray(item.astype(np.uint16) * 257)),
        "palette": _encoded(Image.fromarray(item).convert("P")),
        "transparent black": _encoded(Image.fromarray(item), transparency=0),
        "gamma chunk": _with_chunk(plain, _chunk(b"gAMA", struct.pack(">I", 45455))),
        "exif chunk": _encoded(Image.fromarray(item), exif=sideways),
        "exif in text": with_text.getvalue(),
        "harmless text": _with_chunk(plain, _chunk(b"tEXt", b"Comment\x00hello")),
        "compressed text": _with_chunk(plain, _chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"hello"))),
        "text bomb": _with_chunk(plain, _chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * (20 << 20)))),
        "long text": _with_chunk(plain, _chunk(b"tEXt", b"Comment\x00" + b"a" * (2 << 20))),
        "bad ancillary crc": _with_chunk(plain, _chunk(b"tEXt", b"Comment\x00hello")[:-1] + b"\x00"),
        "bad header crc": plain[:29] + bytes([plain[29] ^ 0xFF]) + plain[30:],
        "bad pixel crc": plain[:-13] + bytes([plain[-13] ^ 0xFF]) + plain[-12:],
        "no end chunk": plain[:-12],
        "bytes after the end": plain + b"junk",
        "wrong size": samples.png_bytes(np.zeros((28, 27), np.uint8)),
    }


def _encoded(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def test_unusual_pngs_give_what_to_model_input_gives(test_split):
    items = test_split.images[:3]
    cases = [(name, data) for item in items for name, data in _variants(item).items()]
    # Alone, and all in one batch (where one file TensorFlow refuses sends the whole batch the slow way).
    for (name, data), together in zip(cases, to_model_inputs([data for _, data in cases])):
        expected = _single(data)
        assert _same(to_model_inputs([data])[0], expected) and _same(together, expected), name
    assert native_pixels([_variants(items[0])["harmless text"]])[0] is not None
    for name in ("gamma chunk", "exif chunk", "exif in text", "bad ancillary crc", "bad header crc", "no end chunk",
                 "compressed text", "text bomb", "long text",
                 "bytes after the end", "palette", "16-bit", "transparent black"):
        assert native_pixels([_variants(items[0])[name]])[0] is None, name


def test_damaged_pngs_give_what_to_model_input_gives(test_split):
    """Random cuts and flipped bytes, in batches that mix them with good files."""
    generator = random.Random(7)
    cases = []
    for index in range(400):
        data = bytearray(samples.png_bytes(test_split.images[index]))
        if index % 2:
            data = data[: generator.randrange(8, len(data))]
        else:
            for _ in range(generator.randrange(1, 4)):
                data[generator.randrange(len(data))] ^= 1 << generator.randrange(8)
        cases.append(bytes(data))
    cases += [samples.png_bytes(image) for image in test_split.images[400:500]]
    generator.shuffle(cases)
    for start in range(0, len(cases), 50):
        batch = cases[start:start + 50]
        for data, result in zip(batch, to_model_inputs(batch)):
            assert _same(result, _single(data))


def test_pixel_data_that_does_not_fit_costs_its_batch_nothing(test_split):
    good = [samples.png_bytes(image) for image in test_split.images[:20]]
    plain = good[5]
    # The chunks are intact, but the pixel data inflates to filter type 7 rows: only inflating it can tell.
    broken = plain[:33] + _chunk(b"IDAT", zlib.compress(b"\x07" * 812)) + _chunk(b"IEND", b"")
    assert native_pixels([broken]) == [None]
    results = to_model_inputs(good[:5] + [broken] + good[5:])
    assert _same(results[5], _single(broken)) and isinstance(results[5], Exception)
    assert all(np.array_equal(r, image) for r, image in zip(results[:5] + results[6:], test_split.images[:20]))


@pytest.mark.parametrize("threads", [1, 3])
def test_photos_decode_the_same_on_a_thread_pool(test_split, threads):
    from concurrent.futures import ThreadPoolExecutor

    photos = [_jpeg(samples.large_catalogue_photo(test_split.images[i], i)) for i in range(6)]
    with ThreadPoolExecutor(threads) as pool:
        pooled = to_model_inputs(photos, map_function=pool.map)
    assert all(np.array_equal(a, to_model_input(data)) for a, data in zip(pooled, photos))


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _filtered_png(image: np.ndarray, kinds) -> bytes:
    """Encodes an 8-bit grey image by hand, filtering row r with PNG filter kinds[r] (0 None ... 4 Paeth)."""
    pixels = image.astype(np.int16)
    rows = []
    for r, kind in enumerate(kinds):
        above = pixels[r - 1] if r else np.zeros_like(pixels[0])
        left = np.concatenate([[0], pixels[r, :-1]])
        upper_left = np.concatenate([[0], above[:-1]])
        estimate = left + above - upper_left
        paeth = np.where((abs(estimate - left) <= abs(estimate - above)) & (abs(estimate - left) <= abs(estimate - upper_left)),
                         left, np.where(abs(estimate - above) <= abs(estimate - upper_left), above, upper_left))
        predicted = [0, left, above, (left + above) // 2, paeth][kind]
        rows.append(bytes([kind]) + ((pixels[r] - predicted) & 0xFF).astype(np.uint8).tobytes())
    header = struct.pack(">IIBBBBB", image.shape[1], image.shape[0], 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + _chunk(b"IEND", b""))


def test_every_row_filter_is_undone_exactly(test_split):
    generator = random.Random(3)
    images = list(test_split.images[:60])
    pngs = [_filtered_png(image, [(r + i) % 5 for r in range(28)]) for i, image in enumerate(images[:30])]
    pngs += [_filtered_png(image, [generator.randrange(5) for _ in range(28)]) for image in images[30:]]
    decoded = native_pixels(pngs)
    for data, pixels, image in zip(pngs, decoded, images):
        assert np.array_equal(pixels, image) and np.array_equal(np.asarray(Image.open(io.BytesIO(data))), image)
