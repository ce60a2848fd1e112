"""Defines the one preprocessing step training and scoring share: image bytes -> 28x28 uint8, item bright on dark."""

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from model import vocabulary

# The largest source image (width * height) we decode; a larger one is rejected before its pixels are read.
DEFAULT_MAX_PIXELS = 40_000_000

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
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "PA"})
# Trimming works through big photos in bands of about this many pixels so it never holds a float copy of the image.
_TRIM_BAND_PIXELS = 1 << 20


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
    if not data:
        raise NotAnImageError("the input is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(_describe(error)) from error
    except UnidentifiedImageError as error:
        # Pillow's own message names a BytesIO object at some address, which says nothing useful about the input.
        detail = f"Pillow recognises no image format in these {len(data)} bytes (they start {bytes(data[:8])!r})"
        raise NotAnImageError(detail) from error
    except Exception as error:  # A plugin recognised its format, then found the file cut short or broken.
        raise TruncatedImageError(_describe(error)) from error
    width, height = image.size
    if width * height > max_pixels:
        detail = f"{width}x{height} is {width * height:,} pixels, more than the limit of {max_pixels:,}"
        raise ImageTooLargeError(detail)
    return image_to_model_input(image)


def image_to_model_input(image: Image.Image) -> np.ndarray:
    """Same as to_model_input, for an already opened PIL image (its pixels may not be loaded yet)."""
    if image.width == 0 or image.height == 0:
        raise UnsupportedImageError(f"the image has no pixels ({image.width}x{image.height})")
    try:
        image.load()
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(_describe(error)) from error
    except MemoryError:  # Running out of memory says nothing about the input, so it is not reported as a bad image.
        raise
    except Exception as error:  # Decoders report cut or corrupt pixel data as OSError, SyntaxError, zlib errors...
        raise TruncatedImageError(_describe(error)) from error
    try:
        return _converted(image)
    except MemoryError:
        raise
    except Exception as error:  # Anything else Pillow cannot convert is a kind of image we do not support.
        raise UnsupportedImageError(_describe(error)) from error


def _converted(image: Image.Image) -> np.ndarray:
    image = _flattened(_upright(image))
    if image.size == _MODEL_SIZE:
        # The hot path: Fashion-MNIST-like images must come back bit-identical, so nothing is resampled here.
        grey = _grey_bytes(image)
        if grey is not None and _has_dark_border(grey):
            return np.frombuffer(bytearray(grey), dtype=np.uint8).reshape(vocabulary.IMAGE_SHAPE)
    return _as_catalogue_photo(image)


def _upright(image: Image.Image) -> Image.Image:
    """Applies the EXIF orientation, so a photo taken sideways is scored the way it is shown."""
    if image.format != "TIFF" and not _ORIENTATION_SOURCES.intersection(image.info):
        return image  # Reading EXIF costs a sixth of the hot path, so skip it when there is none to read.
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # Broken EXIF must not cost us an image whose pixels are fine; it is then taken as upright.
        return image
    fix = _ORIENTATION_FIX.get(orientation)
    return image if fix is None else image.transpose(fix)


def _flattened(image: Image.Image) -> Image.Image:
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
    transparent = image.mode in _ALPHA_MODES or "transparency" in image.info
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


def _as_catalogue_photo(image: Image.Image) -> np.ndarray:
    """Converts a photo the way Fashion-MNIST was made: trim, fit the longest edge, centre, grey, negate if light."""
    pixels = np.asarray(image)
    corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
    background = np.median(corners, axis=0)
    top, bottom, left, right = _content_box(pixels, background)
    item = image.crop((left, top, right, bottom))
    scale = max(_MODEL_SIZE) / max(item.size)
    size = tuple(max(1, min(limit, round(edge * scale))) for edge, limit in zip(item.size, _MODEL_SIZE))
    # Reducing by an integer factor first keeps big photos fast; at a gap of 3 the result matches a plain Lanczos.
    item = item.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    fill = int(round(float(background))) if image.mode == "L" else tuple(int(v) for v in np.rint(background))
    canvas = Image.new(image.mode, _MODEL_SIZE, fill)
    # An odd margin leaves its extra pixel left of and above the item, as it does in nearly all Fashion-MNIST images.
    canvas.paste(item, ((_MODEL_SIZE[0] - size[0] + 1) // 2, (_MODEL_SIZE[1] - size[1] + 1) // 2))
    grey = np.array(canvas.convert("L"), dtype=np.uint8)
    if Image.new(image.mode, (1, 1), fill).convert("L").getpixel((0, 0)) >= _LIGHT:
        grey = _WHITE - grey  # Fashion-MNIST shows a bright item on black; catalogue photos are dark on white.
    return np.ascontiguousarray(grey)


def _content_box(pixels: np.ndarray, background: np.ndarray) -> tuple[int, int, int, int]:
    """Returns (top, bottom, left, right) of what differs from the background, or the whole image if nothing does."""
    height, width = pixels.shape[:2]
    planes = pixels.reshape(height, width, -1)
    centre = np.asarray(background, dtype=np.float32).reshape(-1)
    # Squared distances, so no square roots are taken; the largest possible distance is 255 * sqrt(channels).
    limit = (TRIM_TOLERANCE * _WHITE) ** 2 * centre.size
    rows, columns = np.zeros(height, dtype=bool), np.zeros(width, dtype=bool)
    band = max(1, _TRIM_BAND_PIXELS // width)
    for start in range(0, height, band):
        distance = np.zeros((min(band, height - start), width), dtype=np.float32)
        # One channel at a time: numpy sums a short last axis many times slower than it adds whole planes.
        for channel, level in enumerate(centre):
            difference = planes[start : start + band, :, channel].astype(np.float32) - level
            distance += difference * difference
        far = distance > limit
        rows[start : start + band] = far.any(axis=1)
        columns |= far.any(axis=0)
    if not rows.any():
        return 0, height, 0, width
    kept_rows, kept_columns = np.flatnonzero(rows), np.flatnonzero(columns)
    return int(kept_rows[0]), int(kept_rows[-1]) + 1, int(kept_columns[0]), int(kept_columns[-1]) + 1


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__
