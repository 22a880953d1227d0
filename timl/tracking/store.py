"""The tracking store: which URI TIML uses, the SQLite settings that let several processes share one store, the
lock under which one process creates (or migrates) its schema, experiments, and the errors a failing store raises.

MLflow is imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

#: MLflow's own default when neither --tracking-uri nor MLFLOW_TRACKING_URI is given.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

#: How MLflow's HTTP client retries a tracking server that does not answer (connection refused, 5xx), unless the
#: user set these: 6 retries with exponential backoff (0, 4, 8, 16, 32, 64 s, plus up to 1 s jitter each) wait
#: about 2 minutes before a call fails, so a table rides out a short server restart.
HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2"}

#: The MLflow HTTP client settings a process that logs for this one (a Ray worker) is handed: the retries above
#: (or the user's) and the user's request timeout.
HTTP_SETTINGS = (*HTTP_RETRIES, "MLFLOW_HTTP_REQUEST_TIMEOUT")


def configure(tracking_uri: str | None = None, create: bool = True) -> str:
    """Sets the tracking URI (argument, else MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db``).

    Args:
        tracking_uri: the URI given (None: the environment's, else the default).
        create: whether a SQLite store that does not exist may be created (MLflow creates the file on connect);
            commands that only read pass False, so that a typo or another folder leaves no empty ``mlflow.db``.

    Returns:
        The tracking URI in use.

    Raises:
        ModelError: ``create`` is False and the SQLite store does not exist (yet).
    """
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if not create:
        check_store_exists(uri)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:"):
        _tune_sqlite(uri)
    if uri.startswith(("http:", "https:")):
        for name, value in HTTP_RETRIES.items():
            os.environ.setdefault(name, value)
    return uri


def http_settings() -> dict[str, str]:
    """The MLflow HTTP client settings of this process (set by :func:`configure` or by the user), for the
    processes that log for it: a Ray worker sees its cluster's environment, not the driver's."""
    return {name: os.environ[name] for name in HTTP_SETTINGS if name in os.environ}


_INITIALISED: set[str] = set()


def sqlite_path(uri: str) -> str | None:
    """The database file of a ``sqlite:///`` URI; None for other URIs and in-memory databases."""
    if not uri.startswith("sqlite:"):
        return None
    path = uri.split("sqlite:///", 1)[-1].split("?", 1)[0]
    return path if path and path != ":memory:" else None


def check_store_exists(uri: str) -> None:
    """Raises, naming what to do next, when ``uri`` is a SQLite store whose file does not exist.

    Raises:
        ModelError: no such database file.
    """
    from timl.errors import ModelError

    path = sqlite_path(uri)
    if path is None or Path(path).is_file():
        return
    where = (f"{DEFAULT_TRACKING_URI} (the default: mlflow.db in the current folder {Path.cwd()})"
             if uri == DEFAULT_TRACKING_URI else uri)
    raise ModelError(f"There is no tracking store yet at {where}: nothing was trained or registered there. Run the "
                     "command in the folder where you trained (python -m timl.train ...), or give --tracking-uri "
                     "(or MLFLOW_TRACKING_URI) of the store that holds your runs. To serve or predict with a model "
                     "of it, register it first: python -m timl.register --run-id RUN_ID --name NAME (or give "
                     "--keras-model FILE.keras).")


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
    path = sqlite_path(uri)
    if path is None or uri in _INITIALISED:
        return
    from mlflow.tracking import MlflowClient

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not Path(path).is_file() or Path(path).stat().st_size == 0:
                _create_store_atomically(path)
            with _readable_store(path, uri):
                with contextlib.closing(sqlite3.connect(path, timeout=60)) as connection:
                    connection.execute("PRAGMA journal_mode=WAL")
                MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # migrates an older schema
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _INITIALISED.add(uri)


@contextlib.contextmanager
def _readable_store(path: str, uri: str):
    """Turns the errors of a corrupt or truncated SQLite store into a ConfigError naming the file.

    Raises:
        ConfigError: the file is no readable SQLite database, or not an MLflow store.
    """
    import sqlite3

    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import DatabaseError

    try:
        yield
    except (sqlite3.DatabaseError, DatabaseError, MlflowException) as error:
        from timl.errors import ConfigError

        reason = str(getattr(error, "orig", None) or error).splitlines()[0][:300]
        raise ConfigError(f"The tracking store {Path(path).resolve()} cannot be read: it is corrupt or truncated "
                          f"({reason}). Restore it from a backup, or give another --tracking-uri (a new file "
                          f"starts an empty store). Received: tracking_uri={uri!r}") from None


def _create_store_atomically(path: str) -> None:
    """Creates a new SQLite store beside ``path`` and renames it into place, so a process killed while MLflow
    creates its tables never leaves a half-made store behind."""
    from mlflow.tracking import MlflowClient

    temporary = Path(f"{path}.{os.getpid()}.creating")
    temporary.unlink(missing_ok=True)
    MlflowClient(tracking_uri=f"sqlite:///{temporary}").search_experiments(max_results=1)
    os.replace(temporary, path)


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


def experiment_name(experiment_id: str) -> str | None:
    """The name of an experiment, None if there is none with that id."""
    import mlflow

    found = mlflow.get_experiment(experiment_id)
    return found.name if found else None


def tracking_errors() -> tuple[type[Exception], ...]:
    """The exceptions a failing tracking store raises, for callers that go on without it."""
    from mlflow.exceptions import MlflowException

    return (MlflowException, OSError)
