"""``python -m timl.train``: train every row of a table as an MLflow run (see :func:`timl.training.train_table`)."""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys

import click

from timl.cli import (bootstrap_option, command, cuda_gpu_option, select_gpu, setup_logging, tracking_uri_option,
                      user_errors)
from timl.metric_names import DEFAULT_SELECT_BY

EXAMPLE = """\b
Examples:
  python -m timl.train --input-table experiments/quickstart.csv --experiment quickstart
  python -m timl.train --input-table runs.csv --executor ray --ray-address auto --row-gpus 1 \\
      --tracking-uri http://mlflow-host:5000 --checkpoint-dir /shared/checkpoints
  mlflow ui --backend-store-uri sqlite:///mlflow.db   # then open http://127.0.0.1:5000
"""


#: The options of a table's training, shared by ``timl.train`` and ``timl.tune`` (:func:`table_options`).
TABLE_OPTIONS = [
    click.option("--input-table", type=click.Path(dir_okay=False),
                 help="The training table (CSV), one row per model."),
    click.option("--img-dir", type=click.Path(file_okay=False),
                 help="Image folder (default: images/ beside the dataset CSV)."),
    click.option("--out-dir", type=click.Path(file_okay=False),
                 help="Output folder (default: train_output-YYYYMMDD-hhmmss)."),
    click.option("--experiment", help="MLflow experiment (default: the table's file name)."),
    tracking_uri_option(),
    click.option("--rows", help="Train only these rows, e.g. 0,2-4 (rows count from 0)."),
    click.option("--resume", is_flag=True,
                 help="Skip rows whose run FINISHED (same --out-dir, else the newest run of this table)."),
    click.option("--skip-roc", is_flag=True, help="Do not draw ROC plots."),
    cuda_gpu_option,
    click.option("--register", help="Register the best row's model under this name, alias 'champion'."),
    click.option("--select-by", default=DEFAULT_SELECT_BY, show_default=True,
                 help="Metric that picks the best row for --register (higher is better; valacc = dev/accuracy)."),
    click.option("--gate", multiple=True, metavar="'METRIC OP EXPR'",
                 help="With --register: move 'champion' only when this holds against the current champion on the "
                 "same test data (repeatable; see python -m timl.register --help)."),
    click.option("--force-champion", is_flag=True, help="With --register and --gate: move 'champion' even when a "
                 "gate fails or the test data differ (recorded on the version)."),
    click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                 help="Train the rows one after the other in this process, or as tasks on a Ray cluster."),
    click.option("--ray-address", help="With --executor ray: the cluster to join (auto, HOST:PORT); default: start "
                 "a Ray instance on this machine."),
    click.option("--row-cpus", type=click.FloatRange(min=0, min_open=True), default=1, show_default=True,
                 help="With --executor ray: CPUs per row (a 'cpus' column overrides it per row)."),
    click.option("--row-gpus", type=click.FloatRange(min=0), default=0, show_default=True,
                 help="GPUs per row (a 'gpus' column overrides it); 2 or more train a row on all of them."),
    click.option("--row-retries", type=click.IntRange(min=0), default=2, show_default=True,
                 help="With --executor ray: reruns of a row whose worker process or node died."),
    click.option("--checkpoint-dir", type=click.Path(file_okay=False),
                 help="Where rows checkpoint every epoch (default: OUT/.backup). On a cluster, a folder every node "
                 "reaches lets a retried row continue where it stopped."),
    click.option("--system-metrics/--no-system-metrics", default=True, show_default=True,
                 help="Log MLflow's system metrics (CPU, memory, GPU) to each row's run every 10 s."),
    bootstrap_option,
]


def table_options(function):
    """Adds :data:`TABLE_OPTIONS` to a command, in their order."""
    for option in reversed(TABLE_OPTIONS):
        function = option(function)
    return function


