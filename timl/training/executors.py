"""Executors: how the table's rows get trained. The table loop hands each validated row to an executor.

The seam is :class:`Executor`: ``run(task) -> RowOutcome`` trains one row in its own child run and says how it
ended, never raising for a row that failed (only an interrupt goes through). ``run_all(tasks)`` yields the
outcomes of many rows; the default calls ``run`` on each in turn, an executor that trains rows in parallel
overrides it and yields outcomes as rows end. A task may be ``None``: the next task waits until a row has ended
(a search asks its study for a trial once a slot of ``--parallel`` is free: :mod:`timl.search.searches`). :class:`LocalExecutor`, the default, trains in this process.
"""

from __future__ import annotations

import abc
import dataclasses
import gc
import logging
import time
from pathlib import Path
from typing import Iterable, Iterator

from timl import plots, tracking, workers
from timl.config import RunConfig
from timl.intervals import DEFAULT_RESAMPLES

logger = logging.getLogger(__name__)

#: What the plot process imports as it starts (see :mod:`timl.workers`).
REPORT_MODULES = ("timl.plots", "matplotlib.figure", "matplotlib.backends.backend_agg", "PIL.PngImagePlugin")


#: A task that waits for a row to end while none is training: a trial's end never reached its search (a bug).
NOTHING_TO_WAIT_FOR = "A task waits for a row to end, but no row is training."


@dataclasses.dataclass(frozen=True)
class TableContext:
    """What every row of a table shares: the table's run, its output folder and the options of its rows.

    Attributes:
        parent_run_id: the table's run; each row's run is its child.
        out_dir: the table's output folder.
        img_dir: the image folder for every row, or None for ``images/`` beside each dataset CSV.
        skip_roc: do not draw ROC plots.
        checkpoint_root: the folder of the rows' checkpoint folders (``<root>/N``; an absolute path: every node
            of a cluster must reach it for a retried task to continue where its worker died).
        system_metrics: log MLflow's system metrics (CPU, memory, GPU) to each row's run.
        bootstrap: resamples of the dev and test scores' 95% intervals (0: none).
    """

    parent_run_id: str
    out_dir: Path
    img_dir: str | Path | None = None
    skip_roc: bool = False
    checkpoint_root: Path | None = None
    system_metrics: bool = True
    bootstrap: int = DEFAULT_RESAMPLES


@dataclasses.dataclass(frozen=True)
class RowTask:
    """One validated row of a table, and the table it belongs to.

    Attributes:
        config: the row (:class:`timl.config.RunConfig`).
        row_key: the row's stable key (tag ``timl.row_key``), by which ``--resume`` finds its run.
        table: what the table's rows share (:class:`TableContext`).
    """

    config: RunConfig
    row_key: str
    table: TableContext

    @property
    def checkpoint_dir(self) -> Path | None:
        """The row's checkpoint folder, ``<checkpoint_root>/N`` (None: the default, ``out_dir/.backup/N``)."""
        root = self.table.checkpoint_root
        return None if root is None else Path(root) / self.config.file_stem


@dataclasses.dataclass
class RowOutcome:
    """How one row ended: FINISHED, FAILED or KILLED, its run, a message (the error or the scores), its time."""

    row: int
    name: str
    status: str
    run_id: str | None = None
    message: str = ""
    seconds: float = 0.0


class Executor(abc.ABC):
    """Trains the rows the table loop hands over, each in its own child run of the table's run.

    An executor keeps the table's guarantees for the rows it runs: a failed row ends FAILED with its error (and
    ``run`` returns its outcome instead of raising), an interrupt ends the rows it was running KILLED and goes
    through as ``KeyboardInterrupt``, and no row is left RUNNING.
    """

    @abc.abstractmethod
    def run(self, task: RowTask) -> RowOutcome:
        """Trains one row; returns how it ended."""

    def run_all(self, tasks: Iterable[RowTask | None]) -> Iterator[RowOutcome]:
        """Trains many rows; yields each outcome as its row ends. The default runs them one after the other,
        taking the next task only when the previous row ended (so no task may be ``None``: none is training)."""
        for task in tasks:
            if task is None:  # one row at a time: none is training when the next task is taken
                raise RuntimeError(NOTHING_TO_WAIT_FOR)
            yield self.run(task)

    def close(self) -> None:
        """Releases what the executor started (processes, connections)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class LocalExecutor(Executor):
    """Trains each row in this process, one after the other; a second process draws the report plots.

    Args:
        skip_roc: the table draws no ROC plots, so no plot process is started. Defaults to False.
        gpus: GPUs of a row whose ``gpus`` cell is empty; 2 or more train under MirroredStrategy. Defaults to
            None (the default device).
    """

    def __init__(self, *, skip_roc: bool = False, gpus: float | None = None):
        self.gpus = gpus
        # The plot process starts now: it imports matplotlib while the first row reads its images
        self.reports = workers.Worker(REPORT_MODULES, enabled=not skip_roc)
        self.reports.submit(plots.warm_up)
        self._rows_run = 0

    def run(self, task: RowTask) -> RowOutcome:
        from timl.training.row import train_row

        if self._rows_run:  # the Keras session is cleared between rows; after the last one the process ends
            release_memory()
        self._rows_run += 1
        config = task.config
        began = time.time()
        table = task.table
        row_run = tracking.RowRun(table.parent_run_id, config.run_name, config.row, task.row_key,
                                  system_metrics=table.system_metrics, fold=config.cv_fold,
                                  tags=config.trial.tags() if config.trial else None)
        try:
            with row_run:
                headline = train_row(config, out_dir=table.out_dir, img_dir=table.img_dir, skip_roc=table.skip_roc,
                                     reports=self.reports, checkpoint_dir=task.checkpoint_dir, gpus=self.gpus,
                                     bootstrap=table.bootstrap)
        except KeyboardInterrupt:
            raise
        except Exception as error:  # a failed row never takes the table down
            logger.debug("row %d failed", config.row, exc_info=True)
            return RowOutcome(config.row, config.run_name, "FAILED", row_run.run_id, tracking.error_text(error),
                              time.time() - began)
        return RowOutcome(config.row, config.run_name, "FINISHED", row_run.run_id, headline_message(headline),
                          time.time() - began)

    def close(self) -> None:
        self.reports.close()


def headline_message(headline: dict) -> str:
    """A finished row's scores as its progress line shows them: ``dev/accuracy 0.912, ...``."""
    return ", ".join(f"{key} {value:.3f}" for key, value in headline.items() if value is not None)


def release_memory() -> None:
    """Clears the Keras session between rows so memory does not grow with the number of rows."""
    import keras

    keras.backend.clear_session()
    gc.collect()
