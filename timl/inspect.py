"""Inspection of a predictions CSV against the ground truth: metrics, plots and an MLflow run.

``python -m timl.inspect --test-csv G.csv --predictions-csv P.csv`` (or the original
``python -m timl.classification.inspect``) matches the rows of both files by ``image_name``, scores the
predictions with :mod:`timl.evaluation`, writes the report files into a folder and records the inspection as an
MLflow run. When the predictions' sidecar (``P.csv.json``, written by ``timl.predict``) names the model's run, the
inspection run is tagged ``timl.model_run_id`` and the same metrics are logged on the model's run as
``inspect_<dataset>/...`` (per class ``inspect_<dataset>_class/...``).

Leakage: with ``--train-csv`` (the model's training images) and ``--groups`` (``COLUMN`` of both CSVs, or
``FILE.csv:COLUMN``, e.g. the ISIC metadata's ``lesion_id``), test images that share a group with a training
image are counted, warned about and tagged on the run (``timl.inspect.shared_groups``): their scores are inflated.
The training images are given, not looked up: the model's run records its dataset's digest, not its image names.

Subgroups: ``--subgroups FILE.csv:COLUMN[,COLUMN...]`` (e.g. ``meta.csv:sex,age_approx:0,30,45,60``) scores each
group alone with its intervals (:mod:`timl.subgroups`): ``subgroups.csv``, ``subgroups-<score>.png``, metrics
``test_group/<column>/<value>/...`` and ``test_group/gap/...`` (on the model's run ``inspect_<dataset>_group/``).

The report files keep the original TIML's names and layouts (``summary.csv``, ``summary.json``,
``per_image_results.csv``, ``ROC-0000-<class>.png``; see :func:`timl.reports.write_report`); TIML's other files
sit beside them.

File formats:

* ground truth: ``image_name`` and one 0/1 column per class;
* predictions: ``image_name`` and one probability column per class (named as the class); the other columns
  (``inferred_class``, ``inferred_index``, ``<class>_pred``, ``tta_std_<class>``) are ignored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

from timl import datasets, evaluation, metric_names, reports, subgroups as subgroup_scores, tables
from timl.cli import bootstrap_option, command, tracking_uri_option
from timl.datasets import IMAGE_COLUMN
from timl.errors import ConfigError, DatasetError, TimlError
from timl.intervals import DEFAULT_RESAMPLES, Bootstrap
from timl.tta import TTA_STD_PREFIX

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "timl-inspect"

#: Columns of a predictions CSV that are not class probabilities (besides ``<class>_pred`` and, from
#: ``predict --tta``, ``tta_std_<class>``).
PREDICTION_EXTRA_COLUMNS = ("inferred_class", "inferred_index")

#: The files an inspection writes (glob patterns), removed from the folder before ``--overwrite`` rewrites it.
REPORT_FILES = ("summary.csv", "summary.json", "per_image_results.csv", "ROC-*.png", "confusion_matrix.csv",
                "confusion_matrix.png", "precision_recall.png", subgroup_scores.TABLE_FILE,
                f"{subgroup_scores.PLOT_STEM}-*.png")

#: How many differing image names an error message lists from each side.
MAX_LISTED = 20


@dataclasses.dataclass(frozen=True)
class InspectResult:
    """What :func:`inspect` produced.

    Attributes:
        out_dir: the folder holding the report files.
        summary: the summary dict of :func:`timl.evaluation.evaluate`.
        run_id: the inspection's MLflow run id.
        subgroups: the scores by subgroup (``--subgroups``), else None.
    """

    out_dir: Path
    summary: dict
    run_id: str | None
    subgroups: subgroup_scores.SubgroupResults | None = None


def read_sidecar(predictions_csv: str | Path) -> dict[str, Any] | None:
    """Reads the JSON sidecar ``<predictions_csv>.json`` written by ``timl.predict``; None if there is none.

    Raises:
        DatasetError: the sidecar is not a JSON object.
    """
    path = Path(f"{predictions_csv}.json")
    if not path.is_file():
        return None
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: not a readable JSON sidecar ({error}).") from error
    if not isinstance(sidecar, dict):
        raise DatasetError(f"{path}: the sidecar must be a JSON object with keys such as run_id, class_names and "
                           f"multi_label. Received: {type(sidecar).__name__}")
    return sidecar


def _read_table(path: Path, role: str) -> pd.DataFrame:
    """Reads a CSV of image names (every cell as text; a predictions table's decimal commas, in a ``;`` file, read
    as points) and checks every row names one image, once."""
    frame = datasets.read_image_table(path, not_found=f"The {role} CSV does not exist",
                                      field=f"{role.replace(' ', '_')}_csv", what=f"{role} CSV",
                                      numeric=role == "predictions")
    if frame.empty:
        raise DatasetError(f"{path}: the {role} CSV has no rows. Received: 0 rows")
    names = frame[IMAGE_COLUMN]
    if (names == "").any():
        lines = [tables.line_of(frame, position) for position in np.flatnonzero(names == "")[:MAX_LISTED]]
        raise DatasetError(f"{path}: empty '{IMAGE_COLUMN}' on line(s) {lines}. Every row needs an image name.")
    duplicated = names[names.duplicated()].unique().tolist()
    if duplicated:
        raise DatasetError(f"{path}: each image must appear once. Received duplicated image names: "
                           f"{duplicated[:MAX_LISTED]} ({len(duplicated)} in all)")
    return frame.set_index(IMAGE_COLUMN)


def _prediction_classes(frame: pd.DataFrame, sidecar: dict | None) -> list[str]:
    """The class columns of a predictions table: the sidecar's ``class_names``, else the non-extra columns."""
    if sidecar and sidecar.get("class_names"):
        return [str(name) for name in sidecar["class_names"]]
    columns = [str(column) for column in frame.columns if column not in PREDICTION_EXTRA_COLUMNS]
    return [column for column in columns if not (column.endswith("_pred") and column[:-5] in columns)
            and not (column.startswith(TTA_STD_PREFIX) and column[len(TTA_STD_PREFIX):] in columns)]


