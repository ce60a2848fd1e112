"""Defines the `fit` recipe, the general preprocessing for photos of anything: image bytes -> uint8 [H, W] (grey) or
[H, W, 3] (RGB), upright, transparency on the fill colour, resized to the model's input by `pad`, `crop` or
`stretch`.

Opening, the format allow-list, the caps and the typed errors are those of every recipe
(model.recipes.preprocessing). Big sources are never converted at full resolution: a JPEG decodes straight to a
fraction of its size (libjpeg's DCT scaling) while it stays at least DRAFT_MARGINS[version] times the size it is
finally resized to, and any image is box-reduced by an integer factor while it stays at least REDUCE_MARGIN times
that size; the last step is one antialiased resize (bench/fit_recipe.py measures what this costs against converting
at full resolution; docs/own-model.md has its numbers). Version 2 lets the reduced JPEG decode come down to the size
it is resized to (version 1 kept 1.5 times it); cards keep the version they were written with, and version 1 is
still served as it was.
"""

import functools

import numpy as np
from PIL import Image

from model.recipes import preprocessing

NAME = "fit"
VERSION = 2  # the version new cards are written with
VERSIONS = (1, 2)  # the versions this code runs
RESIZE_POLICIES = ("pad", "crop", "stretch")  # fit inside and pad; fill and centre-crop; scale each axis alone
DEFAULT_PARAMETERS = {"resize": "pad", "fill": [0, 0, 0]}  # black, as tf.image.resize_with_pad pads
# A reduced source keeps at least this many pixels per output pixel on each axis, so the final antialiased resize
# still averages over real detail.
REDUCE_MARGIN = 2
# A JPEG's reduced decode keeps at least this many, by version: libjpeg's scaled inverse DCT filters better than a
# box, and the decode and the antialiased resize after it are most of a big input's conversion. Version 1 kept 1.5
# (at 224x224 from 800 px photos, 2.7 ms a photo against 4.2 ms with a margin of 2); version 2 keeps 1.0, so a
# 450-900 px photo made 224 px decodes at half size (bench/fit_recipe.py --versions 1 2 measures both against full
# resolution; docs/own-model.md has the figures).
DRAFT_MARGINS = {1: 1.5, 2: 1.0}
RESAMPLE = Image.Resampling.BILINEAR  # antialiased when shrinking: Pillow widens the filter with the scale


def checked_parameters(parameters: dict) -> dict:
    """The recipe's parameters with defaults filled in; raises ValueError saying what is wrong."""
    unknown = set(parameters) - set(DEFAULT_PARAMETERS)
    if unknown:
        raise ValueError(f"unknown fit parameter {sorted(unknown)[0]!r} (known: {', '.join(DEFAULT_PARAMETERS)})")
    merged = {**DEFAULT_PARAMETERS, **parameters}
    if merged["resize"] not in RESIZE_POLICIES:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_POLICIES)}, not {merged['resize']!r}")
    fill = merged["fill"]
    if not (isinstance(fill, list) and len(fill) == 3 and all(type(v) is int and 0 <= v <= 255 for v in fill)):
        raise ValueError(f"fill must be three whole numbers 0-255 (red, green, blue), not {fill!r}")
    return merged


def to_model_input(data: bytes, input_shape: tuple, parameters: dict,
                   max_pixels: int = preprocessing.DEFAULT_MAX_PIXELS, full_resolution: bool = False,
                   version: int = VERSION) -> np.ndarray:
    """Bytes of any allowed image -> uint8 [H, W] (C = 1) or [H, W, 3] (C = 3) for a model of `input_shape`, by the
    recipe's `version`.

    Raises only ImageDecodeError subclasses for bad input, ImageTooLargeError above max_pixels. `full_resolution`
    decodes and resizes at the source's full size instead (what bench/fit_recipe.py compares the recipe with).
    """
    height, width, channels = input_shape
    mode = "L" if channels == 1 else "RGB"
    fill = tuple(parameters["fill"])
    image = preprocessing.opened(data, max_pixels)
    source = preprocessing.upright_size(image)
    needed = _needed_size(source, (width, height), parameters["resize"])
    preprocessing.load_reduced(image, 1 if full_resolution else _factor(source, needed, DRAFT_MARGINS[version]))
    try:
        image = preprocessing.upright(image)
        image = _on_fill(image, fill)
        if image.mode != mode:  # converting to its own mode copies it: 4% of a photo's conversion (2.86 / 2.98 ms)
            image = image.convert(mode)
        factor = 1 if full_resolution else _factor(image.size, needed)
        if factor > 1:
            image = image.reduce(factor)
        resized = _resized(image, (width, height), parameters["resize"], fill if mode == "RGB" else _grey(fill),
                           needed)
        return np.ascontiguousarray(np.asarray(resized, dtype=np.uint8))
    except MemoryError:
        raise
    except Exception as error:  # Anything Pillow cannot convert is a kind of image we do not support.
        raise preprocessing.UnsupportedImageError(preprocessing.describe(error)) from error


