"""Trains a classifier on Fashion-MNIST and/or a user's own labelled images, resuming a killed run after its last
finished epoch, then exports the best epoch with its model card.

    python -m model.train --architecture cnn --epochs 15 --export model/artifacts/fashion_cnn.keras
    python -m model.train --train-dir my_photos --no-fashion-mnist --input-shape 64x64x3 --export my_model.keras

With Fashion-MNIST the model learns its ten classes from 28x28 grey images. Without it (--no-fashion-mnist), the
classes are the class folders' names, sorted (--classes a,b,c names them and their order), unless every folder is
named after a Fashion-MNIST class; a model of your own classes takes --input-shape (default 64x64x3) and reads
pictures through the fit recipe (--resize, --fill).
"""

import argparse
import dataclasses
import hashlib
import json
import os
import shlex
import sys

import numpy as np

from model.cards import card_flags, card_spec, model_checks
from model.cli_types import help_texts, positive_int
from model.display import visible
from model.recipes import fit_preprocessing
from model.runtimes import model_files, quiet
from model.training import data, own_images
from model.training.architecture_names import ARCHITECTURES, AUGMENTATIONS, DEFAULT_ARCHITECTURE, HAS_DROPOUT

# The forward cost in a card is measured against this architecture: the default model of card version 1.
REFERENCE_ARCHITECTURE = "cnn"
# The input of a model of the user's own classes when --input-shape does not say.
DEFAULT_OWN_INPUT_SHAPE = (64, 64, 3)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run trains; a resumed run must have the same config."""

    architecture: str = DEFAULT_ARCHITECTURE
    epochs: int = 15
    batch_size: int = 128
    validation_split: float = 0.1
    seed: int = 42
    augment: str = "none"  # see architecture_names.AUGMENTATIONS
    learning_rate: float = 1e-3
    label_smoothing: float = 0.0
    dropout_rate: float = None  # None: the architecture's own (0.3 in the CNNs' head; the MLP has none)
    calibrate: bool = False  # fit a temperature on the validation split and fold it into the exported model
    fashion_mnist: bool = True  # train on Fashion-MNIST's 60,000 images, before any of the user's own
    train_dirs: tuple = ()  # the user's class folders, absolute paths
    train_lists: tuple = ()  # the user's list files, absolute paths
    # What the model learns to take and give, as its card will say (card_spec.ModelSpec): Fashion-MNIST's by default.
    class_names: tuple = card_spec.FASHION_MNIST.class_names
    input_shape: tuple = card_spec.FASHION_MNIST.input_shape
    preprocessing: str = card_spec.FASHION_MNIST.preprocessing
    preprocessing_version: int = card_spec.FASHION_MNIST.preprocessing_version
    preprocessing_parameters: str = card_spec.FASHION_MNIST.parameters

    def spec(self) -> card_spec.ModelSpec:
        return card_spec.ModelSpec(class_names=tuple(self.class_names), input_shape=tuple(self.input_shape),
                                   preprocessing=self.preprocessing, preprocessing_version=self.preprocessing_version,
                                   parameters=self.preprocessing_parameters)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="fmnist-train", **help_texts(__doc__))
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default=TrainConfig.architecture,
                        help=f"default {DEFAULT_ARCHITECTURE}, the shipped model's (`make train-default` is its whole "
                             "recipe: augmentation, dropout, calibration, 76 epochs)")
    parser.add_argument("--epochs", type=positive_int, default=TrainConfig.epochs)
    parser.add_argument("--batch-size", type=positive_int, default=TrainConfig.batch_size)
    parser.add_argument("--validation-split", type=float, default=TrainConfig.validation_split,
                        help="fraction of the training images held out for validation (0 <= x < 1)")
    parser.add_argument("--learning-rate", type=float, default=TrainConfig.learning_rate,
                        help="Adam's starting rate; it decays along a cosine to zero by the last epoch")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--augment", nargs="?", const="full", default="none", choices=AUGMENTATIONS,
                        help="augment while training: full (random shift, rotation, zoom and flip; the default when "
                             "the flag has no value), shift-flip (shifts of up to 2 pixels and flips) or "
                             "shift-flip-erase (those, and a random rectangle set to the background in half the images)")
    parser.add_argument("--calibrate", action="store_true",
                        help="fit a temperature on the validation split and fold it into the exported model, so its "
                             "confidence matches its accuracy")
    parser.add_argument("--label-smoothing", type=float, default=TrainConfig.label_smoothing,
                        help="share of each target spread over the other classes (0 <= x < 1)")
    parser.add_argument("--dropout-rate", type=float, default=TrainConfig.dropout_rate,
                        help="dropout before and after the CNNs' dense layer (0 <= x < 1; default 0.3)")
    own_images.add_arguments(parser, "train")
    card_flags.add_arguments(parser, input_shape=True)
    own_images.add_arguments(parser, "eval", dataset=False)
    parser.add_argument("--run-dir", default=None,
                        help="checkpoints, history and state (default runs/ARCHITECTURE-SETTINGS: a folder named by "
                             "these flags' settings, so the same command resumes its run and other settings never "
                             "meet it)")
    parser.add_argument("--export", default=None, help="where to write the final .keras (default RUN_DIR/model.keras)")
    parser.add_argument("--verbose", default="auto",
                        help="Keras progress output: auto, 0, 1 or 2; 1 or 2 also show TensorFlow's start-up lines")
    args = parser.parse_args(argv)
    if not 0 <= args.validation_split < 1:
        parser.error("--validation-split must be at least 0 and below 1, e.g. 0.1")
    if not 0 <= args.label_smoothing < 1:
        parser.error("--label-smoothing must be at least 0 and below 1, e.g. 0.1")
    if args.dropout_rate is not None and not 0 <= args.dropout_rate < 1:
        parser.error("--dropout-rate must be at least 0 and below 1, e.g. 0.2")
    if args.dropout_rate is not None and args.architecture not in HAS_DROPOUT:
        parser.error(f"--dropout-rate: the {args.architecture} architecture has no dropout")
    own_images.check_arguments(parser, args, "train")
    return args


def training_spec(args) -> card_spec.ModelSpec:
    """What the model will take and give: Fashion-MNIST's classes and 28x28 grey input, unless the flags or the class
    folders name other classes, or --input-shape another input. Raises ValueError for flags that do not fit."""
    fashion = card_spec.FASHION_MNIST
    if args.classes is not None:
        classes = card_flags.class_names(args.classes)
    elif args.fashion_mnist or not args.folders:
        classes = fashion.class_names
    else:
        found = own_images.folder_classes(args.folders)
        classes = fashion.class_names if found and all(map(_names_fashion_class, found)) else found
        if len(classes) == 1:
            raise data.DatasetError(f"{visible(', '.join(args.folders))}: the class folders name one class "
                                    f"({visible(found[0])}); a model needs two or more: add a folder of images for "
                                    "each class")
    shape = args.input_shape
    if classes == fashion.class_names and shape in (None, fashion.input_shape):
        if args.resize is not None or args.fill is not None:
            raise ValueError("--resize and --fill set the fit recipe of a model of your own classes or input shape; "
                             "Fashion-MNIST's 28x28 grey model has its own preprocessing")
        return fashion
    if args.fashion_mnist:
        raise ValueError("with Fashion-MNIST the model learns its ten classes from 28x28 grey images; add "
                         "--no-fashion-mnist to train your own classes or input shape")
    model_checks.check_class_names(classes)
    return card_spec.ModelSpec(class_names=tuple(classes), input_shape=shape or DEFAULT_OWN_INPUT_SHAPE,
                               preprocessing=fit_preprocessing.NAME, preprocessing_version=fit_preprocessing.VERSION,
                               parameters=card_spec.parameters_text(card_flags.fit_parameters(args)))


def _names_fashion_class(folder_name: str) -> bool:
    try:
        card_spec.class_index(folder_name, card_spec.FASHION_MNIST.class_names)
    except ValueError:
        return False
    return True


def default_run_dir(config: TrainConfig) -> str:
    """runs/ARCHITECTURE-XXXXXXXX, the Xs the start of the settings' hash: one folder per set of settings."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(config), sort_keys=True).encode()).hexdigest()
    return os.path.join("runs", f"{config.architecture}-{digest[:8]}")