def _check_same_classes(truth_classes: list[str], predicted_classes: list[str], test_csv: Path,
                        predictions_csv: Path, predictions: pd.DataFrame) -> None:
    only_truth = [name for name in truth_classes if name not in predicted_classes]
    only_predicted = [name for name in predicted_classes if name not in truth_classes]
    if only_truth or only_predicted:
        raise DatasetError(
            f"The class columns differ between the ground truth {test_csv} and the predictions {predictions_csv}: "
            f"only in the ground truth: {only_truth or 'none'}; only in the predictions: {only_predicted or 'none'}. "
            f"Both files need the same class columns. Received: ground truth classes={truth_classes}, "
            f"predicted classes={predicted_classes}")
    missing = [name for name in truth_classes if name not in predictions.columns]
    if missing:
        raise DatasetError(f"{predictions_csv}: no probability column for class(es) {missing} named in its sidecar. "
                           f"Received columns: {', '.join(map(str, predictions.columns))}")


def _check_same_images(truth: pd.DataFrame, predictions: pd.DataFrame, test_csv: Path,
                       predictions_csv: Path) -> None:
    predicted = set(predictions.index)
    in_truth = set(truth.index)
    only_truth = [name for name in truth.index if name not in predicted]
    only_predicted = [name for name in predictions.index if name not in in_truth]
    if only_truth or only_predicted:
        raise DatasetError(
            f"The images differ between the ground truth {test_csv} and the predictions {predictions_csv}; every "
            f"image must be in both files. {len(only_truth)} only in the ground truth: {only_truth[:MAX_LISTED]}"
            f"{' ...' if len(only_truth) > MAX_LISTED else ''}; {len(only_predicted)} only in the predictions: "
            f"{only_predicted[:MAX_LISTED]}{' ...' if len(only_predicted) > MAX_LISTED else ''}. "
            f"Received: {len(truth)} ground-truth rows, {len(predictions)} prediction rows")


def _numeric_matrix(frame: pd.DataFrame, classes: list[str], path: Path, what: str) -> np.ndarray:
    """The class columns as floats; an error names the first bad column and line."""
    for name in classes:
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if bad.size:
            line = int(bad[0]) + 2
            raise DatasetError(f"{path}, line {line}, column '{name}': expected {what}. "
                               f"Received: {name}={frame[name].iloc[bad[0]]!r}")
    return frame[classes].apply(pd.to_numeric).to_numpy(dtype=float)


