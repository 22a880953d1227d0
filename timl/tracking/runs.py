"""Runs: a table's (parent) run and its rows' (child) runs, their states, closing the runs of dead processes,
ending a run FAILED or KILLED, finding a table's runs again, and the runs of single commands (inspect, explain,
review export).

A table is a parent run; each row is a child run named ``N-METHOD`` carrying a stable row key (tag
``timl.row_key``) so that ``--resume`` can find it. A :class:`RowRun` never ends RUNNING.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import os
import socket
import subprocess
from pathlib import Path
from typing import Iterator

from timl import __version__, metric_names, tables
from timl.errors import ConfigError
from timl.tracking.logging import dataset_input, log_datasets, log_metrics, set_tags
from timl.tracking.store import experiment_id, tracking_uri
from timl.tracking.tags import (KIND_ROW, KIND_TABLE, TAG_BEST_ROW, TAG_BEST_RUN, TAG_EXCEPTION, TAG_FOLD, TAG_HOST,
                                TAG_KIND, TAG_OUT_DIR, TAG_PARENT, TAG_PID, TAG_PROCESS_START,
                                TAG_ROW, TAG_ROW_KEY, TAG_STATUS, TAG_TABLE)

logger = logging.getLogger(__name__)

#: What a row out of memory should try, said before TensorFlow's own (long) message.
MEMORY_HINT = ("Out of memory: lower the row's batchsize or imgsize (or train it on a machine with more memory, "
               "or fewer rows at once). ")
#: What a row that filled the disk should try, said before the operating system's message.
DISK_FULL_HINT = ("Disk full: free space on the disk of the output folder (and of --checkpoint-dir), then continue "
                  "with the same command plus --resume; the rows that FINISHED are kept. ")


def git_commit() -> str | None:
    """The git commit of the TIML project when it runs from a checkout, else None."""
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def process_tags() -> dict:
    """Tags saying which process owns a run, so a later ``--resume`` can tell a dead run from a live one."""
    tags = {TAG_PID: str(os.getpid()), TAG_HOST: socket.gethostname(), TAG_PROCESS_START: _process_start(),
            "timl.version": __version__}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def start_table_run(experiment: str, table_path: str, out_dir: Path, resume_run_id: str | None = None) -> str:
    """Creates (or reopens, when resuming) the parent run of a table; returns its id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    if resume_run_id:
        return reopen_run(resume_run_id)
    tags = {TAG_KIND: KIND_TABLE, TAG_TABLE: str(Path(table_path).resolve()), TAG_OUT_DIR: str(out_dir.resolve()),
            **process_tags()}
    launched_by = os.environ.pop("MLFLOW_RUN_ID", None)  # `mlflow run` made a run for us: it is the table run
    if launched_by:
        run_id = launched_by
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
    else:
        name = table_run_name(table_path)
        run_id = client.create_run(experiment_id(experiment), run_name=name,
                                   tags={**tags, "mlflow.runName": name}).info.run_id
    client.log_artifact(run_id, str(tables.split_sheet(table_path)[0]))  # the file of FILE.xlsx#Sheet
    _log_table_dataset(run_id, Path(table_path))
    return run_id


def reopen_run(run_id: str) -> str:
    """Sets an ended run RUNNING again, owned by this process (a resumed table or cross-validation); returns its id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.update_run(run_id, status="RUNNING")
    owner = process_tags()
    for key in (TAG_PID, TAG_HOST, TAG_PROCESS_START):
        client.set_tag(run_id, key, owner[key])
    return run_id


def table_run_name(table_path: str | Path, when: datetime.datetime | None = None) -> str:
    """A table run's name: the table's file stem and when it started (``runs 2026-11-30 07:45``)."""
    return f"{Path(table_path).stem} {(when or datetime.datetime.now()).strftime('%Y-%m-%d %H:%M')}"


def _log_table_dataset(run_id: str, table_path: Path) -> None:
    try:
        frame = tables.read_cells(table_path, what="training table", error=ConfigError).astype(object)
        log_datasets([dataset_input(frame, source=str(table_path.resolve()), name=table_path.stem, context="table")],
                     run_id=run_id)
    except Exception as error:  # the record is worse without it, the table no worse: go on
        logger.warning("Could not log the table %s as a dataset of its run: %s", table_path, error)


def log_table_summary(run_id: str, counts: dict[str, int], best=None) -> None:
    """The table's run holds its summary: rows FINISHED / FAILED / KILLED, and the best row's scores and name."""
    metrics = {metric_names.rows_metric(status): count for status, count in counts.items()}
    if best is not None:
        metrics.update({metric_names.best_metric(name): value for name, value in best.data.metrics.items()
                        if metric_names.is_best_score(name)})
        set_tags({TAG_BEST_RUN: best.info.run_id, TAG_BEST_ROW: best.info.run_name}, run_id=run_id)
    log_metrics(metrics, run_id=run_id)


def runs_page(run_id: str) -> str:
    """Where the MLflow UI shows a run's experiment's runs (MLflow 3 opens experiments on another page):
    ``<server>/#/experiments/ID/runs`` for a tracking server, the fragment alone for a local store."""
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient().get_run(run_id).info.experiment_id
    uri = tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http:", "https:")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment}/runs"


