"""Every MLflow call of TIML: the tracking store, table (parent) and row (child) runs, run states, logging,
the runs of inspect and explain, loading a logged model, and the model registry.

Nothing else calls MLflow directly, except :mod:`timl.pyfunc`, which defines the logged model itself. A table is
a parent run; each row is a child run named ``N-METHOD`` carrying a stable row key (tag ``timl.row_key``) so
that ``--resume`` can find it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

from timl import __version__, metric_names, tables
from timl.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)

TAG_ROW_KEY = "timl.row_key"
TAG_ROW = "timl.row"
TAG_TABLE = "timl.table"
TAG_KIND = "timl.kind"
TAG_PID = "timl.pid"
TAG_HOST = "timl.host"
TAG_STATUS = "timl.status"
TAG_EXCEPTION = "timl.exception"
TAG_OUT_DIR = "timl.out_dir"
TAG_TRAINSTART = "timl.trainstart"
TAG_TRAINMODEL = "timl.trainmodel"
TAG_MODEL_SHA256 = "timl.model_sha256"
TAG_RESUMED_AT = "timl.resumed_at_epoch"
TAG_COMMAND = "timl.command"
TAG_MODEL_RUN = "timl.model_run_id"
TAG_PARENT = "mlflow.parentRunId"
TAG_WORKER = "timl.worker"
TAG_BEST_RUN = "timl.best_run_id"
TAG_BEST_ROW = "timl.best_row"
TAG_NODE = "timl.ray_node"
#: An export of expert answers (``timl.review export``): the model(s) reviewed, the reviewers, the images folder.
TAG_REVIEW_MODEL = "timl.review.model"
TAG_REVIEW_REVIEWERS = "timl.review.reviewers"
TAG_REVIEW_IMAGES = "timl.review.images"
#: A row's split whose CSV was exported from expert answers (``{split}``: train, dev, test): the export's run, its
#: CSV artifact and the reviewers.
TAG_DATASET_SOURCE_RUN = "timl.dataset.{split}.source_run"
TAG_DATASET_SOURCE = "timl.dataset.{split}.source"
TAG_DATASET_REVIEWERS = "timl.dataset.{split}.reviewers"
PARENT_MARKER = "parent_run_id.txt"

#: MLflow's own default when neither --tracking-uri nor MLFLOW_TRACKING_URI is given.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

#: How MLflow's HTTP client retries a tracking server that does not answer (connection refused, 5xx), unless the
#: user set these: 6 retries with exponential backoff (0, 4, 8, 16, 32, 64 s, plus up to 1 s jitter each) wait
#: about 2 minutes before a call fails, so a table rides out a short server restart.
HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2"}


def configure(tracking_uri: str | None = None) -> str:
    """Sets the tracking URI (argument, else MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db``).

    Returns:
        The tracking URI in use.
    """
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:"):
        _tune_sqlite(uri)
    if uri.startswith(("http:", "https:")):
        for name, value in HTTP_RETRIES.items():
            os.environ.setdefault(name, value)
    return uri


_INITIALISED: set[str] = set()


def _tune_sqlite(uri: str) -> None:
    """Lets several processes share one SQLite store.

    The store's schema is created (or migrated) by one process at a time, under a lock file beside the
    database, so two tables started together do not race on MLflow's migrations. WAL mode lets readers work
    while one process writes; MLflow's SQLAlchemy engine is told to wait for the write lock instead of failing
    with "database is locked".
    """
    import fcntl
    import sqlite3

    os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
    path = uri.split("sqlite:///", 1)[-1].split("?", 1)[0]
    if not path or path == ":memory:" or uri in _INITIALISED:
        return
    from mlflow.tracking import MlflowClient

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not Path(path).is_file() or Path(path).stat().st_size == 0:
                _create_store_atomically(path)
            with contextlib.closing(sqlite3.connect(path, timeout=60)) as connection:
                connection.execute("PRAGMA journal_mode=WAL")
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # migrates an older schema
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _INITIALISED.add(uri)


def _create_store_atomically(path: str) -> None:
    """Creates a new SQLite store beside ``path`` and renames it into place, so a process killed while MLflow
    creates its tables never leaves a half-made store behind."""
    from mlflow.tracking import MlflowClient

    temporary = Path(f"{path}.{os.getpid()}.creating")
    temporary.unlink(missing_ok=True)
    MlflowClient(tracking_uri=f"sqlite:///{temporary}").search_experiments(max_results=1)
    os.replace(temporary, path)


def experiment_id(name: str) -> str:
    """Returns the id of experiment ``name``, creating it when it does not exist (race-safe)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return mlflow.create_experiment(name)
    except MlflowException:
        return mlflow.get_experiment_by_name(name).experiment_id


