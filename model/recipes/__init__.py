"""Defines the preprocessing recipes a model card may name, and the one call that runs a card's recipe: image bytes ->
uint8 pixels of the spec's pixel_shape, for training and scoring alike. A `spec` is a model.cards.card_spec.ModelSpec:
a card names its recipe, so the cards sit above the recipes and this package imports none of them."""

import json

from model import vocabulary
from model.recipes import fit_preprocessing, preprocessing

FMNIST_CATALOGUE = "fmnist-catalogue"
# {name: versions this code runs}. fmnist-catalogue v1 models are scored by v2 (vocabulary's compatibility note).
RECIPES = {FMNIST_CATALOGUE: (1, 2), fit_preprocessing.NAME: fit_preprocessing.VERSIONS}


def check(spec) -> None:
    """Raises ValueError unless this code runs the spec's recipe, with its parameters, for its input."""
    versions = RECIPES.get(spec.preprocessing)
    if versions is None:
        raise ValueError(f"unknown preprocessing {spec.preprocessing!r} (this code has {', '.join(RECIPES)})")
    if spec.preprocessing_version not in versions:
        raise ValueError(f"preprocessing {spec.recipe!r} is not one this code runs (it has "
                         f"{', '.join(f'{spec.preprocessing}-v{v}' for v in versions)})")
    if spec.preprocessing == FMNIST_CATALOGUE:
        if spec.input_shape != (*vocabulary.IMAGE_SHAPE, 1) or spec.recipe_parameters:
            raise ValueError(f"{FMNIST_CATALOGUE} makes 28x28 grey images and takes no parameters; this card "
                             f"asks for {list(spec.input_shape)} with {spec.parameters}")
    else:
        fit_preprocessing.checked_parameters(spec.recipe_parameters)


def to_model_input(spec, data: bytes, max_pixels: int = preprocessing.DEFAULT_MAX_PIXELS):
    """One image's bytes -> uint8 pixels of spec.pixel_shape, by the card's recipe (ImageDecodeError if it cannot)."""
    if spec.preprocessing == FMNIST_CATALOGUE:
        return preprocessing.to_model_input(data, max_pixels)
    return fit_preprocessing.to_model_input(data, spec.input_shape, _parameters(spec.parameters), max_pixels,
                                            version=spec.preprocessing_version)


def to_model_inputs(spec, payloads: list, max_pixels: int = preprocessing.DEFAULT_MAX_PIXELS,
                    map_function=map) -> list:
    """Many images -> for each, what to_model_input returns for it or the Exception it raised."""
    if spec.preprocessing == FMNIST_CATALOGUE:
        return preprocessing.to_model_inputs(payloads, max_pixels, map_function)
    return fit_preprocessing.to_model_inputs(payloads, spec.input_shape, _parameters(spec.parameters), max_pixels,
                                             map_function, version=spec.preprocessing_version)


_parsed = {}


def _parameters(text: str) -> dict:
    """The recipe's parameters with defaults, parsed once per process for each card's text."""
    if text not in _parsed:
        _parsed[text] = fit_preprocessing.checked_parameters(json.loads(text))
    return _parsed[text]
