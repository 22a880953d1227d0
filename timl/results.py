"""The results table (``automation_result.csv``), rebuilt from the tracking store alone.

Everything the table shows is in the store (params, metrics, tags), so anyone with access to the store can
rebuild it at any time: ``python -m timl.results --experiment NAME`` or ``--parent-run ID``. Training writes its
``automation_result.csv`` with this same code.

A cross-validation row (split ``kfold=K``) has a line per fold (split ``kfold=K:i``, its fold's scores), then its
own line (split ``kfold=K``: the folds' mean scores).

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

from timl import metric_names as names
from timl import tracking
from timl.cli import command, tracking_uri_option, user_errors
from timl.config import (CALIBRATION_COLUMNS, CALIBRATION_SUMMARY_COLUMNS, EVALUATION_COLUMNS, EXTRA_COLUMNS,
                         GROUP_COLUMNS, HEAD_COLUMNS, INPUT_COLUMNS, OUTPUT_COLUMNS, SUMMARY_COLUMNS)
from timl.errors import ConfigError
from timl.evaluation import format_class_values

logger = logging.getLogger(__name__)

#: The columns of automation_result.csv, in order: the original TIML's (input, then output columns), then TIML's
#: (the calibration cell and scores last).
RESULT_COLUMNS = tuple(dict.fromkeys(INPUT_COLUMNS + OUTPUT_COLUMNS + EXTRA_COLUMNS + SUMMARY_COLUMNS
                                     + HEAD_COLUMNS + GROUP_COLUMNS + EVALUATION_COLUMNS + CALIBRATION_COLUMNS
                                     + CALIBRATION_SUMMARY_COLUMNS))

#: The columns a table with search rows adds after all others (before ``table_run``): each trial's search run and
#: its number (``python -m timl.tune``); a table without searches has none.
SEARCH_RESULT_COLUMNS = ("search", "trial")

#: The original TIML's format of ``trainstart``.
TRAINSTART_FORMAT = "%Y%m%d-%H%M%S"

#: The columns that show a metric of the kept model: column -> metric name (:mod:`timl.metric_names`).
METRIC_COLUMNS = {**names.ORIGINAL_METRIC_COLUMNS, **names.SUMMARY_COLUMNS, **names.CALIBRATION_SUMMARY_COLUMNS}


def _score(value) -> str:
    """A score as the table writes it: always 4 decimals (``1.0000``, never ``1``); empty when unknown."""
    return "" if value is None else f"{float(value):.4f}"


def _count(value) -> str:
    """A count (images of a split) as the table writes it: an integer (a cross-validation's mean count rounded);
    empty when unknown."""
    return "" if value is None else str(int(round(float(value))))


def _metric(metrics: dict, name: str):
    """A metric of the kept model, under its name or the one earlier TIML versions gave it."""
    return metrics.get(name, metrics.get(names.LEGACY_METRICS.get(name, "")))


def _per_class(metrics: dict, split: str, short: str, class_names: list[str]) -> str:
    values = [metrics.get(names.per_class_metric_name(names.class_group(split), short, name),
                          metrics.get(names.per_class_metric_name(names.LEGACY_CLASS_PREFIXES[split], short, name)))
              for name in class_names]
    if all(value is None for value in values):
        return ""
    return format_class_values(values)


def format_traintime(seconds: float | None) -> str:
    """A training time as the original TIML wrote it: ``H:MM:SS`` (``0:01:05``); empty when unknown."""
    if seconds is None:
        return ""
    return str(datetime.timedelta(seconds=round(float(seconds))))


def _format_trainacc(accuracy: float | None) -> str:
    """The training accuracy as the original TIML wrote it: 3 decimals; empty when unknown."""
    return "" if accuracy is None else f"{accuracy:.3f}"


#: How a metric column is written when not as a score (:func:`_score`): counts as integers, the original's formats.
METRIC_FORMATS = {names.TRAIN_ACCURACY: _format_trainacc, names.TRAIN_SECONDS: format_traintime,
                  **{metric: _count for metric in names.COUNT_METRICS}}

#: The column ``timl.results --experiment`` adds after all others: the table run (parent run id) of each line.
TABLE_RUN_COLUMN = "table_run"


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


def result_row(run, ci: bool = False) -> dict:
    """One results-table row from one row run; with ``ci``, the interval columns too
    (:data:`timl.metric_names.INTERVAL_COLUMNS`)."""
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    class_names = json.loads(params.get("class_names", "[]") or "[]")
    row = {column: params.get(column, "")
           for column in INPUT_COLUMNS + EXTRA_COLUMNS + HEAD_COLUMNS + GROUP_COLUMNS + EVALUATION_COLUMNS
           + CALIBRATION_COLUMNS}
    for column, (split, short) in names.ORIGINAL_CLASS_COLUMNS.items():
        row[column] = _per_class(metrics, split, short, class_names)
    for column, metric in METRIC_COLUMNS.items():
        row[column] = METRIC_FORMATS.get(metric, _score)(_metric(metrics, metric))
    for column, metric in (names.INTERVAL_COLUMNS.items() if ci else ()):
        row[column] = _score(metrics.get(metric))
    row["augmult"] = params.get("augmult", "")
    row["trainstart"] = _trainstart(run)
    row["trainmodel"] = tags.get(tracking.TAG_TRAINMODEL, "")
    row["exceptions"] = tags.get(tracking.TAG_EXCEPTION, "")
    row["run_id"] = run.info.run_id
    row["row"] = int(tags.get(tracking.TAG_ROW, "-1"))
    row["status"] = run.info.status
    row["search"] = tags.get(tracking.TAG_SEARCH, "")
    row["trial"] = tags.get(tracking.TAG_TRIAL, "")
    return row


def _keep_one_per_row(runs: list) -> list:
    """For each (parent, row, fold) keep the FINISHED run, else the newest (resumed tables have several)."""
    chosen: dict = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        tags = run.data.tags
        key = (tags.get(tracking.TAG_PARENT), tags.get(tracking.TAG_ROW), tags.get(tracking.TAG_FOLD),
               tags.get(tracking.TAG_TRIAL))
        if key not in chosen or chosen[key].info.status != "FINISHED":
            chosen[key] = run
    return list(chosen.values())


def build_results_table(*, parent_run_id: str | None = None, experiment: str | None = None,
                        tracking_uri: str | None = None, ci: bool = False) -> pd.DataFrame:
    """Builds the results table of one table run, or of every table run of an experiment.

    Args:
        parent_run_id: the table run. Give this or ``experiment``.
        experiment: every table run of this experiment.
        tracking_uri: the tracking store. Defaults to MLflow's.
        ci: add the 95% intervals of the summary columns after all others
            (:data:`timl.metric_names.INTERVAL_COLUMNS`). Defaults to False.

    Returns:
        A DataFrame with ``RESULT_COLUMNS`` (index: the table row number), then with ``ci`` the interval columns;
        with ``experiment`` (several table runs) last the ``table_run`` column: each line's table run.

    Raises:
        ConfigError: neither or both of parent_run_id and experiment, or an unknown experiment.
    """
    if bool(parent_run_id) == bool(experiment):
        raise ConfigError("Give exactly one of --experiment or --parent-run. "
                          f"Received: experiment={experiment!r}, parent_run={parent_run_id!r}")
    if tracking_uri:
        tracking.configure(tracking_uri, create=False)
    table_run = {}  # row run id -> its table run id
    if parent_run_id:
        runs = _row_runs(parent_run_id)
    else:
        parents = tracking.table_runs(experiment)
        if not parents:
            raise ConfigError(f"No TIML table runs in experiment {experiment!r} of this tracking store.")
        runs = []
        for parent in reversed(parents):
            children = _row_runs(parent.info.run_id)
            table_run.update({run.info.run_id: parent.info.run_id for run in children})
            runs += children
    kept = _keep_one_per_row(runs)
    rows = [result_row(run, ci) for run in kept]
    searched = any(row["trial"] for row in rows)
    frame = pd.DataFrame(rows, columns=_columns(ci) + (list(SEARCH_RESULT_COLUMNS) if searched else [])
                         + ["row", "status"])
    if experiment:
        frame[TABLE_RUN_COLUMN] = [table_run[run.info.run_id] for run in kept]
    frame["_line"] = [_line_order(run) for run in kept]
    frame = frame.sort_values(["row", "_line"], kind="stable").drop(columns="_line").set_index("row")
    return frame


def _row_runs(parent_run_id: str) -> list:
    """The row runs of a table run; a cross-validation's folds' runs with it, a search's trials' runs instead of
    its own (it has no model)."""
    runs = []
    for run in tracking.child_runs(parent_run_id):
        kind = run.data.tags.get(tracking.TAG_KIND)
        if kind in (tracking.KIND_CV, tracking.KIND_SEARCH):
            runs += tracking.child_runs(run.info.run_id)
        if kind != tracking.KIND_SEARCH:
            runs.append(run)
    return runs


def _line_order(run) -> int:
    """Where a run's line goes among its row's: a fold by its index, a cross-validation after its folds."""
    tags = run.data.tags
    if tags.get(tracking.TAG_KIND) == tracking.KIND_CV:
        return 1 << 30
    return int(tags.get(tracking.TAG_FOLD, tags.get(tracking.TAG_TRIAL, -1)))


def _columns(ci: bool) -> list[str]:
    return list(RESULT_COLUMNS) + (list(names.INTERVAL_COLUMNS) if ci else [])


def write_table(frame: pd.DataFrame, path: str | Path, ci: bool = False) -> Path:
    """Writes a results table as CSV (the ``RESULT_COLUMNS``, with ``ci`` the interval columns after them, then
    ``table_run`` where the frame has it, no index); atomically."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    columns = (_columns(ci) + [column for column in SEARCH_RESULT_COLUMNS if column in frame.columns]
               + ([TABLE_RUN_COLUMN] if TABLE_RUN_COLUMN in frame.columns else []))
    frame.reindex(columns=columns).to_csv(temporary, index=False)
    temporary.replace(path)
    return path


@command(epilog="Example: python -m timl.results --experiment quickstart -o automation_result.csv")
@click.option("--experiment", help="Every table run of this MLflow experiment (the last column, table_run, says "
              "which table run each line came from).")
@click.option("--parent-run", "parent_run", help="One table run (its parent run id).")
@click.option("-o", "--output", default="automation_result.csv", show_default=True, type=click.Path())
@click.option("--ci", is_flag=True, help="Add the 95% interval of each summary column (..._ci_low, ..._ci_high) "
              "after all other columns.")
@tracking_uri_option()
def cli(experiment, parent_run, output, ci, tracking_uri):
    """Rebuild the TIML results table from the MLflow tracking store."""
    with user_errors():
        tracking.configure(tracking_uri, create=False)
        frame = build_results_table(parent_run_id=parent_run, experiment=experiment, ci=ci)
        write_table(frame, output, ci)
    click.echo(f"Wrote {len(frame)} rows to {output}")


if __name__ == "__main__":
    cli()
