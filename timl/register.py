"""``python -m timl.register``: register a row's model, or the best row of a table, in the MLflow model registry.

``python -m timl.register --run-id ID --name NAME [--alias champion]``; ``python -m timl.train --register NAME``
registers the best row of the table it trained (:func:`register_best`).
"""

from __future__ import annotations

import logging

import click

from timl import metric_names as names
from timl.cli import command, tracking_uri_option, user_errors
from timl.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)


def register_run(run_id: str, name: str, *, alias: str | None = "champion") -> str:
    """Registers ``runs:/RUN_ID/model`` as a new version of ``name``, tagged with the run's metrics and the
    sha256 of its Keras file (tag ``timl.model_sha256``, checked whenever TIML loads the version).

    Returns:
        ``models:/NAME/VERSION`` of the new version.

    Raises:
        ConfigError: no such run, the run has no logged model, or its Keras file changed since training.
    """
    from timl import tracking

    run = tracking.get_run(run_id)
    params, metrics = run.data.params, run.data.metrics
    description = (f"TIML {params.get('method', '?')} trained on {params.get('dataset', '?')} "
                   f"(split {params.get('split', '?')}, {params.get('epochs', '?')} epochs, "
                   f"imgsize {params.get('imgsize', '?')}), run {run_id}.{_datasets(run)}{_scores(metrics)}")
    tags = {key: f"{metrics[key]:.4f}" for key in names.TAGGED_METRICS if key in metrics}
    tags.update({"dataset": params.get("dataset", ""), "method": params.get("method", ""), "run_id": run_id})
    pinned = _model_sha256(run)
    if pinned:
        tags[tracking.TAG_MODEL_SHA256] = pinned
    version = tracking.register_model(run_id, name, description=description, tags=tags, alias=alias)
    return f"models:/{name}/{version}"


def _model_sha256(run) -> str | None:
    """The sha256 of the run's Keras model file, pinned on the registered version so that loading
    ``models:/NAME/VERSION`` refuses a file changed in the artifact store afterwards; None for a run whose model is
    not a TIML model (nothing to pin).

    Raises:
        ConfigError: the file's sha256 is not the one the run recorded at training (tag ``timl.model_sha256``).
    """
    import tempfile
    from pathlib import Path

    from timl import tracking
    from timl.classifier import sha256_of

    run_id = run.info.run_id
    with tempfile.TemporaryDirectory(prefix="timl-register-") as folder:
        try:
            files = tracking.download_model_files(f"runs:/{run_id}/model", Path(folder))
        except ModelError:
            return None  # no TIML model: registering says what is missing, or a foreign model has nothing to pin
        actual = sha256_of(files.keras_model)
    recorded = run.data.tags.get(tracking.TAG_MODEL_SHA256)
    if recorded and recorded != actual:
        raise ConfigError(f"Refusing to register run {run_id}: its logged Keras file changed after training. "
                          f"Expected sha256 {recorded} (run tag {tracking.TAG_MODEL_SHA256}). "
                          f"Received: sha256={actual}")
    return actual


def _datasets(run) -> str:
    """`` Datasets: digits-train (training, 1a2b3c4d), ...`` from the run's dataset inputs."""
    named = [f"{item.dataset.name} ({tag}, {item.dataset.digest})" for item in run.inputs.dataset_inputs
             for tag in [next((t.value for t in item.tags if t.key == "mlflow.data.context"), "")]]
    return f" Datasets: {', '.join(named)}." if named else ""


def _scores(metrics: dict) -> str:
    """`` Test: accuracy 0.912, balanced_accuracy 0.905, auc 0.981.``"""
    group = names.summary_group(names.TEST)
    test = [f"{name.removeprefix(group)} {metrics[name]:.3f}" for name in names.TAGGED_METRICS
            if name.startswith(group) and name in metrics]
    return f" Test: {', '.join(test)}." if test else ""


def best_run(parent_run_id: str, select_by: str = names.DEFAULT_SELECT_BY) -> str:
    """The FINISHED row run of a table (cross-validations aside) with the highest ``select_by`` metric (a metric name, a results column or an
    earlier name: :func:`timl.metric_names.resolve_select_by`).

    Raises:
        ConfigError: no finished row has that metric.
    """
    from timl import tracking

    metric = names.resolve_select_by(select_by)
    candidates = [run for run in tracking.child_runs(parent_run_id)  # a cross-validation has no model of its own
                  if run.info.status == "FINISHED" and metric in run.data.metrics
                  and run.data.tags.get(tracking.TAG_KIND) != tracking.KIND_CV]
    if not candidates:
        raise ConfigError(f"No finished row of table run {parent_run_id} has the metric {metric!r} "
                          "to select by. Received: select_by=" + repr(select_by))
    return max(candidates, key=lambda run: run.data.metrics[metric]).info.run_id


def register_best(parent_run_id: str, name: str, *, select_by: str = names.DEFAULT_SELECT_BY,
                  alias: str = "champion") -> str:
    """Registers the best row of a table run and points ``alias`` at it."""
    return register_run(best_run(parent_run_id, select_by), name, alias=alias)


@command(epilog="Example: python -m timl.register --run-id 3f2a... --name skin-lesions --alias champion")
@click.option("--run-id", required=True, help="The row run whose model to register.")
@click.option("--name", required=True, help="Registered model name.")
@click.option("--alias", default="champion", show_default=True, help="Alias to point at the new version ('' for none).")
@tracking_uri_option()
def cli(run_id, name, alias, tracking_uri):
    """Register a trained row's model in the MLflow model registry."""
    from timl import tracking
    with user_errors():
        tracking.configure(tracking_uri)
        uri = register_run(run_id, name, alias=alias or None)
    click.echo(f"Registered {uri}" + (f" (models:/{name}@{alias})" if alias else ""))


if __name__ == "__main__":
    cli()
