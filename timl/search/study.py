"""The Optuna side of a search: its options, the study in its storage, its sampler and pruner, and what the
trials of a study count for.

Optuna is the engine, asked and told (``study.ask()``, ``study.tell()``) by :mod:`timl.search.searches`, while
TIML's executors train the trials. A trial left RUNNING by an interrupted search is marked interrupted (user
attribute :data:`INTERRUPTED`) and FAIL: it does not count towards ``--trials``, so ``--resume`` trains another
in its place.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from timl.errors import ConfigError
from timl.metric_names import DEFAULT_SELECT_BY

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
DIRECTIONS = ("maximize", "minimize")

#: The user attributes TIML sets on a study's trials: a trial's MLflow run, an interrupted trial.
RUN_ID, INTERRUPTED = "timl.run_id", "timl.interrupted"
#: A trial's user attribute: the number of the finished trial whose cells it repeated (told that trial's value).
REPEATS = "timl.repeats"

#: The study file in the output folder when no ``--study-storage`` is given.
DEFAULT_STUDY_FILE = "study.db"


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """How the search rows of a table are searched (``python -m timl.tune``'s flags).

    Attributes:
        trials: trials per search row (``--resume`` trains those still missing).
        timeout: seconds after which a search asks for no more trials (None: no limit).
        sampler: ``tpe``, ``random`` or ``grid`` (every space a choice or an int).
        pruner: ``median``, ``hyperband`` or ``none``.
        objective: the trial run's metric the study optimises.
        direction: ``maximize`` or ``minimize``.
        parallel: trials at once (an executor that trains rows in parallel: ``--executor ray``).
        study_storage: the study's storage URL (None: ``sqlite:///OUT/study.db``).
        startup_trials: trials that finish before the median pruner prunes.

    Raises:
        ConfigError: a value out of range.
    """

    trials: int = 10
    timeout: float | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    objective: str = DEFAULT_SELECT_BY
    direction: str = "maximize"
    parallel: int = 1
    study_storage: str | None = None
    startup_trials: int = 2

    def __post_init__(self):
        for name, allowed in (("sampler", SAMPLERS), ("pruner", PRUNERS), ("direction", DIRECTIONS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name} must be one of {', '.join(allowed)}. Received: {getattr(self, name)!r}")
        if self.trials < 1 or self.parallel < 1 or (self.timeout is not None and self.timeout <= 0):
            raise ConfigError(f"--trials and --parallel must be 1 or more, --timeout above 0 seconds. Received: "
                              f"trials={self.trials}, parallel={self.parallel}, timeout={self.timeout}")

    def storage_url(self, out_dir: Path) -> str:
        """The study's storage: ``--study-storage``, else the SQLite file ``OUT/study.db`` (an absolute path, so
        every worker reaches the same file)."""
        return self.study_storage or f"sqlite:///{(Path(out_dir) / DEFAULT_STUDY_FILE).resolve()}"


def study_name(table_path: str, row: int, row_key: str) -> str:
    """A study's name, stable for a table's row: ``timl-<table stem>-row<N>-<key>``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(table_path).stem) or "table"
    return f"timl-{stem}-row{row}-{row_key[:12]}"


def _sampler(options: SearchOptions, spaces: dict, seed: int):
    import optuna

    if options.sampler == "grid":
        return _grid_sampler()({column: space.grid() for column, space in spaces.items()}, seed=seed)
    if options.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _grid_sampler():
    """Optuna's GridSampler without its stop: told a trial when the grid is done, it calls ``study.stop()``,
    which raises outside ``study.optimize`` (TIML asks and tells, and asks no more once the grid is exhausted:
    :meth:`timl.search.searches.Searches`)."""
    import optuna

    class AskTellGridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            """Nothing: the searches stop asking when ``is_exhausted``."""

    return AskTellGridSampler


def make_pruner(pruner: str, startup_trials: int):
    """The Optuna pruner ``--pruner`` names: ``median`` (prunes a trial below the median of the earlier trials at
    the same epoch once ``startup_trials`` finished), ``hyperband`` or ``none``."""
    import optuna

    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=0)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


_OPENED: dict = {}


def opened_storage(url: str):
    """The process's Optuna storage for ``url``, opened once: opening one (an engine, its schema checked) costs
    about half a second, which every trial's reports would pay again (:mod:`timl.search.pruning`)."""
    import optuna

    if url not in _OPENED:
        _OPENED[url] = optuna.storages.get_storage(url)
    return _OPENED[url]


def open_study(name: str, storage: str, options: SearchOptions, spaces: dict, seed: int, *, resume: bool,
               settle=None):
    """Creates the study, or with ``resume`` loads it and closes its interrupted trials. A resumed random or TPE
    sampler is seeded with the row's seed plus the trials already asked (reproducible, and not the first run's
    samples again).

    Args:
        settle: ``settle(study, trial)`` tells a trial left RUNNING whose run had ended (a search killed between
            a trial's end and telling the study) and returns True; a trial it does not settle is interrupted.

    Raises:
        ConfigError: the study exists and ``resume`` is not set (continue it with ``--resume``, or give another
            ``--out-dir`` or ``--study-storage``); the storage cannot be opened.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        existing = optuna.study.get_all_study_names(opened_storage(storage))
        if name in existing and not resume:
            raise ConfigError(f"The study {name!r} exists in {storage}: continue it with --resume, or give another "
                              "--out-dir or --study-storage.")
        study = optuna.create_study(study_name=name, storage=opened_storage(storage), load_if_exists=True,
                                    direction=options.direction, sampler=_sampler(options, spaces, seed),
                                    pruner=make_pruner(options.pruner, options.startup_trials))
    except (ImportError, ValueError, optuna.exceptions.OptunaError) as error:
        raise ConfigError(f"Cannot open the study storage {storage}: {error}") from error
    close_interrupted(study, settle)
    if options.sampler != "grid" and study.trials:  # resumed: a sampler seeded as before would ask for the same
        study.sampler = _sampler(options, spaces, seed + len(study.trials))  # cells again; the grid knows its own
    return study


def close_interrupted(study, settle=None) -> list:
    """Marks the trials left RUNNING (a killed search) interrupted and FAIL, except those ``settle`` tells;
    returns the interrupted ones' frozen trials."""
    import optuna

    closed = []
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        trial = optuna.trial.Trial(study, frozen._trial_id)
        if settle is None or not settle(study, trial):
            interrupt(study, trial)
            closed.append(frozen)
    return closed


def interrupt(study, trial) -> None:
    """Ends a trial that did not end (an interrupt) FAIL, marked interrupted: it counts for nothing."""
    trial.set_user_attr(INTERRUPTED, True)
    study.tell(trial, state=states().FAIL, skip_if_finished=True)


def counted(study) -> int:
    """Trials that count towards ``--trials``: COMPLETE, PRUNED and FAIL, interrupted ones aside."""
    state = states()
    return sum(1 for trial in study.get_trials(deepcopy=False)
               if trial.state in (state.COMPLETE, state.PRUNED)
               or (trial.state == state.FAIL and not trial.user_attrs.get(INTERRUPTED)))


def states():
    import optuna

    return optuna.trial.TrialState
