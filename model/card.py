"""Writes the model card beside a .keras file that any Keras 3 code saved, or a .onnx file that any framework exported
(PyTorch, JAX, scikit-learn, Keras), so the scorer can score it as it is.

    python -m model.card my_model.keras --classes shirt,shoe,bag --preprocessing fit --resize pad \\
        --input-range unit --outputs logits --version 1.0.0 --eval-dir held_out_photos
    python -m model.card resnet.onnx --classes classes.txt --resize crop --input-range unit \\
        --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --outputs logits

A Keras model is loaded in Keras's safe mode (a Lambda layer or a custom layer Keras does not know is refused, since
loading it would run the file's code); an ONNX model passes model.runtimes.onnx_checks first (external data only
from its own folder, standard operators only). Its input must be one fixed H x W x C image (C = 1 or 3; an ONNX
model's may be [batch, C, H, W], read from its shape, or as --layout says) and its output N values, one per class
named. The model's input is the recipe's uint8 pixels scaled to --input-range, then (x - mean) / std per channel
when --mean and --std are given. The card records what was declared, the content hash of the architecture and weights,
what a 1,024-row (or smaller, for big inputs) model call costs here and, with --eval-dir or --eval-list, the model's
accuracy on those labelled pictures (per class too), measured as the scorer serves it.
"""

import argparse
import dataclasses
import os
import sys

from model import recipes, writing
from model.cards import card_flags, card_spec
from model.cli_types import help_texts, positive_int
from model.recipes import fit_preprocessing
from model.runtimes import choosing, onnx_checks, quiet, registry
from model.training import own_images

EXIT_OK, EXIT_USAGE = 0, 2


class CardError(ValueError):
    """The model and what was declared about it do not fit; the message says what to change."""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m model.card", **help_texts(__doc__))
    parser.add_argument("model", help="a .keras file saved by Keras 3 (model.save('name.keras')), or a .onnx file")
    parser.add_argument("--preprocessing", default=fit_preprocessing.NAME, choices=[fit_preprocessing.NAME],
                        help="the recipe that turns image bytes into the model's input (default: %(default)s)")
    card_flags.add_arguments(parser, input_shape=True)
    own_images.add_arguments(parser, "eval", dataset=False)
    parser.add_argument("--input-range", default="uint8", choices=card_spec.INPUT_RANGES,
                        help="what the model takes: uint8 = 0-255 (it scales inside), unit = [0, 1], symmetric = "
                             "[-1, 1] (default: %(default)s)")
    parser.add_argument("--mean", type=card_flags.channel_values, default=None, metavar="R,G,B",
                        help="subtracted per channel after scaling to --input-range, e.g. 0.485,0.456,0.406 "
                             "(ImageNet's, with --input-range unit); one value for a grey model; give --std with it")
    parser.add_argument("--std", type=card_flags.channel_values, default=None, metavar="R,G,B",
                        help="divided by per channel after --mean, e.g. 0.229,0.224,0.225")
    parser.add_argument("--layout", default=None, choices=card_spec.LAYOUTS,
                        help="where an ONNX model's input has its channels: nchw = [batch, C, H, W], nhwc = "
                             "[batch, H, W, C], flat = rows of H*W*C values (row-major, channels last; a "
                             "scikit-learn model's, with --input-shape); read from the model's input shape when that "
                             "says (a Keras model takes nhwc)")
    parser.add_argument("--output-name", default=None, metavar="NAME",
                        help="the ONNX output that gives one value per class, where the model has several that could")
    parser.add_argument("--runtime", default="auto", choices=("auto", *registry.NAMES),
                        help="what serves the model: auto = every installed runtime that gives the model's own "
                             "answers, fastest first (a Keras model gets an ONNX copy beside it for the ONNX "
                             "runtimes); or one runtime, with the model's own behind it (default: %(default)s)")
    parser.add_argument("--precision", default="f32", choices=("f32", "bf16"),
                        help="bf16 lets OpenVINO compute in bfloat16 (faster where the CPU has it; probabilities "
                             "within 5e-2 of the model's own); f32 otherwise (default: %(default)s)")
    parser.add_argument("--runtimes-only", action="store_true",
                        help="keep the card beside the model as it is and choose its runtimes again (e.g. after "
                             "installing one, or on the machines that score)")
    parser.add_argument("--outputs", default="probabilities", choices=card_spec.OUTPUTS,
                        help="what the model gives: probabilities, or logits the scorer turns into probabilities "
                             "with a softmax (default: %(default)s)")
    parser.add_argument("--version", default="1.0.0", help="the model's version, in every score row (default: "
                                                             "%(default)s)")
    parser.add_argument("--repeat", type=positive_int, default=3, help="timings of the forward cost (median)")
    parser.add_argument("--force", action="store_true", help="replace a card already beside the model")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up lines")
    args = parser.parse_args(argv)
    if args.classes is None and not args.runtimes_only:
        parser.error("--classes is required: name the model's classes in output order, e.g. --classes cat,dog,bird")
    return args


