"""``python -m timl.register``: register a row's model, or the best row of a table, in the MLflow model registry.

``python -m timl.register --run-id ID --name NAME [--alias champion]``; ``--table-run ID`` or ``--out-dir DIR`` (a
finished table's output folder) registers the best row of a table without training (:func:`register_best`), as
``python -m timl.train --register NAME`` does for the table it trained. A run already registered under ``NAME``
keeps its version: registering it again adds no duplicate.
"""

from __future__ import annotations

import dataclasses
import logging
import sys

import click

from timl import champion
from timl import metric_names as names
from timl.cli import command, tracking_uri_option, user_errors
from timl.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Registration:
    """A registered version and what happened to the alias.

    Attributes:
        uri: ``models:/NAME/VERSION`` of the new version.
        name, version, alias: the registered model, the new version, the alias asked for (None: none).
        decision: the gates' verdict (:func:`timl.champion.decide`).
        forced: whether ``force`` moved the alias despite the verdict.
        existing: the run was a version of ``name`` already (no new version was made).
    """

    uri: str
    name: str
    version: str
    alias: str | None
    decision: champion.Decision
    forced: bool = False
    existing: bool = False

    @property
    def alias_moved(self) -> bool:
        return bool(self.alias) and (self.decision.moves or self.forced)

    def summary(self) -> str:
        """What the command prints: the version, where the alias is, each gate with both values, what failed."""
        if self.existing:
            return self._summary().replace("Registered ", "Already registered as ", 1)
        return self._summary()

    def _summary(self) -> str:
        if not self.alias:
            return f"Registered {self.uri}"
        lines = [f"  {result.describe()}: {'holds' if result.holds else 'FAILED'}" for result in self.decision.results]
        if not self.alias_moved:
            return "\n".join([f"Registered {self.uri} without the alias {self.alias!r}: models:/{self.name}@"
                               f"{self.alias} stays at version {self.decision.champion_version}.",
                               *(f"  {reason}" for reason in self.decision.reasons())])
        forced = [f"  moved despite: {reason} (--force, recorded on the version)" for reason in self.decision.reasons()]
        return "\n".join([f"Registered {self.uri} (models:/{self.name}@{self.alias})", *lines,
                           *(forced if self.forced else ())])


def register_run(run_id: str, name: str, *, alias: str | None = "champion") -> str:
    """Registers ``runs:/RUN_ID/model`` as a new version of ``name`` and points ``alias`` at it
    (:func:`register_candidate` without gates).

    Returns:
        ``models:/NAME/VERSION`` of the new version.
    """
    return register_candidate(run_id, name, alias=alias).uri


def register_candidate(run_id: str, name: str, *, alias: str | None = "champion", gates=(),
                       force: bool = False) -> Registration:
    """Registers ``runs:/RUN_ID/model`` as a version of ``name`` (a run registered before keeps its version: no
    duplicate), tagged with the run's metrics and the
    sha256 of its Keras file (tag ``timl.model_sha256``, checked whenever TIML loads the version), and moves
    ``alias`` to it when every gate holds against the version holding the alias (:func:`timl.champion.decide`).

    Args:
        run_id: the row run whose model to register.
        name: the registered model.
        alias: the alias to move. Defaults to ``champion``; None registers without one.
        gates: ``METRIC OP EXPR`` texts (:class:`timl.champion.Gate`). Defaults to none: the alias moves.
        force: move the alias even when a gate fails or the test data differ, recording who did it and what failed
            (tag ``timl.champion.override``). Defaults to False.

    Returns:
        The :class:`Registration`: the version is registered whether or not the alias moves.

    Raises:
        ConfigError: no such run, the run has no logged model, its Keras file changed since training, a gate that
            does not parse or names a metric neither run has (checked before anything is registered).
    """
    from timl import tracking

    parsed = champion.parse_gates(gates)
    run = tracking.get_run(run_id)
    _refuse_table_run(run)
    decision = _decide(parsed, run, name, alias)
    params, metrics = run.data.params, run.data.metrics
    description = (f"TIML {params.get('method', '?')} trained on {params.get('dataset', '?')} "
                   f"(split {params.get('split', '?')}, {params.get('epochs', '?')} epochs, "
                   f"imgsize {params.get('imgsize', '?')}), run {run_id}.{_datasets(run)}{_scores(metrics)}")
    tags = {key: f"{metrics[key]:.4f}" for key in names.TAGGED_METRICS if key in metrics}
    tags.update({"dataset": params.get("dataset", ""), "method": params.get("method", ""), "run_id": run_id})
    tags.update(_decision_tags(decision, forced=force and not decision.moves))
    pinned = _model_sha256(run)
    if pinned:
        tags[tracking.TAG_MODEL_SHA256] = pinned
    moves = bool(alias) and (decision.moves or force)
    existing = tracking.run_version(name, run_id)
    if existing is not None:
        version = tracking.update_version(name, existing, description=description, tags=tags,
                                          alias=alias if moves else None)
    else:
        version = tracking.register_model(run_id, name, description=description, tags=tags,
                                          alias=alias if moves else None)
    write_model_card(run, name, version, pinned)
    return Registration(f"models:/{name}/{version}", name, version, alias, decision, force and not decision.moves,
                        existing is not None)