def _ground_truth_matrix(frame: pd.DataFrame, classes: list[str], path: Path) -> np.ndarray:
    matrix = _numeric_matrix(frame, classes, path, "0 or 1")
    rows, columns = np.nonzero(~np.isin(matrix, (0.0, 1.0)))
    if rows.size:
        name = classes[columns[0]]
        raise DatasetError(f"{path}, line {rows[0] + 2}, column '{name}': expected 0 or 1. "
                           f"Received: {name}={matrix[rows[0], columns[0]]:g}")
    return matrix.astype(int)


def _is_multi_label(sidecar: dict | None, y_true: np.ndarray) -> bool:
    """The sidecar's ``multi_label`` when it has one, else whether a ground-truth row has other than one 1."""
    if sidecar is not None and isinstance(sidecar.get("multi_label"), bool):
        return sidecar["multi_label"]
    return bool((y_true.sum(axis=1) != 1).any())


def default_out_dir(test_csv: str | Path, predictions_csv: str | Path) -> Path:
    """``inspect_<test name>-<predictions name>`` in the working directory."""
    return Path(f"inspect_{Path(test_csv).stem}-{Path(predictions_csv).stem}")


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"The output folder is a file. Give another --out-dir. Received: out_dir={str(out_dir)!r}")
    if out_dir.exists() and not overwrite:
        raise ConfigError(f"The output folder already exists; pass --overwrite (overwrite=True) to replace its "
                          f"report or give another --out-dir. Received: out_dir={str(out_dir)!r}")


def _clear_report(out_dir: Path) -> None:
    """Removes the files of an earlier inspection (only those) from ``out_dir``."""
    for pattern in REPORT_FILES:
        for path in out_dir.glob(pattern):
            if path.is_file():
                path.unlink()


def _load_inputs(test_csv: Path, predictions_csv: Path, group_column: str | None = None) -> dict[str, Any]:
    """Reads, matches and validates both CSVs and the sidecar (a ground-truth ``group_column`` is no class)."""
    truth = _read_table(test_csv, "test")
    if group_column in truth.columns:
        truth = truth.drop(columns=[group_column])
    predictions = _read_table(predictions_csv, "predictions")
    sidecar = read_sidecar(predictions_csv)
    classes = [str(column) for column in truth.columns]
    truth.columns = classes
    predictions.columns = [str(column) for column in predictions.columns]
    _check_same_classes(classes, _prediction_classes(predictions, sidecar), test_csv, predictions_csv, predictions)
    _check_same_images(truth, predictions, test_csv, predictions_csv)
    y_true = _ground_truth_matrix(truth, classes, test_csv)
    predictions = predictions.loc[truth.index]
    y_prob = _numeric_matrix(predictions, classes, predictions_csv, "a probability (a number)")
    return {"image_names": list(truth.index), "y_true": y_true, "y_prob": y_prob, "classes": classes,
            "sidecar": sidecar, "multi_label": _is_multi_label(sidecar, y_true)}


def shared_groups_count(test_csv: Path, train_csv: Path, groups: str) -> int:
    """How many test images share a group with a training image (warned about, naming up to 20 groups).

    Raises:
        MissingFileError, DatasetError: a CSV or groups table not found, or no such group column.
    """
    spec = datasets.parse_groups(groups)
    frames = {"test": (test_csv, _read_table(test_csv, "test").reset_index()),
              "train": (train_csv, _read_table(train_csv, "train").reset_index())}
    labels = datasets.read_groups_of(spec, frames, Path.cwd())
    trained = set(labels["train"])
    leaked = [label for label in labels["test"] if label in trained]
    if leaked:
        shared = datasets.shared_groups({"train": labels["train"], "test": np.array(leaked, dtype=object)})
        logger.warning("%d of the %d test images share a group (%s) with training images of %s; their scores are "
                       "inflated: %s", len(leaked), len(labels["test"]), spec.text, train_csv,
                       ", ".join(shared[:MAX_LISTED]))
    return len(leaked)


def dataset_name(test_csv: str | Path) -> str:
    """The ``<dataset>`` of the ``inspect_<dataset>/`` metric group: the test CSV's stem, sanitised for MLflow."""
    return metric_names.sanitize_metric_name(Path(test_csv).stem)


