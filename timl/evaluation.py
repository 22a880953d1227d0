"""Classification metrics: the summary of a set of predictions (its files are written by :mod:`timl.reports`).

One code path scores every set of predictions TIML makes: the dev and test sets of a training run and the
``inspect`` command. The summary keeps the original TIML keys (``samples``, ``classes``, ``class_prop``, the
per-class ``accuracy``, ``specificity``, ``sensitivity`` and ``f1``, ``global_accuracy`` and their plain and
prevalence-weighted means) and adds the balanced multiclass accuracy (the ISIC 2019 challenge's ranking
metric), per-class precision, AUC and average precision, the mean AUC, and the calibration of the probabilities
(expected and maximum calibration error, Brier score, negative log likelihood: :mod:`timl.calibration`). The
report files keep the original's layouts (:mod:`timl.reports`); in memory, per-class values are lists.

Conventions:

* Per-class metrics come from the one-vs-rest binarisation of each class. A single-label model predicts the
  class of highest probability (``argmax``; on ties the first of the tied classes); a multi-label model
  predicts every class whose probability is at least ``threshold``.
* A metric that is undefined (sensitivity, AUC or average precision of a class absent from the ground truth,
  specificity of a class every image has, precision of a class never predicted) is ``None``, never NaN, and
  means skip it.
* Weighted means weight each class by its prevalence in the ground truth (``class_prop``), normalised over the
  classes where the metric is defined.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from timl.calibration import calibration_summary, image_brier, image_log_loss
from timl.errors import DatasetError
from timl.intervals import Bootstrap, interval_metrics
from timl.metric_names import (CALIBRATION_INTERVAL_SCALARS, PER_CLASS_METRICS, SCALAR_METRICS, class_group,
                               per_class_metric_name, sanitize_metric_name, summary_group)

logger = logging.getLogger(__name__)


def check_inputs(y_true, y_prob, class_names, multi_label: bool, threshold: float):
    """Validates and converts the arrays of :func:`evaluate`; returns ``(y_true bool, y_prob float)``."""
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=float)
    class_names = list(class_names)
    if y_true.ndim != 2 or y_true.shape[0] < 1 or y_true.shape[1] < 1:
        raise DatasetError("y_true must be a non-empty (samples, classes) array of 0/1 values. "
                           f"Received: y_true.shape={y_true.shape}")
    if y_prob.shape != y_true.shape:
        raise DatasetError("y_prob must have the shape of y_true (one probability per image and class). "
                           f"Received: y_true.shape={y_true.shape}, y_prob.shape={y_prob.shape}")
    if len(class_names) != y_true.shape[1]:
        raise DatasetError(f"class_names must name the {y_true.shape[1]} columns of y_true. "
                           f"Received: class_names={class_names}")
    if not np.isin(y_true, (0, 1)).all():
        raise DatasetError(f"y_true must hold only 0 and 1. Received values: {sorted(set(np.unique(y_true)))[:10]}")
    if not np.isfinite(y_prob).all():
        bad = np.flatnonzero(~np.isfinite(y_prob).all(axis=1))[:20].tolist()
        raise DatasetError(f"y_prob must be finite numbers. Received: NaN or infinite values in rows {bad}")
    if not 0.0 <= threshold <= 1.0:
        raise DatasetError(f"threshold must be between 0 and 1. Received: threshold={threshold}")
    y_true = y_true.astype(bool)
    if not multi_label:
        not_one = np.flatnonzero(y_true.sum(axis=1) != 1)
        if not_one.size:
            raise DatasetError("Single-label ground truth must have exactly one 1 per row (use multi_label=True "
                               f"for multi-label data). Received: rows {not_one[:20].tolist()} "
                               f"({not_one.size} in all) with another count of ones")
    return y_true, y_prob


def predict_labels(y_prob: np.ndarray, *, multi_label: bool = False, threshold: float = 0.5) -> np.ndarray:
    """Turns probabilities into 0/1 predictions.

    Args:
        y_prob: (samples, classes) probabilities.
        multi_label: if True, every class with probability >= ``threshold``; otherwise the argmax (first of
            ties) as a one-hot row. Defaults to False.
        threshold: the multi-label decision threshold. Defaults to 0.5.

    Returns:
        A boolean (samples, classes) array.
    """
    y_prob = np.asarray(y_prob, dtype=float)
    if multi_label:
        return y_prob >= threshold
    return np.eye(y_prob.shape[1], dtype=bool)[np.argmax(y_prob, axis=1)]


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


def _per_class_scores(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[list, list]:
    """AUC and average precision of each class; None where the class is absent (or, for AUC, everywhere)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    aucs, average_precisions = [], []
    for column in range(y_true.shape[1]):
        truth, scores = y_true[:, column], y_prob[:, column]
        positives = int(truth.sum())
        both = 0 < positives < truth.size
        aucs.append(float(roc_auc_score(truth, scores)) if both else None)
        average_precisions.append(float(average_precision_score(truth, scores)) if positives else None)
    return aucs, average_precisions


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [value for value in values if value is not None]
    return float(np.mean(defined)) if defined else None


