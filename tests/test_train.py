"""Tests the training CLI: a killed run resumes from its last finished epoch with its optimizer state, and a run
folder with other settings is refused."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import pytest

from model import train
from model.training import checkpoints, data
from model.vocabulary import CLASS_NAMES
from tests.helpers import REPO_ROOT


def _train_command(data_dir, run_dir, epochs):
    return [sys.executable, "-m", "model.train", "--architecture", "mlp", "--epochs", str(epochs),
            "--batch-size", "100", "--validation-split", "0.1", "--data-dir", data_dir, "--run-dir", run_dir,
            "--verbose", "2"]


def _epochs_done(run_dir):
    try:
        with open(os.path.join(run_dir, "state.json")) as stream:
            return json.load(stream)["epochs_done"]
    except (OSError, ValueError):
        return 0


def _history_epochs(run_dir):
    """The epoch column of the run's history.csv (CSVLogger counts epochs from 0)."""
    with open(os.path.join(run_dir, "history.csv"), newline="") as stream:
        return [int(row["epoch"]) for row in csv.DictReader(stream)]


def test_killed_run_resumes_from_last_finished_epoch(small_data_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    command = _train_command(small_data_dir, run_dir, epochs=40)
    first = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _epochs_done(run_dir) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    killed_at = _epochs_done(run_dir)
    assert 2 <= killed_at < 40, "the first run should be killed part-way through"

    second = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"resuming after epoch {killed_at} of 40" in second.stdout
    state = checkpoints.read_state(run_dir)
    assert state["epochs_done"] == 40
    assert len(state["history"]["accuracy"]) == 40 and len(state["history"]["val_accuracy"]) == 40
    assert _history_epochs(run_dir) == list(range(40))  # one row per epoch: none lost, none repeated
    # The second run trained only the missing epochs (Keras prints one line per epoch it runs).
    assert second.stdout.count("Epoch ") == 40 - killed_at
    # The optimizer continued rather than restarting: its step count covers all 40 epochs (2,700 images / 100), and
    # the best checkpoint Keras saved carries the steps of the epochs before it.
    assert state["optimizer_steps"] == 40 * 27
    best_epoch = int(re.fullmatch(r"best-epoch-(\d+)\.keras", state["best_checkpoint"]).group(1))
    assert state["best_value"] == max(state["history"]["val_accuracy"][:best_epoch])
    best = keras.saving.load_model(os.path.join(run_dir, state["best_checkpoint"]), compile=True)
    assert int(best.optimizer.iterations.numpy()) == best_epoch * 27
    # BackupAndRestore removed its backup when training ended.
    assert sorted(os.listdir(run_dir)) == sorted(
        ["config.json", "state.json", "history.csv", state["best_checkpoint"], "model.keras", "model.json",
         "training_curves.png"])


def test_epoch_written_but_not_committed_is_rolled_back(small_data_dir, tmp_path, monkeypatch, capsys):
    """A kill after Keras wrote epoch 2's files (history row, backup, maybe a best checkpoint) but before the commit,
    with the backup's weights torn on top: the run goes on after epoch 1 from the copy BackupAndRestore kept."""
    run_dir = tmp_path / "run"
    arguments = ["--architecture", "mlp", "--epochs", "3", "--batch-size", "100", "--data-dir", small_data_dir,
                 "--run-dir", str(run_dir), "--verbose", "0"]
    commit = checkpoints.Run.commit

    def commit_until_epoch_2(run, epochs_done, optimizer_steps, training_seconds):
        if epochs_done == 2:
            raise KeyboardInterrupt  # stands for the kill
        commit(run, epochs_done, optimizer_steps, training_seconds)

    monkeypatch.setattr(checkpoints.Run, "commit", commit_until_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train.main(arguments)
    monkeypatch.undo()
    first_epoch = checkpoints.read_state(run_dir)
    assert first_epoch["epochs_done"] == 1 and _history_epochs(run_dir) == [0, 1]
    weights = run_dir / "backup" / "latest.weights.h5"
    weights.write_bytes(weights.read_bytes()[:4096])

    assert train.main(arguments) == 0
    assert f"{run_dir}: resuming after epoch 1 of 3" in capsys.readouterr().out
    state = checkpoints.read_state(run_dir)
    assert state["epochs_done"] == 3 and state["optimizer_steps"] == 3 * 27
    # The time of the epoch the kill threw away is not counted; the resumed epochs add to the first one's.
    assert 0 < first_epoch["training_seconds"] < state["training_seconds"]
    assert _history_epochs(run_dir) == [0, 1, 2] and len(state["history"]["val_loss"]) == 3
    assert [name for name in os.listdir(run_dir) if name.startswith("best-")] == [state["best_checkpoint"]]


def test_resume_with_other_settings_is_refused(small_data_dir, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    arguments = ["--architecture", "mlp", "--epochs", "1", "--data-dir", small_data_dir, "--run-dir", run_dir,
                 "--verbose", "0"]
    assert train.main(arguments) == 0
    capsys.readouterr()
    assert train.main(arguments + ["--batch-size", "32"]) == 2
    assert capsys.readouterr().err == (
        f"error: {run_dir} holds a run trained with other settings (batch_size: 128 -> 32); "
        "use another --run-dir, or delete that folder to start over\n")


def test_finished_run_is_not_trained_again(small_data_dir, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    arguments = ["--architecture", "mlp", "--epochs", "1", "--data-dir", small_data_dir, "--run-dir", run_dir,
                 "--verbose", "0"]
    assert train.main(arguments) == 0
    assert train.main(arguments) == 0
    assert f"{run_dir}: all 1 epochs already done; nothing to train" in capsys.readouterr().out


def test_bad_flags_fail_fast(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--validation-split", "1.5"])
    assert "--validation-split must be" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--no-fashion-mnist"])
    assert capsys.readouterr().err.endswith(
        "error: --no-fashion-mnist needs --train-dir or --train-list with your own images\n")
    assert train.main(["--data-dir", str(tmp_path), "--run-dir", str(tmp_path / "r")]) == 2
    assert "apt-get install -y dataset-fashion-mnist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--label-smoothing", "1"])
    assert "--label-smoothing must be" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--augment", "sideways"])
    assert "invalid choice: 'sideways'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--dropout-rate", "1"])
    assert capsys.readouterr().err.endswith("error: --dropout-rate must be at least 0 and below 1, e.g. 0.2\n")
    with pytest.raises(SystemExit):
        train.main(["--architecture", "mlp", "--dropout-rate", "0.1"])
    assert capsys.readouterr().err.endswith("error: --dropout-rate: the mlp architecture has no dropout\n")


def test_smoothed_augmented_run_exports_a_calibrated_model(small_data_dir, tmp_path):
    import json

    from model import evaluate
    from model.runtimes import model_files

    export = str(tmp_path / "calibrated.keras")
    assert train.main(["--architecture", "mlp", "--epochs", "2", "--batch-size", "64", "--data-dir", small_data_dir,
                       "--run-dir", str(tmp_path / "run"), "--export", export, "--verbose", "0",
                       "--augment", "shift-flip", "--label-smoothing", "0.1", "--calibrate"]) == 0
    card = json.load(open(model_files.card_path_for(export)))
    assert card["training_config"]["augment"] == "shift-flip" and card["training_config"]["label_smoothing"] == 0.1
    assert 0.25 < card["temperature"] < 8 and card["temperature"] != pytest.approx(1.0, abs=1e-3)
    metrics = card["test_metrics"]
    assert 0 <= metrics["ece"] < 0.1 and set(metrics["per_class_accuracy"]) == set(CLASS_NAMES)
    test = data.load_split("test", small_data_dir)
    probabilities = model_files.load(export).model.predict(test.images, verbose=0)
    assert metrics["ece"] == pytest.approx(evaluate.expected_calibration_error(test.labels, probabilities), abs=1e-6)
