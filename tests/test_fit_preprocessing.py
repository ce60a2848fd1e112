"""Tests the `fit` recipe on real items rendered as colour photos: every policy gives the model's shape for sources of
any size and aspect, pad keeps the whole item on the fill colour, crop fills the frame, EXIF orientation and
transparency are honoured, and the reduced-scale path stays close to converting at full resolution."""

import io

import numpy as np
import pytest
from PIL import Image

from model.recipes import fit_preprocessing, preprocessing
from tests import samples

WHITE = [255, 255, 255]


def _encoded(image: Image.Image, kind: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def _parameters(resize: str, fill=WHITE) -> dict:
    return fit_preprocessing.checked_parameters({"resize": resize, "fill": fill})


@pytest.mark.parametrize("resize", fit_preprocessing.RESIZE_POLICIES)
def test_every_policy_gives_the_models_shape_from_any_source(resize, test_split):
    photo = samples.catalogue_photo(test_split.images[3], 3, tint=(0.9, 0.4, 0.2))
    for size in [(1, 1), (7, 300), (300, 7), (64, 64), (640, 480), (333, 1000), (1023, 1024)]:
        data = _encoded(photo.resize(size), "JPEG" if size[0] > 100 else "PNG")
        for shape in [(64, 64, 3), (48, 40, 3), (31, 57, 1)]:
            pixels = fit_preprocessing.to_model_input(data, shape, _parameters(resize))
            assert pixels.dtype == np.uint8 and pixels.shape == (shape[:2] if shape[2] == 1 else shape)


def test_pad_keeps_the_whole_picture_on_the_fill_colour_and_crop_fills_the_frame():
    wide = Image.new("RGB", (200, 100), (200, 30, 30))  # twice as wide as high, all red
    data = _encoded(wide)
    padded = fit_preprocessing.to_model_input(data, (64, 64, 3), _parameters("pad", [0, 0, 255]))
    assert (padded[:15] == [0, 0, 255]).all() and (padded[-15:] == [0, 0, 255]).all()  # bands above and below
    assert (padded[17:47] == [200, 30, 30]).all()  # the picture, whole, in the middle
    cropped = fit_preprocessing.to_model_input(data, (64, 64, 3), _parameters("crop", [0, 0, 255]))
    assert (cropped == [200, 30, 30]).all()


def test_a_native_sized_image_passes_unchanged():
    pixels = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    found = fit_preprocessing.to_model_input(_encoded(Image.fromarray(pixels)), (40, 48, 3), _parameters("pad"))
    assert np.array_equal(found, pixels)


def test_exif_orientation_and_transparency_are_honoured():
    tall = Image.new("RGB", (60, 120), (10, 200, 10))
    tall.paste((240, 10, 10), (0, 0, 60, 30))  # a red band on top
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: shown turned 90 degrees clockwise
    data = _encoded(tall, "JPEG", quality=95, exif=exif.tobytes())
    shown = fit_preprocessing.to_model_input(data, (32, 64, 3), _parameters("stretch"))
    assert shown[:, -4:, 0].mean() > 200 and shown[:, :4, 0].mean() < 60  # the red band is now on the right
    clear = Image.new("RGBA", (50, 50), (255, 0, 0, 0))  # fully transparent red
    filled = fit_preprocessing.to_model_input(_encoded(clear), (50, 50, 3), _parameters("pad", [0, 128, 0]))
    assert (filled == [0, 128, 0]).all()


@pytest.mark.parametrize("version", fit_preprocessing.VERSIONS)
def test_reduced_scale_conversion_stays_close_to_full_resolution(test_split, version):
    parameters = _parameters("pad")
    for index in range(12):
        photo = samples.large_catalogue_photo(test_split.images[index], index, tint=(0.8, 0.5, 0.3))
        data = _encoded(photo, "JPEG", quality=90)
        fast = fit_preprocessing.to_model_input(data, (64, 64, 3), parameters, version=version).astype(np.int16)
        full = fit_preprocessing.to_model_input(data, (64, 64, 3), parameters, full_resolution=True).astype(np.int16)
        assert np.abs(fast - full).mean() < 2.0


def test_each_version_decodes_as_it_always_did_and_cards_keep_theirs(test_split):
    """Version 2 decodes a photo between 1 and 1.5 times the input's size at half scale, version 1 at full scale; a
    card's version picks which, so a v1 model keeps the pixels its known answers were made with."""
    from model import recipes
    from model.cards import card_spec

    photo = samples.catalogue_photo(test_split.images[5], 5, tint=(0.3, 0.6, 0.9)).resize((600, 500))
    data = _encoded(photo, "JPEG", quality=92)  # shorter side 500: 2.2 times 224, under 1.5 x 2 = 3
    parameters = _parameters("crop")
    full = fit_preprocessing.to_model_input(data, (224, 224, 3), parameters, full_resolution=True)
    first = fit_preprocessing.to_model_input(data, (224, 224, 3), parameters, version=1)
    second = fit_preprocessing.to_model_input(data, (224, 224, 3), parameters, version=2)
    assert np.array_equal(first, full)  # v1 kept 1.5 times the size: 500 < 1.5 x 2 x 224, so no reduced decode
    assert not np.array_equal(second, full)  # v2 decoded at 250 x 300
    assert np.abs(second.astype(np.int16) - full).mean() < 1.0
    for version, expected in ((1, first), (2, second)):
        spec = card_spec.ModelSpec(class_names=("a", "b"), input_shape=(224, 224, 3), preprocessing="fit",
                                   preprocessing_version=version, parameters=card_spec.parameters_text(parameters))
        assert np.array_equal(recipes.to_model_input(spec, data), expected)
        assert np.array_equal(recipes.to_model_inputs(spec, [data])[0], expected)


def test_bad_parameters_and_bad_inputs_are_refused_with_reasons():
    with pytest.raises(ValueError, match="resize must be one of pad, crop, stretch"):
        fit_preprocessing.checked_parameters({"resize": "zoom"})
    with pytest.raises(ValueError, match="fill must be three whole numbers"):
        fit_preprocessing.checked_parameters({"fill": [1, 2]})
    with pytest.raises(ValueError, match="unknown fit parameter 'size'"):
        fit_preprocessing.checked_parameters({"size": 3})
    results = fit_preprocessing.to_model_inputs([b"", b"hello", _encoded(Image.new("RGB", (9, 9)))[:40]],
                                                (32, 32, 3), _parameters("pad"))
    assert [error.reason for error in results] == ["not an image", "not an image", "truncated"]
    assert all(isinstance(error, preprocessing.ImageDecodeError) for error in results)
