"""The fit of a row's model: its callbacks, resuming from a checkpoint, and what comes out (:class:`Trained`).

Shared by rows that train a whole model on images (:mod:`timl.training.row`) and rows that train a head on
cached activations (:mod:`timl.training.activations`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from timl import tracking
from timl.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Trained:
    """A fitted model with the best epoch's weights, every epoch's logs, and when and how long it trained."""

    model: object
    history: "object"  # pandas DataFrame, one row per epoch
    best_epoch: int
    seconds: float
    started: str
    predictions: dict = dataclasses.field(default_factory=dict)  # split -> probabilities, when already known


@contextlib.contextmanager
def timed() -> Iterator[dict]:
    """Measures wall time: ``with timed() as t: ...; t["seconds"]``."""
    box = {"start": time.time()}
    try:
        yield box
    finally:
        box["seconds"] = time.time() - box["start"]


def resolve_weights(config) -> str:
    """The row's ``weights`` cell: default, imagenet, none, or the path of a weights file (beside the table).

    Raises:
        ConfigError: a weights file that does not exist.
    """
    from timl.models import WEIGHTS_CHOICES

    if config.weights in WEIGHTS_CHOICES:
        return config.weights
    path = config.resolve_path(config.weights)
    if not path.is_file():
        raise ConfigError(f"{config.table_path}, row {config.row}: weights file not found. "
                          f"Received: weights={config.weights!r}")
    return str(path)


def sample_weights(labels: np.ndarray, weights: dict[int, float]) -> np.ndarray:
    """Per-image weights from class weights: the largest weight of the image's classes, 1.0 for no class."""
    table = np.array([weights[index] for index in range(labels.shape[1])], dtype=np.float32)
    positive = labels > 0.5
    weighted = np.where(positive, table[None, :], 0.0).max(axis=1)
    return np.where(positive.any(axis=1), weighted, 1.0).astype(np.float32)


def fit_loop(config, spec, model, train_data, dev_data, checkpoint_dir: Path, *, strategy=None,
             epoch_counter=None) -> Trained:
    """Fits a built, compiled model, continuing after the last epoch of a checkpoint in ``checkpoint_dir``.

    Args:
        config: the row.
        spec: its method (quality metric, extra callbacks).
        model: the model, built (and compiled) inside ``strategy``'s scope when there is one.
        train_data, dev_data: tf.data pipelines of (inputs, labels[, weights]) batches.
        checkpoint_dir: the row's checkpoint folder (kept: the caller removes it once the row is recorded).
        strategy: the MirroredStrategy the model was built under, or None.
        epoch_counter: the train pipeline's :func:`timl.images.epoch_counter`, set as each epoch begins.

    Returns:
        The fitted model (with the best epoch's weights; as one device runs it) and every epoch's logs.
    """
    import pandas as pd

    from timl import models
    from timl.training import devices
    from timl.training.callbacks import BestWeights, EpochCheckpoint, EpochLogger, RaiseOnNaN, SetEpoch

    checkpoint = EpochCheckpoint(checkpoint_dir)
    with devices.scope(strategy):
        first_epoch = checkpoint.restore(model)
    if first_epoch:
        tracking.set_tags({tracking.TAG_RESUMED_AT: first_epoch})
        _log_earlier_epochs(checkpoint.history)
    best = BestWeights(spec.quality_metric, checkpoint_dir)
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    with timed() as timer:
        model.fit(train_data, validation_data=dev_data, epochs=config.epochs, initial_epoch=first_epoch,
                  callbacks=[*([SetEpoch(epoch_counter)] if epoch_counter is not None else []), checkpoint, best,
                             RaiseOnNaN(), EpochLogger(), *models.method_callbacks(spec)],
                  shuffle=False, verbose=2)
    best.restore(model)
    model = devices.undistributed(model, strategy)
    # the checkpoint stays until the row is recorded (train_row removes it): a kill during the evaluation then
    # resumes after the last epoch instead of training the row again
    history = pd.DataFrame(checkpoint.history)  # every epoch's logs, those before a resume included
    return Trained(model, history, best.best_epoch, timer["seconds"], started)


def _log_earlier_epochs(history: list[dict]) -> None:
    """Logs the epochs a checkpoint holds that the active run lacks: all of them in a new run (``--resume``),
    those an earlier attempt did not log in the same run (a cluster task retried after its worker died)."""
    logged = tracking.logged_steps(tracking.active_run_id(), "loss")
    for logs in history:
        if logs["epoch"] not in logged:
            tracking.log_metrics({key: value for key, value in logs.items() if key != "epoch"}, step=logs["epoch"])
