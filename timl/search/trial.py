"""A trial of a search, as the row it trains knows it: which study, which trial, and what it reports per epoch.

A :class:`TrialRef` travels with the trial's :class:`timl.config.RunConfig` (its ``trial``), so whichever process
trains the trial (this one, a Ray worker) reaches the study's storage and reports to it
(:mod:`timl.search.pruning`). It holds text and numbers only: it pickles and crosses to a cluster.
"""

from __future__ import annotations

import dataclasses

from timl import tracking
from timl.metric_names import DEFAULT_SELECT_BY, DEV, epoch_series


@dataclasses.dataclass(frozen=True)
class TrialRef:
    """One trial of a search.

    Attributes:
        number: the trial's number in its study (``T`` of the run name ``N.T-METHOD``).
        study: the study's name.
        storage: the study's storage URL (every process that trains a trial reaches it).
        search: the search run's name (``N-search-METHOD``), tagged on the trial's run.
        objective: the metric the study optimises; each epoch reports a Keras series of the same direction
            (:meth:`series`).
        direction: the study's direction (``maximize`` or ``minimize``).
        pruner: the study's pruner (``--pruner``; ``none``: the trial reports nothing) and its
            ``startup_trials``: a pruner is no part of a study's storage, each process that reports makes its own.
    """

    number: int
    study: str
    storage: str
    search: str
    objective: str = DEFAULT_SELECT_BY
    pruner: str = "median"
    startup_trials: int = 2
    direction: str = "maximize"

    @property
    def prune(self) -> bool:
        """Whether the trial reports its epochs to a pruner."""
        return self.pruner != "none"

    def series(self, logs: dict, quality_metric: str, quality_mode: str) -> str | None:
        """The per-epoch series a trial reports to its pruner, going the objective's way: ``val_NAME`` for an
        objective ``dev/NAME`` when the fit logs it (``val_loss`` for ``dev/loss``); else the method's quality
        metric when it goes the same way (``val_accuracy`` for a maximized ``dev/balanced_accuracy``, which Keras
        does not log per epoch); else ``val_loss`` (minimize) or ``val_accuracy`` (maximize). None when the fit
        logs none of those.

        Args:
            logs: an epoch's Keras logs.
            quality_metric: the method's quality metric (the series that picks its best epoch).
            quality_mode: ``max`` or ``min`` for ``quality_metric``.
        """
        group, _, name = self.objective.partition("/")
        if group == DEV and epoch_series(name, DEV) in logs:
            return epoch_series(name, DEV)
        maximize = self.direction == "maximize"
        if (quality_mode == "max") == maximize:
            fallback = quality_metric
        else:
            fallback = epoch_series("accuracy" if maximize else "loss", DEV)
        return fallback if fallback in logs else None

    def tags(self) -> dict[str, str]:
        """The trial run's tags: its number and its search."""
        return {tracking.TAG_TRIAL: str(self.number), tracking.TAG_SEARCH: self.search}