def git_commit() -> str | None:
    """The git commit of the TIML project when it runs from a checkout, else None."""
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def process_tags() -> dict:
    """Tags saying which process owns a run, so a later ``--resume`` can tell a dead run from a live one."""
    tags = {TAG_PID: str(os.getpid()), TAG_HOST: socket.gethostname(), "timl.version": __version__}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def start_table_run(experiment: str, table_path: str, out_dir: Path, resume_run_id: str | None = None) -> str:
    """Creates (or reopens, when resuming) the parent run of a table; returns its id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    if resume_run_id:
        client.update_run(resume_run_id, status="RUNNING")
        client.set_tag(resume_run_id, TAG_PID, str(os.getpid()))
        return resume_run_id
    tags = {TAG_KIND: "table", TAG_TABLE: str(Path(table_path).resolve()), TAG_OUT_DIR: str(out_dir.resolve()),
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


def runs_page(run_id: str) -> str:
    """Where the MLflow UI shows a run's experiment's runs (MLflow 3 opens experiments on another page):
    ``<server>/#/experiments/ID/runs`` for a tracking server, the fragment alone for a local store."""
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient().get_run(run_id).info.experiment_id
    uri = tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http:", "https:")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment}/runs"


def table_run_name(table_path: str | Path, when: datetime.datetime | None = None) -> str:
    """A table run's name: the table's file stem and when it started (``runs 2026-11-30 07:45``)."""
    return f"{Path(table_path).stem} {(when or datetime.datetime.now()).strftime('%Y-%m-%d %H:%M')}"


def dataset_input(frame, *, source: str, name: str, context: str):
    """An MLflow dataset input: the frame's schema and digest (a hash of its content), its source file and the
    context it was used in (training, validation, testing, table)."""
    import warnings

    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():  # MLflow's notes on ambiguous local sources and integer columns
        warnings.simplefilter("ignore")
        dataset = mlflow.data.from_pandas(frame, source=source, name=name)
        return DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])


def log_datasets(run_id: str, inputs: list, tracking_uri: str | None = None) -> None:
    """Logs dataset inputs (:func:`dataset_input`) on a run: MLflow's Datasets column and a run's Datasets."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=tracking_uri).log_inputs(run_id, datasets=inputs)


def _log_table_dataset(run_id: str, table_path: Path) -> None:
    try:
        frame = tables.read_cells(table_path, what="training table", error=ConfigError).astype(object)
        log_datasets(run_id, [dataset_input(frame, source=str(table_path.resolve()), name=table_path.stem,
                                            context="table")])
    except Exception as error:  # the record is worse without it, the table no worse: go on
        logger.warning("Could not log the table %s as a dataset of its run: %s", table_path, error)


def log_table_summary(run_id: str, counts: dict[str, int], best=None) -> None:
    """The table's run holds its summary: rows FINISHED / FAILED / KILLED, and the best row's scores and name."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    metrics = {metric_names.rows_metric(status): count for status, count in counts.items()}
    if best is not None:
        metrics.update({metric_names.best_metric(name): value for name, value in best.data.metrics.items()
                        if metric_names.is_best_score(name)})
        client.set_tag(run_id, TAG_BEST_RUN, best.info.run_id)
        client.set_tag(run_id, TAG_BEST_ROW, best.info.run_name)
    log_batch(run_id, metrics)


def end_run(run_id: str, status: str) -> None:
    """Ends a run with ``status`` (FINISHED, FAILED or KILLED)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.set_tag(run_id, TAG_STATUS, status)
    client.set_terminated(run_id, status=status)


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
    return list(MlflowClient().search_runs([found.experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'table'",
                                           order_by=["attributes.start_time DESC"], max_results=50000))


def _process_alive(run) -> bool:
    tags = run.data.tags
    if tags.get(TAG_HOST) != socket.gethostname():
        return True  # another machine's process: we cannot tell, so leave it alone
    try:
        import psutil

        return psutil.pid_exists(int(tags.get(TAG_PID, "0"))) and int(tags.get(TAG_PID, "0")) != os.getpid()
    except ValueError:
        return False


def close_dead_runs(runs: list) -> int:
    """Marks RUNNING runs whose process is gone (SIGKILL, power loss) as KILLED; returns how many."""
    closed = 0
    for run in runs:
        if run.info.status == "RUNNING" and not _process_alive(run):
            end_run(run.info.run_id, "KILLED")
            closed += 1
    return closed


def row_tags(row: int, row_key: str) -> dict:
    """The tags of a row's run: its row number and key, and which process owns it."""
    return {TAG_ROW: str(row), TAG_ROW_KEY: row_key, TAG_KIND: "row", **process_tags()}


