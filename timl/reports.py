"""The evaluation report: the files a set of predictions is written to, in the original TIML's layouts.

:func:`write_report` (and :func:`start_report`, whose plots a :class:`timl.workers.Worker` draws) scores
predictions with :func:`timl.evaluation.evaluate` and writes ``summary.csv``/``summary.json``
(:func:`write_summary`), ``per_image_results.csv`` (:func:`per_image_results`), the confusion matrix
(:func:`confusion_table`), the ROC and precision-recall plots and the reliability diagram. The dev and test sets
of a training run, the ``inspect`` command and a cross-validation's out-of-fold predictions are all written here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from timl.calibration import reliability_bins
from timl.errors import DatasetError
from timl.evaluation import check_inputs, confusion_counts, evaluate, format_class_values, predict_labels
from timl.intervals import Bootstrap, class_intervals

logger = logging.getLogger(__name__)

#: The original TIML's columns of ``per_image_results.csv``, in its order: ``groundtruth`` and ``inference`` are
#: 0/1 vectors (``[1,0,0]``), ``class_groundtruth`` and ``class_inference`` class indices, ``pdist`` the
#: probabilities (``[0.900,0.050,0.050]``), ``correct`` True or False.
PER_IMAGE_COLUMNS = ("image", "groundtruth", "class_groundtruth", "pdist", "inference", "class_inference",
                     "correct")

#: Columns TIML adds after the original ones: the class names of the ground truth and of the inference.
PER_IMAGE_EXTRA_COLUMNS = ("name_groundtruth", "name_inference")

#: The original TIML's keys of ``summary.csv`` and ``summary.json``, in its order: ``samples`` (int),
#: ``classes`` (``A;B;C``), the per-class arrays (``[0.500,0.250,0.250]``), the global accuracy and the plain and
#: weighted means (floats), then ``auc`` (per class). TIML's other keys follow them.
ORIGINAL_SUMMARY_KEYS = ("samples", "classes", "class_prop", "accuracy", "specificity", "sensitivity", "f1",
                         "global_accuracy", "mean_accuracy", "weighted_mean_accuracy", "mean_specificity",
                         "weighted_mean_specificity", "mean_sensitivity", "weighted_mean_sensitivity", "mean_f1",
                         "weighted_mean_f1", "auc")



def _class_indices(row: np.ndarray) -> str:
    return ";".join(str(index) for index in np.flatnonzero(row))


def per_image_results(image_names: Sequence[str], y_true, y_prob, class_names: Sequence[str], *,
                      multi_label: bool = False, threshold: float = 0.5) -> pd.DataFrame:
    """One row per image: truth, probabilities, prediction and whether it is right.

    Args:
        image_names: the name of each row's image.
        y_true: (samples, classes) array of 0/1.
        y_prob: (samples, classes) predicted probabilities.
        class_names: the name of each column.
        multi_label: see :func:`timl.evaluation.evaluate`. Defaults to False.
        threshold: the multi-label decision threshold. Defaults to 0.5.

    Returns:
        A DataFrame with the original TIML's columns (:data:`PER_IMAGE_COLUMNS`), then
        :data:`PER_IMAGE_EXTRA_COLUMNS`. ``groundtruth`` and ``inference`` are 0/1 vectors such as ``[1,0,0]``
        (the predicted class, or for multi-label every class at or above ``threshold``); ``class_groundtruth``
        and ``class_inference`` the class indices (``;``-joined for multi-label); ``pdist`` the probabilities
        with 3 decimals (``[0.900,0.050,0.050]``); ``correct`` a bool (the argmax matches, or for multi-label the
        predicted set equals the true set); ``name_groundtruth`` and ``name_inference`` the class names.
    """
    y_true, y_prob = check_inputs(y_true, y_prob, class_names, multi_label, threshold)
    image_names = [str(name) for name in image_names]
    if len(image_names) != y_true.shape[0]:
        raise DatasetError(f"image_names must name the {y_true.shape[0]} rows of y_true. "
                           f"Received: {len(image_names)} image names")
    names = [str(name) for name in class_names]
    y_pred = predict_labels(y_prob, multi_label=multi_label, threshold=threshold)
    if multi_label:
        correct = (y_pred == y_true).all(axis=1)
        truth_classes = [_class_indices(row) for row in y_true]
        inferred_classes = [_class_indices(row) for row in y_pred]
    else:
        correct = np.argmax(y_prob, axis=1) == np.argmax(y_true, axis=1)
        truth_classes = np.argmax(y_true, axis=1).tolist()
        inferred_classes = np.argmax(y_prob, axis=1).tolist()
    return pd.DataFrame({
        "image": image_names,
        "groundtruth": [format_class_values(row, 0) for row in y_true.astype(int)],
        "class_groundtruth": truth_classes,
        "pdist": [format_class_values(row) for row in y_prob],
        "inference": [format_class_values(row, 0) for row in y_pred.astype(int)],
        "class_inference": inferred_classes,
        "correct": correct.astype(bool),
        "name_groundtruth": [";".join(names[index] for index in np.flatnonzero(row)) for row in y_true],
        "name_inference": [";".join(names[index] for index in np.flatnonzero(row)) for row in y_pred],
    }, columns=list(PER_IMAGE_COLUMNS + PER_IMAGE_EXTRA_COLUMNS))


def confusion_table(y_true, y_prob, class_names: Sequence[str], *, multi_label: bool = False,
                    threshold: float = 0.5) -> pd.DataFrame:
    """The confusion matrix as a labelled table.

    Args:
        y_true: (samples, classes) array of 0/1.
        y_prob: (samples, classes) predicted probabilities.
        class_names: the name of each column.
        multi_label: if True, one row per class with its ``TN``, ``FP``, ``FN`` and ``TP`` counts at
            ``threshold``; otherwise the classes x classes matrix, rows the true class and columns the predicted
            one (scikit-learn's ``confusion_matrix`` layout). Defaults to False.
        threshold: the multi-label decision threshold. Defaults to 0.5.

    Returns:
        A DataFrame of integer counts indexed by class name.
    """
    y_true, y_prob = check_inputs(y_true, y_prob, class_names, multi_label, threshold)
    names = [str(name) for name in class_names]
    y_pred = predict_labels(y_prob, multi_label=multi_label, threshold=threshold)
    if multi_label:
        counts = confusion_counts(y_true, y_pred)
        table = pd.DataFrame({column.upper(): counts[column] for column in ("tn", "fp", "fn", "tp")}, index=names)
    else:
        matrix = np.zeros((len(names), len(names)), dtype=int)
        np.add.at(matrix, (np.argmax(y_true, axis=1), np.argmax(y_prob, axis=1)), 1)
        table = pd.DataFrame(matrix, index=names, columns=names)
    table.index.name = "groundtruth"
    return table


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_ready(item) for item in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def summary_file_values(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary as the original TIML's ``summary.csv`` and ``summary.json`` hold it.

    The original's keys come first, in its order (:data:`ORIGINAL_SUMMARY_KEYS`), then TIML's other keys in the
    order of :func:`timl.evaluation.evaluate`. ``classes`` is ``;``-joined, every per-class list is an array string of
    :func:`format_class_values` (``[0.500,nan,0.250]``), the other values keep their types (an undefined
    scalar is None).

    Args:
        summary: a dict returned by :func:`timl.evaluation.evaluate`.

    Returns:
        An ordered dict of key to value.
    """
    keys = [key for key in ORIGINAL_SUMMARY_KEYS if key in summary]
    keys += [key for key in summary if key not in keys]
    values: dict[str, Any] = {}
    for key in keys:
        value = _json_ready(summary[key])
        if key == "classes":
            value = ";".join(str(name) for name in value)
        elif isinstance(value, list):
            value = format_class_values(value)
        values[key] = value
    return values


def write_summary(summary: dict[str, Any], csv_path: str | Path, json_path: str | Path) -> None:
    """Writes a summary as the original TIML did: ``summary.csv`` one row with a column per key (an undefined
    value empty) and ``summary.json`` one object (an undefined value null); see :func:`summary_file_values`."""
    values = summary_file_values(summary)
    pd.DataFrame([values], columns=list(values)).to_csv(csv_path, index=False)
    Path(json_path).write_text(json.dumps(values, indent=4) + "\n", encoding="utf-8")


def write_report(out_dir: str | Path, image_names: Sequence[str], y_true, y_prob, class_names: Sequence[str], *,
                 multi_label: bool = False, threshold: float = 0.5, prefix: str = "",
                 bootstrap: Bootstrap | None = None) -> dict[str, Any]:
    """Evaluates predictions and writes the report files into ``out_dir`` (created if missing).

    Files, each name starting with ``prefix``: ``summary.csv``, ``summary.json``, ``per_image_results.csv``
    (the original TIML's layouts, see :func:`write_summary` and :func:`per_image_results`),
    ``ROC-<iiii>-<class>.png`` per class present in the ground truth (the original's names, index zero-padded
    to four digits) and ``ROC-all.png``, ``confusion_matrix.csv`` and ``confusion_matrix.png``,
    ``precision_recall.png``, ``reliability.png`` (the reliability diagram: :func:`timl.plots.draw_reliability`).

    Args:
        out_dir: the folder to write into.
        image_names: the name of each row's image.
        y_true: (samples, classes) array of 0/1.
        y_prob: (samples, classes) predicted probabilities.
        class_names: the name of each column.
        multi_label: see :func:`timl.evaluation.evaluate`. Defaults to False.
        threshold: the multi-label decision threshold. Defaults to 0.5.
        prefix: prepended to every file name, e.g. ``"dev-"``. Defaults to "".
        bootstrap: the intervals of the summary and of the ROC plots' AUC (see :func:`timl.evaluation.evaluate`).
            Defaults to None.

    Returns:
        The summary dict of :func:`timl.evaluation.evaluate`.
    """
    report = start_report(out_dir, image_names, y_true, y_prob, class_names, multi_label=multi_label,
                          threshold=threshold, prefix=prefix, bootstrap=bootstrap)
    report.finish()
    return report.summary


@dataclasses.dataclass
class Report:
    """A report being written: the summary and the tables are done, the plots may still be drawn elsewhere."""

    summary: dict[str, Any]
    files: list[Path]
    drawings: list  # timl.workers.Job, each drawing one or more of the plot files

    def finish(self) -> list[Path]:
        """Waits for the plots; returns every file of the report."""
        for job in self.drawings:
            written = job.result()
            self.files += written if isinstance(written, list) else [written]
        self.drawings = []
        return self.files


def start_report(out_dir: str | Path, image_names: Sequence[str], y_true, y_prob, class_names: Sequence[str], *,
                 multi_label: bool = False, threshold: float = 0.5, prefix: str = "",
                 worker=None, bootstrap: Bootstrap | None = None) -> Report:
    """:func:`write_report`, with the plots drawn by ``worker`` (a :class:`timl.workers.Worker`; default: here,
    when :meth:`Report.finish` is called). The metrics, the tables and the curves are computed here."""
    from timl import plots, workers

    worker = worker or workers.Worker(enabled=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = {"multi_label": multi_label, "threshold": threshold}
    summary = evaluate(y_true, y_prob, class_names, bootstrap=bootstrap, **options)
    files = [out_dir / f"{prefix}{name}" for name in ("summary.csv", "summary.json", "per_image_results.csv",
                                                       "confusion_matrix.csv")]
    write_summary(summary, files[0], files[1])
    per_image_results(image_names, y_true, y_prob, class_names, **options).to_csv(files[2], index=False)
    table = confusion_table(y_true, y_prob, class_names, **options)
    table.to_csv(files[3])
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=float)
    drawings = [
        worker.submit(plots.plot_confusion_matrix, table.to_numpy(), [str(name) for name in table.index],
                      out_dir / f"{prefix}confusion_matrix.png", column_names=[str(name) for name in table.columns]),
        worker.submit(plots.draw_roc, plots.roc_curves(y_true, y_prob, class_names, class_intervals(summary, "auc")),
                      out_dir, prefix=prefix),
        worker.submit(plots.draw_precision_recall, plots.precision_recall_curves(y_true, y_prob, class_names),
                      out_dir / f"{prefix}precision_recall.png"),
        worker.submit(plots.draw_reliability, reliability_bins(y_true, y_prob, multi_label=multi_label),
                      out_dir / f"{prefix}reliability.png", ece=summary["ece"])]
    logger.info("Evaluated %d images; the report goes to %s", summary["samples"], out_dir)
    return Report(summary, files, drawings)
