"""Defines the `fmnist-catalogue` recipe, Fashion-MNIST's preprocessing: image bytes -> 28x28 uint8, item bright on
dark; and what every recipe shares: the allowed formats, the caps, opening, orientation and the typed errors."""

import functools
import io
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

from model import vocabulary
from model.recipes import native_png

# The raster formats images are opened as; nothing else is even identified. Pillow's EPS and PS plugins would hand the
# file to Ghostscript (an external program) where it is installed. (Multi-picture JPEGs open as JPEG; PPM stands for
# all of Netpbm's raw formats, PBM, PGM and PPM; AVIF is decoded in this process by the libavif that Pillow is built
# with, the first frame of an image sequence.)
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF", "PPM", "AVIF")

# The largest source image (width * height) we decode; a larger one is rejected before its pixels are read.
DEFAULT_MAX_PIXELS = 40_000_000

# Photos are trimmed and fitted at about this size (longest edge), not at full resolution: a 1200x1600 JPEG decodes
# at 1/8 scale in 1 ms instead of 8 ms, and trimming 200 rows costs a 64th of 1600. Measured on 1,000 such catalogue
# photos: the same accuracy as full resolution, mean difference 3.8 grey levels (docs/own-model.md, "Preprocessing").
REDUCED_EDGE = 160
# ...unless the trimmed item would then be smaller than this on its longest edge (a small item in a big frame): such a
# photo is converted again at a finer scale, so the final fit to 28 pixels always shrinks the item at least twofold.
MIN_ITEM_EDGE = 2 * max(vocabulary.IMAGE_SHAPE)

# Trimming treats a colour as background when it lies within this fraction of the largest possible colour distance
# from the corner colour, which is how Fashion-MNIST's own conversion trimmed its photos (Xiao et al. 2017).
TRIM_TOLERANCE = 0.05

# Grey levels from this value up count as light: it decides what a dark background is and when to negate.
_LIGHT = 128
_WHITE = 255
# Maps every grey level to 1 if it is light and 0 if not, so bytes.translate can count light pixels at C speed.
_IS_LIGHT = bytes(int(level >= _LIGHT) for level in range(256))
_MODEL_SIZE = (vocabulary.IMAGE_WIDTH, vocabulary.IMAGE_HEIGHT)  # Pillow speaks (width, height).
_EXIF_ORIENTATION = 0x0112
# What undoes each EXIF orientation (2 to 8); 1 and anything unknown mean the pixels are already upright.
_ORIENTATION_FIX = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Where Pillow looks for an orientation besides a TIFF's own tags (which are EXIF tags already).
_ORIENTATION_SOURCES = frozenset({"exif", "Raw profile type exif", "xmp", "XML:com.adobe.xmp"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "PA"})


class ImageDecodeError(ValueError):
    """An input that cannot become a model input; .reason is a short stable string, the message says what is wrong."""

    reason = "undecodable"

    def __init__(self, detail: str):
        super().__init__(f"{self.reason}: {detail}")
        self.detail = detail

    def __reduce__(self):
        # Pickling must rebuild the error from its detail, or the reason would be prefixed twice after a round trip.
        return type(self), (self.detail,)


class NotAnImageError(ImageDecodeError):
    reason = "not an image"


class TruncatedImageError(ImageDecodeError):
    reason = "truncated"


class ImageTooLargeError(ImageDecodeError):
    reason = "too large"


class UnsupportedImageError(ImageDecodeError):
    reason = "unsupported"