def create_row_run(parent_run_id: str, run_name: str, row: int, row_key: str) -> str:
    """Creates a row's child run without starting it here (for a row trained by another process); returns its id.

    The run has the tags a run started in this process would have (MLflow's source and user tags included).
    """
    from mlflow.tracking import MlflowClient
    from mlflow.tracking.context import registry

    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    tags = registry.resolve_tags({**row_tags(row, row_key), TAG_PARENT: parent_run_id, "mlflow.runName": run_name})
    return client.create_run(parent.info.experiment_id, run_name=run_name, tags=tags).info.run_id


class RowRun:
    """A row's child run; ``with`` ends it FINISHED, FAILED (error) or KILLED (interrupt), never RUNNING.

    With ``system_metrics``, MLflow's own system-metrics monitor samples CPU, memory, disk, network (and GPUs where
    ``nvidia-ml-py`` finds them) into ``system/...`` metrics every 10 s while the run is active.

    Without ``run_id`` it creates the run as it starts; with ``run_id`` it continues a run created by
    :func:`create_row_run` (a row trained by a cluster worker, or retried there). MLflow's exit hook would mark an
    active run FINISHED even after an error, so the state is set here.
    """

    def __init__(self, parent_run_id: str, run_name: str, row: int, row_key: str, run_id: str | None = None,
                 system_metrics: bool = False):
        self.parent_run_id = parent_run_id
        self.run_name = run_name
        self.tags = row_tags(row, row_key)
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


#: What a row out of memory should try, said before TensorFlow's own (long) message.
MEMORY_HINT = ("Out of memory: lower the row's batchsize or imgsize (or train it on a machine with more memory, "
               "or fewer rows at once). ")


def error_text(error: BaseException) -> str:
    """A failed row's error as its run and the results table's ``exceptions`` show it: ``Type: message``, after a
    hint when the row ran out of memory (TensorFlow's ResourceExhaustedError, Python's MemoryError)."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, MemoryError) or type(error).__name__ == "ResourceExhaustedError" or "OOM when" in text:
        return MEMORY_HINT + text
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


def log_params(params: dict) -> None:
    """Logs params, cut to MLflow's value limit."""
    import mlflow

    mlflow.log_params({key: str(value)[:6000] for key, value in params.items()})


def log_metrics(metrics: dict, step: int | None = None, model_id: str | None = None) -> None:
    """Logs finite numeric metrics (linked to the logged model ``model_id`` if given); None and NaN are skipped."""
    import math

    import mlflow

    clean = {key: float(value) for key, value in metrics.items()
             if value is not None and isinstance(value, (int, float)) and math.isfinite(float(value))}
    if clean:
        mlflow.log_metrics(clean, step=step, model_id=model_id)


def set_tags(tags: dict) -> None:
    import mlflow

    mlflow.set_tags({key: str(value) for key, value in tags.items()})


def log_artifacts(paths: list[Path], artifact_path: str | None = None) -> None:
    import mlflow

    for path in paths:
        if Path(path).exists():
            mlflow.log_artifact(str(path), artifact_path=artifact_path)


def active_run_id() -> str:
    import mlflow

    return mlflow.active_run().info.run_id


def tracking_uri() -> str:
    """The tracking URI in use."""
    import mlflow

    return mlflow.get_tracking_uri()


def portable_uri(uri: str) -> str:
    """The tracking URI as another process with another working directory must see it: a relative SQLite
    path or local folder made absolute; server URIs unchanged."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path, _, query = uri[len("sqlite:///"):].partition("?")
        if path and path != ":memory:":
            return f"sqlite:///{Path(path).resolve()}" + (f"?{query}" if query else "")
    if "://" not in uri and uri not in ("", "databricks"):
        return str(Path(uri).resolve())
    return uri


def logged_steps(run_id: str, key: str) -> set[int]:
    """The steps at which a run has a metric (to log only what an earlier attempt of a row did not)."""
    from mlflow.tracking import MlflowClient

    return {metric.step for metric in MlflowClient().get_metric_history(run_id, key)}


def download_artifacts(run_id: str, destination: Path) -> list[Path]:
    """Copies a run's artifacts (its root files and folders) into ``destination``; returns what arrived."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    destination.mkdir(parents=True, exist_ok=True)
    fetched = []
    for item in client.list_artifacts(run_id):
        fetched.append(Path(client.download_artifacts(run_id, item.path, str(destination))))
    return fetched