@command(epilog=EXAMPLE)
@table_options
@click.option("--list-methods", is_flag=True, help="List every training method and exit.")
@click.option("-v", "--verbose", is_flag=True)
def cli(input_table, cuda_gpu, list_methods, verbose, **options):
    """Train every row of a TIML table; each row becomes an MLflow run."""
    if list_methods:
        _list_methods()
        return
    train_command(input_table, cuda_gpu, verbose, options)


def train_command(input_table: str | None, cuda_gpu, verbose: bool, table_options: dict, search=None) -> None:
    """What ``timl.train`` and ``timl.tune`` do with their table options: check them, train the table (with
    ``search``, a :class:`timl.search.study.SearchOptions`, its search rows too), report and exit."""
    if not input_table:
        raise click.UsageError("Missing option '--input-table'.")
    if table_options["ray_address"] and table_options["executor"] != "ray":
        raise click.UsageError("--ray-address needs --executor ray.")
    if (table_options["gate"] or table_options["force_champion"]) and not table_options["register"]:
        raise click.UsageError("--gate and --force-champion need --register NAME.")
    setup_logging(verbose)
    select_gpu(cuda_gpu)
    from timl import training

    with user_errors():  # the MLproject passes '' for a parameter left out: TableOptions reads it as None
        options = training.TableOptions(**table_options)
        if options.experiment is None and os.environ.get("MLFLOW_EXPERIMENT_ID"):  # launched by `mlflow run`
            options = dataclasses.replace(options, experiment=_experiment_name(os.environ["MLFLOW_EXPERIMENT_ID"],
                                                                               options.tracking_uri))
    try:
        with user_errors():
            outcome = training.train_table(input_table, options, on_progress=print_progress, search=search)
    except KeyboardInterrupt:
        click.echo("Interrupted: the current row's run is KILLED. Continue with the same command plus --resume"
                   + (f" --out-dir {options.out_dir}" if options.out_dir else "") + ".", err=True)
        sys.exit(130)
    _report(outcome, options.tracking_uri)


def print_progress(outcome, progress) -> None:
    """Prints a row's end and the table's ETA: ``[2/5] row 1-VGG16: FINISHED in 42s - val_accuracy 0.912 | 3
    left, about 0:02:06``."""
    left = (f" | {progress.remaining} left, about {datetime.timedelta(seconds=round(progress.eta_seconds))}"
            if progress.remaining else "")
    click.echo(f"[{progress.done}/{progress.total}] row {outcome.name}: {outcome.status} in {outcome.seconds:.0f}s"
               f"{' - ' + outcome.message if outcome.message else ''}{left}")


def _report(outcome, tracking_uri: str | None) -> None:
    """Prints where the results are; exits with status 1 when a row did not finish or ``--gate`` kept the champion."""
    from timl import tracking

    click.echo(f"Results: {outcome.results_path} (parent run {outcome.parent_run_id})")
    if outcome.registration and (outcome.registration.decision.results or outcome.registration.decision.refusal):
        click.echo(outcome.registration.summary())
    elif outcome.registered:
        click.echo(f"Registered: {outcome.registered}")
    click.echo(f"Compare the runs: mlflow ui --backend-store-uri {tracking_uri or tracking.tracking_uri()}, then "
               f"open {tracking.runs_page(outcome.parent_run_id)}")
    if outcome.failed:
        for row in outcome.failed:
            click.echo(f"row {row.name} {row.status}: {row.message}", err=True)
        sys.exit(1)
    if outcome.registration and outcome.registration.alias and not outcome.registration.alias_moved:
        sys.exit(1)


def _list_methods() -> None:
    from timl import models

    for spec in models.list_methods():
        aliases = f" (alias {', '.join(spec.aliases)})" if spec.aliases else ""
        click.echo(f"{spec.name:24s} {spec.description}{aliases}")


def _experiment_name(experiment_id: str, tracking_uri: str | None) -> str | None:
    from timl import tracking

    tracking.configure(tracking_uri)
    return tracking.experiment_name(experiment_id)


if __name__ == "__main__":
    cli()
