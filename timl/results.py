"""The results table (``automation_result.csv``), rebuilt from the tracking store alone.

Everything the table shows is in the store (params, metrics, tags), so anyone with access to the store can
rebuild it at any time: ``python -m timl.results --experiment NAME`` or ``--parent-run ID``. Training writes its
``automation_result.csv`` with this same code.

The table keeps the original TIML's layout: its input columns, then its output columns, in its order and
formats (per-class arrays ``[0.500,1.000,0.250]``, ``trainacc`` with 3 decimals, ``trainstart``
``YYYYMMDD-hhmmss``, ``traintime`` ``H:MM:SS``); TIML's extra input columns and its summary columns follow.
"""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path

import click
import pandas as pd

from timl import tracking
from timl.cli import command, tracking_uri_option, user_errors
from timl.config import EXTRA_COLUMNS, HEAD_COLUMNS, INPUT_COLUMNS, OUTPUT_COLUMNS, SUMMARY_COLUMNS
from timl.errors import ConfigError
from timl.evaluation import class_group, format_class_values, per_class_metric_name

logger = logging.getLogger(__name__)

#: The columns of automation_result.csv, in order: the original TIML's (input, then output columns), then TIML's.
RESULT_COLUMNS = tuple(dict.fromkeys(INPUT_COLUMNS + OUTPUT_COLUMNS + EXTRA_COLUMNS + SUMMARY_COLUMNS
                                     + HEAD_COLUMNS))

#: The original TIML's format of ``trainstart``.
TRAINSTART_FORMAT = "%Y%m%d-%H%M%S"

#: Original per-class columns: column -> (split, metric short name) of the per-class metrics training logs
#: (``dev_class/acc_MEL``: :func:`timl.evaluation.per_class_metric_name` with :func:`class_group`); one value per
#: class, in class order.
PER_CLASS_COLUMNS = {"malprop": ("train", "prop"), "valmalprop": ("dev", "prop"), "valacc": ("dev", "acc"),
                     "valspec": ("dev", "spec"), "valsens": ("dev", "sens"), "testmalprop": ("test", "prop"),
                     "testacc": ("test", "acc"), "testspec": ("test", "spec"), "testsens": ("test", "sens"),
                     "testauc": ("test", "auc")}

#: The other columns that come from a metric: column -> the metric of the kept model it shows.
METRIC_COLUMNS = {"trainsize": "train/samples", "valsize": "dev/samples", "testsize": "test/samples",
                  "trainacc": "train/accuracy", "traintime": "train/seconds",
                  "val_accuracy": "dev/accuracy", "val_balanced_accuracy": "dev/balanced_accuracy",
                  "val_auc": "dev/auc", "test_accuracy": "test/accuracy",
                  "test_balanced_accuracy": "test/balanced_accuracy", "test_auc": "test/auc"}

#: How runs of TIML before the grouped metric names called them (their results tables still rebuild).
LEGACY_METRICS = {"train/samples": "trainsize", "dev/samples": "valsize", "test/samples": "testsize",
                  "train/accuracy": "trainacc", "train/seconds": "train_time", "dev/accuracy": "val_accuracy",
                  "dev/balanced_accuracy": "val_balanced_accuracy", "dev/auc": "val_auc",
                  "test/accuracy": "test_accuracy", "test/balanced_accuracy": "test_balanced_accuracy",
                  "test/auc": "test_auc"}
LEGACY_CLASS_PREFIXES = {"train": "train", "dev": "val", "test": "test"}


def _number(value) -> str:
    if value is None:
        return ""
    if float(value).is_integer() and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.4f}"


def _metric(metrics: dict, name: str):
    """A metric of the kept model, under its name or the one earlier TIML versions gave it."""
    return metrics.get(name, metrics.get(LEGACY_METRICS.get(name, "")))


def _per_class(metrics: dict, split: str, short: str, class_names: list[str]) -> str:
    values = [metrics.get(per_class_metric_name(class_group(split), short, name),
                          metrics.get(per_class_metric_name(LEGACY_CLASS_PREFIXES[split], short, name)))
              for name in class_names]
    if all(value is None for value in values):
        return ""
    return format_class_values(values)


def format_traintime(seconds: float | None) -> str:
    """A training time as the original TIML wrote it: ``H:MM:SS`` (``0:01:05``); empty when unknown."""
    if seconds is None:
        return ""
    return str(datetime.timedelta(seconds=round(float(seconds))))