def config_from(args, spec: card_spec.ModelSpec = card_spec.FASHION_MNIST) -> TrainConfig:
    """The TrainConfig the parsed flags ask for, learning `spec`; the user's folders and lists by absolute path."""
    return TrainConfig(
        architecture=args.architecture, epochs=args.epochs, batch_size=args.batch_size,
        validation_split=args.validation_split, seed=args.seed, augment=args.augment, learning_rate=args.learning_rate,
        label_smoothing=args.label_smoothing, dropout_rate=args.dropout_rate, calibrate=args.calibrate,
        fashion_mnist=args.fashion_mnist, train_dirs=tuple(map(os.path.abspath, args.folders)),
        train_lists=tuple(map(os.path.abspath, args.lists)), class_names=spec.class_names,
        input_shape=spec.input_shape, preprocessing=spec.preprocessing,
        preprocessing_version=spec.preprocessing_version, preprocessing_parameters=spec.parameters,
    )


def split_train_validation(train: data.LabelledImages, fraction: float, seed: int):
    """Returns (train, validation) as a seeded random split, so a resumed run sees the same validation set."""
    order = np.random.default_rng(seed).permutation(len(train.labels))
    held_out = int(round(len(order) * fraction))
    val_idx, train_idx = np.sort(order[:held_out]), np.sort(order[held_out:])
    pick = lambda idx: data.LabelledImages(train.images[idx], train.labels[idx])
    return pick(train_idx), (pick(val_idx) if held_out else None)