def to_model_input(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes of any image Pillow can open -> uint8 array of shape vocabulary.IMAGE_SHAPE (28, 28), item bright on dark.

    Raises only ImageDecodeError subclasses for bad input, and ImageTooLargeError for images of more than max_pixels.
    """
    image = opened(data, max_pixels)
    factor = _reduction(image.size)
    pixels, item_edge, reduced_by = _converted(image, factor)
    if reduced_by > 1 and item_edge < MIN_ITEM_EDGE:
        # A small item in a big frame: convert again at the coarsest scale that gives the item MIN_ITEM_EDGE pixels.
        pixels, _, _ = _converted(opened(data, max_pixels), max(1, item_edge * reduced_by // MIN_ITEM_EDGE))
    return pixels


def to_model_inputs(payloads: list, max_pixels: int = DEFAULT_MAX_PIXELS, map_function=map) -> list:
    """Many inputs at once -> for each, what to_model_input returns for it or the Exception it raised.

    The results are those of to_model_input; only the work is shared out. 28x28 grey PNGs, which pass through
    unchanged, are decoded together (model.recipes.native_png); the rest go through to_model_input mapped with
    `map_function` (a thread pool's map uses more cores: Pillow lets go of Python's lock while it decodes and resizes).
    """
    results = native_png.native_pixels(payloads)
    for index, pixels in enumerate(results):
        if pixels is not None and not _has_dark_border(pixels.tobytes()):
            results[index] = None  # a light 28x28 image is a small photo: it is converted below
    rest = [index for index, result in enumerate(results) if result is None]
    convert = functools.partial(_model_input_or_error, max_pixels=max_pixels)
    for index, result in zip(rest, map_function(convert, [payloads[index] for index in rest])):
        results[index] = result
    return results


def _model_input_or_error(data: bytes, max_pixels: int):
    try:
        return to_model_input(data, max_pixels)
    except Exception as error:  # Returned, not raised: one odd input must not cost its neighbours their results.
        return error


def opened(data: bytes, max_pixels: int) -> Image.Image:
    """Opens the bytes as an image without decoding its pixels, and refuses empty, unknown and too large images."""
    if not data:
        raise NotAnImageError("the input is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(describe(error)) from error
    except UnidentifiedImageError as error:
        # Pillow's own message names a BytesIO object at some address, which says nothing useful about the input.
        kind = _signature_format(data)
        if kind:
            article = "an" if kind[0] in "AEIOU" else "a"
            detail = (f"the {len(data):,} bytes start like {article} {kind} file, but its header cannot be read (cut "
                      "or damaged)")
            raise TruncatedImageError(detail) from error
        # Only the size: the bytes themselves could be anyone's file (a link to a secret), and error rows are read by
        # people the file's owner never meant to show it to.
        raise NotAnImageError(f"no allowed image format ({', '.join(ALLOWED_FORMATS)}) in these {len(data):,} "
                              "bytes") from error
    except Exception as error:  # A plugin recognised its format, then found the file cut short or broken.
        if "too large" in str(error).lower():  # e.g. a PNG text chunk that would inflate past Pillow's limit
            raise ImageTooLargeError(describe(error)) from error
        raise TruncatedImageError(describe(error)) from error
    width, height = image.size
    if width * height > max_pixels:
        detail = f"{width}x{height} is {width * height:,} pixels, more than the limit of {max_pixels:,}"
        raise ImageTooLargeError(detail)
    if width == 0 or height == 0:
        raise UnsupportedImageError(f"the image has no pixels ({width}x{height})")
    return image


_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _signature_format(data: bytes) -> str:
    """The allowed format whose signature the bytes start with, or ''."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):  # an ISO-BMFF file type box, AVIF's brands
        return "AVIF"
    return next((name for signature, name in _SIGNATURES if data.startswith(signature)), "")


def _reduction(size: tuple) -> int:
    """The integer factor by which an image of this size is shrunk before trimming: longest edge to REDUCED_EDGE."""
    return max(1, max(size) // REDUCED_EDGE)


def _converted(image: Image.Image, factor: int) -> tuple:
    """Decodes an opened image shrunk by about `factor` and converts it.

    Returns (uint8[28, 28], the item's longest edge in the pixels it was trimmed at, the factor it was shrunk by).
    """
    full_width = image.width
    load_reduced(image, factor)
    try:
        # What a JPEG draft left to do, and all of it for other formats: a box filter averages blocks of pixels.
        shrink = max(1, factor * image.width // full_width)
        pixels, item_edge = _converted_pixels(image, shrink)
        return pixels, item_edge, shrink * full_width // image.width
    except MemoryError:
        raise
    except Exception as error:  # Anything else Pillow cannot convert is a kind of image we do not support.
        raise UnsupportedImageError(describe(error)) from error


def load_reduced(image: Image.Image, factor: int) -> None:
    """Decodes an opened image's pixels, a JPEG at about 1/factor of its size; bad pixel data is ImageDecodeError."""
    try:
        if factor > 1:
            # JPEG decodes straight to a fraction of its size (libjpeg's DCT scaling, 1/2 to 1/8): most of the cost
            # of a big photo is never paid. Other formats ignore this and are shrunk after decoding.
            image.draft(image.mode, (-(-image.width // factor), -(-image.height // factor)))
        image.load()
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(describe(error)) from error
    except MemoryError:  # Running out of memory says nothing about the input, so it is not reported as a bad image.
        raise
    except Exception as error:  # Decoders report cut or corrupt pixel data as OSError, SyntaxError, zlib errors...
        raise TruncatedImageError(describe(error)) from error


def _converted_pixels(image: Image.Image, shrink: int) -> tuple:
    image = flattened(upright(image))
    if image.size == _MODEL_SIZE:
        # The hot path: Fashion-MNIST-like images must come back bit-identical, so nothing is resampled here.
        grey = _grey_bytes(image)
        if grey is not None and _has_dark_border(grey):
            return np.frombuffer(bytearray(grey), dtype=np.uint8).reshape(vocabulary.IMAGE_SHAPE), max(_MODEL_SIZE)
    if shrink > 1:  # after flattening, so colours hidden under transparent pixels never bleed into the average
        image = image.reduce(shrink)
    return _as_catalogue_photo(image)


def upright(image: Image.Image) -> Image.Image:
    """Applies the EXIF orientation, so a photo taken sideways is scored the way it is shown."""
    fix = _ORIENTATION_FIX.get(_orientation(image))
    return image if fix is None else image.transpose(fix)


def upright_size(image: Image.Image) -> tuple:
    """(width, height) of an opened image once upright() has turned it, known before its pixels are decoded."""
    turned = _orientation(image) in (5, 6, 7, 8)  # the orientations that swap the axes
    return (image.height, image.width) if turned else image.size


def _orientation(image: Image.Image) -> int:
    if image.format != "TIFF" and not _ORIENTATION_SOURCES.intersection(image.info):
        return 1  # Reading EXIF costs a sixth of the hot path, so skip it when there is none to read.
    try:
        return image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # Broken EXIF must not cost us an image whose pixels are fine; it is then taken as upright.
        return 1


def flattened(image: Image.Image) -> Image.Image:
    """Returns the image as mode L or RGB, with deep pixels scaled to 8 bits and transparency made white."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # Clipping 16-bit grey to 255 would turn almost every pixel white; keeping the high byte keeps the picture.
        deep = np.clip(np.asarray(image), 0, 0xFFFF).astype(np.uint16)
        return Image.fromarray((deep >> 8).astype(np.uint8), "L")
    if image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float32))
        # Float images from scientific tools usually hold 0..1; Pillow's own convention for F is 0..255.
        scale = _WHITE if values.size and 0.0 <= values.min() and values.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(values * scale), 0, _WHITE).astype(np.uint8), "L")
    transparent = image.mode in ALPHA_MODES or "transparency" in image.info
    if image.mode in ("L", "RGB") and not transparent:
        return image
    if not transparent:
        return image.convert("L" if image.mode == "1" else "RGB")
    # Catalogue photos sit on white, so whatever colour hides under a transparent pixel must not show through.
    white = Image.new("RGBA", image.size, (_WHITE, _WHITE, _WHITE, _WHITE))
    flat = Image.alpha_composite(white, image.convert("RGBA"))
    return flat.convert("L" if image.mode == "LA" else "RGB")


def _grey_bytes(image: Image.Image) -> bytes | None:
    """Returns the grey levels of an L or RGB image row by row, or None when it has colour."""
    raw = image.tobytes()
    if image.mode == "L":
        return raw
    red, green, blue = raw[0::3], raw[1::3], raw[2::3]
    return red if red == green == blue else None


def _has_dark_border(grey: bytes) -> bool:
    """Tells whether most of the outer ring of a model-sized image is dark, i.e. it is already item bright on dark."""
    width, inner_end = vocabulary.IMAGE_WIDTH, len(grey) - vocabulary.IMAGE_WIDTH
    # Top row, bottom row, then the left and right columns without the corners the rows already hold.
    ring = grey[:width] + grey[inner_end:] + grey[width:inner_end:width] + grey[2 * width - 1 : inner_end : width]
    return ring.translate(_IS_LIGHT).count(1) * 2 < len(ring)


def _as_catalogue_photo(image: Image.Image) -> tuple:
    """Converts a photo the way Fashion-MNIST was made: trim, fit the longest edge, centre, grey, negate if light.

    Returns (uint8[28, 28], the trimmed item's longest edge in pixels of `image`).
    """
    pixels = np.asarray(image)
    corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
    background = np.median(corners, axis=0)
    top, bottom, left, right = _content_box(pixels, background)
    item = image.crop((left, top, right, bottom))
    scale = max(_MODEL_SIZE) / max(item.size)
    size = tuple(max(1, min(limit, round(edge * scale))) for edge, limit in zip(item.size, _MODEL_SIZE))
    # Reducing by an integer factor first keeps big photos fast; at a gap of 3 the result matches a plain Lanczos.
    resized = item.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    fill = int(round(float(background))) if image.mode == "L" else tuple(int(v) for v in np.rint(background))
    canvas = Image.new(image.mode, _MODEL_SIZE, fill)
    # An odd margin leaves its extra pixel left of and above the item, as it does in nearly all Fashion-MNIST images.
    canvas.paste(resized, ((_MODEL_SIZE[0] - size[0] + 1) // 2, (_MODEL_SIZE[1] - size[1] + 1) // 2))
    grey = np.array(canvas.convert("L"), dtype=np.uint8)
    if Image.new(image.mode, (1, 1), fill).convert("L").getpixel((0, 0)) >= _LIGHT:
        grey = _WHITE - grey  # Fashion-MNIST shows a bright item on black; catalogue photos are dark on white.
    return np.ascontiguousarray(grey), max(item.size)


def _content_box(pixels: np.ndarray, background: np.ndarray) -> tuple[int, int, int, int]:
    """Returns (top, bottom, left, right) of what differs from the background, or the whole image if nothing does."""
    height, width = pixels.shape[:2]
    planes = pixels.reshape(height, width, -1)
    # Twice every value, so a median between two levels is still an integer and the sums stay exact in int32.
    centre = np.rint(2 * np.asarray(background, dtype=np.float64)).astype(np.int16).reshape(-1)
    # Squared distances, so no square roots are taken; the largest possible distance is 255 * sqrt(channels).
    limit = 4 * (TRIM_TOLERANCE * _WHITE) ** 2 * centre.size
    distance = np.zeros((height, width), dtype=np.int32)
    # One channel at a time: numpy sums a short last axis many times slower than it adds whole planes.
    for channel, level in enumerate(centre):
        difference = 2 * planes[:, :, channel].astype(np.int16) - level
        distance += difference.astype(np.int32) ** 2
    far = distance > limit
    rows, columns = far.any(axis=1), far.any(axis=0)
    if not rows.any():
        return 0, height, 0, width
    kept_rows, kept_columns = np.flatnonzero(rows), np.flatnonzero(columns)
    return int(kept_rows[0]), int(kept_rows[-1]) + 1, int(kept_columns[0]), int(kept_columns[-1]) + 1


# A Python bytes literal in a message: Pillow quotes a few bytes of a file in some (a PNG chunk's type, a TIFF header).
_QUOTED_BYTES = re.compile(r"""(?<!\w)b(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


def describe(error: BaseException) -> str:
    """A decoder's message, without any bytes of the file it quotes (they could be anyone's, see _opened)."""
    return _QUOTED_BYTES.sub("(bytes left out)", str(error)) or type(error).__name__
