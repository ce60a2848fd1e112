"""Keeps a training run resumable: a checkpoint every epoch, the best one by a metric, and the run's state and history."""

import csv
import json
import os

import keras

from model.model_files import write_json_atomically

_STATE = "state.json"
_CONFIG = "config.json"
_BEST = "best.keras"


def best_path(run_dir: str) -> str:
    return os.path.join(run_dir, _BEST)


def load_checkpoint(path: str):
    """Loads a checkpoint with its optimizer state, in safe mode."""
    return keras.saving.load_model(path, compile=True, safe_mode=True)


class Run:
    """One training run's folder. state.json is written last each epoch, so it always names a complete checkpoint."""

    def __init__(self, run_dir: str, config: dict):
        self.run_dir = run_dir
        self.config = config
        self.state = {"epochs_done": 0, "checkpoint": None, "best_value": None, "monitor": None, "history": {}}

    @staticmethod
    def read_state_of(run_dir: str) -> dict:
        with open(os.path.join(run_dir, _STATE), encoding="utf-8") as stream:
            return json.load(stream)

    def read_state(self) -> dict:
        return self.read_state_of(self.run_dir)

    def resume_or_start(self, build_model):
        """Returns (model, state): the last finished epoch's model and optimizer if the run exists, else a new model."""
        if not os.path.exists(os.path.join(self.run_dir, _STATE)):
            os.makedirs(self.run_dir, exist_ok=True)
            write_json_atomically(os.path.join(self.run_dir, _CONFIG), self.config)
            return build_model(), dict(self.state)
        with open(os.path.join(self.run_dir, _CONFIG), encoding="utf-8") as stream:
            saved = json.load(stream)
        changed = sorted(k for k in set(saved) | set(self.config) if saved.get(k) != self.config.get(k))
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {self.config.get(k)!r}" for k in changed)
            raise ValueError(
                f"{self.run_dir} holds a run trained with other settings ({details}); "
                "use another --run-dir, or delete that folder to start over"
            )
        self.state = self.read_state()
        return load_checkpoint(os.path.join(self.run_dir, self.state["checkpoint"])), dict(self.state)

    def callbacks(self, monitor: str) -> list:
        return [_EpochEnd(self, monitor)]

    def record_epoch(self, model, epoch: int, logs: dict, monitor: str) -> None:
        """Saves this epoch's checkpoint (and best), then commits state.json, then drops the previous checkpoint."""
        name = f"epoch-{epoch + 1:04d}.keras"
        model.save(os.path.join(self.run_dir, name))
        value = float(logs[monitor])
        if self.state["best_value"] is None or value > self.state["best_value"]:
            model.save(os.path.join(self.run_dir, _BEST + ".tmp.keras"))
            os.replace(os.path.join(self.run_dir, _BEST + ".tmp.keras"), best_path(self.run_dir))
            self.state["best_value"] = value
        previous = self.state["checkpoint"]
        for key, metric in logs.items():
            self.state["history"].setdefault(key, []).append(float(metric))
        self.state.update(epochs_done=epoch + 1, checkpoint=name, monitor=monitor)
        write_json_atomically(os.path.join(self.run_dir, _STATE), self.state)
        _write_history_csv(os.path.join(self.run_dir, "history.csv"), self.state["history"])
        if previous and previous != name:
            os.remove(os.path.join(self.run_dir, previous))


class _EpochEnd(keras.callbacks.Callback):
    def __init__(self, run: Run, monitor: str):
        super().__init__()
        self.run = run
        self.monitor = monitor

    def on_epoch_end(self, epoch, logs=None):
        self.run.record_epoch(self.model, epoch, logs or {}, self.monitor)


def _write_history_csv(path: str, history: dict) -> None:
    keys = sorted(history)
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["epoch"] + keys)
        for epoch in range(len(history[keys[0]]) if keys else 0):
            writer.writerow([epoch + 1] + [history[k][epoch] for k in keys])
