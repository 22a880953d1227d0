"""A trial of a search, as the row it trains knows it: which study, which trial, and what it reports per epoch.

A :class:`TrialRef` travels with the trial's :class:`timl.config.RunConfig` (its ``trial``), so whichever process
trains the trial (this one, a Ray worker) reaches the study's storage and reports to it
(:mod:`timl.search.pruning`). It holds text and numbers only: it pickles and crosses to a cluster.
"""

from __future__ import annotations

import dataclasses

from timl import tracking
from timl.metric_names import DEFAULT_SELECT_BY


@dataclasses.dataclass(frozen=True)
class TrialRef:
    """One trial of a search.

    Attributes:
        number: the trial's number in its study (``T`` of the run name ``N.T-METHOD``).
        study: the study's name.
        storage: the study's storage URL (every process that trains a trial reaches it).
        search: the search run's name (``N-search-METHOD``), tagged on the trial's run.
        objective: the metric the study optimises; each epoch reports its Keras series (``val_NAME`` for
            ``dev/NAME``) when the fit logs one, else the method's quality metric.
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

    @property
    def prune(self) -> bool:
        """Whether the trial reports its epochs to a pruner."""
        return self.pruner != "none"

    def tags(self) -> dict[str, str]:
        """The trial run's tags: its number and its search."""
        return {tracking.TAG_TRIAL: str(self.number), tracking.TAG_SEARCH: self.search}