def _log_to_mlflow(out_dir: Path, summary: dict, *, experiment: str, tracking_uri: str | None, run_name: str,
                   params: dict[str, Any], model_run_id: str | None, dataset: str, tags: dict | None = None,
                   by_subgroup: subgroup_scores.SubgroupResults | None = None) -> str:
    """Records the inspection as an MLflow run (metrics, params, report files) and, when the model's run is
    known, logs the same metrics on it as ``inspect_<dataset>/...`` (per class ``inspect_<dataset>_class/...``,
    by subgroup ``inspect_<dataset>_group/...``). Returns the inspection's run id."""
    from timl import tracking

    tags = {tracking.TAG_COMMAND: "inspect", **({tracking.TAG_MODEL_RUN: model_run_id} if model_run_id else {}),
            **(tags or {})}
    with tracking.command_run(experiment, run_name, tags, tracking_uri) as run_id:
        tracking.log_metrics(_metrics(summary, by_subgroup, metric_names.TEST), run_id=run_id,
                             tracking_uri=tracking_uri)
        tracking.log_params(params, run_id=run_id, tracking_uri=tracking_uri)
        tracking.log_folder(out_dir, run_id=run_id, tracking_uri=tracking_uri)
        if model_run_id:
            try:
                tracking.log_metrics(_metrics(summary, by_subgroup, metric_names.inspect_split(dataset)),
                                     run_id=model_run_id, tracking_uri=tracking_uri)
            except tracking.tracking_errors() as error:
                logger.warning("Could not log the metrics on the model's run %s: %s", model_run_id, error)
    return run_id


def _metrics(summary: dict, by_subgroup: subgroup_scores.SubgroupResults | None, split: str) -> dict[str, float]:
    """A split's summary metrics and, with subgroups, its ``<split>_group/`` metrics."""
    metrics = evaluation.split_metrics(summary, split)
    return {**metrics, **(subgroup_scores.subgroup_metrics(by_subgroup, split) if by_subgroup else {})}


def _score_subgroups(spec: subgroup_scores.SubgroupSpec, test_csv: Path, inputs: dict, summary: dict, *,
                     out_dir: Path, threshold: float, min_size: int, bootstrap: int) -> subgroup_scores.SubgroupResults:
    """Reads the groups of the test images, scores them and writes their table and forest plots."""
    path = subgroup_scores.subgroups_file(spec, Path.cwd(), test_csv.parent)
    labels = subgroup_scores.read_subgroup_labels(spec, path, inputs["image_names"])
    results = subgroup_scores.score_subgroups(spec, labels, inputs["y_true"], inputs["y_prob"], inputs["classes"],
                                              multi_label=inputs["multi_label"], threshold=threshold,
                                              min_size=min_size, bootstrap=Bootstrap(resamples=bootstrap))
    for column, size in results.unknown_sizes().items():
        logger.warning("%d of the %d test images have no row or no %s value in %s: they form the group %r",
                       size, len(inputs["image_names"]), column, path, subgroup_scores.UNKNOWN)
    subgroup_scores.write_subgroup_report(out_dir, results, overall=summary)
    return results


