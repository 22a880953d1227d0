"""Logged models and the model registry: downloading a logged TIML model's files without unpickling anything,
registering a run's model as a version with its description, tags and alias, and the facts a model card shows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
from pathlib import Path

from timl.errors import ConfigError, ModelError
from timl.tracking.tags import TAG_MODEL_SHA256

logger = logging.getLogger(__name__)


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
                         f"models:/NAME/VERSION of a TIML model. Received: model_uri={model_uri!r} ({error}). "
                         f"{registry_overview()}") from error
    keras_model, metadata = (_artifact_file(model_dir, mlmodel, name, model_uri) for name in MODEL_ARTIFACTS)
    if version is None:
        return ModelFiles(keras_model, metadata, mlmodel.get("run_id"))
    return ModelFiles(keras_model, metadata, version.run_id or mlmodel.get("run_id"),
                      f"{version.name}/{version.version}", version.tags.get(TAG_MODEL_SHA256))


class _LoggedModelNotice(logging.Filter):
    """Drops MLflow 3's notice that a run's model is a logged model (``models:/m-ID``), not run artifacts: TIML
    logs every model that way, so registering ``runs:/ID/model`` always takes that (documented) path."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Run with id ") and "has no artifacts at artifact path" in message)


@contextlib.contextmanager
def _quiet_logged_model_notice():
    """While registering: MLflow's registry logger without that one notice (its other warnings stay)."""
    registry_logger, notice = logging.getLogger("mlflow.tracking._model_registry.fluent"), _LoggedModelNotice()
    registry_logger.addFilter(notice)
    try:
        yield
    finally:
        registry_logger.removeFilter(notice)


def registry_overview(limit: int = 20) -> str:
    """What the tracking store in use holds, for an error about a model not found: the store's URI, its registered
    models with their aliases and latest version, and how to register one."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from timl.tracking.store import tracking_uri

    register = "register it first: python -m timl.register --run-id RUN_ID --name NAME --alias champion"
    try:
        models = MlflowClient().search_registered_models(max_results=limit)
    except (MlflowException, OSError) as error:
        return f"Looked in the tracking store {tracking_uri()} (unreadable: {error}); {register}."
    if not models:
        return (f"The tracking store {tracking_uri()} has no registered models: {register} (RUN_ID: the run_id "
                "column of automation_result.csv), or give another --tracking-uri.")
    lines = []
    for model in models:
        versions = [int(version.version) for version in (model.latest_versions or [])]
        aliases = ", ".join(f"@{alias} (v{version})" for alias, version in sorted((model.aliases or {}).items()))
        lines.append(f"models:/{model.name}" + (f" latest v{max(versions)}" if versions else "") +
                     (f" aliases {aliases}" if aliases else " (no aliases)"))
    return (f"The tracking store {tracking_uri()} has these registered models: {'; '.join(lines)}. Use one of them, "
            f"or {register}.")


def check_model_uri(model_uri: str) -> None:
    """Checks, without downloading it, that ``model_uri`` names a model of the store in use: a registered version
    (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``) or a run's logged folder (``runs:/RUN_ID/PATH``).

    Raises:
        ModelError: no such version or run artifact; the message lists what the store has (:func:`registry_overview`).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        if model_uri.startswith("runs:/"):
            run_id, _, path = model_uri[len("runs:/"):].partition("/")
            if not MlflowClient().list_artifacts(run_id, path.strip("/") or None):
                raise MlflowException(f"run {run_id} has no artifact {path!r}")
        else:
            _registered_version(model_uri)
    except MlflowException as error:
        raise ModelError(f"No model {model_uri} ({error}). {registry_overview()}") from error


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
        with _quiet_logged_model_notice():
            version = mlflow.register_model(f"runs:/{run_id}/model", name, tags=tags)  # tags set as it is created
    except MlflowException as error:
        raise ConfigError(f"Run {run_id} has no logged model 'model' to register ({error}).") from error
    client.update_model_version(name, version.version, description=description)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def run_version(name: str, run_id: str) -> str | None:
    """The version of registered model ``name`` made from run ``run_id`` (the lowest when several), or None."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        versions = MlflowClient().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        return None
    numbers = sorted(int(version.version) for version in versions)
    return str(numbers[0]) if numbers else None


def update_version(name: str, version: str, *, description: str, tags: dict, alias: str | None) -> str:
    """Brings an existing version of ``name`` up to date (description, tags) and points ``alias`` at it; returns
    the version."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.update_model_version(name, version, description=description)
    set_version_tags(name, version, tags)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return str(version)


def alias_version(name: str, alias: str):
    """The ModelVersion of registered model ``name`` that ``alias`` points at; None when the model or the alias does
    not exist (yet)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def set_version_tags(name: str, version: str, tags: dict) -> None:
    """Sets tags on registered version ``name``/``version``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))


def version_files(model_uri: str, tag: str) -> dict[str, str] | None:
    """The text files of the artifact folder that tag ``tag`` of the registered version ``model_uri`` names (a
    folder of the version's run, e.g. its model card): ``{file name: text}``; None when ``model_uri`` names no
    registered version, the version has no such tag, or the folder cannot be read."""
    import tempfile

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        version = _registered_version(model_uri)
        folder = version.tags.get(tag) if version is not None else None
        if not folder or not version.run_id:
            return None
        with tempfile.TemporaryDirectory(prefix="timl-version-") as destination:
            local = Path(MlflowClient().download_artifacts(version.run_id, folder, destination))
            return {path.name: path.read_text(encoding="utf-8") for path in sorted(local.iterdir()) if path.is_file()}
    except (MlflowException, OSError, ValueError) as error:
        logger.warning("Cannot read %s of %s: %s", tag, model_uri, error)
        return None


def model_card_facts(model_uri: str, run_id: str | None = None) -> dict:
    """What a person should see of an MLflow model (its card): ``name``, ``version``, ``date`` (ISO day) and ``run_id``.

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