def write_model_card(run, name: str, version: str, sha256: str | None) -> str:
    """Writes the version's model card (:mod:`timl.model_card`) as ``model_card.json`` and ``model_card.md``,
    artifacts of its run under ``model_card/<name>/v<version>``, and names that folder on the version (tag
    ``timl.model_card``). Returns the folder."""
    import json
    import tempfile
    from pathlib import Path

    from timl import model_card, tracking

    card = model_card.model_card(run, name=name, version=version, sha256=sha256)
    folder = f"model_card/{name}/v{version}"
    with tempfile.TemporaryDirectory(prefix="timl-card-") as directory:
        paths = [Path(directory) / model_card.CARD_JSON, Path(directory) / model_card.CARD_MARKDOWN]
        paths[0].write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        paths[1].write_text(model_card.card_markdown(card), encoding="utf-8")
        tracking.log_artifacts(paths, folder, run_id=run.info.run_id)
    tracking.set_version_tags(name, version, {tracking.TAG_MODEL_CARD: folder})
    return folder


def _refuse_table_run(run) -> None:
    """A table (parent) run has no model of its own: says so and lists its rows' runs (name, run id, status).

    Raises:
        ConfigError: ``run`` is a table run.
    """
    from timl import tracking

    if run.data.tags.get(tracking.TAG_KIND) != tracking.KIND_TABLE:
        return
    rows = [f"{child.info.run_name} {child.info.run_id} ({child.info.status})"
            for child in tracking.child_runs(run.info.run_id)]
    raise ConfigError(f"Run {run.info.run_id} is a table run: it has no model of its own. Give --run-id of one of its "
                      f"rows' runs (the run_id column of automation_result.csv), or --table-run "
                      f"{run.info.run_id} for its best row: {'; '.join(rows) if rows else 'it has no rows yet'}.")


def _decide(gates, run, name: str, alias: str | None) -> champion.Decision:
    """The gates' verdict on ``run`` against the version ``alias`` points at (no alias: nothing to decide)."""
    from timl import tracking

    if not alias:
        return champion.Decision(None)
    holder = tracking.alias_version(name, alias)
    if holder is not None and holder.run_id == run.info.run_id:  # the champion already: nothing to compare
        return champion.Decision(str(holder.version))
    holder_run = tracking.get_run(holder.run_id) if holder is not None and gates else None
    return champion.decide(gates, run, holder_run, str(holder.version) if holder is not None else None)