def inspect(test_csv: str | Path, predictions_csv: str | Path, *, out_dir: str | Path | None = None,
            overwrite: bool = False, experiment: str = DEFAULT_EXPERIMENT, threshold: float = 0.5,
            tracking_uri: str | None = None, train_csv: str | Path | None = None,
            groups: str | None = None, bootstrap: int = DEFAULT_RESAMPLES, subgroups: str | None = None,
            subgroup_min_size: int = subgroup_scores.DEFAULT_MIN_SIZE) -> InspectResult:
    """Scores a predictions CSV against a ground-truth CSV, writes the report and records an MLflow run.

    Args:
        test_csv: the ground truth: ``image_name`` and one 0/1 column per class.
        predictions_csv: the predictions of ``timl.predict``: ``image_name`` and one probability column per
            class; an optional sidecar ``<predictions_csv>.json`` gives ``run_id``, ``class_names`` and
            ``multi_label``.
        out_dir: the report folder. Defaults to ``inspect_<test name>-<predictions name>`` in the working
            directory.
        overwrite: replace the report in an existing ``out_dir``. Defaults to False (an existing folder is an
            error).
        experiment: the MLflow experiment of the inspection run. Defaults to "timl-inspect".
        threshold: the decision threshold of multi-label predictions. Defaults to 0.5.
        tracking_uri: the MLflow tracking URI. Defaults to MLflow's own (``MLFLOW_TRACKING_URI``, else
            ``sqlite:///mlflow.db`` in the working directory).
        train_csv: the model's training images (``image_name``), to check for leakage with ``groups``.
            Defaults to None.
        groups: ``COLUMN`` (of both CSVs; no class column) or ``FILE.csv:COLUMN`` (relative to the working
            directory, else beside the test CSV): test images sharing a group with a training image are warned
            about and counted in the tag ``timl.inspect.shared_groups``. Defaults to None.
        bootstrap: resamples of the 95% bootstrap interval beside every summary score, in the summary files and
            the run (``test/balanced_accuracy_ci_low``, ...); 0 computes none. Defaults to 2000.
        subgroups: ``FILE.csv:COLUMN[,COLUMN...]`` (relative to the working directory, else beside the test
            CSV; a column in bands as ``age_approx:0,30,45,60,75``): score each group alone
            (:mod:`timl.subgroups`). Defaults to None.
        subgroup_min_size: groups with fewer images are listed, not scored. Defaults to 30.

    Returns:
        An :class:`InspectResult` with the report folder, the summary and the MLflow run id.

    Raises:
        MissingFileError: a CSV does not exist.
        DatasetError: unreadable CSVs, different class columns or images, values that are not 0/1 or numbers.
        ConfigError: ``out_dir`` exists and ``overwrite`` is False, or only one of ``train_csv`` and ``groups``.
    """
    test_csv, predictions_csv = Path(test_csv), Path(predictions_csv)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(test_csv, predictions_csv)
    if (train_csv is None) != (groups is None):
        raise ConfigError("The leakage check needs both --train-csv and --groups. "
                          f"Received: train_csv={train_csv!r}, groups={groups!r}")
    spec = datasets.parse_groups(groups) if groups else None
    subgroup_spec = subgroup_scores.parse_subgroups(subgroups)
    inputs = _load_inputs(test_csv, predictions_csv, spec.column if spec and not spec.file else None)
    shared = shared_groups_count(test_csv, Path(train_csv), groups) if spec else None
    _check_out_dir(out_dir, overwrite)
    if out_dir.exists():
        _clear_report(out_dir)
    summary = reports.write_report(out_dir, inputs["image_names"], inputs["y_true"], inputs["y_prob"],
                                      inputs["classes"], multi_label=inputs["multi_label"], threshold=threshold,
                                      bootstrap=Bootstrap(resamples=bootstrap))
    by_subgroup = _score_subgroups(subgroup_spec, test_csv, inputs, summary, out_dir=out_dir, threshold=threshold,
                                   min_size=subgroup_min_size, bootstrap=bootstrap) if subgroup_spec else None
    sidecar = inputs["sidecar"] or {}
    params = {"test_csv": test_csv.resolve(), "predictions_csv": predictions_csv.resolve(), "threshold": threshold,
              "multi_label": inputs["multi_label"], "samples": summary["samples"],
              "classes": ";".join(inputs["classes"])[:500], "model_uri": sidecar.get("model_uri"),
              "bootstrap": bootstrap, **({"tta": sidecar["tta"]} if sidecar.get("tta") else {}),  # predict --tta
              **({"subgroups": subgroup_spec.text, "subgroup_min_size": subgroup_min_size} if subgroup_spec else {})}
    run_id = _log_to_mlflow(out_dir, summary, experiment=experiment, tracking_uri=tracking_uri,
                            run_name=f"inspect {test_csv.stem}-{predictions_csv.stem}", params=params,
                            model_run_id=sidecar.get("run_id"), dataset=dataset_name(test_csv),
                            tags=_leakage_tags(shared), by_subgroup=by_subgroup)
    logger.info("Inspection of %s written to %s (MLflow run %s)", predictions_csv, out_dir, run_id)
    return InspectResult(out_dir=out_dir, summary=summary, run_id=run_id, subgroups=by_subgroup)


def _leakage_tags(shared: int | None) -> dict:
    """The tag of an inspection whose test images share groups with training images (none when none do)."""
    from timl import tracking

    return {tracking.TAG_INSPECT_SHARED_GROUPS: str(shared)} if shared else {}