def _weighted_mean(values: Sequence[float | None], weights: Sequence[float]) -> float | None:
    pairs = [(value, weight) for value, weight in zip(values, weights) if value is not None]
    total = sum(weight for _, weight in pairs)
    return float(sum(value * weight for value, weight in pairs) / total) if total else None


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
    return {"tp": (y_pred & y_true).sum(axis=0), "tn": (~y_pred & ~y_true).sum(axis=0),
            "fp": (y_pred & ~y_true).sum(axis=0), "fn": (~y_pred & y_true).sum(axis=0)}


def evaluate(y_true, y_prob, class_names: Sequence[str], *, multi_label: bool = False, threshold: float = 0.5,
             bootstrap: Bootstrap | None = None) -> dict[str, Any]:
    """Scores predicted probabilities against a 0/1 ground truth.

    Args:
        y_true: (samples, classes) array of 0/1; single-label rows have exactly one 1.
        y_prob: (samples, classes) array of predicted probabilities (or any scores).
        class_names: the name of each column.
        multi_label: if True, a class is predicted when its probability is >= ``threshold`` and the summary
            adds ``exact_match`` and ``hamming_loss``; otherwise the argmax is the prediction. Defaults to False.
        threshold: the multi-label decision threshold. Defaults to 0.5.
        bootstrap: add 95% intervals, their keys last (:meth:`timl.intervals.Bootstrap.summary_values`).
            Defaults to None (none).

    Returns:
        A flat dict: ``samples``, ``classes``, ``class_prop``; per-class lists ``accuracy``, ``specificity``,
        ``sensitivity``, ``precision``, ``f1``, ``auc``, ``average_precision`` (None where undefined);
        ``global_accuracy``, ``balanced_accuracy``, ``mean_``/``weighted_mean_`` accuracy, specificity,
        sensitivity and f1, ``mean_auc``; ``multi_label``; for multi-label also ``threshold``,
        ``exact_match`` and ``hamming_loss``; then the calibration scores ``ece``, ``mce``, ``brier`` and
        ``nll`` (:func:`timl.calibration.calibration_summary`).

    Raises:
        DatasetError: shapes that do not match, values that are not 0/1, non-finite probabilities, or a
            single-label row without exactly one 1.
    """
    y_true, y_prob = check_inputs(y_true, y_prob, class_names, multi_label, threshold)
    y_pred = predict_labels(y_prob, multi_label=multi_label, threshold=threshold)
    samples = y_true.shape[0]
    counts = confusion_counts(y_true, y_pred)
    tp, tn, fp, fn = counts["tp"], counts["tn"], counts["fp"], counts["fn"]
    class_prop = (y_true.sum(axis=0) / samples).tolist()
    per_class = {
        "accuracy": [float(value) for value in (tp + tn) / samples],
        "specificity": [_ratio(t, t + f) for t, f in zip(tn, fp)],
        "sensitivity": [_ratio(t, t + f) for t, f in zip(tp, fn)],
        "precision": [_ratio(t, t + f) for t, f in zip(tp, fp)],
        "f1": [_ratio(2 * t, 2 * t + p + n) for t, p, n in zip(tp, fp, fn)],
    }
    per_class["auc"], per_class["average_precision"] = _per_class_scores(y_true, y_prob)
    if multi_label:
        global_accuracy = float((y_pred == y_true).all(axis=1).mean())
    else:
        global_accuracy = float((np.argmax(y_prob, axis=1) == np.argmax(y_true, axis=1)).mean())
    summary: dict[str, Any] = {"samples": int(samples), "classes": [str(name) for name in class_names],
                               "class_prop": class_prop, **per_class, "global_accuracy": global_accuracy,
                               # Mean recall over the classes present in y_true (sklearn's balanced accuracy).
                               "balanced_accuracy": _mean(per_class["sensitivity"])}
    for name in ("accuracy", "specificity", "sensitivity", "f1"):
        summary[f"mean_{name}"] = _mean(per_class[name])
        summary[f"weighted_mean_{name}"] = _weighted_mean(per_class[name], class_prop)
    summary["mean_auc"] = _mean(per_class["auc"])
    summary["multi_label"] = bool(multi_label)
    if multi_label:
        summary["threshold"] = float(threshold)
        summary["exact_match"] = global_accuracy
        summary["hamming_loss"] = float((y_pred != y_true).mean())
    summary.update(calibration_summary(y_true, y_prob, multi_label=multi_label))
    if not bootstrap:
        return summary
    losses = dict(zip(CALIBRATION_INTERVAL_SCALARS, (image_brier(y_true, y_prob, multi_label=multi_label),
                                                     image_log_loss(y_true, y_prob, multi_label=multi_label))))
    return {**summary, **bootstrap.summary_values(y_true, y_pred, y_prob, losses)}


