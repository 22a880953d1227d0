"""The table: every selected row of a training table becomes an MLflow child run of the table's parent run.

:func:`train_table` validates the whole table first, opens the table's run, then hands each valid row to an
executor (:mod:`timl.training.executors`). A row that failed validation gets a FAILED run of its own; a failed
row never stops the others; Ctrl-C or SIGTERM ends the current row KILLED; ``resume`` skips rows whose run
FINISHED and closes runs left RUNNING by a killed process. The results table is rebuilt from the tracking store
after every row, so nothing finished is lost. A row whose split is ``kfold=K`` is a cross-validation: its K folds
train as rows of their own under its cross-validation run (:mod:`timl.training.crossval`). As the original TIML did, the output folder gets a copy of the input
table (``automation_input.csv``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import shutil
import signal
import time
from pathlib import Path
from typing import Callable, Iterator

from timl import __version__, tables, tracking
from timl import config as config_module
from timl.config import RunConfig, SearchRow
from timl.errors import ConfigError, MissingFileError
from timl.search.searches import Searches
from timl.search.study import SearchOptions
from timl.training.crossval import CrossValidations
from timl.training.executors import Executor, RowOutcome, RowTask, TableContext
from timl.training.lock import output_folder_lock
from timl.training.options import TableOptions
from timl.training.space import disk_full_stops_the_table

logger = logging.getLogger(__name__)

#: The copy of the input table in the output folder (the original TIML's name).
INPUT_COPY_NAME = "automation_input.csv"


@dataclasses.dataclass
class TableOutcome:
    """How a table ended: the parent run, the output folder, the rows, and the results table."""

    parent_run_id: str
    out_dir: Path
    rows: list[RowOutcome]
    results_path: Path
    registered: str | None = None
    registration: object | None = None  # the timl.register.Registration of `registered`: where the alias went

    @property
    def failed(self) -> list[RowOutcome]:
        return [row for row in self.rows if row.status != "FINISHED"]


def default_out_dir() -> Path:
    """``train_output-YYYYMMDD-hhmmss`` in the working directory."""
    return Path(datetime.datetime.now().strftime("train_output-%Y%m%d-%H%M%S"))


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt so the current row ends KILLED."""


def _raise_terminated(signum, frame):
    raise _Terminated(f"terminated by signal {signum}")


def train_table(input_table: str | Path, options: TableOptions | None = None, *, executor: Executor | None = None,
                on_row: Callable[[RowOutcome], None] | None = None,
                on_progress: Callable[[RowOutcome, TableProgress], None] | None = None,
                search: SearchOptions | None = None, **keywords) -> TableOutcome:
    """Trains every selected row of a table; each row is an MLflow run under one parent run.

    Args:
        input_table: the training table (CSV, .xlsx, .ods or ``FILE.xlsx#Sheet``: :mod:`timl.tables`).
        options: the table-level options (:class:`TableOptions`: folders, experiment, tracking URI, rows, resume,
            registration, executor, checkpoints). Defaults to None (every option's default).
        executor: what trains the rows. Defaults to None: the executor ``options`` asks for, closed when the
            table ends; an executor given here stays open for its owner.
        on_row: called with each row's outcome when the row has ended and the results table holds it.
        on_progress: called with each row's outcome and the table's :class:`TableProgress` as the row ends,
            before the results table is rewritten (the CLI prints its progress line there).
        search: how the table's search rows are searched (``python -m timl.tune``'s flags). Defaults to None:
            a search row fails, naming its space, and says to use ``python -m timl.tune``.
        **keywords: fields of :class:`TableOptions` (``out_dir=..., experiment=...``) that replace those of
            ``options``.

    Returns:
        A TableOutcome; ``outcome.failed`` lists rows that did not finish.

    Raises:
        ConfigError, MissingFileError: a whole-table problem (unknown column, missing table, bad --rows).
        TypeError: a keyword that is no field of TableOptions.
    """
    options = TableOptions.with_keywords(options, keywords)
    if options.img_dir and not Path(options.img_dir).is_dir():  # before any run: a typo leaves no FAILED rows
        raise MissingFileError(f"--img-dir {options.img_dir}: no such folder. Give the folder that holds the images "
                               "(or leave --img-dir out: images/ beside each row's dataset CSV).")
    if executor is None:  # the options' executor, started before the table run opens and closed when it ends
        with options.make_executor() as owned:
            return train_table(input_table, options, executor=owned, on_row=on_row, on_progress=on_progress,
                               search=search)
    table_path = Path(input_table)
    configs = config_module.read_table(table_path)
    selection = config_module.parse_row_selection(options.rows, len(configs))
    tracking.configure(options.tracking_uri)
    with disk_full_stops_the_table(options.out_dir), contextlib.ExitStack() as folder_lock:  # the output
        # folder's lock (timl.training.lock) until the table ends; a full disk: a clear error (timl.training.space)
        parent_id, out_dir = _open_table_run(table_path, options.experiment or table_path.stem, options.out_dir,
                                             options.resume, folder_lock)
        return _train_rows(parent_id, out_dir, configs, selection, options, executor, on_row, on_progress, search)


