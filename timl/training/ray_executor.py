"""The Ray executor: a table's rows fanned out over a Ray cluster, one Ray task per row.

The driver (the ``timl.train`` process) owns the runs: it creates each row's child run, submits one task per row
with the row's CPUs and GPUs, and ends the run itself when the task cannot (a worker that died after its
retries, an interrupted table). A task continues the row's run by id in a worker process, trains the row in a
temporary folder of its node, logs everything to the tracking store and returns how the row ended; the driver
then copies the row's artifacts (model, plots, tables) into the table's output folder, so workers need no shared
output folder. A task whose worker process or node dies is retried by Ray (``max_retries``) in the same run,
continuing from the row's last checkpoint when the checkpoint folder is reachable from the new node.

What every worker needs: TIML installed (or the project shipped by Ray Jobs, ``ray job submit --working-dir .``),
the images at the table's paths (a shared file system), and the tracking store (a tracking server for a
cluster; an SQLite file works for a Ray instance on this machine).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator

from timl import tracking, workers
from timl.config import RunConfig
from timl.errors import ConfigError, MissingFileError
from timl.images.shared_cache import IMAGE_CACHE_VARIABLE, MAX_SIZE_VARIABLE
from timl.training.activations import CACHE_VARIABLE as ACTIVATION_CACHE_VARIABLE
from timl.training.executors import (NOTHING_TO_WAIT_FOR, REPORT_MODULES, Executor, RowOutcome, RowTask,
                                     headline_message, release_memory)

logger = logging.getLogger(__name__)

#: The one line ``--executor ray`` prints when Ray is not installed.
INSTALL_HINT = "--executor ray needs Ray, an optional extra: pip install 'timl[ray]'"

#: Times Ray reruns a row whose worker process or node died, by default.
DEFAULT_RETRIES = 2


def import_ray():
    """Imports Ray.

    Raises:
        ConfigError: Ray is not installed; the message says how to install it.
    """
    try:
        import ray
    except ImportError as error:
        raise ConfigError(f"{INSTALL_HINT} (Received: {error}).") from None
    return ray


#: The driver's cache folders a worker uses too: with ``TIML_IMAGE_CACHE`` the rows and trials of one node map one
#: decoded copy of their images (:mod:`timl.images.shared_cache`, bounded by ``TIML_IMAGE_CACHE_MAX_GB``);
#: ``TIML_ACTIVATION_CACHE``: the frozen backbone's.
CACHE_SETTINGS = (IMAGE_CACHE_VARIABLE, MAX_SIZE_VARIABLE, ACTIVATION_CACHE_VARIABLE)


class RayExecutor(Executor):
    """Trains each row as a Ray task, as many at a time as the cluster's resources allow.

    Args:
        address: the cluster to join (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``); None starts a Ray instance
            on this machine for the table and stops it at the end.
        row_cpus: CPUs per row unless its ``cpus`` cell says otherwise. Defaults to 1.
        row_gpus: GPUs per row unless its ``gpus`` cell says otherwise; 2 or more train the row under
            MirroredStrategy. Defaults to 0.
        max_retries: reruns of a row whose worker process or node died. Defaults to 2.
        num_cpus: CPUs of a Ray instance started here (default: all of this machine's).

    Raises:
        ConfigError: Ray is not installed, or the cluster cannot be reached.
    """

    def __init__(self, *, address: str | None = None, row_cpus: float = 1, row_gpus: float = 0,
                 max_retries: int = DEFAULT_RETRIES, num_cpus: int | None = None):
        ray = import_ray()
        self.row_cpus, self.row_gpus, self.max_retries = row_cpus, row_gpus, max_retries
        self._started_here = False
        if not ray.is_initialized():
            try:
                ray.init(address=address or None, num_cpus=None if address else num_cpus,
                         include_dashboard=False, configure_logging=False, log_to_driver=True)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise ConfigError(f"Cannot reach the Ray cluster. Expected auto, HOST:PORT or ray://HOST:PORT of a "
                                  f"running cluster. Received: ray_address={address!r} ({error})") from error
            self._started_here = address is None
        self._remote = ray.remote(train_on_worker)

    def run(self, task: RowTask) -> RowOutcome:
        return next(iter(self.run_all([task])))

    def run_all(self, tasks: Iterable[RowTask | None]) -> Iterator[RowOutcome]:
        """Submits every row at once; yields each outcome as its row ends. A ``None`` among the tasks (a search
        with ``--parallel`` trials training) waits for a row to end first. Closed early (an interrupt, an error
        of the table), it cancels the rows still running and ends their runs KILLED."""
        import ray

        pending: dict = {}
        try:
            for task in tasks:
                if task is None:
                    if not pending:
                        raise RuntimeError(NOTHING_TO_WAIT_FOR)
                    [ref], _ = ray.wait(list(pending), num_returns=1)
                    yield self._outcome(ref, pending.pop(ref))
                    continue
                ref, submitted = self._submit(task)
                pending[ref] = submitted
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                yield self._outcome(ref, pending.pop(ref))
        except BaseException:
            for ref, submitted in pending.items():
                ray.cancel(ref, force=True)
                tracking.kill_run(submitted.run_id)
            raise

    def _submit(self, task: RowTask) -> tuple:
        config = task.config
        cpus = config.cpus if config.cpus is not None else self.row_cpus
        gpus = config.gpus if config.gpus is not None else self.row_gpus
        table = task.table
        run_id = tracking.create_row_run(table.parent_run_id, config.run_name, config.row, task.row_key,
                                         fold=config.cv_fold, tags=config.trial.tags() if config.trial else None)
        payload = {"config": _portable_config(config), "run_id": run_id, "parent_run_id": table.parent_run_id,
                   "row_key": task.row_key, "tracking_uri": tracking.portable_uri(tracking.tracking_uri()),
                   "cwd": os.getcwd(),
                   "img_dir": str(Path(table.img_dir).resolve()) if table.img_dir else None,
                   "skip_roc": table.skip_roc, "checkpoint_dir": str(task.checkpoint_dir), "gpus": gpus,
                   "system_metrics": table.system_metrics, "bootstrap": table.bootstrap}
        # TensorFlow's op threads sized to the row's CPUs, not the node's (its inter-op pool stays: with one
        # thread there, the input pipeline and the model no longer overlap; measured 40 % slower on one CPU)
        env = {"TF_NUM_INTRAOP_THREADS": str(max(1, int(cpus))), "TF_CPP_MIN_LOG_LEVEL": "2",
               **tracking.http_settings(),  # the driver's retries ride out a tracking-server outage on the worker
               **{name: os.environ[name] for name in CACHE_SETTINGS if name in os.environ}}
        if not gpus:
            env["CUDA_VISIBLE_DEVICES"] = ""  # a row without GPUs leaves the node's GPUs to the rows that asked
        ref = self._remote.options(num_cpus=cpus, num_gpus=gpus, max_retries=self.max_retries,
                                   retry_exceptions=False, runtime_env={"env_vars": env}).remote(payload)
        return ref, _Submitted(task, run_id, time.time())

    def _outcome(self, ref, submitted: "_Submitted") -> RowOutcome:
        import ray

        task, config = submitted.task, submitted.task.config
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as error:  # the worker (or its node) died and the retries are spent
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            message = (f"{type(error).__name__}: the row's Ray worker died and {self.max_retries} retries "
                       f"are spent ({first_line})")
            result = {"status": "FAILED", "message": message}
        if result["status"] != "FINISHED":  # the task could not end its run (a dead worker, an unreachable store)
            tracking.fail_run(submitted.run_id, result["message"])
        try:
            tracking.download_artifacts(submitted.run_id, Path(task.table.out_dir))
        except tracking.tracking_errors() as error:
            logger.warning("Could not copy the files of row %s into %s: %s", config.row, task.table.out_dir, error)
        return RowOutcome(config.row, config.run_name, result["status"], submitted.run_id, result["message"],
                          time.time() - submitted.started)

    def close(self) -> None:
        import ray

        if self._started_here and ray.is_initialized():
            ray.shutdown()


@dataclasses.dataclass(frozen=True)
class _Submitted:
    """A row handed to Ray: its task, the run the driver made for it, and when."""

    task: RowTask
    run_id: str
    started: float


def _portable_config(config: RunConfig) -> RunConfig:
    """The row with the table's path made absolute, so that a worker resolves its relative paths as here."""
    return dataclasses.replace(config, table_path=str(Path(config.table_path).resolve()) if config.table_path
                               else "")


# ---------------------------------------------------------------------------------------------------------
# In the Ray worker process

_REPORTS: dict = {}


def _reports(skip_roc: bool) -> workers.Worker:
    """The worker process's plot process, started with its first row and kept for the next ones."""
    if skip_roc:
        return workers.Worker(enabled=False)
    if "worker" not in _REPORTS:
        _REPORTS["worker"] = workers.Worker(REPORT_MODULES)
    return _REPORTS["worker"]


def train_on_worker(payload: dict) -> dict:
    """The Ray task of one row: continues the row's run, trains the row in a temporary folder, logs it.

    Returns:
        ``{"status": "FINISHED" | "FAILED", "message": ..., "node": ..., "host": ...}``; a row that failed is
        FAILED in the store with its error (a missing file names this worker's host).
    """
    import ray

    from timl.training.row import train_row

    host, node = socket.gethostname(), ray.get_runtime_context().get_node_id()
    tracking.configure(payload["tracking_uri"])
    config = payload["config"]
    previous = os.getcwd()
    if Path(payload["cwd"]).is_dir():  # relative paths of the table resolve as on the driver (shared folders)
        os.chdir(payload["cwd"])
    work = Path(tempfile.mkdtemp(prefix=f"timl-row{config.row}-"))
    release_memory()  # a worker process trains many rows: each starts with a fresh Keras session
    row_run = tracking.RowRun(payload["parent_run_id"], config.run_name, config.row, payload["row_key"],
                              run_id=payload["run_id"], system_metrics=payload["system_metrics"])
    try:
        with row_run:
            tracking.set_tags({tracking.TAG_WORKER: f"{host}:{os.getpid()}", tracking.TAG_NODE: node})
            try:
                headline = train_row(config, out_dir=work, img_dir=payload["img_dir"], skip_roc=payload["skip_roc"],
                                     reports=_reports(payload["skip_roc"]),
                                     checkpoint_dir=Path(payload["checkpoint_dir"]), gpus=payload["gpus"],
                                     bootstrap=payload["bootstrap"])
            except MissingFileError as error:
                raise MissingFileError(f"on Ray worker {host}: {error}") from error
        return {"status": "FINISHED", "message": headline_message(headline), "node": node, "host": host}
    except Exception as error:  # the run is FAILED with its error; the driver goes on with the other rows
        return {"status": "FAILED", "message": tracking.error_text(error), "node": node, "host": host}
    finally:
        os.chdir(previous)
        shutil.rmtree(work, ignore_errors=True)
