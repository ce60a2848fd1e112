"""Defines the model's forward pass as the scorer calls it, whichever runtime serves it (registry: fixed-row blocks of
uint8 pixels, scaled, normalised and turned into probabilities as the card says), where it runs, and what it costs,
so a model card can say what a model costs per image beside what it is worth."""

import statistics
import time

import numpy as np

from model.cards.card_spec import FASHION_MNIST, ModelSpec
from model.runtimes import registry

# Every model call gets exactly a model's spec.model_call_rows rows (the last block padded), so a record's
# probabilities never depend on how the runner happened to batch it with others: oneDNN may pick other kernels for
# other batch shapes. For 28x28 grey that is 1,024 rows, which scored 8% faster than 256 on one core here (10,100
# against 9,300 img/s) and no slower on two; bigger inputs get fewer rows (card_spec.MODEL_CALL_VALUES).


def served_forward(model, spec: ModelSpec = FASHION_MNIST):
    """The forward pass exactly as the scorer serves it, one fixed block of uint8 pixels -> numpy probabilities, by
    the runtime that loaded `model` (for a Keras model: batch normalisation folded, then one compiled graph)."""
    return registry.runtime_of(model).forward(model, spec)


def served_forward_checked(model, spec: ModelSpec, references: list, tolerance: float):
    """The served forward pass, checked against a card's known answers (model.cards.known_answers.check, which raises
    KnownAnswerError): the first of its runtime's forward passes that passes them (for a Keras model: batch norms
    folded, then as loaded), or the first one's error. With no references, served_forward (checked by itself)."""
    from model import recipes
    from model.cards import known_answers as references_check

    if not references:
        return served_forward(model, spec)
    first_error = None
    for call_block in registry.runtime_of(model).checked_forwards(model, spec):
        try:
            references_check.check(references, lambda data: recipes.to_model_input(spec, data),
                                   lambda pixels: predict_fixed_rows(call_block, pixels, spec.model_call_rows),
                                   tolerance)
            return call_block
        except references_check.KnownAnswerError as error:
            first_error = first_error or error
    raise first_error


def device(model) -> str:
    """Where `model` scores in this process: 'CPU', or the GPU ('GPU:0 NAME')."""
    return registry.runtime_of(model).device(model)


def served_predict(model, spec: ModelSpec = FASHION_MNIST):
    """pixels (N, *spec.pixel_shape) uint8 -> float32 (N, classes) probabilities, as the scorer computes them: the
    served forward pass over fixed-row blocks. Evaluating a model this way measures what scoring gives."""
    call_block = served_forward(model, spec)
    return lambda pixels: predict_fixed_rows(call_block, pixels, spec.model_call_rows)


def known_answers(model, spec: ModelSpec) -> list:
    """The card's known answers of a model (model.cards.known_answers), as the scorer serves it: the card's recipe,
    then the served forward pass."""
    from model import recipes
    from model.cards import known_answers as references

    return references.make_references(spec, lambda data: recipes.to_model_input(spec, data),
                                      served_predict(model, spec))


def probe_block(spec: ModelSpec = FASHION_MNIST) -> np.ndarray:
    """One fixed block of random pixels, a model call's worth."""
    return np.random.default_rng(0).integers(0, 256, size=(spec.model_call_rows,) + spec.pixel_shape, dtype=np.uint8)


def predict_fixed_rows(call_block, pixels: np.ndarray, rows: int) -> np.ndarray:
    """Runs call_block (e.g. a served forward pass) over blocks of exactly `rows` rows of pixels (the model's
    spec.model_call_rows, the last block padded); returns float32 (len(pixels), number of classes)."""
    count = len(pixels)
    padded = -count % rows
    if padded:
        pixels = np.concatenate([pixels, np.zeros((padded,) + pixels.shape[1:], dtype=pixels.dtype)])
    blocks = [call_block(pixels[start:start + rows]) for start in range(0, len(pixels), rows)]
    return np.concatenate(blocks)[:count].astype(np.float32, copy=False)


def forward_cost(models: dict, repeat: int = 5, calls: int = 10, spec: ModelSpec = FASHION_MNIST) -> dict:
    """{name: median images a second} of each model's served forward pass on one fixed random block, the models timed
    in turn `repeat` times (interleaved, so all of them see the same machine), each timing `calls` calls."""
    forwards = {name: served_forward(model, spec) for name, model in models.items()}
    block = probe_block(spec)
    for forward in forwards.values():
        forward(block)  # traced, and its kernels chosen, before timing
    rates = {name: [] for name in forwards}
    for _ in range(repeat):
        for name, forward in forwards.items():
            started = time.perf_counter()
            for _ in range(calls):
                forward(block)
            rates[name].append(calls * len(block) / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in rates.items()}