def train(config: TrainConfig, training_data: list, run_dir: str, verbose="auto") -> dict:
    """Trains (or resumes) a run in run_dir on the labelled sets; returns its last commit: epochs done, history, the
    best checkpoint and its validation accuracy."""
    import keras

    from model.training import checkpoints

    everything = data.concatenate(training_data)
    train_set, validation_set = split_train_validation(everything, config.validation_split, config.seed)
    keras.utils.set_random_seed(config.seed)
    # The data's fingerprint is part of the settings, so a resumed run refuses images that changed in between.
    settings = {**dataclasses.asdict(config), "training_data_sha256": data.fingerprint(everything)}
    run = checkpoints.Run(run_dir, settings, monitor="val_accuracy" if validation_set else "accuracy")
    state = run.start_or_resume()
    if state["epochs_done"] >= config.epochs:
        print(f"{run_dir}: all {config.epochs} epochs already done; nothing to train")
        return state
    model = _build(config, len(train_set.labels))
    if state["epochs_done"]:
        # BackupAndRestore puts the weights, the optimizer's state and the epoch counter back as fit starts; the seed
        # moves on so the resumed epochs do not replay the first epochs' shuffles.
        print(f"{run_dir}: resuming after epoch {state['epochs_done']} of {config.epochs}")
        keras.utils.set_random_seed(config.seed + state["epochs_done"])
    targets = _targets(config)
    model.fit(
        train_set.images, targets(train_set.labels),
        validation_data=(validation_set.images, targets(validation_set.labels)) if validation_set else None,
        epochs=config.epochs, batch_size=config.batch_size, callbacks=run.callbacks(state),
        verbose=verbose if verbose == "auto" else int(verbose),
    )
    return checkpoints.read_state(run_dir)


def _build(config: TrainConfig, train_examples: int):
    """A new model compiled with Adam on a cosine schedule; resuming, BackupAndRestore puts back its weights and the
    optimizer's state."""
    import keras

    from model.training import architectures

    steps_per_epoch = -(-train_examples // config.batch_size)
    model = architectures.build(config.architecture, augment=config.augment, seed=config.seed,
                                dropout_rate=config.dropout_rate, spec=config.spec(), steps_per_epoch=steps_per_epoch)
    steps = config.epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=steps)
    loss = (keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing) if config.label_smoothing
            else "sparse_categorical_crossentropy")
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=["accuracy"])
    return model


def _targets(config: TrainConfig):
    """Labels as the loss takes them: class indices, or one-hot rows when label smoothing needs them."""
    if not config.label_smoothing:
        return lambda labels: labels
    return lambda labels: np.eye(len(config.class_names), dtype=np.float32)[labels]


def export(run_dir: str, export_path: str, config: TrainConfig, training_data: list, data_dir: str,
           command: str, test_data: list = ()) -> dict:
    """Saves the run's best checkpoint with its model card: the data it learnt from and its metrics on test_data
    (the user's held-out images) or, without them and when it learnt Fashion-MNIST, on the dataset's test split."""
    from model import evaluate
    from model.training import calibration, checkpoints

    state = checkpoints.read_state(run_dir)
    # Loaded without its optimizer: the shipped file needs only what scoring needs, at a third of the size. Through
    # the one checked loader, since a run folder can be resumed from anywhere.
    best = model_files.load_keras_file(checkpoints.best_path(run_dir, state), compile=False)
    temperature = None
    if config.calibrate:
        _, validation_set = split_train_validation(data.concatenate(training_data), config.validation_split,
                                                   config.seed)
        if validation_set is None:
            raise ValueError("--calibrate needs a validation split (--validation-split above 0)")
        temperature = calibration.fit_temperature(
            validation_set.labels, best.predict(validation_set.images, batch_size=1024, verbose=0))
        calibration.fold_temperature(best, temperature)
    spec = config.spec()
    fashion = spec == card_spec.FASHION_MNIST
    fields = {"name": f"{'fashion-mnist' if fashion else 'own'}-{config.architecture}",
              "architecture": config.architecture, "temperature": temperature,
              "test_metrics": None, "best_validation_accuracy": state["best_value"],
              "epochs_trained": state["epochs_done"],
              "training_seconds": state.get("training_seconds"),  # committed epochs' time (None: older runs)
              "forward_cost": measure_forward_cost(best, spec)}
    if not test_data and config.fashion_mnist:
        test_data = [data.load_split("test", data_dir)]
        fields["dataset_files"] = {name: data.file_sha256(os.path.join(data_dir, name))
                                   for pair in data.IDX_FILES.values() for name in pair}
    if test_data:
        fields["test_metrics"] = evaluate.card_metrics(best, spec, test_data)
        fields["test_data"] = [data.describe(part, spec.class_names) for part in test_data]
    fields["training_data"] = [data.describe(part, spec.class_names) for part in training_data]
    fields["training_command"] = command
    fields["training_config"] = dataclasses.asdict(config)
    return model_files.save(best, export_path, fields, spec)


