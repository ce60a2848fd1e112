"""Chooses the runtimes a card lists for its model: every installed runtime that can serve the model (for a Keras
model, through an ONNX copy Keras exports beside it) and gives the model's own answers, fastest first.

Each runtime is measured on the card's model call (median of MEASURED_CALLS calls of one probe block) and checked
against the model's own framework on the card's reference images and the probe block (max |dp| <= AGREEMENT). Another
runtime goes ahead of the model's own only when at least AHEAD times as fast, so a card does not flip on noise. A
runtime that cannot export, load or agree is left out with one line saying why.
"""

import contextlib
import io
import logging
import os
import warnings

import numpy as np

from model.cards.model_checks import ModelFileError
from model.runtimes import forward, onnx_checks, registry

AGREEMENT = 1e-5  # largest |dp| from the model's own framework for a runtime that gives its answers
BF16_AGREEMENT = 5e-2  # bfloat16 keeps 8 bits of mantissa: OpenVINO at bf16 answered the shipped model to 2e-2
AHEAD = 1.10
MEASURED_CALLS = 5


def agreement(precision: str) -> float:
    return BF16_AGREEMENT if precision == "bf16" else AGREEMENT


def cpu_name() -> str:
    """The CPU's model name as Linux reports it ('AMD EPYC 9B14'), or the machine's architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())[:120]
    except OSError:
        pass
    return os.uname().machine


def export_onnx(model, path: str) -> None:
    """Writes the ONNX copy of a Keras model by Keras's own export (model.export(format="onnx"), through tf2onnx), of
    the model as it is served: batch normalisation folded and augmentation dropped (folding)."""
    from model.runtimes.folding import fold_batch_norms

    served = fold_batch_norms(model)
    probe = np.zeros((1,) + tuple(served.input_shape[1:]), np.dtype(str(served.inputs[0].dtype)))
    served(probe, training=False)  # Keras exports only a model that has run
    temporary = f"{path}.{os.getpid()}.partial.onnx"
    try:
        # tf2onnx warns about numpy and Keras prints where it saved: neither is the user's business
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            logging.getLogger("tf2onnx").setLevel(logging.ERROR)
            served.export(temporary, format="onnx", verbose=False)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def choose(model_path: str, model, spec, wanted: str = "auto", precision: str = "f32", say=print) -> list:
    """The card's runtimes for `model` (loaded by its own runtime from `model_path`), as card entries, fastest first;
    the model's own runtime is always among them. `wanted` is auto or one runtime's name (then only it beside the
    model's own). A Keras model's ONNX copy is written beside it, and removed again when no runtime lists it."""
    own = registry.runtime_of(model)
    framework = own.framework
    # Another runtime serves the model's own file, or (a Keras model) the ONNX copy Keras exports.
    others = [runtime for runtime in registry.runtimes() if runtime is not own and wanted in ("auto", runtime.name)
              and runtime.framework in (framework, "onnx" if framework == "keras" else framework)]
    references = _reference_pixels(spec)
    expected = forward.served_predict(model, spec)(references)
    candidates = {own.name: (model, None, "f32")}
    copy_path = os.path.join(os.path.dirname(model_path), registry.copy_name(model_path, "onnx"))
    copied = None
    for runtime in others:
        if not runtime.installed():
            say(f"{runtime.name}: left out, not installed ({runtime.install_hint})")
            continue
        path = model_path
        if runtime.framework != framework:
            if copied is None:
                copied = _exported(model, copy_path, spec, say)
            if not copied:
                say(f"{runtime.name}: left out, the model has no ONNX copy")
                continue
            path = copy_path
        chosen_precision = precision if precision in runtime.precisions else "f32"
        try:
            served = runtime.load(runtime.check(path, spec), path, 0, chosen_precision)
        except ModelFileError as error:
            say(f"{runtime.name}: left out, {error}")
            continue
        candidates[runtime.name] = (served, path if path != model_path else None, chosen_precision)
    if not candidates.keys() - {own.name} and wanted not in ("auto", own.name):
        raise ModelFileError(f"--runtime {wanted} cannot serve this model (see above)")
    agreeing = {}
    for name, (served, path, chosen_precision) in candidates.items():
        found = forward.served_predict(served, spec)(references)
        worst = float(np.abs(found - expected).max())
        if not worst <= agreement(chosen_precision):
            say(f"{name}: left out, its probabilities differ from {own.name}'s by up to {worst:.2g} (allowed "
                f"{agreement(chosen_precision):g})")
            continue
        agreeing[name] = worst
    rates = forward.forward_cost({name: candidates[name][0] for name in agreeing}, repeat=MEASURED_CALLS, calls=1,
                                 spec=spec)
    order = sorted(agreeing, key=lambda name: -rates[name])
    ahead = [name for name in order if name != own.name and rates[name] >= AHEAD * rates[own.name]]
    order = ahead + [own.name] + [name for name in order if name not in ahead and name != own.name]
    if wanted not in ("auto", own.name) and wanted in order:
        order = [wanted] + [name for name in order if name != wanted]
    cpu = cpu_name()
    entries = []
    for name in order:
        served, path, chosen_precision = candidates[name]
        entry = {"runtime": name}
        if path is not None:
            entry.update(file=os.path.basename(path), sha256=registry.get(name).content_sha256(served))
        if chosen_precision != "f32":
            entry["precision"] = chosen_precision
        entry.update(images_per_second=round(rates[name]), max_abs_diff=float(f"{agreeing[name]:.3g}"),
                     version=registry.get(name).version(), cpu=cpu)
        entries.append(entry)
    if copied and not any(entry.get("file") == os.path.basename(copy_path) for entry in entries):
        os.remove(copy_path)
    return entries


def _exported(model, path: str, spec, say) -> bool:
    try:
        export_onnx(model, path)
        onnx_checks.check_against(path, spec)
    except ImportError as error:
        say(f"ONNX copy: not made, Keras's ONNX export needs {error.name or 'tf2onnx'} (pip install '.[onnx]')")
        return False
    except (ModelFileError, ValueError, RuntimeError, TypeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        say(f"ONNX copy: not made, Keras's export failed or was refused ({first[:300]})")
        if os.path.exists(path):
            os.remove(path)
        return False
    return True


def _reference_pixels(spec) -> np.ndarray:
    """The card's reference images, preprocessed, and one probe block: what each runtime's answers are checked on."""
    from model import recipes
    from model.cards import known_answers

    pictures = [recipes.to_model_input(spec, data) for _, data in known_answers.reference_images(spec)]
    return np.concatenate([np.stack(pictures), forward.probe_block(spec)])
