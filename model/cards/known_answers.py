"""Defines the known-answer check against training/serving skew: a card carries a few small encoded reference images,
the hash of the model input each preprocesses to, and the probabilities the model gave them; every worker, after
loading the model and before reading any input, preprocesses and scores them again and refuses to go on if either
differs (another Pillow's or libjpeg's decoder, another TensorFlow, a broken worker image).
"""

import base64
import io

import numpy as np

from model.cards.card_spec import ModelSpec
from model.input_hashes import shape_and_pixels_sha256

# Largest difference in any probability from the card's that still counts as the same model: thread counts, CPU
# instruction sets and oneDNN's kernels move probabilities by ~1e-6; a different model or input scaling moves them by
# far more than this.
TOLERANCE = 1e-4


class KnownAnswerError(ValueError):
    """The references do not give here what they gave where the card was written."""


def reference_images(spec: ModelSpec) -> list:
    """[(what it is, encoded bytes)]: three small pictures that exercise the recipe's paths, rendered the same way
    wherever this runs: a PNG at 1.5 times the model's size, a JPEG big enough to be decoded at reduced scale and box
    reduced, and a PNG with transparency."""
    from PIL import Image

    height, width, _ = spec.input_shape
    pictures = []
    for name, scale, mode, kind in (("PNG", 1.5, "RGB", "PNG"), ("JPEG", 4.5, "RGB", "JPEG"),
                                    ("PNG with transparency", 1.0, "RGBA", "PNG")):
        size = (max(8, round(width * scale)), max(8, round(height * scale)))
        picture = Image.fromarray(_pattern(size, mode), mode)
        buffer = io.BytesIO()
        picture.save(buffer, kind, **({"quality": 80} if kind == "JPEG" else {"optimize": True}))
        pictures.append((name, buffer.getvalue()))
    return pictures


def _pattern(size: tuple, mode: str) -> np.ndarray:
    """Smooth colour gradients with a dark disc (off centre) on a light ground: compresses small, shows every channel."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    disc = ((u - 0.4) ** 2 + (v - 0.55) ** 2) < 0.08
    red, green, blue = 230 - 120 * u, 200 - 90 * v, 120 + 100 * u * v
    planes = [np.where(disc, 40 + 60 * v, channel) for channel in (red, green, blue)]
    if mode == "RGBA":
        planes.append(np.where(u > 0.8, 0, 255) + 0 * u)  # the right fifth transparent
    return np.clip(np.rint(np.stack(planes, axis=-1)), 0, 255).astype(np.uint8)


def make_references(spec: ModelSpec, preprocess, predict) -> list:
    """The card's known_answers: for each reference image, its bytes (base64), the hash of what `preprocess(bytes)`
    makes of it, and what `predict(pixels)` (N rows -> N probability rows) gives."""
    named = reference_images(spec)
    pixels = [preprocess(data) for _, data in named]
    probabilities = predict(np.stack(pixels))
    return [{"what": name, "image_base64": base64.b64encode(data).decode("ascii"),
             "input_sha256": shape_and_pixels_sha256(seen),
             "probabilities": [float(value) for value in row]}
            for (name, data), seen, row in zip(named, pixels, probabilities)]


def check(references: list, preprocess, predict, tolerance: float = TOLERANCE) -> None:
    """Preprocesses and scores the card's references; raises KnownAnswerError saying which differs and how (by more
    than `tolerance`: TOLERANCE, or a looser one for a runtime asked to compute in bfloat16)."""
    if not references:
        return
    pixels = []
    for number, reference in enumerate(references, 1):
        seen = preprocess(base64.b64decode(reference["image_base64"]))
        if shape_and_pixels_sha256(seen) != reference["input_sha256"]:
            raise KnownAnswerError(f"known-answer check failed: reference {number} ({reference['what']}) "
                                   "preprocesses to other pixels here than where the card was written (another "
                                   "Pillow or image decoder?); this worker would score differently from training")
        pixels.append(seen)
    found = predict(np.stack(pixels))
    expected = np.array([reference["probabilities"] for reference in references], dtype=np.float64)
    worst = float(np.abs(found - expected).max()) if found.shape == expected.shape else float("inf")
    if not worst <= max(tolerance, TOLERANCE):
        raise KnownAnswerError(f"known-answer check failed: the model's probabilities for the card's reference "
                               f"images differ from the card's by up to {worst:.2g} (allowed "
                               f"{max(tolerance, TOLERANCE):g}; another "
                               "TensorFlow, another input scaling, or a damaged worker image?)")