def _echo_subgroups(results: subgroup_scores.SubgroupResults, out_dir: Path) -> None:
    """The subgroups' line: how many groups were scored, too small, unknown, and the largest gaps."""
    scored = sum(group.scores is not None for group in results.groups)
    click.echo(f"subgroups: {scored} of {len(results.groups)} groups scored ({len(results.groups) - scored} under "
               f"{results.min_size} images: too small); {out_dir / subgroup_scores.TABLE_FILE}")
    for column, size in results.unknown_sizes().items():
        click.echo(f"  {size} images have no {column} value: group {subgroup_scores.UNKNOWN!r}")
    gap = results.overall_gaps().get(metric_names.SCALAR_METRICS["balanced_accuracy"])
    if gap is not None:
        click.echo(f"  largest gap in balanced accuracy between groups: {gap:.4f}")


def _format_metric(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


EXAMPLE = """\b
Example:
  python -m timl.inspect --test-csv isic2019-test.csv --predictions-csv predictions.csv
  python -m timl.inspect --test-csv gt.csv --predictions-csv p.csv --out-dir report --overwrite \\
      --experiment my-inspections --threshold 0.4 --tracking-uri sqlite:///mlflow.db
  python -m timl.inspect --test-csv gt.csv --predictions-csv p.csv \\
      --subgroups ISIC_2019_Training_Metadata.csv:sex,anatom_site_general,age_approx:0,30,45,60,75
"""


@command(name="inspect", epilog=EXAMPLE)
@click.option("--test-csv", required=True, help="Ground truth: image_name and one 0/1 column per class.")
@click.option("--predictions-csv", required=True,
              help="Predictions of timl.predict: image_name and one probability column per class.")
@click.option("--out-dir", default=None, help="Report folder. [default: inspect_<test name>-<predictions name>]")
@click.option("--overwrite", is_flag=True, help="Replace the report in an existing --out-dir.")
@click.option("--experiment", default=DEFAULT_EXPERIMENT, show_default=True, help="MLflow experiment of the run.")
@click.option("--threshold", default=0.5, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Decision threshold of multi-label predictions.")
@tracking_uri_option(help="MLflow tracking URI. [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db]")
@click.option("--train-csv", default=None, help="The model's training images (image_name), for the leakage check.")
@click.option("--groups", default=None, help="Groups of images (COLUMN of both CSVs, or FILE.csv:COLUMN): warn when "
                                             "test images share a group with --train-csv's images.")
@bootstrap_option
@click.option("--subgroups", default=None,
              help="Score each subgroup alone: FILE.csv:COLUMN[,COLUMN...] (a table with image_name), a numeric "
                   "column in bands as COLUMN:EDGE,EDGE,... e.g. meta.csv:sex,age_approx:0,30,45,60,75.")
@click.option("--subgroup-min-size", default=subgroup_scores.DEFAULT_MIN_SIZE, show_default=True,
              type=click.IntRange(min=1), help="Subgroups with fewer images are listed as too small, not scored.")
def cli(test_csv, predictions_csv, out_dir, overwrite, experiment, threshold, tracking_uri, train_csv, groups,
        bootstrap, subgroups, subgroup_min_size):
    """Score a predictions CSV against the ground truth: metrics, plots and an MLflow run."""
    try:
        result = inspect(test_csv, predictions_csv, out_dir=out_dir, overwrite=overwrite, experiment=experiment,
                         threshold=threshold, tracking_uri=tracking_uri, train_csv=train_csv, groups=groups,
                         bootstrap=bootstrap, subgroups=subgroups, subgroup_min_size=subgroup_min_size)
    except (TimlError, FileNotFoundError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    summary = result.summary
    kind = "multi-label" if summary["multi_label"] else "single-label"
    click.echo(f"Inspected {summary['samples']} images, {len(summary['classes'])} classes ({kind}).")
    click.echo(f"balanced accuracy: {_format_metric(summary['balanced_accuracy'])}")
    click.echo(f"mean AUC: {_format_metric(summary['mean_auc'])}")
    if summary["multi_label"]:
        click.echo(f"exact match: {_format_metric(summary['exact_match'])}, "
                   f"Hamming loss: {_format_metric(summary['hamming_loss'])}")
    if result.subgroups:
        _echo_subgroups(result.subgroups, result.out_dir)
    click.echo(f"files: {result.out_dir}")
    click.echo(f"MLflow run: {result.run_id} (experiment {experiment})")


if __name__ == "__main__":
    cli()
