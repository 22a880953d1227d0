"""The table: every selected row of a training table becomes an MLflow child run of the table's parent run.

:func:`train_table` validates the whole table first, opens the table's run, then hands each valid row to an
executor (:mod:`timl.training.executors`). A row that failed validation gets a FAILED run of its own; a failed
row never stops the others; Ctrl-C or SIGTERM ends the current row KILLED; ``resume`` skips rows whose run
FINISHED and closes runs left RUNNING by a killed process. The results table is rebuilt from the tracking store
after every row, so nothing finished is lost. As the original TIML did, the output folder gets a copy of the input
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
from timl.config import RunConfig
from timl.errors import ConfigError
from timl.metric_names import DEFAULT_SELECT_BY
from timl.training.executors import Executor, LocalExecutor, RowOutcome, RowTask, TableContext

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


def train_table(input_table: str | Path, *, img_dir: str | Path | None = None, out_dir: str | Path | None = None,
                experiment: str | None = None, tracking_uri: str | None = None, rows: str | None = None,
                resume: bool = False, skip_roc: bool = False, register: str | None = None,
                select_by: str = DEFAULT_SELECT_BY, executor: Executor | None = None,
                checkpoint_dir: str | Path | None = None, system_metrics: bool = True,
                on_row: Callable[[RowOutcome], None] | None = None) -> TableOutcome:
    """Trains every selected row of a table; each row is an MLflow run under one parent run.

    Args:
        input_table: the training table (CSV, .xlsx, .ods or ``FILE.xlsx#Sheet``: :mod:`timl.tables`).
        img_dir: the image folder for every row (default: ``images/`` beside each dataset CSV).
        out_dir: the output folder (default ``train_output-YYYYMMDD-hhmmss``).
        experiment: MLflow experiment (default: the table's file name without extension).
        tracking_uri: MLflow tracking URI (default: MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db``).
        rows: a selection such as ``0,2-4`` (default: every row).
        resume: reuse the parent run of the same out-dir (or of the newest run of the same table) and skip
            rows whose run FINISHED.
        skip_roc: do not draw ROC plots.
        register: register the best row's model under this name, with alias ``champion``.
        select_by: the metric that picks the best row for ``register`` (higher is better).
        executor: what trains the rows (default: a :class:`LocalExecutor`, closed when the table ends; an
            executor given here stays open for its owner).
        checkpoint_dir: where rows checkpoint every epoch, as ``DIR/<table run id>/N`` (default
            ``out_dir/.backup/N``). On a cluster, a folder every node reaches lets a retried row continue.
        system_metrics: log MLflow's system metrics (CPU, memory, GPU, every 10 s) to each row's run.
        on_row: called with each row's outcome when the row has ended and the results table holds it.

    Returns:
        A TableOutcome; ``outcome.failed`` lists rows that did not finish.

    Raises:
        ConfigError, MissingFileError: a whole-table problem (unknown column, missing table, bad --rows).
    """
    table_path = Path(input_table)
    configs = config_module.read_table(table_path)
    selection = config_module.parse_row_selection(rows, len(configs))
    tracking.configure(tracking_uri)
    parent_id, out_dir = _open_table_run(table_path, experiment or table_path.stem, out_dir, resume)
    done = _finished_keys(parent_id) if resume else {}
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    progress = _Progress(parent_id, out_dir, len(selection), on_row)
    owned = executor is None
    executor = executor or LocalExecutor(skip_roc=skip_roc)
    checkpoints = Path(checkpoint_dir).resolve() / parent_id if checkpoint_dir else out_dir.resolve() / ".backup"
    table = TableContext(parent_id, out_dir, img_dir, skip_roc, checkpoints, system_metrics)
    tasks = _row_tasks(configs, selection, table, done, progress.row_ended)
    try:
        with contextlib.closing(executor.run_all(tasks)) as outcomes:  # closed early: the executor stops its rows
            for outcome in outcomes:
                progress.row_ended(outcome)
    except BaseException as error:  # never leave the table run RUNNING
        _write_results(parent_id, out_dir)
        tracking.end_run(parent_id, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if owned:
            executor.close()
        signal.signal(signal.SIGTERM, previous)
    results_path = _write_results(parent_id, out_dir)
    _log_summary(parent_id, progress.outcomes, select_by)
    tracking.end_run(parent_id, "FAILED" if any(o.status != "FINISHED" for o in progress.outcomes) else "FINISHED")
    outcome = TableOutcome(parent_id, out_dir, progress.outcomes, results_path)
    if register:
        from timl import register as registration

        outcome.registered = registration.register_best(parent_id, register, select_by=select_by)
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


def _open_table_run(table_path: Path, experiment: str, out_dir: str | Path | None, resume: bool) -> tuple[str, Path]:
    """Creates the table's run (or reopens it to resume) and its output folder; returns both."""
    out_dir = Path(out_dir) if out_dir else None
    parent_id = None
    if resume:
        parent_id, out_dir = _find_resume_run(out_dir, experiment, table_path)
    out_dir = out_dir or default_out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
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


def _finished_keys(parent_id: str) -> dict[str, str]:
    """Row keys of the parent's FINISHED children; closes children left RUNNING by a dead process."""
    children = tracking.child_runs(parent_id)
    tracking.close_dead_runs(children)
    return {run.data.tags.get(tracking.TAG_ROW_KEY): run.info.run_id for run in children
            if run.info.status == "FINISHED" and run.data.tags.get(tracking.TAG_ROW_KEY)}


def _row_tasks(configs: list[RunConfig | ConfigError], selection: list[int], table: TableContext,
               done: dict[str, str], row_ended: Callable[[RowOutcome], None]) -> Iterator[RowTask]:
    """The selected rows as tasks of ``table``, in table order. A row that failed validation gets its FAILED run
    and a row that already FINISHED is skipped, each reported as the executor reaches it."""
    for number in selection:
        item = configs[number]
        if isinstance(item, ConfigError):
            row_ended(_record_invalid_row(item, number, table.parent_run_id))
            continue
        key = item.key(__version__)
        if key in done:
            row_ended(RowOutcome(number, item.run_name, "FINISHED", done[key], "skipped: already FINISHED"))
            continue
        yield RowTask(item, key, table)


def _record_invalid_row(error: ConfigError, number: int, parent_id: str) -> RowOutcome:
    """A row that failed validation still gets a FAILED run, so the results table shows it and why."""
    row_run = tracking.RowRun(parent_id, f"{number}-invalid", number, f"invalid-{number}-{time.time()}")
    try:
        with row_run:
            raise error
    except ConfigError:
        pass
    return RowOutcome(number, f"{number}-invalid", "FAILED", row_run.run_id, str(error))


class _Progress:
    """Each ended row: kept, written to the results tables, printed with the table's ETA, passed to on_row."""

    def __init__(self, parent_id: str, out_dir: Path, total: int, on_row: Callable[[RowOutcome], None] | None):
        self.parent_id, self.out_dir, self.total, self.on_row = parent_id, out_dir, total, on_row
        self.outcomes: list[RowOutcome] = []
        self.started = time.time()

    def row_ended(self, outcome: RowOutcome) -> None:
        self.outcomes.append(outcome)
        done = len(self.outcomes)
        elapsed = time.time() - self.started
        remaining = self.total - done
        eta = elapsed / done * remaining
        left = f" | {remaining} left, about {datetime.timedelta(seconds=round(eta))}" if remaining else ""
        print(f"[{done}/{self.total}] row {outcome.name}: {outcome.status} in {outcome.seconds:.0f}s"
              f"{' - ' + outcome.message if outcome.message else ''}{left}", flush=True)
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
