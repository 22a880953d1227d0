"""A cross-validation's numbers from its folds: each fold's scores summarised (mean, standard deviation), the folds'
out-of-fold predictions read back and pooled, and the ROC curves of the folds with their spread.

Nothing here touches MLflow or a model: :mod:`timl.training.crossval` hands in the folds' metrics and per-image
results files and logs what comes back.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from timl import metric_names as names
from timl import tables
from timl.errors import DatasetError

#: The column of the pooled per-image results that names the fold an image was scored in (after the others).
FOLD_COLUMN = "fold"

#: The false positive rates the folds' ROC curves are interpolated at, to average them.
ROC_GRID = np.linspace(0.0, 1.0, 201)

#: The groups whose scores a cross-validation summarises: the train, dev and test summaries and per-class scores.
SUMMARISED_GROUPS = tuple(group(split) for split in (names.TRAIN, names.DEV, names.TEST)
                          for group in (names.summary_group, names.class_group))


def fold_statistics(fold_metrics: Sequence[dict[str, float]]) -> dict[str, float]:
    """The mean of each score every fold has, under its own name, and its standard deviation across the folds
    beside it (``test/balanced_accuracy``, ``test/balanced_accuracy_std``).

    Scores are those of the train, dev and test groups (:data:`SUMMARISED_GROUPS`); the folds' own interval bounds
    are left out (a cross-validation forms its intervals from the pooled predictions). The standard deviation is
    the sample one (``ddof=1``), as papers report ``mean ± SD`` over folds; sizes (``*/samples``) get no spread.

    Args:
        fold_metrics: each fold's metrics (name -> value).

    Returns:
        name -> value, the means and the ``_std`` spreads.
    """
    if not fold_metrics:
        return {}
    common = set.intersection(*(set(metrics) for metrics in fold_metrics))
    result = {}
    for name in sorted(common):
        if not name.startswith(SUMMARISED_GROUPS) or names.is_interval(name) or names.is_spread(name):
            continue
        values = np.array([metrics[name] for metrics in fold_metrics], dtype=float)
        result[name] = float(values.mean())
        if not name.endswith("/samples") and len(values) > 1:
            result[names.spread_name(name)] = float(values.std(ddof=1))
    return result


def _vectors(column: pd.Series, path: Path, class_count: int) -> np.ndarray:
    """A column of ``[0.900,0.050,0.050]`` strings as a (rows, classes) float array."""
    try:
        rows = [[float(value) for value in str(text).strip("[]").split(",")] for text in column]
    except ValueError as error:
        raise DatasetError(f"{path}: column {column.name!r} holds a value that is no list of numbers "
                           f"({error})") from error
    array = np.array(rows, dtype=float).reshape(len(rows), -1) if rows else np.zeros((0, class_count))
    if array.shape[1] != class_count:
        raise DatasetError(f"{path}: column {column.name!r} has {array.shape[1]} values per image; the classes are "
                           f"{class_count}")
    return array


@dataclasses.dataclass
class FoldPredictions:
    """The predictions of one or more folds: image names, truth (0/1), probabilities, and each image's fold."""

    image_names: list[str]
    y_true: np.ndarray
    y_prob: np.ndarray
    folds: np.ndarray


def read_per_image_results(path: str | Path, class_count: int, fold: int) -> FoldPredictions:
    """Reads a fold's ``per_image_results.csv`` (:func:`timl.reports.per_image_results`) back as arrays.

    Raises:
        DatasetError: the file lacks the columns ``image``, ``groundtruth``, ``pdist`` or holds other numbers of
            values than classes.
    """
    path = Path(path)
    frame = tables.read_cells(path, what="per-image results", error=DatasetError)
    missing = [column for column in ("image", "groundtruth", "pdist") if column not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: no column {', '.join(missing)} (a per_image_results.csv has image, "
                           f"groundtruth, pdist, ...)")
    return FoldPredictions(list(frame["image"]), _vectors(frame["groundtruth"], path, class_count),
                           _vectors(frame["pdist"], path, class_count), np.full(len(frame), fold))


def pool(predictions: Sequence[FoldPredictions]) -> FoldPredictions:
    """The folds' predictions as one set, in fold order."""
    return FoldPredictions([name for part in predictions for name in part.image_names],
                           np.concatenate([part.y_true for part in predictions]),
                           np.concatenate([part.y_prob for part in predictions]),
                           np.concatenate([part.folds for part in predictions]))


@dataclasses.dataclass
class FoldRoc:
    """One class's ROC across folds: each fold's curve and AUC, the mean true positive rate on :data:`ROC_GRID`
    and its standard deviation across the folds."""

    index: int
    name: str
    curves: list[tuple[np.ndarray, np.ndarray]]
    aucs: list[float]
    mean_tpr: np.ndarray
    std_tpr: np.ndarray

    @property
    def label(self) -> str:
        """The legend of the mean curve: ``mean ROC (AUC = 0.9100 ± 0.0200, 5 folds)``."""
        spread = float(np.std(self.aucs, ddof=1)) if len(self.aucs) > 1 else 0.0
        return f"mean ROC (AUC = {np.mean(self.aucs):.4f} ± {spread:.4f}, {len(self.aucs)} folds)"


def fold_rocs(predictions: Sequence[FoldPredictions], class_names: Sequence[str]) -> list[FoldRoc]:
    """The ROC of each class across the folds; a class gets one when every fold has it both present and absent
    (otherwise a fold has no curve for it, and it is left out)."""
    from sklearn.metrics import auc, roc_curve

    result = []
    for index, name in enumerate(class_names):
        truths = [part.y_true[:, index].astype(bool) for part in predictions]
        if not all(truth.any() and not truth.all() for truth in truths):
            continue
        curves, aucs, rates = [], [], []
        for truth, part in zip(truths, predictions):
            false_positive_rate, true_positive_rate, _ = roc_curve(truth, part.y_prob[:, index])
            curves.append((false_positive_rate, true_positive_rate))
            aucs.append(float(auc(false_positive_rate, true_positive_rate)))
            rate = np.interp(ROC_GRID, false_positive_rate, true_positive_rate)
            rate[0] = 0.0
            rates.append(rate)
        rates = np.array(rates)
        result.append(FoldRoc(index, str(name), curves, aucs, rates.mean(axis=0), rates.std(axis=0)))
    return result