def summary_metrics(summary: dict[str, Any], prefix: str = "", class_prefix: str | None = None) -> dict[str, float]:
    """Flattens a summary from :func:`evaluate` into MLflow metric names and values.

    ``{prefix}accuracy`` is the global accuracy, ``{prefix}auc`` the mean AUC; the other scalars keep their
    summary names (``{prefix}balanced_accuracy``, ``{prefix}mean_f1``, ...); per-class values become
    ``{class_prefix}acc_<class>``, ``spec_``, ``sens_``, ``prec_``, ``f1_``, ``auc_``, ``ap_`` and ``prop_``.
    Class names are sanitised for MLflow (see :func:`timl.metric_names.sanitize_metric_name`); None values are
    skipped. A summary with intervals adds their bounds (:func:`timl.intervals.interval_metrics`).

    Args:
        summary: a dict returned by :func:`evaluate`.
        prefix: prepended to every summary name, e.g. ``"test/"`` (:func:`timl.metric_names.summary_group`).
            Defaults to "".
        class_prefix: prepended to every per-class name, e.g. ``"test_class/"``
            (:func:`timl.metric_names.class_group`).
            Defaults to ``prefix``.

    Returns:
        A dict of metric name to float.
    """
    prefix = sanitize_metric_name(prefix)
    class_prefix = prefix if class_prefix is None else sanitize_metric_name(class_prefix)
    metrics: dict[str, float] = {}
    for key, name in SCALAR_METRICS.items():
        if summary.get(key) is not None:
            metrics[f"{prefix}{name}"] = float(summary[key])
    for key, short in PER_CLASS_METRICS.items():
        for class_name, value in zip(summary["classes"], summary.get(key) or ()):
            if value is not None:
                metrics[per_class_metric_name(class_prefix, short, class_name)] = float(value)
    return {**metrics, **interval_metrics(summary, prefix, class_prefix)}


def split_metrics(summary: dict[str, Any], split: str) -> dict[str, float]:
    """A split's summary as the metrics of its groups: ``dev/accuracy``, ..., ``dev_class/acc_MEL``, ...

    Args:
        summary: a dict returned by :func:`evaluate`.
        split: the split it scores (``dev``, ``test``, ``inspect_<dataset>``: :mod:`timl.metric_names`).
    """
    return summary_metrics(summary, summary_group(split), class_group(split))


def format_class_values(values: Sequence[float | None], decimals: int = 3) -> str:
    """One value per class as the original TIML wrote it: ``[0.500,nan,0.250]`` (None as ``nan``).

    Args:
        values: one number (or None) per class.
        decimals: digits after the point. Defaults to 3 (the original's); 0 writes 0/1 vectors as ``[1,0,0]``.
    """
    return "[" + ",".join("nan" if value is None else f"{value:.{decimals}f}" for value in values) + "]"