def end_run(run_id: str, status: str) -> None:
    """Ends a run with ``status`` (FINISHED, FAILED or KILLED)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.set_tag(run_id, TAG_STATUS, status)
    client.set_terminated(run_id, status=status)


def get_run(run_id: str):
    """A run of the store.

    Raises:
        ConfigError: no such run.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient().get_run(run_id)
    except MlflowException as error:
        raise ConfigError(f"No such run in this tracking store. Received: run_id={run_id!r}") from error


def child_runs(parent_run_id: str) -> list:
    """Every row run of a table run, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.{TAG_PARENT} = '{parent_run_id}'",
                              order_by=["attributes.start_time ASC"], max_results=50000)
    return list(runs)


def table_runs(experiment: str) -> list:
    """Every table (parent) run of an experiment, newest first."""
    import mlflow
    from mlflow.tracking import MlflowClient

    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return []
    return list(MlflowClient().search_runs([found.experiment_id], filter_string=f"tags.`{TAG_KIND}` = '{KIND_TABLE}'",
                                           order_by=["attributes.start_time DESC"], max_results=50000))


def _process_start(pid: int | None = None) -> str:
    """When process ``pid`` (default: this one) started, as the tag ``timl.process_start`` records it; '' if gone."""
    import psutil

    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except (psutil.Error, ValueError):
        return ""


def _process_alive(run) -> bool:
    """Whether the process that owns ``run`` may still be running: its pid is alive on this host and, where the run
    recorded it, started when the owner did (a reused pid is another process). Another host's run counts alive."""
    tags = run.data.tags
    if tags.get(TAG_HOST) != socket.gethostname():
        return True  # another machine's process: we cannot tell, so leave it alone
    try:
        pid = int(tags.get(TAG_PID, "0"))
    except ValueError:
        return False
    if pid == os.getpid() or pid <= 0:
        return False
    recorded = tags.get(TAG_PROCESS_START)
    started = _process_start(pid)
    return bool(started) and (not recorded or started == recorded)


def close_dead_runs(runs: list) -> int:
    """Marks RUNNING runs whose process is gone (SIGKILL, power loss) as KILLED; returns how many."""
    closed = 0
    for run in runs:
        if run.info.status == "RUNNING" and not _process_alive(run):
            end_run(run.info.run_id, "KILLED")
            closed += 1
    return closed


def finished_children(parent_run_id: str) -> dict[str, str]:
    """Row key -> run id of a run's FINISHED children (the rows of a table, the folds of a cross-validation);
    children left RUNNING by a dead process are closed KILLED first."""
    children = child_runs(parent_run_id)
    close_dead_runs(children)
    return {run.data.tags.get(TAG_ROW_KEY): run.info.run_id for run in children
            if run.info.status == "FINISHED" and run.data.tags.get(TAG_ROW_KEY)}


def row_tags(row: int, row_key: str, fold: int | None = None, kind: str = KIND_ROW) -> dict:
    """The tags of a row's run: its row number and key (a fold of a cross-validation: its fold), its kind, and
    which process owns it."""
    folds = {} if fold is None else {TAG_FOLD: str(fold)}
    return {TAG_ROW: str(row), TAG_ROW_KEY: row_key, TAG_KIND: kind, **folds, **process_tags()}


def create_row_run(parent_run_id: str, run_name: str, row: int, row_key: str, fold: int | None = None,
                   kind: str = KIND_ROW, tags: dict | None = None) -> str:
    """Creates a row's child run without starting it here (for a row trained by another process, or a
    cross-validation run: ``kind`` cv); returns its id.

    The run has the tags a run started in this process would have (MLflow's source and user tags included), and
    ``tags`` (a trial's number and search).
    """
    from mlflow.tracking import MlflowClient
    from mlflow.tracking.context import registry

    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    tags = registry.resolve_tags({**row_tags(row, row_key, fold, kind), **(tags or {}), TAG_PARENT: parent_run_id,
                                  "mlflow.runName": run_name})
    return client.create_run(parent.info.experiment_id, run_name=run_name, tags=tags).info.run_id


