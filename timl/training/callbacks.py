"""The Keras callbacks of a row's fit: epoch checkpoints, the best epoch's weights, NaN loss, per-epoch logging.

Checkpoints are plain arrays written aside and renamed (never half a file): after every epoch
``OUT/.backup/N/last.npz`` holds the model's and the optimizer's variables and every epoch's logs, and
``best.npz`` the best epoch's weights. Keras' ``BackupAndRestore`` and ``save_weights`` walk every layer (about
70 ms an epoch even for the demo's CNN); these take a few ms.

Importing this module imports Keras.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import zipfile
from pathlib import Path

import keras
import numpy as np

from timl import tracking
from timl.metric_names import DEV, epoch_series
from timl.errors import TrainingError

logger = logging.getLogger(__name__)


def write_npz(path: Path, arrays: dict) -> None:
    """Writes arrays aside, then renames: a kill or a full disk mid-write never leaves half a file under ``path``
    (the previous one stays, for ``--resume``).

    Raises:
        OSError: the write failed (the part written is removed); a full disk (ENOSPC) names ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}-partial.npz")
    try:
        with partial.open("wb") as file:
            np.savez(file, **arrays)
    except OSError as error:
        partial.unlink(missing_ok=True)
        if error.errno == errno.ENOSPC and error.filename is None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from error
        raise
    partial.replace(path)


class SetEpoch(keras.callbacks.Callback):
    """Sets the pipelines' epoch counter (:func:`timl.images.epoch_counter`) as each epoch begins, before its
    batches are drawn: the epoch's order and random views then depend on the seed and the epoch alone."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def on_epoch_begin(self, epoch, logs=None):
        self.counter.assign(epoch)


class RaiseOnNaN(keras.callbacks.Callback):
    """Ends the row with a clear error when the loss becomes NaN or infinite (Keras' TerminateOnNaN only stops)."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingError(f"The loss became {float(loss)} at batch {batch}. Lower the learning rate "
                                "(column lr), check the images and labels, or use another method.")


