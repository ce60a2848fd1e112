"""Trains a Fashion-MNIST classifier with per-epoch checkpoints and resume, then exports it with its model card.

    python -m model.train --architecture cnn --epochs 15 --export model/artifacts/fashion_cnn.keras
"""

import argparse
import dataclasses
import json
import os
import shlex
import sys

import numpy as np

from model import data, model_files
from model.cli_types import positive_int
from model.architectures import ARCHITECTURES
from model.vocabulary import DEFAULT_DATA_DIR, IDX_FILES


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run trains; a resumed run must have the same config."""

    architecture: str = "cnn"
    epochs: int = 15
    batch_size: int = 128
    validation_split: float = 0.1
    seed: int = 42
    augment: bool = False
    learning_rate: float = 1e-3


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="fmnist-train", description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default=TrainConfig.architecture)
    parser.add_argument("--epochs", type=positive_int, default=TrainConfig.epochs)
    parser.add_argument("--batch-size", type=positive_int, default=TrainConfig.batch_size)
    parser.add_argument("--validation-split", type=float, default=TrainConfig.validation_split,
                        help="fraction of the 60,000 training images held out for validation (0 <= x < 1)")
    parser.add_argument("--learning-rate", type=float, default=TrainConfig.learning_rate,
                        help="Adam's starting rate; it decays along a cosine to zero by the last epoch")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--augment", action="store_true", help="random shift, rotation, zoom and flip while training")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="folder with the four Fashion-MNIST IDX files")
    parser.add_argument("--run-dir", default=None, help="checkpoints, history and state (default runs/ARCHITECTURE)")
    parser.add_argument("--export", default=None, help="where to write the final .keras (default RUN_DIR/model.keras)")
    parser.add_argument("--verbose", default="auto", help="Keras progress output: auto, 0, 1 or 2")
    args = parser.parse_args(argv)
    if not 0 <= args.validation_split < 1:
        parser.error("--validation-split must be at least 0 and below 1, e.g. 0.1")
    return args


def split_train_validation(train: data.LabelledImages, fraction: float, seed: int):
    """Returns (train, validation) as a seeded random split, so a resumed run sees the same validation set."""
    order = np.random.default_rng(seed).permutation(len(train.labels))
    held_out = int(round(len(order) * fraction))
    val_idx, train_idx = np.sort(order[:held_out]), np.sort(order[held_out:])
    pick = lambda idx: data.LabelledImages(train.images[idx], train.labels[idx])
    return pick(train_idx), (pick(val_idx) if held_out else None)


def train(config: TrainConfig, data_dir: str, run_dir: str, verbose="auto") -> dict:
    """Trains (or resumes) a run in run_dir; returns its state: epochs done, history, best validation accuracy."""
    import keras

    from model import checkpoints

    train_set, validation_set = split_train_validation(
        data.load_split("train", data_dir), config.validation_split, config.seed)
    keras.utils.set_random_seed(config.seed)
    run = checkpoints.Run(run_dir, dataclasses.asdict(config))
    model, state = run.resume_or_start(lambda: _build(config, len(train_set.labels)))
    if state["epochs_done"] >= config.epochs:
        print(f"{run_dir}: all {config.epochs} epochs already done; nothing to train")
        return state
    if state["epochs_done"]:
        print(f"{run_dir}: resuming after epoch {state['epochs_done']} of {config.epochs}")
        keras.utils.set_random_seed(config.seed + state["epochs_done"])
    model.fit(
        train_set.images, train_set.labels,
        validation_data=(validation_set.images, validation_set.labels) if validation_set else None,
        epochs=config.epochs, initial_epoch=state["epochs_done"], batch_size=config.batch_size,
        callbacks=run.callbacks(monitor="val_accuracy" if validation_set else "accuracy"),
        verbose=verbose if verbose == "auto" else int(verbose),
    )
    return run.read_state()


def _build(config: TrainConfig, train_examples: int):
    """A new model compiled with Adam on a cosine schedule; a resumed run gets both back from its checkpoint."""
    import keras

    from model import architectures

    model = architectures.build(config.architecture, augment=config.augment, seed=config.seed)
    steps = config.epochs * -(-train_examples // config.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def export(run_dir: str, export_path: str, config: TrainConfig, data_dir: str, command: str) -> dict:
    """Evaluates the run's best checkpoint on the test split and saves it with its model card."""
    import keras

    from model import checkpoints, evaluate

    # Loaded without its optimizer: the shipped file needs only what scoring needs, at a third of the size.
    best = keras.saving.load_model(checkpoints.best_path(run_dir), compile=False, safe_mode=True)
    test_set = data.load_split("test", data_dir)
    scores = evaluate.metrics(test_set.labels, best.predict(test_set.images, batch_size=1024, verbose=0))
    state = checkpoints.Run.read_state_of(run_dir)
    card = model_files.save(best, export_path, {
        "name": f"fashion-mnist-{config.architecture}",
        "architecture": config.architecture,
        "test_metrics": {"loss": round(scores["loss"], 6), "accuracy": round(scores["accuracy"], 6),
                         "examples": scores["examples"]},
        "best_validation_accuracy": state.get("best_value"),
        "epochs_trained": state["epochs_done"],
        "dataset_files": {name: data.file_sha256(os.path.join(data_dir, name))
                          for pair in IDX_FILES.values() for name in pair},
        "training_command": command,
        "training_config": dataclasses.asdict(config),
    })
    return card


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    config = TrainConfig(args.architecture, args.epochs, args.batch_size, args.validation_split, args.seed, args.augment,
                         args.learning_rate)
    run_dir = args.run_dir or os.path.join("runs", config.architecture)
    export_path = args.export or os.path.join(run_dir, "model.keras")
    try:
        state = train(config, args.data_dir, run_dir, args.verbose)
        card = export(run_dir, export_path, config, args.data_dir, "python -m model.train " + shlex.join(argv))
    except (data.DatasetError, model_files.ModelFileError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _write_curves(run_dir, state)
    print(json.dumps({"model": export_path, "test_metrics": card["test_metrics"], "epochs": state["epochs_done"]}))
    return 0


def _write_curves(run_dir: str, state: dict) -> None:
    """Draws the training curves beside the history when matplotlib (the `figures` extra) is installed."""
    try:
        from model import plots
    except ImportError:
        print("matplotlib is not installed; skipping training_curves.png (pip install '.[figures]')")
        return
    plots.training_curves(state["history"], os.path.join(run_dir, "training_curves.png"))


if __name__ == "__main__":
    sys.exit(main())
