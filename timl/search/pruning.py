"""Pruning from the epochs: a trial's fit reports its dev objective to the study after each epoch, and stops
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
from timl.metric_names import DEV, epoch_series, summary_group
from timl.search.trial import TrialRef

logger = logging.getLogger(__name__)


class ReportToStudy(keras.callbacks.Callback):
    """Reports each epoch's dev objective to the trial's study; stops the fit when the pruner says so.

    Args:
        trial: the trial being trained.
        fallback: the Keras series reported when the fit logs none for the objective (the method's quality
            metric, ``val_accuracy``).
    """

    def __init__(self, trial: TrialRef, fallback: str):
        super().__init__()
        import optuna

        from timl.search.study import make_pruner

        self.ref = trial
        study = optuna.load_study(study_name=trial.study, storage=trial.storage,
                                  pruner=make_pruner(trial.pruner, trial.startup_trials))
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, trial.number)
        self.trial = optuna.trial.Trial(study, trial_id)
        self.fallback = fallback

    def series(self, logs: dict) -> str:
        """The series reported: ``val_NAME`` for an objective ``dev/NAME`` when logged, else the fallback."""
        name = self.ref.objective.split("/", 1)[-1]
        if self.ref.objective.startswith(summary_group(DEV)) and epoch_series(name, DEV) in logs:
            return epoch_series(name, DEV)
        return self.fallback

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        series = self.series(logs)
        if series not in logs:
            return
        self.trial.report(float(logs[series]), epoch)
        if epoch + 1 < self.params.get("epochs", epoch + 2) and self.trial.should_prune():
            reason = (f"pruned after epoch {epoch} by the study's pruner: {series} {float(logs[series]):.4f} "
                      "was not promising against the earlier trials at that epoch")
            logger.info("trial %d %s", self.ref.number, reason)
            tracking.set_tags({tracking.TAG_PRUNED: reason})
            self.model.stop_training = True
