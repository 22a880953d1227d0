"""The fit (the third stage of a row's flow): a row's model fitted on its images (:func:`fit_images`), and the
loop every fit shares (:func:`fit_loop`: callbacks, resuming from a checkpoint, what comes out: :class:`Trained`).

Rows that train a head on cached activations build their head and pipelines in :mod:`timl.training.activations`
and fit it with the same loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import time
from typing import Iterator

import numpy as np

from timl import tracking
from timl.training.data import RowData
from timl.training.plan import RowPlan

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Trained:
    """A fitted model with the best epoch's weights, every epoch's logs, and when and how long it trained."""

    model: object  # keras.Model
    history: object  # pandas DataFrame, one row per epoch
    best_epoch: int
    seconds: float
    started: str
    predictions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # split -> probabilities, when
    # already known (a head on cached activations)
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # logged with the final metrics (the
    # calibration's temperatures and scores before it: timl.training.calibrate)


@contextlib.contextmanager
def timed() -> Iterator[dict]:
    """Measures wall time: ``with timed() as t: ...; t["seconds"]``."""
    box = {"start": time.time()}
    try:
        yield box
    finally:
        box["seconds"] = time.time() - box["start"]


def sample_weights(labels: np.ndarray, weights: dict[int, float]) -> np.ndarray:
    """Per-image weights from class weights: the largest weight of the image's classes, 1.0 for no class."""
    table = np.array([weights[index] for index in range(labels.shape[1])], dtype=np.float32)
    positive = labels > 0.5
    weighted = np.where(positive, table[None, :], 0.0).max(axis=1)
    return np.where(positive.any(axis=1), weighted, 1.0).astype(np.float32)


def _fit_inputs(plan: RowPlan, data: RowData, epoch=None):
    """The train and dev tf.data pipelines of a row (class weights as per-image sample weights); ``epoch`` (an
    :func:`timl.images.epoch_counter`) keys the train order and views to the epoch."""
    from timl import images

    config, dataset = plan.config, data.dataset
    weights = dataset.class_weights(config.classweights) if config.classweights == "compute" else None
    train_labels = dataset.labels("train")
    train_data = images.make_dataset(data.arrays["train"], train_labels, batch_size=config.batchsize,
                                     augmentation=config.imgaug, shuffle=True, seed=config.seed,
                                     sample_weights=sample_weights(train_labels, weights) if weights else None,
                                     epoch=epoch)
    dev_data = images.make_dataset(data.arrays["dev"], dataset.labels("dev"), batch_size=config.batchsize)
    return train_data, dev_data


def fit_images(plan: RowPlan, data: RowData, weights: str) -> Trained:
    """Builds the row's model and fits it on its decoded images, continuing after the last epoch of a checkpoint.

    Args:
        plan: the row (``freeze=backbone``: only the head trains; 2 or more ``gpus``: on every device of the
            process, :func:`timl.training.devices.strategy_for`).
        data: its data, decoded.
        weights: the initial weights, resolved (:func:`timl.training.plan.resolve_weights`).

    Returns:
        The fitted model with the best epoch's weights and every epoch's logs.
    """
    import keras

    from timl import images, models
    from timl.training import devices

    config = plan.config
    keras.utils.set_random_seed(config.seed)
    strategy = devices.strategy_for(plan.gpus)
    tracking.log_params({"replicas": strategy.num_replicas_in_sync if strategy is not None else 1})
    with devices.scope(strategy):
        model = models.create_model(plan.spec, len(data.dataset.class_names), config.imgsize, weights=weights,
                                    lr=config.lr, seed=config.seed, freeze_backbone=config.freeze == "backbone")
    epoch = images.epoch_counter()
    train_data, dev_data = _fit_inputs(plan, data, epoch)
    return fit_loop(plan, model, train_data, dev_data, strategy=strategy, epoch_counter=epoch)


def fit_loop(plan: RowPlan, model, train_data, dev_data, *, strategy=None, epoch_counter=None) -> Trained:
    """Fits a built, compiled model, continuing after the last epoch of a checkpoint in the row's folder.

    Args:
        plan: the row (epochs; its method's quality metric and extra callbacks; its checkpoint folder, kept: the
            row removes it once it is recorded).
        model: the model, built (and compiled) inside ``strategy``'s scope when there is one.
        train_data, dev_data: tf.data pipelines of (inputs, labels[, weights]) batches.
        strategy: the MirroredStrategy the model was built under, or None.
        epoch_counter: the train pipeline's :func:`timl.images.epoch_counter`, set as each epoch begins.

    Returns:
        The fitted model (with the best epoch's weights; as one device runs it) and every epoch's logs.
    """
    import pandas as pd

    from timl import models
    from timl.training import devices
    from timl.training.callbacks import BestWeights, EpochCheckpoint, EpochLogger, RaiseOnNaN, SetEpoch

    spec, checkpoint_dir = plan.spec, plan.checkpoint_dir
    checkpoint = EpochCheckpoint(checkpoint_dir)
    best = BestWeights(spec.quality_metric, checkpoint_dir)  # first: unusable best weights train the row afresh
    with devices.scope(strategy):
        first_epoch = checkpoint.restore(model) if best.usable else 0
    if first_epoch:
        tracking.set_tags({tracking.TAG_RESUMED_AT: first_epoch})
        _log_earlier_epochs(checkpoint.history)
    else:  # trained afresh: no best epoch of an earlier attempt
        best.forget()
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    with timed() as timer:
        model.fit(train_data, validation_data=dev_data, epochs=plan.config.epochs, initial_epoch=first_epoch,
                  callbacks=[*([SetEpoch(epoch_counter)] if epoch_counter is not None else []), checkpoint, best,
                             RaiseOnNaN(), EpochLogger(), *models.method_callbacks(spec), *_trial_callbacks(plan)],
                  shuffle=False, verbose=2)
    best.restore(model)
    model = devices.undistributed(model, strategy)
    # the checkpoint stays until the row is recorded (train_row removes it): a kill during the evaluation then
    # resumes after the last epoch instead of training the row again
    history = pd.DataFrame(checkpoint.history)  # every epoch's logs, those before a resume included
    return Trained(model, history, best.best_epoch, timer["seconds"], started)


def _trial_callbacks(plan: RowPlan) -> list:
    """A trial of a search reports each epoch to its study and stops when pruned (:mod:`timl.search.pruning`)."""
    trial = plan.config.trial
    if trial is None or not trial.prune:
        return []
    from timl.search.pruning import ReportToStudy

    return [ReportToStudy(trial, plan.spec.quality_metric, plan.spec.quality_mode)]


def _log_earlier_epochs(history: list[dict]) -> None:
    """Logs the epochs a checkpoint holds that the active run lacks: all of them in a new run (``--resume``),
    those an earlier attempt did not log in the same run (a cluster task retried after its worker died)."""
    logged = tracking.logged_steps(tracking.active_run_id(), "loss")
    for logs in history:
        if logs["epoch"] not in logged:
            tracking.log_metrics({key: value for key, value in logs.items() if key != "epoch"}, step=logs["epoch"])
