"""Keeps a training run resumable with Keras' own callbacks, adding what they lack: a resumed run must have the same
settings, and each finished epoch is committed in state.json, which names the files that make up that epoch.

Keras writes the files: CSVLogger the history, ModelCheckpoint a best-epoch-NNNN.keras whenever the monitored value
improves, BackupAndRestore the weights with the optimizer's state and the epoch counter, which it puts back when fit
starts again. None of those writes is atomic, so a kill can leave a file torn or one epoch ahead of the others. The
commit is written atomically after all of them, and a resumed run first puts the folder back to what it names.
"""

import csv
import io
import json
import os
import re
import shutil
import time

import keras

from model.training.data import file_sha256
from model.writing import write_atomically, write_json_atomically

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
HISTORY_FILE = "history.csv"
BACKUP_DIR = "backup"
# What BackupAndRestore(double_checkpoint=True) keeps in its folder: each epoch it copies the pair it has to `.bkp`,
# then writes the weights (with the optimizer's state), then the epoch counter.
_BACKUP_WEIGHTS = "latest.weights.h5"
_BACKUP_EPOCH = "training_metadata.json"
_PREVIOUS = ".bkp"
_BEST = "best-epoch-{epoch:04d}.keras"  # ModelCheckpoint fills in the epoch, counted from 1
_BEST_NAME = re.compile(r"best-epoch-(\d+)\.keras")


def read_state(run_dir: str) -> dict:
    """A run's last commit: epochs done, the best checkpoint and its value, the optimizer's steps, the history."""
    with open(os.path.join(run_dir, STATE_FILE), encoding="utf-8") as stream:
        return json.load(stream)


def best_path(run_dir: str, state: dict) -> str:
    """The path of the run's best checkpoint, which carries its optimizer state."""
    if not state.get("best_checkpoint"):
        raise ValueError(f"{run_dir} has no best checkpoint: no epoch gave a {state.get('monitor')} value to keep")
    return os.path.join(run_dir, state["best_checkpoint"])


