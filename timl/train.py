"""``python -m timl.train``: train every row of a table as an MLflow run (see :func:`timl.training.train_table`)."""

from __future__ import annotations

import os
import sys

import click

from timl.cli import select_gpu, setup_logging, user_errors
from timl.metric_names import DEFAULT_SELECT_BY

EXAMPLE = """\b
Examples:
  python -m timl.train --input-table experiments/quickstart.csv --experiment quickstart
  python -m timl.train --input-table runs.csv --executor ray --ray-address auto --row-gpus 1 \\
      --tracking-uri http://mlflow-host:5000 --checkpoint-dir /shared/checkpoints
  mlflow ui --backend-store-uri sqlite:///mlflow.db   # then open http://127.0.0.1:5000
"""


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLE)
@click.option("--input-table", type=click.Path(dir_okay=False), help="The training table (CSV), one row per model.")
@click.option("--img-dir", type=click.Path(file_okay=False), help="Image folder (default: images/ beside the dataset CSV).")
@click.option("--out-dir", type=click.Path(file_okay=False), help="Output folder (default: train_output-YYYYMMDD-hhmmss).")
@click.option("--experiment", help="MLflow experiment (default: the table's file name).")
@click.option("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db).")
@click.option("--rows", help="Train only these rows, e.g. 0,2-4 (rows count from 0).")
@click.option("--resume", is_flag=True, help="Skip rows whose run FINISHED (same --out-dir, else the newest run of this table).")
@click.option("--skip-roc", is_flag=True, help="Do not draw ROC plots.")
@click.option("--cuda-gpu", type=int, help="Use only this GPU.")
@click.option("--register", help="Register the best row's model under this name, alias 'champion'.")
@click.option("--select-by", default=DEFAULT_SELECT_BY, show_default=True,
              help="Metric that picks the best row for --register (higher is better; valacc = dev/accuracy).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Train the rows one after the other in this process, or as tasks on a Ray cluster.")
@click.option("--ray-address", help="With --executor ray: the cluster to join (auto, HOST:PORT); default: start "
              "a Ray instance on this machine.")
@click.option("--row-cpus", type=click.FloatRange(min=0, min_open=True), default=1, show_default=True,
              help="With --executor ray: CPUs per row (a 'cpus' column overrides it per row).")
@click.option("--row-gpus", type=click.FloatRange(min=0), default=0, show_default=True,
              help="GPUs per row (a 'gpus' column overrides it); 2 or more train a row on all of them.")
@click.option("--row-retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="With --executor ray: reruns of a row whose worker process or node died.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False),
              help="Where rows checkpoint every epoch (default: OUT/.backup). On a cluster, a folder every node "
              "reaches lets a retried row continue where it stopped.")
@click.option("--system-metrics/--no-system-metrics", default=True, show_default=True,
              help="Log MLflow's system metrics (CPU, memory, GPU) to each row's run every 10 s.")
@click.option("--list-methods", is_flag=True, help="List every training method and exit.")
@click.option("-v", "--verbose", is_flag=True)
def cli(input_table, img_dir, out_dir, experiment, tracking_uri, rows, resume, skip_roc, cuda_gpu, register,
        select_by, executor, ray_address, row_cpus, row_gpus, row_retries, checkpoint_dir, system_metrics,
        list_methods, verbose):
    """Train every row of a TIML table; each row becomes an MLflow run."""
    if list_methods:
        from timl import models

        for spec in models.list_methods():
            aliases = f" (alias {', '.join(spec.aliases)})" if spec.aliases else ""
            click.echo(f"{spec.name:24s} {spec.description}{aliases}")
        return
    if not input_table:
        raise click.UsageError("Missing option '--input-table'.")
    img_dir, out_dir, experiment = img_dir or None, out_dir or None, experiment or None  # MLproject passes ''
    ray_address, checkpoint_dir = ray_address or None, checkpoint_dir or None
    if ray_address and executor != "ray":
        raise click.UsageError("--ray-address needs --executor ray.")
    if experiment is None and os.environ.get("MLFLOW_EXPERIMENT_ID"):  # launched by `mlflow run`
        experiment = _experiment_name(os.environ["MLFLOW_EXPERIMENT_ID"], tracking_uri)
    setup_logging(verbose)
    select_gpu(cuda_gpu)
    from timl import training

    try:
        with user_errors():
            with _executor(executor, skip_roc, ray_address, row_cpus, row_gpus, row_retries) as rows_executor:
                outcome = training.train_table(input_table, img_dir=img_dir, out_dir=out_dir, experiment=experiment,
                                               tracking_uri=tracking_uri, rows=rows, resume=resume,
                                               skip_roc=skip_roc, register=register, select_by=select_by,
                                               executor=rows_executor, checkpoint_dir=checkpoint_dir,
                                               system_metrics=system_metrics)
    except KeyboardInterrupt:
        click.echo("Interrupted: the current row's run is KILLED. Continue with the same command plus --resume"
                   + (f" --out-dir {out_dir}" if out_dir else "") + ".", err=True)
        sys.exit(130)
    click.echo(f"Results: {outcome.results_path} (parent run {outcome.parent_run_id})")
    if outcome.registered:
        click.echo(f"Registered: {outcome.registered}")
    from timl import tracking

    click.echo(f"Compare the runs: mlflow ui --backend-store-uri {_store_hint(tracking_uri)}, then open "
               f"{tracking.runs_page(outcome.parent_run_id)}")
    if outcome.failed:
        for row in outcome.failed:
            click.echo(f"row {row.name} {row.status}: {row.message}", err=True)
        sys.exit(1)


def _executor(kind: str, skip_roc: bool, ray_address: str | None, row_cpus: float, row_gpus: float,
              row_retries: int):
    """The executor the options ask for (closed by the ``with`` around the table)."""
    if kind == "ray":
        from timl.training.ray_executor import RayExecutor

        return RayExecutor(address=ray_address, row_cpus=row_cpus, row_gpus=row_gpus, max_retries=row_retries)
    from timl.training import LocalExecutor

    return LocalExecutor(skip_roc=skip_roc, gpus=row_gpus or None)


def _experiment_name(experiment_id: str, tracking_uri: str | None) -> str | None:
    from timl import tracking

    tracking.configure(tracking_uri)
    return tracking.experiment_name(experiment_id)


def _store_hint(tracking_uri: str | None) -> str:
    from timl import tracking

    return tracking_uri or tracking.tracking_uri()


if __name__ == "__main__":
    cli()