def input_shape_of(model) -> tuple:
    """(H, W, C) of a model with one fixed image input of 1 or 3 channels (a grey model may take [H, W])."""
    if len(model.inputs) != 1:
        raise CardError(f"the model has {len(model.inputs)} inputs; the scorer feeds one image")
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3 or any(edge is None for edge in shape) or shape[2] not in (1, 3):
        raise CardError(f"the model's input is {list(shape)}; the scorer feeds one fixed H x W x C image with C = 1 "
                        "(grey) or 3 (RGB): rebuild it with keras.Input(shape=(H, W, C))")
    return shape


def make_card(model, spec: card_spec.ModelSpec, version: str, repeat: int, test_data: list = (),
              runtimes: list = None) -> dict:
    """The card's fields for a loaded model (as its own runtime loaded it) and what was declared about it, with its
    metrics on test_data (labelled sets) when given; raises CardError if they disagree."""
    from model import evaluate
    from model.cards import model_checks
    from model.runtimes import forward, model_files
    from model.training import data

    check_width(model, spec)
    forwards = forward.served_forward(model, spec)
    given = forwards(forward.probe_block(spec))
    if spec.outputs == "probabilities" and not _look_like_probabilities(given):
        raise CardError("the model's outputs are not probabilities (rows do not sum to 1, or values fall outside "
                        "[0, 1]); if it ends without a softmax, pass --outputs logits")
    own = registry.runtime_of(model)
    if runtimes:
        spec = dataclasses.replace(spec, runtime=runtimes[0]["runtime"])
    card = {**card_spec.card_fields(spec), "version": version, **model_files.described(model),
            "provenance": f"carded by model.card from a{'n ONNX' if own.framework == 'onnx' else ' Keras'} model "
                          "saved elsewhere",
            "test_metrics": evaluate.card_metrics(model, spec, test_data) if test_data else None,
            "known_answers": forward.known_answers(model, spec),
            "forward_cost": {"images_per_second": round(forward.forward_cost({"model": model}, repeat, spec=spec)[
                "model"]), "rows_per_call": spec.model_call_rows, "cpus": len(os.sched_getaffinity(0))}}
    if test_data:
        card["test_data"] = [data.describe(part, spec.class_names) for part in test_data]
    if runtimes:
        card["runtimes"] = runtimes
    model_checks.validate_card(card, "the new card")
    return card


def check_width(model, spec: card_spec.ModelSpec) -> None:
    """Raises CardError unless the model gives one value per class the card names."""
    from model.runtimes import model_files

    width = model_files.output_width(model)
    if width != spec.num_classes:
        raise CardError(f"the model gives {width if width else 'not one output of'} values per image, "
                        f"but --classes names {spec.num_classes}: name one class per output, in output order")


def _model_and_input(args) -> tuple:
    """(the model as its own runtime loads it, its input (H, W, C), its layout) for the file named: an ONNX model
    checked (and its output chosen), a Keras model loaded in safe mode."""
    from model.runtimes import model_files

    if registry.framework_of(args.model) == "onnx":
        checked = onnx_checks.check_file(args.model, args.output_name)
        input_shape, layout = onnx_checks.image_geometry(checked, args.layout, args.input_shape)
        return checked, input_shape, layout
    if args.layout not in (None, "nhwc"):
        raise CardError("a Keras model takes its input as nhwc ([batch, H, W, C]); leave out --layout")
    if args.output_name is not None:
        raise CardError("a Keras model has one output; leave out --output-name")
    with quiet.quiet_tensorflow_start_up():
        model = model_files.load_keras_file(args.model)
    return model, input_shape_of(model), "nhwc"