def _decision_tags(decision: champion.Decision, *, forced: bool) -> dict:
    """The version's record of the gates (each with both values) and of an override (user, what failed)."""
    import getpass

    from timl import tracking

    tags = {}
    if decision.results:
        tags[tracking.TAG_CHAMPION_GATES] = "; ".join(result.describe() for result in decision.results)[:4900]
    if forced:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        tags[tracking.TAG_CHAMPION_OVERRIDE] = (f"forced by {user} over version {decision.champion_version}: "
                                                + "; ".join(decision.reasons()))[:4900]
    return tags


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
    """The FINISHED row run of a table (a search's trials included; cross-validations and searches aside: they
    have no model) with the highest
    ``select_by`` metric (a metric name, a results column or an earlier name:
    :func:`timl.metric_names.resolve_select_by`).

    Raises:
        ConfigError: no finished row has that metric.
    """
    from timl import tracking

    metric = names.resolve_select_by(select_by)
    runs = []
    for run in tracking.child_runs(parent_run_id):  # a search's trials are rows; the search has no model
        searched = run.data.tags.get(tracking.TAG_KIND) == tracking.KIND_SEARCH
        runs += tracking.child_runs(run.info.run_id) if searched else [run]
    candidates = [run for run in runs  # a cross-validation has no model of its own
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


@command(epilog="Examples:\n  python -m timl.register --run-id 3f2a... --name skin-lesions --alias champion \\\n"
               f"      --gate {champion.EXAMPLE_GATES[0]!r}\n  the best row of a finished table:\n"
               "  python -m timl.register --out-dir train_output-quickstart --name digits")
@click.option("--run-id", help="The row run whose model to register (the run_id column of automation_result.csv).")
@click.option("--table-run", help="Or: the best row of this table run (its parent run id), without training.")
@click.option("--out-dir", type=click.Path(file_okay=False), help="Or: the best row of the table whose output "
              "folder this is (train_output-..., its parent_run_id.txt), without training.")
@click.option("--select-by", default=names.DEFAULT_SELECT_BY, show_default=True,
              help="With --table-run or --out-dir: the metric that picks the best row (higher is better).")
@click.option("--name", required=True, help="Registered model name.")
@click.option("--alias", default="champion", show_default=True, help="Alias to point at the new version ('' for none).")
@click.option("--gate", "gates", multiple=True, metavar="'METRIC OP EXPR'",
              help="Move the alias only when this holds against the version holding it, on the same test data "
              f"(repeatable; OP >=, <=, >, <; EXPR a number or {champion.CHAMPION} [+|- number]). Otherwise the "
              "version is registered without the alias and the command exits 1.")
@click.option("--force", is_flag=True, help="Move the alias even when a gate fails or the test data differ; the "
              "version records who forced it and what failed.")
@tracking_uri_option()
def cli(run_id, table_run, out_dir, select_by, name, alias, gates, force, tracking_uri):
    """Register a trained row's model (or the best row of a finished table) in the MLflow model registry."""
    from timl import tracking
    with user_errors():
        tracking.configure(tracking_uri)
        run_id = _chosen_run(run_id, table_run, out_dir, select_by)
        registration = register_candidate(run_id, name, alias=alias or None, gates=gates, force=force)
    click.echo(registration.summary())
    if registration.alias and not registration.alias_moved:
        sys.exit(1)


def _chosen_run(run_id: str | None, table_run: str | None, out_dir: str | None, select_by: str) -> str:
    """The run to register: ``--run-id``, else the best row of ``--table-run`` or of the table in ``--out-dir``.

    Raises:
        ConfigError: not exactly one of the three, or an output folder without its table run's marker.
    """
    from pathlib import Path

    from timl import tracking

    given = [option for option, value in (("--run-id", run_id), ("--table-run", table_run), ("--out-dir", out_dir))
             if value]
    if len(given) != 1:
        raise ConfigError("Give exactly one of --run-id (a row's run: the run_id column of automation_result.csv), "
                          "--table-run ID or --out-dir DIR (the best row of a finished table, by --select-by). "
                          f"Received: {', '.join(given) or 'none of them'}")
    if run_id:
        return run_id
    if out_dir:
        marker = Path(out_dir) / tracking.PARENT_MARKER
        if not marker.is_file():
            raise ConfigError(f"{out_dir} is no table's output folder: it has no {tracking.PARENT_MARKER}. Give the "
                              f"--out-dir of a python -m timl.train run. Received: out_dir={out_dir!r}")
        table_run = marker.read_text().strip()
    chosen = best_run(table_run, select_by)
    click.echo(f"The best row of table run {table_run} by {names.resolve_select_by(select_by)}: run {chosen}")
    return chosen


if __name__ == "__main__":
    cli()