class Run:
    """One training run's folder: Keras' callbacks write its files, and each finished epoch is committed."""

    def __init__(self, run_dir: str, settings: dict, monitor: str):
        self.run_dir = run_dir
        self.settings = json.loads(json.dumps(settings))  # as config.json holds them: tuples become lists
        self.monitor = monitor

    def start_or_resume(self) -> dict:
        """Returns the last committed state with the folder put back to it; a new run starts with nothing done."""
        if os.path.isfile(self._path(STATE_FILE)):
            self._refuse_other_settings()
            state = read_state(self.run_dir)
        else:
            os.makedirs(self.run_dir, exist_ok=True)
            write_json_atomically(self._path(CONFIG_FILE), self.settings)
            state = {"epochs_done": 0, "monitor": self.monitor, "best_checkpoint": None, "best_value": None,
                     "training_seconds": 0.0, "history": {}}
        self._roll_back_to(state)
        return state

    def callbacks(self, state: dict) -> list:
        """Keras' callbacks for the run, in the order Keras calls them at an epoch's end: the commit comes last."""
        return [
            keras.callbacks.CSVLogger(self._path(HISTORY_FILE), append=True),
            keras.callbacks.ModelCheckpoint(self._path(_BEST), monitor=self.monitor, mode="max", save_best_only=True,
                                            initial_value_threshold=state["best_value"]),
            keras.callbacks.BackupAndRestore(self._path(BACKUP_DIR), double_checkpoint=True),
            _Commit(self, state.get("training_seconds", 0.0)),
        ]

    def commit(self, epochs_done: int, optimizer_steps: int, training_seconds: float) -> None:
        """Writes state.json for a finished epoch whose files are all written, then drops the best checkpoint it
        replaces. The best checkpoint is the newest one: ModelCheckpoint writes one only when the value improves."""
        history = _history_columns(self._path(HISTORY_FILE), epochs_done)
        best = self._best_files()
        best_epoch = max(best, default=None)
        state = {
            "epochs_done": epochs_done,
            "monitor": self.monitor,
            "best_checkpoint": best.get(best_epoch),
            "best_value": history[self.monitor][best_epoch - 1] if best_epoch else None,
            "optimizer_steps": optimizer_steps,
            "training_seconds": round(training_seconds, 1),
            "backup_sha256": file_sha256(self._path(BACKUP_DIR, _BACKUP_WEIGHTS)),
            "history": history,
        }
        write_json_atomically(self._path(STATE_FILE), state)
        self._remove_best_files(keep=state["best_checkpoint"])

    def _roll_back_to(self, state: dict) -> None:
        """Removes what came after the commit: history rows, best checkpoints and a newer or torn backup."""
        _keep_history_rows(self._path(HISTORY_FILE), state["epochs_done"])
        self._remove_best_files(keep=state["best_checkpoint"])
        if 0 < state["epochs_done"] < self.settings["epochs"]:
            self._restore_backup(state)
        else:
            # Nothing to resume: a backup here is a killed first epoch's, or a kill came as training ended.
            shutil.rmtree(self._path(BACKUP_DIR), ignore_errors=True)

    def _restore_backup(self, state: dict) -> None:
        """Makes the backup the committed epoch's. A kill while BackupAndRestore was writing the next epoch leaves its
        weights torn or newer than the commit; it had copied the committed pair to `.bkp` first, so that is put back,
        the epoch counter before the weights, because the weights' hash is what says the backup is the committed one."""
        weights = self._path(BACKUP_DIR, _BACKUP_WEIGHTS)
        if _sha256_or_none(weights) == state["backup_sha256"]:
            return
        for name in (_BACKUP_EPOCH, _BACKUP_WEIGHTS):
            if os.path.isfile(self._path(BACKUP_DIR, name + _PREVIOUS)):
                shutil.copyfile(self._path(BACKUP_DIR, name + _PREVIOUS), self._path(BACKUP_DIR, name))
        if _sha256_or_none(weights) != state["backup_sha256"]:
            raise ValueError(f"{self.run_dir}: the backup of epoch {state['epochs_done']} is missing or damaged; "
                             "use another --run-dir, or delete that folder to start over")

    def _refuse_other_settings(self) -> None:
        with open(self._path(CONFIG_FILE), encoding="utf-8") as stream:
            saved = json.load(stream)
        changed = sorted(k for k in set(saved) | set(self.settings) if saved.get(k) != self.settings.get(k))
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {self.settings.get(k)!r}" for k in changed)
            raise ValueError(
                f"{self.run_dir} holds a run trained with other settings ({details}); "
                "use another --run-dir, or delete that folder to start over"
            )

    def _best_files(self) -> dict:
        """{epoch: file name} of the best checkpoints in the folder."""
        matches = (_BEST_NAME.fullmatch(name) for name in os.listdir(self.run_dir))
        return {int(match.group(1)): match.group(0) for match in matches if match}

    def _remove_best_files(self, keep: str) -> None:
        for name in self._best_files().values():
            if name != keep:
                os.remove(self._path(name))

    def _path(self, *names: str) -> str:
        return os.path.join(self.run_dir, *names)


class _Commit(keras.callbacks.Callback):
    """Commits each finished epoch; listed after the callbacks that write the epoch's files. It also adds up the time
    spent in committed epochs (validation included), so a resumed run's total leaves out the work a kill threw away."""

    def __init__(self, run: Run, training_seconds: float):
        super().__init__()
        self.run = run
        self.training_seconds = training_seconds
        self.epoch_started = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.training_seconds += time.perf_counter() - self.epoch_started
        self.run.commit(epoch + 1, int(self.model.optimizer.iterations), self.training_seconds)


def _history_rows(path: str, epochs: int) -> tuple:
    """(header, rows) of a CSVLogger file, keeping the rows of the first `epochs` epochs (CSVLogger counts from 0)."""
    with open(path, newline="", encoding="utf-8") as stream:
        header, *rows = list(csv.reader(stream)) or [[]]
    return header, [row for row in rows if row and row[0].isdigit() and int(row[0]) < epochs]


def _history_columns(path: str, epochs: int) -> dict:
    """{metric: [value per epoch]} from a CSVLogger file, for the first `epochs` epochs. Without validation data
    CSVLogger still writes val_ columns, filled with NA; those are left out."""
    header, rows = _history_rows(path, epochs)
    columns = {key: [row[column] for row in rows] for column, key in enumerate(header) if key != "epoch"}
    return {key: [float(value) for value in values] for key, values in columns.items() if "NA" not in values}


def _keep_history_rows(path: str, epochs: int) -> None:
    """Cuts a CSVLogger file back to its first `epochs` rows (none: no file, so the next run writes its own header)."""
    if not os.path.isfile(path):
        return
    if not epochs:
        os.remove(path)
        return
    header, rows = _history_rows(path, epochs)
    text = io.StringIO(newline="")
    csv.writer(text).writerows([header] + rows)
    write_atomically(path, text.getvalue().encode("utf-8"))


def _sha256_or_none(path: str):
    return file_sha256(path) if os.path.isfile(path) else None
