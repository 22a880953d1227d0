"""Logging on a run: one family of ``log_*`` functions, each taking an optional ``run_id``.

``run_id=None`` means the active run (a row's run inside :class:`timl.tracking.runs.RowRun`); a ``run_id`` logs on
any run (a table's run, a command's run, the run of the model an inspection checked). ``tracking_uri`` names
another store than the configured one (the client API of a single command). The module also reads back what a
run holds: the steps of a metric and the run's artifacts.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

#: MLflow's limit on a param's value: longer values are cut to it.
PARAM_VALUE_LIMIT = 6000


def active_run_id() -> str:
    """The id of the active run.

    Raises:
        RuntimeError: no run is active.
    """
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("No active MLflow run to log on: give run_id, or log inside a run (tracking.RowRun).")
    return run.info.run_id


def _client(tracking_uri: str | None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def log_params(params: dict, *, run_id: str | None = None, tracking_uri: str | None = None) -> None:
    """Logs params as text, each cut to MLflow's value limit.

    Args:
        params: name -> value (any value; logged as ``str(value)``).
        run_id: the run to log on. Defaults to the active run.
        tracking_uri: the store of that run. Defaults to the configured one.
    """
    from mlflow.entities import Param

    if params:
        items = [Param(key, str(value)[:PARAM_VALUE_LIMIT]) for key, value in params.items()]
        _client(tracking_uri).log_batch(run_id or active_run_id(), params=items)


def log_metrics(metrics: dict, step: int | None = None, *, run_id: str | None = None, model_id: str | None = None,
                tracking_uri: str | None = None) -> None:
    """Logs finite numeric metrics; None, NaN, infinities and non-numbers are skipped.

    Args:
        metrics: name -> value.
        step: the step (epoch) of the values. Defaults to 0.
        run_id: the run to log on. Defaults to the active run.
        model_id: the logged model the values describe (linked in MLflow's Models tab). Defaults to none.
        tracking_uri: the store of that run. Defaults to the configured one.
    """
    clean = {key: float(value) for key, value in metrics.items()
             if value is not None and isinstance(value, (int, float)) and math.isfinite(float(value))}
    if not clean:
        return
    if run_id is None:  # MLflow's fluent call links the active run's metrics to its logged models
        import mlflow

        mlflow.log_metrics(clean, step=step, model_id=model_id)
        return
    from mlflow.entities import Metric

    timestamp = int(time.time() * 1000)
    entries = [Metric(key, value, timestamp, step or 0, model_id=model_id) for key, value in clean.items()]
    _client(tracking_uri).log_batch(run_id, metrics=entries)


def set_tags(tags: dict, *, run_id: str | None = None, tracking_uri: str | None = None) -> None:
    """Sets tags (values logged as ``str(value)``) on ``run_id``, else on the active run."""
    from mlflow.entities import RunTag

    if tags:
        items = [RunTag(key, str(value)) for key, value in tags.items()]
        _client(tracking_uri).log_batch(run_id or active_run_id(), tags=items)


def log_artifacts(paths: list[Path], artifact_path: str | None = None, *, run_id: str | None = None,
                  tracking_uri: str | None = None) -> list[str]:
    """Logs files as artifacts; a path that does not exist is skipped.

    Args:
        paths: the files.
        artifact_path: the artifact folder to log them in. Defaults to the artifacts' root.
        run_id: the run to log on. Defaults to the active run.
        tracking_uri: the store of that run. Defaults to the configured one.

    Returns:
        Each logged file's artifact URI, ``runs:/<run_id>/<artifact_path>/<file name>``.
    """
    run_id = run_id or active_run_id()
    client = _client(tracking_uri)
    folder = f"{artifact_path.strip('/')}/" if artifact_path else ""
    logged = []
    for path in map(Path, paths):
        if path.exists():
            client.log_artifact(run_id, str(path), artifact_path=artifact_path)
            logged.append(f"runs:/{run_id}/{folder}{path.name}")
    return logged


def log_folder(folder: Path, artifact_path: str | None = None, *, run_id: str | None = None,
               tracking_uri: str | None = None) -> None:
    """Logs every file of ``folder`` as artifacts (in ``artifact_path``, else at the root) of ``run_id``, else of
    the active run."""
    _client(tracking_uri).log_artifacts(run_id or active_run_id(), str(folder), artifact_path=artifact_path)


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


#: How a store refuses a dataset another run inserted between MLflow's lookup and its insert (SQLite, PostgreSQL,
#: MySQL; through an ``mlflow server`` the same text comes back in the error).
_DATASET_RACE = ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry")


def log_datasets(inputs: list, *, run_id: str | None = None, tracking_uri: str | None = None,
                 attempts: int = 5) -> None:
    """Logs dataset inputs (:func:`dataset_input`) on ``run_id``, else on the active run: MLflow's Datasets column
    and a run's Datasets.

    Runs starting at once in one experiment (parallel trials, rows on Ray) log the same datasets at the same moment:
    MLflow looks a dataset up, then inserts it, so one of two runs can meet the other's insert and fail on the
    store's unique key. Its whole call was rolled back; logged again, it finds the dataset and links it.
    """
    from mlflow.exceptions import MlflowException

    run_id = run_id or active_run_id()
    for attempt in range(attempts):
        try:
            _client(tracking_uri).log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as error:
            if attempt == attempts - 1 or not any(text in str(error) for text in _DATASET_RACE):
                raise
            time.sleep(0.05 * (attempt + 1))


def logged_steps(run_id: str, key: str) -> set[int]:
    """The steps at which a run has a metric (to log only what an earlier attempt of a row did not)."""
    return {metric.step for metric in _client(None).get_metric_history(run_id, key)}


def download_artifact(run_id: str, path: str, destination: Path) -> Path:
    """Copies one artifact of a run (``path`` relative to its artifact root) into ``destination``; returns the copy.

    Raises:
        MlflowException, OSError: the run has no such artifact, or the store cannot be reached.
    """
    destination.mkdir(parents=True, exist_ok=True)
    return Path(_client(None).download_artifacts(run_id, path, str(destination)))


def download_artifacts(run_id: str, destination: Path) -> list[Path]:
    """Copies a run's artifacts (its root files and folders) into ``destination``; returns what arrived."""
    client = _client(None)
    destination.mkdir(parents=True, exist_ok=True)
    return [Path(client.download_artifacts(run_id, item.path, str(destination)))
            for item in client.list_artifacts(run_id)]