def _trainstart(run) -> str:
    """When the row started training, as ``YYYYMMDD-hhmmss`` (the original's format); the run's start time
    when the row never got that far."""
    tag = run.data.tags.get(tracking.TAG_TRAINSTART)
    if tag:
        try:
            return datetime.datetime.strptime(tag, "%Y-%m-%d %H:%M:%S").strftime(TRAINSTART_FORMAT)
        except ValueError:
            return tag
    return datetime.datetime.fromtimestamp(run.info.start_time / 1000).strftime(TRAINSTART_FORMAT)


def result_row(run) -> dict:
    """One results-table row from one row run."""
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    class_names = json.loads(params.get("class_names", "[]") or "[]")
    row = {column: params.get(column, "") for column in INPUT_COLUMNS + EXTRA_COLUMNS + HEAD_COLUMNS}
    for column, (split, short) in PER_CLASS_COLUMNS.items():
        row[column] = _per_class(metrics, split, short, class_names)
    for column in ("trainsize", "valsize", "testsize"):
        row[column] = _number(_metric(metrics, METRIC_COLUMNS[column]))
    trainacc = _metric(metrics, METRIC_COLUMNS["trainacc"])
    row["trainacc"] = "" if trainacc is None else f"{trainacc:.3f}"
    row["augmult"] = params.get("augmult", "")
    row["trainstart"] = _trainstart(run)
    row["traintime"] = format_traintime(_metric(metrics, METRIC_COLUMNS["traintime"]))
    row["trainmodel"] = tags.get(tracking.TAG_TRAINMODEL, "")
    row["exceptions"] = tags.get(tracking.TAG_EXCEPTION, "")
    row["run_id"] = run.info.run_id
    for column in SUMMARY_COLUMNS[1:]:
        row[column] = _number(_metric(metrics, METRIC_COLUMNS[column]))
    row["row"] = int(tags.get(tracking.TAG_ROW, "-1"))
    row["status"] = run.info.status
    return row


def _keep_one_per_row(runs: list) -> list:
    """For each (parent, row) keep the FINISHED run, else the newest (resumed tables have several)."""
    chosen: dict = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        key = (run.data.tags.get(tracking.TAG_PARENT), run.data.tags.get(tracking.TAG_ROW))
        if key not in chosen or chosen[key].info.status != "FINISHED":
            chosen[key] = run
    return list(chosen.values())


def build_results_table(*, parent_run_id: str | None = None, experiment: str | None = None,
                        tracking_uri: str | None = None) -> pd.DataFrame:
    """Builds the results table of one table run, or of every table run of an experiment.

    Returns:
        A DataFrame with ``RESULT_COLUMNS`` (index: the table row number).

    Raises:
        ConfigError: neither or both of parent_run_id and experiment, or an unknown experiment.
    """
    if bool(parent_run_id) == bool(experiment):
        raise ConfigError("Give exactly one of --experiment or --parent-run. "
                          f"Received: experiment={experiment!r}, parent_run={parent_run_id!r}")
    if tracking_uri:
        tracking.configure(tracking_uri)
    if parent_run_id:
        runs = tracking.child_runs(parent_run_id)
    else:
        parents = tracking.table_runs(experiment)
        if not parents:
            raise ConfigError(f"No TIML table runs in experiment {experiment!r} of this tracking store.")
        runs = [run for parent in reversed(parents) for run in tracking.child_runs(parent.info.run_id)]
    rows = [result_row(run) for run in _keep_one_per_row(runs)]
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS) + ["row", "status"])
    frame = frame.sort_values("row", kind="stable").set_index("row")
    return frame


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Writes a results table as CSV (the ``RESULT_COLUMNS``, no index); atomically."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    frame.reindex(columns=list(RESULT_COLUMNS)).to_csv(temporary, index=False)
    temporary.replace(path)
    return path


@command(epilog="Example: python -m timl.results --experiment quickstart -o automation_result.csv")
@click.option("--experiment", help="Every table run of this MLflow experiment.")
@click.option("--parent-run", "parent_run", help="One table run (its parent run id).")
@click.option("-o", "--output", default="automation_result.csv", show_default=True, type=click.Path())
@tracking_uri_option()
def cli(experiment, parent_run, output, tracking_uri):
    """Rebuild the TIML results table from the MLflow tracking store."""
    with user_errors():
        tracking.configure(tracking_uri)
        frame = build_results_table(parent_run_id=parent_run, experiment=experiment)
        write_table(frame, output)
    click.echo(f"Wrote {len(frame)} rows to {output}")


if __name__ == "__main__":
    cli()