def experiment_name(experiment_id: str) -> str | None:
    """The name of an experiment, None if there is none with that id."""
    import mlflow

    found = mlflow.get_experiment(experiment_id)
    return found.name if found else None


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


# ---------------------------------------------------------------------------------------------------------
# Runs of single commands (inspect, explain): the client API with an explicit tracking URI


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


def log_batch(run_id: str, metrics: dict[str, float], params: dict | None = None,
              tracking_uri: str | None = None) -> None:
    """Logs metrics (step 0) and params on any run, in MLflow's batch sizes."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    timestamp = int(time.time() * 1000)
    entries = [Metric(key, value, timestamp, 0) for key, value in metrics.items()]
    for start in range(0, len(entries), 1000):
        client.log_batch(run_id, metrics=entries[start:start + 1000])
    items = [Param(key, str(value)) for key, value in (params or {}).items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start:start + 100])


def log_files(run_id: str, paths: list[Path], tracking_uri: str | None = None) -> list[str]:
    """Logs files as artifacts of any run (not only the active one), at the artifacts' root.

    Returns:
        Each file's artifact URI, ``runs:/<run_id>/<file name>``.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    for path in paths:
        client.log_artifact(run_id, str(path))
    return [f"runs:/{run_id}/{Path(path).name}" for path in paths]