def to_model_inputs(payloads: list, input_shape: tuple, parameters: dict,
                    max_pixels: int = preprocessing.DEFAULT_MAX_PIXELS, map_function=map,
                    version: int = VERSION) -> list:
    """Many inputs -> for each, what to_model_input returns for it or the Exception it raised (`map_function`: a
    thread pool's map uses more cores, as Pillow decodes and resizes without Python's lock)."""
    convert = functools.partial(_model_input_or_error, input_shape=input_shape, parameters=parameters,
                                max_pixels=max_pixels, version=version)
    return list(map_function(convert, payloads))


def _model_input_or_error(data: bytes, input_shape: tuple, parameters: dict, max_pixels: int, version: int):
    try:
        return to_model_input(data, input_shape, parameters, max_pixels, version=version)
    except Exception as error:  # Returned, not raised: one odd input must not cost its neighbours their results.
        return error


def _needed_size(source: tuple, target: tuple, policy: str) -> tuple:
    """The size (width, height) the upright source is resized to before padding or cropping."""
    (source_width, source_height), (width, height) = source, target
    if policy == "stretch":
        return width, height
    pick = min if policy == "pad" else max
    scale = pick(width / source_width, height / source_height)
    return max(1, round(source_width * scale)), max(1, round(source_height * scale))


def _factor(size: tuple, needed: tuple, margin: float = REDUCE_MARGIN) -> int:
    """The largest integer reduction that keeps `margin` source pixels per needed pixel on both axes."""
    return max(1, int(min(edge // (margin * want) for edge, want in zip(size, needed))))


def _on_fill(image: Image.Image, fill: tuple) -> Image.Image:
    """The image as mode L or RGB, transparent pixels showing the fill colour."""
    if image.mode in preprocessing.ALPHA_MODES or "transparency" in image.info:
        base = Image.new("RGBA", image.size, (*fill, 255))
        return Image.alpha_composite(base, image.convert("RGBA")).convert("RGB")
    return preprocessing.flattened(image)


def _grey(fill: tuple) -> int:
    return Image.new("RGB", (1, 1), fill).convert("L").getpixel((0, 0))


def _resized(image: Image.Image, target: tuple, policy: str, fill, needed: tuple) -> Image.Image:
    """The image resized to `target` by `policy`; `needed` is the size pad fits it to, from the source's own size (a
    reduced source rounds differently, which would move the picture's edge by a pixel)."""
    if image.size == target:
        return image  # already the model's size: passed through unchanged
    width, height = target
    if policy == "stretch":
        return image.resize(target, RESAMPLE)
    if policy == "crop":
        scale = max(width / image.width, height / image.height)
        # The centred part of the source that fills the target; clamped, as float rounding may put an edge a hair
        # outside the image.
        box_width, box_height = min(image.width, width / scale), min(image.height, height / scale)
        left, top = max(0.0, (image.width - box_width) / 2), max(0.0, (image.height - box_height) / 2)
        return image.resize(target, RESAMPLE, box=(left, top, left + box_width, top + box_height))
    size = needed
    canvas = Image.new(image.mode, target, fill)
    canvas.paste(image.resize(size, RESAMPLE), ((width - size[0]) // 2, (height - size[1]) // 2))
    return canvas
