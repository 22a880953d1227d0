"""Search rows in the table loop: a row whose cells hold search spaces trains its trials as rows of their own under
its search run, ``N-search-METHOD`` (a child of the table's run), which then holds the search's result.

As with cross-validations (:mod:`timl.training.crossval`), the table loop asks :meth:`Searches.tasks` for a row's
tasks: the search run is made (or, resuming, reopened), its study opened in its storage
(:mod:`timl.search.study`), and for each trial still missing the study is asked for a configuration
(``study.ask()``), which is validated like a written row and handed to the executor as an ordinary row,
``N.T-METHOD`` (tag ``timl.trial`` = T), whose run is a child of the search run. The executor trains it like any
row; its fit reports each epoch to the study (:mod:`timl.search.pruning`). :meth:`Searches.trial_ended` tells the
study how it ended (its objective, PRUNED, or FAIL); when no trial is missing and none is training, the search is
summarised (:mod:`timl.search.summary`) and its run ends.

Trials are asked for as the executor takes tasks: with the local executor one after the other, each sampled
knowing the trials before it; with an executor that trains rows in parallel (Ray) up to ``--parallel`` at once,
the next asked for as one ends (a ``None`` task tells the executor to hand back an outcome first).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Iterator

from timl import __version__, tracking
from timl.config import SearchRow
from timl.errors import ConfigError
from timl.search import study as studies
from timl.search.study import SearchOptions
from timl.search.trial import TrialRef
from timl.training.executors import RowOutcome, RowTask, TableContext

logger = logging.getLogger(__name__)

#: What a search row says when the command that reads it is ``python -m timl.train``.
NEEDS_TUNE = ("the row is a search (its cell {cell} is a search space): search it with python -m timl.tune "
              "--input-table TABLE --trials N, or write one value in the cell to train it with timl.train")


@dataclasses.dataclass
class Search:
    """A search row being searched: its row, run, study, the trials training and how many ended."""

    row: SearchRow
    run_id: str
    study: object  # optuna.Study
    storage: str
    table: TableContext
    started: float = dataclasses.field(default_factory=time.time)
    training: dict = dataclasses.field(default_factory=dict)  # run name -> optuna.Trial
    asking: bool = True

    def outcome(self, status: str, message: str) -> RowOutcome:
        return RowOutcome(self.row.row, self.row.run_name, status, self.run_id, message, time.time() - self.started)


class Searches:
    """The search rows of a table: opened as the table loop reaches them, summarised as their last trial ends.

    Args:
        table: what the table's rows share; each trial's task gets a copy whose parent run is its search.
        options: how to search (None: the table is trained by ``timl.train``, which cannot search).
        resume: continue the studies of an earlier, interrupted search.
    """

    def __init__(self, table: TableContext, options: SearchOptions | None, resume: bool):
        self.table, self.options, self.resume = table, options, resume
        self._open: dict[tuple[int, str], Search] = {}

    def tasks(self, row: SearchRow, row_key: str,
              row_ended: Callable[[RowOutcome], None]) -> Iterator[RowTask | None]:
        """The tasks of a search row's trials still missing, asked from its study as the executor takes them;
        the search's own outcome goes to ``row_ended`` when its last trial has ended.

        Raises:
            ConfigError: the table is trained by ``timl.train``, or the study cannot be opened (the table loop
                records the row FAILED).
        """
        if self.options is None:
            raise ConfigError(f"{row.table_path}, row {row.row}: " + NEEDS_TUNE.format(
                cell=", ".join(f"{column}={space.text!r}" for column, space in row.spaces.items())))
        search = self._start(row, row_key)
        try:
            while True:
                missing = self.options.trials - studies.counted(search.study) - len(search.training)
                timed_out = (self.options.timeout is not None
                             and time.time() - search.started >= self.options.timeout)
                if missing <= 0 or timed_out or self._grid_done(search):
                    break
                if len(search.training) >= self.options.parallel:
                    yield None  # the executor hands back an ended trial before the next is asked for
                    continue
                task = self._ask(search, row_ended)
                if task is not None:
                    yield task
        finally:
            search.asking = False
        if not search.training:
            row_ended(self._finish(search))

    def _start(self, row: SearchRow, row_key: str) -> Search:
        """Creates the search run and its study, or reopens those an earlier, unfinished attempt left."""
        from timl.search.summary import search_params

        earlier = [run for run in tracking.child_runs(self.table.parent_run_id)
                   if run.data.tags.get(tracking.TAG_ROW_KEY) == row_key]
        name = studies.study_name(row.table_path, row.row, row_key)
        storage = self.options.storage_url(self.table.out_dir)
        ended = {}
        if earlier:
            run_id = tracking.reopen_run(earlier[-1].info.run_id)
            tracking.finished_children(run_id)  # closes the trial runs a killed process left RUNNING
            ended = {int(run.data.tags[tracking.TAG_TRIAL]): run for run in tracking.child_runs(run_id)
                     if run.info.status == "FINISHED" and tracking.TAG_TRIAL in run.data.tags}
        else:
            run_id = tracking.create_row_run(self.table.parent_run_id, row.run_name, row.row, row_key,
                                             kind=tracking.KIND_SEARCH)
            tracking.log_params(search_params(row, self.options, name, storage), run_id=run_id)
        try:
            study = studies.open_study(name, storage, self.options, row.spaces, row.seed,
                                       resume=self.resume or bool(earlier),
                                       settle=lambda study, trial: self._settle(study, trial, ended, row))
        except ConfigError as error:
            tracking.fail_run(run_id, tracking.error_text(error))
            raise
        return Search(row, run_id, study, storage, dataclasses.replace(self.table, parent_run_id=run_id))

    def _settle(self, study, trial, ended: dict, row: SearchRow) -> bool:
        """Tells the study how a trial it still thinks RUNNING ended, when its run FINISHED (the search was killed
        before telling it); returns whether it did."""
        run = ended.get(trial.number)
        if run is None:
            return False
        _tell(study, trial, RowOutcome(row.row, run.info.run_name, "FINISHED", run.info.run_id),
              self.options.objective)
        return True

    def _ask(self, search: Search, row_ended: Callable[[RowOutcome], None]) -> RowTask | None:
        """Asks the study for a trial; its task, or None when its configuration is invalid (the trial FAILED:
        its run says why)."""
        distributions = {column: space.distribution() for column, space in search.row.spaces.items()}
        trial = search.study.ask(distributions)
        if _repeat_of_finished(search, trial):
            return None
        ref = TrialRef(trial.number, search.study.study_name, search.storage, search.row.run_name,
                       self.options.objective, self.options.pruner, self.options.startup_trials,
                       self.options.direction)
        try:
            config = search.row.sample(trial.params, ref)
        except ConfigError as error:
            run_id = _record_invalid_trial(search, ref, error)
            trial.set_user_attr(studies.RUN_ID, run_id)
            search.study.tell(trial, state=studies.states().FAIL)
            row_ended(RowOutcome(search.row.row, f"{search.row.row}.{trial.number}-invalid", "FAILED", run_id,
                                 tracking.error_text(error)))
            return None
        search.training[config.run_name] = trial
        self._open[(config.row, config.run_name)] = search
        return RowTask(config, config.key(__version__), search.table)

    def _grid_done(self, search: Search) -> bool:
        """Whether a grid search has asked for every point of its grid."""
        return self.options.sampler == "grid" and search.study.sampler.is_exhausted(search.study)

    def trial_ended(self, outcome: RowOutcome) -> RowOutcome | None:
        """Tells the study how a row's trial ended; returns the search's own outcome when it was its last trial
        (None for any other row)."""
        search = self._open.pop((outcome.row, outcome.name), None)
        if search is None:
            return None
        trial = search.training.pop(outcome.name)
        _tell(search.study, trial, outcome, self.options.objective)
        if search.asking or search.training:
            return None
        return self._finish(search)

    def _finish(self, search: Search) -> RowOutcome:
        from timl.search.summary import summarise

        try:
            status, message = summarise(search.study, search.run_id, self.options)
        except Exception as error:  # the trials stay: --resume summarises again
            logger.debug("search of row %d failed", search.row.row, exc_info=True)
            status, message = "FAILED", tracking.error_text(error)
        if status == "FINISHED":
            tracking.end_run(search.run_id, "FINISHED")
        else:
            tracking.fail_run(search.run_id, message)
        return search.outcome(status, message)

    def abort(self) -> None:
        """Ends the trials still training interrupted and their searches KILLED (an interrupted table)."""
        for search in {id(search): search for search in self._open.values()}.values():
            for trial in search.training.values():
                studies.interrupt(search.study, trial)
            tracking.kill_run(search.run_id)
        self._open.clear()


def _tell(study, trial, outcome: RowOutcome, objective: str) -> None:
    """Tells the study how a trial ended: FINISHED with its objective (PRUNED when its fit was pruned), else
    FAIL (an interrupted trial: marked so, it counts for nothing)."""
    states = studies.states()
    if outcome.run_id:
        trial.set_user_attr(studies.RUN_ID, outcome.run_id)
    if outcome.status == "KILLED":
        studies.interrupt(study, trial)
        return
    run = tracking.get_run(outcome.run_id) if outcome.status == "FINISHED" and outcome.run_id else None
    if run is not None and tracking.TAG_PRUNED in run.data.tags:
        study.tell(trial, state=states.PRUNED)
    elif run is not None and objective in run.data.metrics:
        study.tell(trial, run.data.metrics[objective])
    else:
        study.tell(trial, state=states.FAIL)


def _repeat_of_finished(search: Search, trial) -> bool:
    """Whether the study asked again for the configuration of a finished trial (a sampler over ``choice`` or
    ``int`` cells does): the trial is then told that trial's value and points at its run, and nothing trains
    again (a row of the same cells and seed trains to the same result; Optuna's own advice). Returns whether so."""
    state = studies.states()
    earlier = next((done for done in search.study.get_trials(deepcopy=False, states=(state.COMPLETE,))
                    if done.params == trial.params and studies.RUN_ID in done.user_attrs), None)
    if earlier is None:
        return False
    trial.set_user_attr(studies.RUN_ID, earlier.user_attrs[studies.RUN_ID])
    trial.set_user_attr(studies.REPEATS, earlier.number)
    search.study.tell(trial, earlier.value)
    logger.info("Row %d: trial %d asked for trial %d's cells again (%s); told its value %.4g, nothing trained.",
                search.row.row, trial.number, earlier.number, trial.params, earlier.value)
    return True


def _record_invalid_trial(search: Search, ref: TrialRef, error: ConfigError) -> str:
    """A trial whose sampled configuration is invalid gets a FAILED run naming the cell; returns its id."""
    row_run = tracking.RowRun(search.run_id, f"{search.row.row}.{ref.number}-invalid", search.row.row,
                              f"invalid-trial-{ref.study}-{ref.number}", tags=ref.tags())
    try:
        with row_run:
            tracking.log_params(search.row.cells)
            raise error
    except ConfigError:
        pass
    return row_run.run_id