def log_folder(run_id: str, folder: Path, artifact_path: str | None = None, tracking_uri: str | None = None) -> None:
    """Logs every file of ``folder`` as artifacts of any run (not only the active one)."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=tracking_uri).log_artifacts(run_id, str(folder), artifact_path=artifact_path)


def tracking_errors() -> tuple[type[Exception], ...]:
    """The exceptions a failing tracking store raises, for callers that go on without it."""
    from mlflow.exceptions import MlflowException

    return (MlflowException, OSError)


# ---------------------------------------------------------------------------------------------------------
# Logged models and the model registry


#: The artifacts of a TIML pyfunc model that TIML's own loaders read (see :func:`timl.pyfunc.log_model`).
MODEL_ARTIFACTS = ("keras_model", "timl_metadata")


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """A logged TIML model's files, downloaded without unpickling anything.

    Attributes:
        keras_model: the Keras file (artifact ``keras_model``).
        metadata: the TIML metadata JSON (artifact ``timl_metadata``).
        run_id: the run that logged the model, if the MLmodel file says.
        registered: ``NAME/VERSION`` when the URI named a registered version, else None.
        pinned_sha256: the Keras file's sha256 pinned on that registered version (tag ``timl.model_sha256``), or
            None (a ``runs:/`` URI, or a version registered before TIML pinned hashes).
    """

    keras_model: Path
    metadata: Path
    run_id: str | None = None
    registered: str | None = None
    pinned_sha256: str | None = None


def _registered_version(model_uri: str):
    """The registered ModelVersion a ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` (or stage) URI names; None
    for other URIs (``runs:/``, ``models:/m-ID`` of a logged model)."""
    from mlflow.store.artifact.utils.models import get_model_name_and_version
    from mlflow.tracking import MlflowClient

    if not model_uri.startswith("models:/"):
        return None
    client = MlflowClient()
    resolved = get_model_name_and_version(client, model_uri)
    return client.get_model_version(*resolved) if len(resolved) == 2 else None


def _artifact_file(model_dir: Path, mlmodel: dict, name: str, model_uri: str) -> Path:
    """The local file of one artifact of a pyfunc model, as its MLmodel names it (kept inside the model's folder).

    Raises:
        ModelError: the MLmodel names no such artifact (not a TIML model) or a path outside the model's folder.
    """
    artifacts = ((mlmodel.get("flavors") or {}).get("python_function") or {}).get("artifacts") or {}
    relative = (artifacts.get(name) or {}).get("path") if isinstance(artifacts.get(name), dict) else None
    if not relative:
        raise ModelError(f"{model_uri} is not a TIML model: its MLmodel names no {name!r} artifact. Expected a "
                         f"model logged by TIML training (artifacts {', '.join(MODEL_ARTIFACTS)}).")
    path = (model_dir / relative).resolve()
    if not path.is_relative_to(model_dir.resolve()) or not path.is_file():
        raise ModelError(f"{model_uri} is not a usable TIML model: its artifact {name!r} is not a file inside the "
                         f"model. Received: path={relative!r}")
    return path


def download_model_files(model_uri: str, destination: Path) -> ModelFiles:
    """Downloads a logged TIML model's Keras file and metadata; never loads its ``python_model.pkl``.

    ``mlflow.pyfunc.load_model`` unpickles the model's ``python_model.pkl`` (code from the artifact store) before
    TIML could check anything; TIML's own loaders (predict, explain, serve, review) use this instead. A
    ``models:/NAME@ALIAS`` URI is resolved to its version first, so the files and the version's pinned sha256
    belong to the same version.

    Args:
        model_uri: ``runs:/RUN_ID/model``, ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``models:/m-ID``.
        destination: an empty folder to download into.

    Raises:
        ModelError: no such model, or it is not a TIML model.
    """
    import mlflow.artifacts
    import yaml
    from mlflow.exceptions import MlflowException

    try:
        version = _registered_version(model_uri)
        source = f"models:/{version.name}/{version.version}" if version is not None else model_uri
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(destination)))
        mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text()) or {}
    except (MlflowException, OSError, yaml.YAMLError) as error:
        raise ModelError(f"Cannot load MLflow model. Expected runs:/RUN_ID/model, models:/NAME@ALIAS or "
                         f"models:/NAME/VERSION of a TIML model. Received: model_uri={model_uri!r} ({error})") from error
    keras_model, metadata = (_artifact_file(model_dir, mlmodel, name, model_uri) for name in MODEL_ARTIFACTS)
    if version is None:
        return ModelFiles(keras_model, metadata, mlmodel.get("run_id"))
    return ModelFiles(keras_model, metadata, version.run_id or mlmodel.get("run_id"),
                      f"{version.name}/{version.version}", version.tags.get(TAG_MODEL_SHA256))


def register_model(run_id: str, name: str, *, description: str, tags: dict, alias: str | None) -> str:
    """Registers ``runs:/RUN_ID/model`` as a new version of ``name`` with a description, tags and an alias.

    Returns:
        The new version number.

    Raises:
        ConfigError: the run has no logged model ``model``.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        version = mlflow.register_model(f"runs:/{run_id}/model", name, tags=tags)  # tags set as it is created
    except MlflowException as error:
        raise ConfigError(f"Run {run_id} has no logged model 'model' to register ({error}).") from error
    client.update_model_version(name, version.version, description=description)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def describe_model(model_uri: str, run_id: str | None = None) -> dict:
    """What a person should see of an MLflow model: ``name``, ``version``, ``date`` (ISO day) and ``run_id``.

    ``models:/NAME/VERSION`` and ``models:/NAME@ALIAS`` are looked up in the registry; ``runs:/ID/...`` gives
    the run's name and start. Whatever cannot be looked up (the store unreachable) is left out.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    facts: dict = {"run_id": run_id} if run_id else {}
    try:
        if model_uri.startswith("models:/"):
            reference = model_uri[len("models:/"):].strip("/")
            if "@" in reference:
                name, alias = reference.split("@", 1)
                version = client.get_model_version_by_alias(name, alias)
                facts["alias"] = alias
            else:
                name, number = reference.split("/", 1)
                version = client.get_model_version(name, number.split("/")[0])
            facts.update(name=name, version=str(version.version), run_id=version.run_id or run_id,
                         date=datetime.datetime.fromtimestamp(version.creation_timestamp / 1000).date().isoformat())
        elif run_id:
            info = client.get_run(run_id).info
            facts.update(name=info.run_name or run_id[:8],
                         date=datetime.datetime.fromtimestamp(info.start_time / 1000).date().isoformat())
    except (MlflowException, ValueError, OSError) as error:
        logger.warning("Cannot describe the model %s: %s", model_uri, error)
    return facts


@contextlib.contextmanager
def timed() -> Iterator[dict]:
    """Measures wall time: ``with timed() as t: ...; t["seconds"]``."""
    box = {"start": time.time()}
    try:
        yield box
    finally:
        box["seconds"] = time.time() - box["start"]