class EpochCheckpoint(keras.callbacks.Callback):
    """What resuming a row needs after each finished epoch: the model's and the optimizer's variables (random
    seed states and the optimizer's step count included) and every epoch's logs so far, in one file. A resumed
    row thus ends with the history of all its epochs, as if it had never stopped.

    Args:
        backup_dir: the row's checkpoint folder (``OUT/.backup/N``); the file is ``last.npz`` in it.
    """

    def __init__(self, backup_dir: Path):
        super().__init__()
        self.path = Path(backup_dir) / "last.npz"
        self.history: list[dict] = []  # one row per epoch done: {"epoch": N, "loss": ..., "val_loss": ...}

    def restore(self, model) -> int:
        """Loads the last checkpoint into ``model`` (built and compiled) and :attr:`history`; returns the
        number of epochs done, 0 if there is no usable checkpoint."""
        if not self.path.is_file():
            return 0
        try:
            with np.load(self.path) as saved:
                epochs = int(saved["epochs"])
                history = json.loads(str(saved["history"]))
                model_values = [saved[f"model_{index}"] for index in range(int(saved["model_count"]))]
                optimizer_values = [saved[f"optimizer_{index}"] for index in range(int(saved["optimizer_count"]))]
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            if len(model_values) != len(model.variables) or len(optimizer_values) != len(model.optimizer.variables):
                raise ValueError("the checkpoint holds another model's variables")
            for variable, value in zip(model.variables + model.optimizer.variables, model_values + optimizer_values):
                variable.assign(value)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            logger.warning("The checkpoint %s cannot be used (%s); training this row from its first epoch.",
                           self.path, error)
            return 0
        self.history = history
        logger.info("Resuming after epoch %d from %s", epochs, self.path)
        return epochs

    def on_epoch_end(self, epoch, logs=None):
        self.history.append({"epoch": epoch, **{key: float(value) for key, value in (logs or {}).items()}})
        model_values = [np.asarray(variable) for variable in self.model.variables]
        optimizer_values = [np.asarray(variable) for variable in self.model.optimizer.variables]
        write_npz(self.path, {"epochs": np.array(epoch + 1), "history": np.array(json.dumps(self.history)),
                              "model_count": np.array(len(model_values)),
                              "optimizer_count": np.array(len(optimizer_values)),
                              **{f"model_{index}": value for index, value in enumerate(model_values)},
                              **{f"optimizer_{index}": value for index, value in enumerate(optimizer_values)}})


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the best epoch by the method's quality metric (on dev); saved under backup_dir.

    Args:
        monitor: the history key to maximise (e.g. ``val_accuracy``); without it, val_accuracy, else -val_loss.
        backup_dir: the row's checkpoint folder; a resumed row finds its best epoch so far there.
    """

    def __init__(self, monitor: str, backup_dir: Path):
        super().__init__()
        self.monitor = monitor
        self.backup_dir = Path(backup_dir)
        self.best_value = -math.inf
        self.best_epoch = -1
        self.best_weights = None
        self.usable = True
        state = self.backup_dir / "best.json"
        if state.is_file():  # a resumed row: the best epoch so far survives the restart
            try:
                saved = json.loads(state.read_text())
                self.best_value, self.best_epoch = float(saved["value"]), int(saved["epoch"])
            except (OSError, ValueError, KeyError, TypeError) as error:
                logger.warning("The best-epoch record %s cannot be used (%s); the best epoch is picked from the "
                               "epochs trained from now on.", state, error)
                return
            self._read_best_weights()

    def _read_best_weights(self) -> None:
        """Reads the best epoch's weights of a resumed row; a missing, corrupt or truncated ``best.npz`` makes
        the row's checkpoint unusable (:attr:`usable`): its best epoch could no longer be the row's model."""
        path = self.backup_dir / "best.npz"
        try:
            with np.load(path) as saved:
                self.best_weights = [saved[f"arr_{index}"] for index in range(len(saved.files))]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            logger.warning("The best weights %s cannot be used (%s): its epoch %d would be the row's model; "
                           "training this row from its first epoch.", path, error, self.best_epoch + 1)
            self.usable = False
            self.forget()

    def forget(self) -> None:
        """Drops the best epoch of an earlier attempt: the row trains from its first epoch."""
        self.best_value, self.best_epoch, self.best_weights = -math.inf, -1, None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            value = logs.get(epoch_series("accuracy", DEV), -logs.get(epoch_series("loss", DEV), math.inf))
        if value is not None and float(value) > self.best_value:
            self.best_value, self.best_epoch = float(value), epoch
            self.best_weights = self.model.get_weights()
            # The in-memory copy as plain arrays (a few ms; Keras' save_weights walks every layer, ~0.1 s)
            write_npz(self.backup_dir / "best.npz", {f"arr_{index}": value
                                                     for index, value in enumerate(self.best_weights)})
            state = self.backup_dir / "best-partial.json"
            state.write_text(json.dumps({"value": self.best_value, "epoch": epoch}))
            state.replace(self.backup_dir / "best.json")

    def restore(self, model) -> None:
        """Sets the best epoch's weights on ``model`` (from memory, else from ``best.npz``)."""
        if self.best_weights is not None:
            model.set_weights(self.best_weights)
        elif (self.backup_dir / "best.npz").is_file():
            try:
                with np.load(self.backup_dir / "best.npz") as saved:
                    model.set_weights([saved[f"arr_{index}"] for index in range(len(saved.files))])
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
                logger.warning("The best weights %s cannot be used (%s); keeping the last epoch's weights.",
                               self.backup_dir / "best.npz", error)


class EpochLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics (loss, accuracy, val_*, learning rate) to the active run with step = epoch."""

    def on_epoch_end(self, epoch, logs=None):
        metrics = dict(logs or {})
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and "learning_rate" not in metrics:
            with contextlib.suppress(Exception):
                metrics["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        tracking.log_metrics(metrics, step=epoch)
