"""Pruning from the epochs: a trial's fit reports a dev series going its objective's way
(``val_accuracy`` for ``dev/balanced_accuracy``, ``val_loss`` for ``dev/loss``) to the study after each epoch, and stops
after an epoch the study's pruner finds unpromising.

The callback opens the study from its storage URL and the trial's number (:class:`timl.search.trial.TrialRef`),
so any process that trains the trial (this one, a Ray worker) reports to the same study. A pruned trial keeps the
epochs it trained: its fit ends after the epoch, and the row is evaluated and recorded like any other, tagged
``timl.pruned`` with the epoch and why. The driver then tells the study the trial was PRUNED
(:mod:`timl.search.searches`).

Importing this module imports Keras.
"""

from __future__ import annotations

import logging

import keras

from timl import tracking
from timl.search.trial import TrialRef

logger = logging.getLogger(__name__)


class ReportToStudy(keras.callbacks.Callback):
    """Reports each epoch's dev series to the trial's study; stops the fit when the pruner says so.

    The series goes the objective's way (:meth:`timl.search.trial.TrialRef.series`); the trial run is tagged
    ``timl.pruning_series`` with its name at the first report.

    Args:
        trial: the trial being trained.
        quality_metric: the method's quality metric (``val_accuracy``) and its mode (``max``), reported when the
            fit logs no series for the objective and the metric goes the objective's way.
    """

    def __init__(self, trial: TrialRef, quality_metric: str, quality_mode: str = "max"):
        super().__init__()
        import optuna

        from timl.search.study import make_pruner, opened_storage

        self.ref = trial
        study = optuna.load_study(study_name=trial.study, storage=opened_storage(trial.storage),
                                  pruner=make_pruner(trial.pruner, trial.startup_trials))
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, trial.number)
        self.trial = optuna.trial.Trial(study, trial_id)
        self.quality = (quality_metric, quality_mode)
        self.reported = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        series = self.ref.series(logs, *self.quality)
        if series is None:
            return
        if self.reported != series:
            tracking.set_tags({tracking.TAG_PRUNING_SERIES: series})
            self.reported = series
        self.trial.report(float(logs[series]), epoch)
        if epoch + 1 < self.params.get("epochs", epoch + 2) and self.trial.should_prune():
            reason = (f"pruned after epoch {epoch} by the study's pruner: {series} {float(logs[series]):.4f} "
                      "was not promising against the earlier trials at that epoch")
            logger.info("trial %d %s", self.ref.number, reason)
            tracking.set_tags({tracking.TAG_PRUNED: reason})
            self.model.stop_training = True