class RowRun:
    """A row's child run; ``with`` ends it FINISHED, FAILED (error) or KILLED (interrupt), never RUNNING.

    With ``system_metrics``, MLflow's own system-metrics monitor samples CPU, memory, disk, network (and GPUs where
    ``nvidia-ml-py`` finds them) into ``system/...`` metrics every 10 s while the run is active.

    A fold of a cross-validation gives its ``fold`` (tag ``timl.fold``), a trial of a search its ``tags``. Without ``run_id`` it creates the run as it
    starts; with ``run_id`` it continues a run created by
    :func:`create_row_run` (a row trained by a cluster worker, or retried there). MLflow's exit hook would mark an
    active run FINISHED even after an error, so the state is set here.
    """

    def __init__(self, parent_run_id: str, run_name: str, row: int, row_key: str, run_id: str | None = None,
                 system_metrics: bool = False, fold: int | None = None, tags: dict | None = None):
        self.parent_run_id = parent_run_id
        self.run_name = run_name
        self.tags = {**row_tags(row, row_key, fold), **(tags or {})}
        self.run_id: str | None = run_id
        self.system_metrics = system_metrics
        self.status: str | None = None

    def __enter__(self) -> "RowRun":
        import mlflow

        if self.run_id is not None:
            mlflow.start_run(run_id=self.run_id, log_system_metrics=self.system_metrics)
            return self
        parent = mlflow.get_run(self.parent_run_id)
        run = mlflow.start_run(experiment_id=parent.info.experiment_id, run_name=self.run_name,
                               parent_run_id=self.parent_run_id, tags=self.tags, nested=True,
                               log_system_metrics=self.system_metrics)
        self.run_id = run.info.run_id
        return self

    def __exit__(self, error_type, error, traceback) -> bool:
        import mlflow

        if error_type is None:
            self.status = "FINISHED"
        elif issubclass(error_type, (KeyboardInterrupt, SystemExit)):
            self.status = "KILLED"
        else:
            self.status = "FAILED"
            mlflow.set_tag(TAG_EXCEPTION, error_text(error)[:4000])
        mlflow.set_tag(TAG_STATUS, self.status)
        mlflow.end_run(status=self.status)
        return False


def error_text(error: BaseException) -> str:
    """A failed row's error as its run and the results table's ``exceptions`` show it: ``Type: message``, after a
    hint when the row ran out of memory (TensorFlow's ResourceExhaustedError, Python's MemoryError) or disk space."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, MemoryError) or type(error).__name__ == "ResourceExhaustedError" or "OOM when" in text:
        return MEMORY_HINT + text
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return DISK_FULL_HINT + text
    return text


def fail_run(run_id: str, message: str) -> None:
    """Ends a run FAILED with ``message`` as its error (a row whose worker died), unless it has ended already."""
    from mlflow.tracking import MlflowClient

    if MlflowClient().get_run(run_id).info.status == "RUNNING":
        MlflowClient().set_tag(run_id, TAG_EXCEPTION, message[:4000])
        end_run(run_id, "FAILED")


def kill_run(run_id: str) -> None:
    """Ends a run KILLED (an interrupted table), unless it has ended already."""
    from mlflow.tracking import MlflowClient

    if MlflowClient().get_run(run_id).info.status == "RUNNING":
        end_run(run_id, "KILLED")


# ---------------------------------------------------------------------------------------------------------
# Runs of single commands (inspect, explain, review export): the client API with an explicit tracking URI


@contextlib.contextmanager
def command_run(experiment: str, run_name: str, tags: dict, tracking_uri: str | None = None) -> Iterator[str]:
    """Creates a run in ``experiment`` (made if missing) and yields its id; ends it FINISHED, or FAILED on error.

    Raises:
        ConfigError: the experiment is deleted.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None and found.lifecycle_stage != "active":
        raise ConfigError(f"The MLflow experiment '{experiment}' is deleted; restore it or give another "
                          f"--experiment. Received: experiment={experiment!r}")
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run_id = client.create_run(experiment_id, tags=tags, run_name=run_name).info.run_id
    try:
        yield run_id
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