def _look_like_probabilities(values) -> bool:
    import numpy as np

    return bool(np.all(values >= -1e-6) and np.all(values <= 1 + 1e-6) and np.allclose(values.sum(axis=1), 1,
                                                                                        atol=1e-3))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.verbose:
        os.environ[quiet.VERBOSE_ENV] = "1"
    from model.cards import model_checks
    from model.display import visible
    from model.runtimes import model_files

    try:
        card_path = model_files.card_path_for(args.model)
        if args.runtimes_only:
            card = _with_runtimes_chosen_again(args)
            writing.write_json_atomically(card_path, card)
            print(f"wrote {card_path}: runtimes " + ", ".join(
                f"{entry['runtime']} {entry['images_per_second']:,} img/s" for entry in card["runtimes"]))
            return EXIT_OK
        if os.path.lexists(card_path) and not args.force:
            raise CardError(f"{card_path} already exists; pass --force to replace it")
        parameters = card_flags.fit_parameters(args)
        model, input_shape, layout = _model_and_input(args)
        model_checks.check_normalisation(args.mean, args.std, input_shape[2], "--mean and --std")
        own = registry.own_runtime(registry.framework_of(args.model))
        spec = card_spec.ModelSpec(class_names=card_flags.class_names(args.classes), input_shape=input_shape,
                                   input_range=args.input_range, outputs=args.outputs,
                                   preprocessing=args.preprocessing, preprocessing_version=fit_preprocessing.VERSION,
                                   parameters=card_spec.parameters_text(parameters), runtime=own.name,
                                   layout=layout, mean=tuple(args.mean or ()), std=tuple(args.std or ()),
                                   output_name=args.output_name)
        recipes.check(spec)
        if own.framework == "onnx":
            problems = onnx_checks.mismatches(model, spec)
            if problems:
                raise CardError("; ".join(problems))
            model = own.load(model, args.model)  # onnxruntime's refusal, in one line, before any picture is read
        test_data = own_images.load_sources("test", "", False, args.eval_folders, args.eval_lists,
                                            spec=spec) if args.eval_folders or args.eval_lists else []
        own_images.report_skipped(test_data)
        check_width(model, spec)  # before any runtime is measured
        runtimes = choosing.choose(args.model, model, spec, args.runtime, args.precision, say=_said)
        card = make_card(model, spec, args.version, args.repeat, test_data, runtimes)
    except (CardError, model_checks.ModelFileError, ValueError, OSError) as error:
        print(f"error: {visible(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    writing.write_json_atomically(card_path, card)
    print(f"wrote {card_path}: {own.framework} model on {', '.join(entry['runtime'] for entry in runtimes)}, "
          f"{spec.num_classes} classes, input "
          f"{'x'.join(map(str, spec.input_shape))} "
          f"({spec.input_range}), {spec.outputs}, {spec.recipe} {parameters['resize']}; "
          f"{card['forward_cost']['images_per_second']:,} img/s in {spec.model_call_rows}-row calls"
          + (f"; accuracy {card['test_metrics']['accuracy']:.4f} on {card['test_metrics']['examples']} held-out "
             "pictures" if card["test_metrics"] else ""))
    return EXIT_OK


def _said(line: str) -> None:
    from model.display import visible

    print(f"note: {visible(line)}", file=sys.stderr)


def _with_runtimes_chosen_again(args) -> dict:
    """The card beside args.model with its runtimes chosen again (choosing), everything else as it was."""
    from model.runtimes import model_files

    card = model_files.read_card(args.model)
    with quiet.quiet_tensorflow_start_up():
        loaded = model_files.load(args.model, runtime=registry.own_runtime(registry.framework_of(args.model)).name)
    runtimes = choosing.choose(args.model, loaded.model, loaded.spec, args.runtime, args.precision, say=_said)
    card = {**card, "runtimes": runtimes}
    if card.get("card_format", 1) >= 3:
        card.update(card_format=card_spec.CARD_FORMAT, runtime=runtimes[0]["runtime"])
    from model.cards import model_checks

    model_checks.validate_card(card, "the new card")
    return card


if __name__ == "__main__":
    sys.exit(main())
