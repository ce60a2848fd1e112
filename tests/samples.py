"""Renders real Fashion-MNIST images as the files users score, for the tests, the benchmarks and sample_inputs/: PNGs,
catalogue-style photos and TFRecords."""

import io
import os

import numpy as np
from PIL import Image

from model.vocabulary import CLASS_NAMES, RECORD_KEY_FILENAME, RECORD_KEY_IMAGE, RECORD_KEY_LABEL

# A garment colour: channel factors applied to the item's ink, so the photo's background stays white.
CATALOGUE_TINT = (1.0, 0.85, 0.6)
WHITE = (255, 255, 255)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def write_pngs(images: np.ndarray, folder: str, names) -> list:
    """Writes uint8[N, 28, 28] images as grey PNGs named by `names`; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for image, name in zip(images, names):
        path = os.path.join(folder, name)
        with open(path, "wb") as stream:
            stream.write(png_bytes(image))
        paths.append(path)
    return paths


def catalogue_photo(item: np.ndarray, index: int, tint=CATALOGUE_TINT) -> Image.Image:
    """Renders a 28x28 item as a shop photo: coloured ink on white, ten times larger, off-centre in a wide frame."""
    ink = np.rint(item[..., None] * np.asarray(tint)).astype(np.uint8)
    large = Image.fromarray(255 - ink, "RGB").resize((280, 280), Image.Resampling.BICUBIC)
    left, top, right, bottom = 20 + 7 * (index % 5), 10 + 11 * (index % 4), 60 + 13 * (index % 3), 30 + 5 * (index % 6)
    photo = Image.new("RGB", (280 + left + right, 280 + top + bottom), WHITE)
    photo.paste(large, (left, top))
    return photo


def example_bytes(image_value: bytes, filename: str = None, label: int = None,
                  feature_name: str = RECORD_KEY_IMAGE) -> bytes:
    """A serialized tf.train.Example with the image bytes (encoded, or raw pixels under RECORD_KEY_RAW_PIXELS), and
    optionally the file name and label."""
    import tensorflow as tf

    feature = {feature_name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_value]))}
    if filename is not None:
        name = filename if isinstance(filename, bytes) else filename.encode()
        feature[RECORD_KEY_FILENAME] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[name]))
    if label is not None:
        feature[RECORD_KEY_LABEL] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecord(path: str, serialized_examples) -> str:
    import tensorflow as tf

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for record in serialized_examples:
            writer.write(record)
    return path


def file_name(index: int, label: int, suffix: str = ".png") -> str:
    """test-00042-ankle-boot.png: the test-set index and class, readable and unique."""
    slug = CLASS_NAMES[label].lower().replace("/", "-").replace(" ", "-")
    return f"test-{index:05d}-{slug}{suffix}"


# A shop's catalogue photo as a camera takes it: portrait, 1200 wide and 1600 high.
LARGE_PHOTO_SIZE = (1200, 1600)


def large_catalogue_photo(item: np.ndarray, index: int, tint=CATALOGUE_TINT) -> Image.Image:
    """Renders a 28x28 item as a full-size catalogue photo: the item 700-1000 px high, off-centre on white, 1200x1600.

    Saved as JPEG (quality 90) these are ~56 KiB each, like the product photos a shop's nightly folder holds.
    """
    edge = 700 + (index * 37) % 301  # the item's height, spread over 700-1000 px by the index
    ink = np.rint(item[..., None] * np.asarray(tint)).astype(np.uint8)
    large = Image.fromarray(255 - ink, "RGB").resize((edge, edge), Image.Resampling.BICUBIC)
    width, height = LARGE_PHOTO_SIZE
    left = (width - edge) // 2 + (index * 53) % 101 - 50
    top = (height - edge) // 2 + (index * 71) % 201 - 100
    photo = Image.new("RGB", LARGE_PHOTO_SIZE, WHITE)
    photo.paste(large, (left, top))
    return photo


SHAPES = ("circle", "square", "triangle")


def shape_picture(shape: str, rng: np.random.Generator) -> Image.Image:
    """A colour picture of one shape (circle, square or triangle): random size of picture and shape, position, colours
    and a little noise, so that only the shape tells the class."""
    from PIL import ImageDraw

    size = int(rng.integers(56, 121))
    background = tuple(int(v) for v in rng.integers(0, 256, 3))
    colour = tuple((b + int(rng.integers(80, 176))) % 256 for b in background)  # far from the background
    noise = rng.normal(0, 6, (size, size, 3))
    picture = Image.fromarray(np.clip(np.full((size, size, 3), background) + noise, 0, 255).astype(np.uint8))
    edge = size * rng.uniform(0.45, 0.8)
    left, top = (rng.uniform(0.05 * size, size - edge - 0.05 * size) for _ in range(2))
    box = (left, top, left + edge, top + edge)
    draw = ImageDraw.Draw(picture)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(left + edge / 2, top), (left, top + edge), (left + edge, top + edge)], fill=colour)
    return picture


def write_shapes(folder: str, per_class: int, seed: int) -> list:
    """A labelled folder of shape pictures: one sub-folder per shape, alternately JPEG and PNG; returns the paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for shape in SHAPES:
        os.makedirs(os.path.join(folder, shape), exist_ok=True)
        for index in range(per_class):
            path = os.path.join(folder, shape, f"{shape}-{index:03d}" + (".jpg" if index % 2 else ".png"))
            shape_picture(shape, rng).save(path, quality=90)
            paths.append(path)
    return paths