def measure_forward_cost(model, spec: card_spec.ModelSpec = card_spec.FASHION_MNIST) -> dict:
    """The model's cost per image as the scorer serves it, beside the version-1 default architecture's (`cnn`, freshly
    built for the same input and classes: the cost does not depend on the weights' values), timed interleaved in one
    process at export."""
    from model.runtimes import forward
    from model.training import architectures

    repeat, calls = 5, 5
    reference = architectures.build(REFERENCE_ARCHITECTURE, spec=spec)
    rates = forward.forward_cost({"model": model, "reference": reference}, repeat, calls, spec=spec)
    return {"images_per_second": round(rates["model"]), "reference_architecture": REFERENCE_ARCHITECTURE,
            "reference_images_per_second": round(rates["reference"]),
            "relative_cost": round(rates["reference"] / rates["model"], 3),
            "rows_per_call": spec.model_call_rows, "cpus": len(os.sched_getaffinity(0)),
            "measured": f"at export, batch normalisation folded; median of {repeat} interleaved timings of {calls} "
                        "calls (bench/model_quality.py compares trained models more closely)"}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.verbose in ("1", "2"):
        os.environ[quiet.VERBOSE_ENV] = "1"
    try:
        spec = training_spec(args)
        config = config_from(args, spec)
        run_dir = args.run_dir or default_run_dir(config)
        export_path = args.export or os.path.join(run_dir, "model.keras")
        if spec != card_spec.FASHION_MNIST:
            print(f"learning {spec.num_classes} classes ({visible(', '.join(spec.class_names))}) from "
                  f"{'x'.join(map(str, spec.input_shape))} inputs made by the {spec.recipe} recipe "
                  f"({spec.recipe_parameters['resize']})")
        training_data = own_images.load_sources("train", args.data_dir, config.fashion_mnist, config.train_dirs,
                                                config.train_lists, spec=spec)
        test_data = own_images.load_sources("test", args.data_dir, False, args.eval_folders, args.eval_lists,
                                            spec=spec) if args.eval_folders or args.eval_lists else []
        own_images.report_skipped(training_data + test_data)
        print(f"run folder: {run_dir} (the same command resumes it)")
        with quiet.quiet_tensorflow_start_up():  # TensorFlow's start-up lines held back here, not amid training
            model_files.import_keras()
        state = train(config, training_data, run_dir, args.verbose)
        card = export(run_dir, export_path, config, training_data, args.data_dir,
                      "python -m model.train " + shlex.join(argv), test_data)
    except (data.DatasetError, model_files.ModelFileError, ValueError) as error:
        print(f"error: {visible(str(error))}", file=sys.stderr)
        return 2
    _write_curves(run_dir, state)
    if card["test_metrics"] is None:
        print("the card has no test metrics without Fashion-MNIST's test split or --eval-dir; measure the model on "
              f"test images of your own: python -m model.evaluate --model {export_path} --no-fashion-mnist "
              "--eval-dir DIR")
    print(json.dumps({"model": export_path, "test_metrics": card["test_metrics"], "epochs": state["epochs_done"]}))
    return 0


def _write_curves(run_dir: str, state: dict) -> None:
    """Draws the training curves beside the history when matplotlib (the `figures` extra) is installed."""
    try:
        from model.training import plots
    except ImportError:
        print("matplotlib is not installed; skipping training_curves.png (pip install '.[figures]')")
        return
    plots.training_curves(state["history"], os.path.join(run_dir, "training_curves.png"))


if __name__ == "__main__":
    sys.exit(main())