def _train_rows(parent_id: str, out_dir: Path, configs: list[RunConfig | ConfigError], selection: list[int],
                options: TableOptions, executor: Executor, on_row: Callable[[RowOutcome], None] | None,
                on_progress: Callable[[RowOutcome, TableProgress], None] | None,
                search: SearchOptions | None) -> TableOutcome:
    """Trains the selected rows of an opened table run and ends it (see :func:`train_table`)."""
    done = tracking.finished_children(parent_id) if options.resume else {}
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    progress = _Progress(parent_id, out_dir, _outcome_count(configs, selection, done, search.trials if search else 0),
                         on_row, on_progress)
    checkpoints = (Path(options.checkpoint_dir).resolve() / parent_id if options.checkpoint_dir
                   else out_dir.resolve() / ".backup")
    table = TableContext(parent_id, out_dir, options.img_dir, options.skip_roc, checkpoints, options.system_metrics,
                         options.bootstrap)
    cross_validations = CrossValidations(table)
    searches = Searches(table, search, options.resume)

    def row_ended(outcome: RowOutcome) -> None:  # a fold's (a trial's) end may complete its cross-validation
        completed = searches.trial_ended(outcome)  # (search); the study is told before the next trial is asked
        progress.row_ended(outcome)
        completed = cross_validations.fold_ended(outcome) or completed
        if completed is not None:
            progress.row_ended(completed)

    tasks = _row_tasks(configs, selection, table, done, row_ended, cross_validations, searches)
    try:
        with contextlib.closing(executor.run_all(tasks)) as outcomes:  # closed early: the executor stops its rows
            for outcome in outcomes:
                row_ended(outcome)
    except BaseException as error:  # never leave the table run RUNNING
        cross_validations.abort()
        searches.abort()
        with contextlib.suppress(OSError):  # a full disk: the results table is rebuilt by --resume
            _write_results(parent_id, out_dir)
        tracking.end_run(parent_id, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return _end_table(parent_id, out_dir, progress.outcomes, options)


def _end_table(parent_id: str, out_dir: Path, outcomes: list[RowOutcome], options: TableOptions) -> TableOutcome:
    """Writes the results table, closes the table's run with its summary, registers the best row if asked."""
    results_path = _write_results(parent_id, out_dir)
    _log_summary(parent_id, outcomes, options.select_by)
    tracking.end_run(parent_id, "FAILED" if any(o.status != "FINISHED" for o in outcomes) else "FINISHED")
    outcome = TableOutcome(parent_id, out_dir, outcomes, results_path)
    if options.register:
        from timl import register as registration

        outcome.registration = registration.register_candidate(
            registration.best_run(parent_id, options.select_by), options.register, gates=options.gate,
            force=options.force_champion)
        outcome.registered = outcome.registration.uri
    return outcome


def _log_summary(parent_id: str, outcomes: list[RowOutcome], select_by: str) -> None:
    """The table's run gets its rows' end states and the best row's scores (by ``select_by``)."""
    from timl import register as registration
    from timl.errors import ConfigError as NoBestRow

    counts = {status: sum(outcome.status == status for outcome in outcomes)
              for status in ("FINISHED", "FAILED", "KILLED")}
    try:
        best = tracking.get_run(registration.best_run(parent_id, select_by))
    except NoBestRow:
        best = None
    tracking.log_table_summary(parent_id, counts, best)


def _open_table_run(table_path: Path, experiment: str, out_dir: str | Path | None, resume: bool,
                    folder_lock: contextlib.ExitStack) -> tuple[str, Path]:
    """Creates the table's run (or reopens it to resume) and its output folder, whose lock ``folder_lock`` holds
    from before the run is touched; returns both."""
    out_dir = Path(out_dir) if out_dir else None
    parent_id = None
    if resume:
        parent_id, out_dir = _find_resume_run(out_dir, experiment, table_path)
    out_dir = out_dir or default_out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    folder_lock.enter_context(output_folder_lock(out_dir))
    _copy_input_table(table_path, out_dir)
    parent_id = tracking.start_table_run(experiment, str(table_path), out_dir, parent_id)
    (out_dir / tracking.PARENT_MARKER).write_text(parent_id + "\n")
    return parent_id, out_dir


def _copy_input_table(table_path: Path, out_dir: Path) -> Path:
    """Copies the input table, byte for byte, to ``OUT/automation_input.csv`` (as the original TIML did); a
    workbook's sheet (.xlsx, .ods) is written there as a comma-separated UTF-8 CSV of its cells."""
    copy = out_dir / INPUT_COPY_NAME
    file, _ = tables.split_sheet(table_path)
    if file.suffix.lower() in tables.WORKBOOK_SUFFIXES:
        config_module.read_cells(table_path).to_csv(copy, index=False)
    elif not (copy.exists() and copy.samefile(file)):
        shutil.copyfile(file, copy)
    return copy


def _find_resume_run(out_dir: Path | None, experiment: str, table_path: Path) -> tuple[str | None, Path | None]:
    """Finds the parent run to resume: from the out-dir marker, else the newest run of the same table."""
    if out_dir is not None and (out_dir / tracking.PARENT_MARKER).is_file():
        return (out_dir / tracking.PARENT_MARKER).read_text().strip(), out_dir
    for run in tracking.table_runs(experiment):
        if run.data.tags.get(tracking.TAG_TABLE) == str(table_path.resolve()):
            return run.info.run_id, Path(run.data.tags.get(tracking.TAG_OUT_DIR, str(out_dir or default_out_dir())))
    return None, out_dir


def _outcome_count(configs: list[RunConfig | SearchRow | ConfigError], selection: list[int], done: dict[str, str],
                   trials: int = 0) -> int:
    """How many outcomes the selected rows end with: one per row; a cross-validation not yet FINISHED its K folds'
    and its own; a search not yet FINISHED (about) its ``trials``' and its own."""
    def count(item) -> int:
        if isinstance(item, RunConfig) and item.cross_validation and item.key(__version__) not in done:
            return len(item.fold_configs()) + 1
        if isinstance(item, SearchRow) and item.key(__version__) not in done:
            return trials + 1
        return 1

    return sum(count(configs[number]) for number in selection)


def _row_tasks(configs: list[RunConfig | SearchRow | ConfigError], selection: list[int], table: TableContext,
               done: dict[str, str], row_ended: Callable[[RowOutcome], None],
               cross_validations: CrossValidations, searches: Searches) -> Iterator[RowTask | None]:
    """The selected rows as tasks of ``table``, in table order; a cross-validation row's as the tasks of its
    folds, a search row's as those of its trials (a search that cannot start is recorded FAILED). A row that
    failed validation gets its FAILED run and a row that already FINISHED is skipped, each
    reported as the executor reaches it."""
    for number in selection:
        item = configs[number]
        if isinstance(item, ConfigError):
            row_ended(_record_invalid_row(item, number, table.parent_run_id))
            continue
        key = item.key(__version__)
        if isinstance(item, SearchRow) and key in done:
            row_ended(RowOutcome(number, item.run_name, "FINISHED", done[key], "skipped: already FINISHED"))
        elif isinstance(item, SearchRow):
            try:
                yield from searches.tasks(item, key, row_ended)
            except ConfigError as error:  # timl.train given a search, a study that cannot be opened
                error.cells = item.cells
                row_ended(_record_invalid_row(error, number, table.parent_run_id))
        elif key in done:
            name = item.cv_run_name if item.cross_validation else item.run_name
            row_ended(RowOutcome(number, name, "FINISHED", done[key], "skipped: already FINISHED"))
        elif item.cross_validation:
            yield from cross_validations.tasks(item, key, row_ended)
        else:
            yield RowTask(item, key, table)


def _record_invalid_row(error: ConfigError, number: int, parent_id: str) -> RowOutcome:
    """A row that failed validation still gets a FAILED run, so the results table shows it, why, and its cells
    as written (logged as the run's params: the method, dataset, ... of the row to fix)."""
    row_run = tracking.RowRun(parent_id, f"{number}-invalid", number, f"invalid-{number}-{time.time()}")
    try:
        with row_run:
            tracking.log_params(getattr(error, "cells", {}))
            raise error
    except ConfigError:
        pass
    return RowOutcome(number, f"{number}-invalid", "FAILED", row_run.run_id, str(error))


@dataclasses.dataclass(frozen=True)
class TableProgress:
    """Where the table stands as a row ends: rows ended so far, rows selected, seconds since the rows began."""

    done: int
    total: int
    seconds: float

    @property
    def remaining(self) -> int:
        return self.total - self.done

    @property
    def eta_seconds(self) -> float:
        """The time the remaining rows will take at the pace of those ended so far."""
        return self.seconds / self.done * self.remaining


class _Progress:
    """Each ended row: kept, passed to on_progress, written to the results tables, passed to on_row."""

    def __init__(self, parent_id: str, out_dir: Path, total: int, on_row: Callable[[RowOutcome], None] | None,
                 on_progress: Callable[[RowOutcome, TableProgress], None] | None):
        self.parent_id, self.out_dir, self.total = parent_id, out_dir, total
        self.on_row, self.on_progress = on_row, on_progress
        self.outcomes: list[RowOutcome] = []
        self.started = time.time()

    def row_ended(self, outcome: RowOutcome) -> None:
        self.outcomes.append(outcome)
        if self.on_progress is not None:
            self.on_progress(outcome, TableProgress(len(self.outcomes), self.total, time.time() - self.started))
        _write_results(self.parent_id, self.out_dir, row=outcome.row)
        if self.on_row is not None:
            self.on_row(outcome)


def _write_results(parent_id: str, out_dir: Path, row: int | None = None) -> Path:
    """Rebuilds automation_result.csv (and N-automation_result.csv for a row) from the tracking store."""
    from timl import results

    table = results.build_results_table(parent_run_id=parent_id)
    if row is not None:
        results.write_table(table.loc[table.index == row], out_dir / f"{row}-automation_result.csv")
    path = out_dir / "automation_result.csv"
    results.write_table(table, path)
    return path
