"""Tests the training CLI: a killed run resumes from its last finished epoch with its optimizer state."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import pytest

from model import checkpoints, train
from tests.helpers import REPO_ROOT


def _train_command(data_dir, run_dir, epochs):
    return [sys.executable, "-m", "model.train", "--architecture", "mlp", "--epochs", str(epochs), "--batch-size", "100",
            "--validation-split", "0.1", "--data-dir", data_dir, "--run-dir", run_dir, "--verbose", "2"]


def _epochs_done(run_dir):
    try:
        with open(os.path.join(run_dir, "state.json")) as stream:
            return json.load(stream)["epochs_done"]
    except (OSError, ValueError):
        return 0


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
    state = checkpoints.Run.read_state_of(run_dir)
    assert state["epochs_done"] == 40
    assert len(state["history"]["accuracy"]) == 40 and len(state["history"]["val_accuracy"]) == 40
    # The second run trained only the missing epochs (Keras prints one line per epoch it runs).
    assert second.stdout.count("Epoch ") == 40 - killed_at
    # The optimizer continued rather than restarting: its step count covers all 40 epochs (2,700 images / 100).
    final = keras.saving.load_model(os.path.join(run_dir, state["checkpoint"]), compile=True)
    assert int(final.optimizer.iterations.numpy()) == 40 * 27
    assert sorted(os.listdir(run_dir)) == sorted(
        ["best.keras", "config.json", "state.json", "history.csv", state["checkpoint"], "model.keras", "model.json",
         "training_curves.png"])


def test_resume_with_other_settings_is_refused(small_data_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    assert train.main(["--architecture", "mlp", "--epochs", "1", "--data-dir", small_data_dir, "--run-dir", run_dir,
                       "--verbose", "0"]) == 0
    with pytest.raises(ValueError, match=r"other settings \(batch_size: 128 -> 32\)"):
        train.train(train.TrainConfig(architecture="mlp", epochs=1, batch_size=32), small_data_dir, run_dir, verbose=0)


def test_finished_run_is_not_trained_again(small_data_dir, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    arguments = ["--architecture", "mlp", "--epochs", "1", "--data-dir", small_data_dir, "--run-dir", run_dir,
                 "--verbose", "0"]
    assert train.main(arguments) == 0
    assert train.main(arguments) == 0
    assert "all 1 epochs already done" in capsys.readouterr().out


def test_bad_flags_fail_fast(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--validation-split", "1.5"])
    assert "--validation-split must be" in capsys.readouterr().err
    assert train.main(["--data-dir", str(tmp_path), "--run-dir", str(tmp_path / "r")]) == 2
    assert "apt-get install -y dataset-fashion-mnist" in capsys.readouterr().err
