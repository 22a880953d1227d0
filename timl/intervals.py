"""Bootstrap confidence intervals of the summary scores, computed for every resample at once.

A resample draws the images of a set with replacement (or, given a group label per image, whole groups: every
image of a drawn group comes along, as often as the group is drawn). A resample is held as a vector of counts,
how often each image was drawn, so the scores of a chunk of resamples are array operations on a (resamples,
images) count matrix: the confusion counts of each class are matrix products, each class's AUC a weighted
Mann-Whitney statistic over the images sorted once by score (ties count one half, as scikit-learn's
``roc_auc_score``). The definitions are :func:`timl.evaluation.evaluate`'s: accuracy (``global_accuracy``), the
balanced accuracy (mean sensitivity over the classes present), ``mean_auc`` and ``mean_f1`` (the means over the
classes where the score is defined), and per class the sensitivity, specificity and AUC.

The interval is the percentile interval of the resampled scores (2.5th and 97.5th percentiles for 95%). A
resample where a score is undefined (a class not drawn) does not count for that score; a score undefined in
every resample has no interval (None).

References: Efron & Tibshirani, *An Introduction to the Bootstrap* (1993), ch. 13 (percentile intervals);
Field & Welsh, "Bootstrapping clustered data", JRSS B 69 (2007) (resampling whole clusters).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Sequence

import numpy as np

from timl.metric_names import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CALIBRATION_INTERVAL_SCALARS, INTERVAL_BOUNDS,
                               INTERVAL_PER_CLASS, INTERVAL_SCALARS, PER_CLASS_METRICS, SCALAR_METRICS,
                               interval_name, per_class_metric_name)

#: Resamples of an interval unless told otherwise (``--bootstrap``; 0 turns intervals off).
DEFAULT_RESAMPLES = 2000

#: The seed of the resampling unless told otherwise: the same predictions give the same interval.
DEFAULT_SEED = 0

#: The coverage of the intervals.
CONFIDENCE = 0.95

#: About how many (resample, image) counts one chunk holds: about 2 MB per array, which stays in cache.
_CHUNK_CELLS = 1 << 18


def group_codes(groups: Sequence | None, samples: int) -> np.ndarray:
    """One integer per image naming its group, ``0..groups-1``; an image without a group value (None, NaN or
    an empty text) is a group of its own. Without ``groups``, every image is its own group.

    Raises:
        ValueError: ``groups`` does not have one value per image.
    """
    if groups is None:
        return np.arange(samples)
    import pandas as pd

    values = pd.Series(list(groups), dtype=object)
    if len(values) != samples:
        raise ValueError(f"groups must give one group label per image ({samples}). Received: {len(values)} labels")
    values = values.where(values.astype(str) != "", None)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    missing = np.flatnonzero(codes < 0)
    codes[missing] = len(uniques) + np.arange(missing.size)
    return codes


def resample_counts(samples: int, resamples: int, *, seed: int = DEFAULT_SEED, groups: Sequence | None = None,
                    dtype: type = np.float64) -> Iterator[np.ndarray]:
    """The resamples as count matrices, in chunks: row ``b`` of a chunk says how often each image was drawn.

    Args:
        samples: the number of images.
        resamples: the number of resamples in all.
        seed: the seed of the numpy Generator that draws them. Defaults to :data:`DEFAULT_SEED`.
        groups: a group label per image; resamples draw whole groups. Defaults to None (images).
        dtype: the counts' type (the draws do not depend on it). Defaults to float64.

    Yields:
        arrays of shape (chunk, samples), the chunks adding up to ``resamples`` rows.
    """
    codes = group_codes(groups, samples)
    group_count = int(codes.max()) + 1 if samples else 0
    generator = np.random.default_rng(seed)
    chunk = max(1, min(resamples, _CHUNK_CELLS // max(samples, 1)))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        drawn = generator.integers(0, group_count, size=(size, group_count))
        drawn += (np.arange(size) * group_count)[:, None]
        per_group = np.bincount(drawn.ravel(), minlength=size * group_count).reshape(size, group_count)
        yield (per_group if groups is None else per_group[:, codes]).astype(dtype)


@dataclasses.dataclass(frozen=True)
class _ClassOrder:
    """One class's scores prepared once for the AUC of any resample: its negatives in score order, and for each
    positive how many of those score below it (``below``) and at most as high (``at_most``; None when no
    positive ties a negative, the common case, which then needs one gather less)."""

    positives: np.ndarray
    negatives: np.ndarray
    below: np.ndarray
    at_most: np.ndarray | None

    @classmethod
    def of(cls, truth: np.ndarray, scores: np.ndarray) -> "_ClassOrder":
        positives, negatives = np.flatnonzero(truth), np.flatnonzero(~truth)
        negatives = negatives[np.argsort(scores[negatives], kind="stable")]
        negative_scores = scores[negatives]
        below = np.searchsorted(negative_scores, scores[positives], side="left")
        at_most = np.searchsorted(negative_scores, scores[positives], side="right")
        return cls(positives, negatives, below, None if np.array_equal(below, at_most) else at_most)

    def auc(self, counts: np.ndarray) -> np.ndarray:
        """The AUC under each resample's integer counts (NaN where a resample has no positive or no negative):
        each drawn positive beats the drawn negatives scored below it and ties with those scored the same (one
        half), the Mann-Whitney statistic that scikit-learn's ``roc_auc_score`` equals. Exact integer sums."""
        cumulative = np.zeros((counts.shape[0], self.negatives.size + 1), dtype=counts.dtype)
        np.cumsum(counts[:, self.negatives], axis=1, out=cumulative[:, 1:])
        positive_counts = counts[:, self.positives]
        if self.at_most is None:
            doubled_wins = 2 * (positive_counts * cumulative[:, self.below]).sum(axis=1, dtype=np.int64)
        else:
            beaten = cumulative[:, self.below] + cumulative[:, self.at_most]
            doubled_wins = (positive_counts * beaten).sum(axis=1, dtype=np.int64)
        pairs = positive_counts.sum(axis=1, dtype=np.int64) * cumulative[:, -1].astype(np.int64)
        return _ratio(0.5 * doubled_wins.astype(np.float64), pairs.astype(np.float64))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def _defined_mean(values: np.ndarray) -> np.ndarray:
    """The mean over classes (axis 1) of the defined values; NaN where none is."""
    defined = ~np.isnan(values)
    count = defined.sum(axis=1)
    return _ratio(np.where(defined, values, 0.0).sum(axis=1), count)


class ResampledScores:
    """The data a set of resamples is scored on, prepared once: see :meth:`scores`.

    The images are sorted by their pattern (the row of ground truth and prediction together: at most classes^2
    patterns for a single-label model), so a resample's confusion counts are its counts summed over each
    pattern's run of images (one pass), and the per-class counts small products of those sums.

    Args:
        y_true: (samples, classes) boolean ground truth.
        y_pred: (samples, classes) boolean predictions (:func:`timl.evaluation.predict_labels`).
        y_prob: (samples, classes) scores, for the AUC.
    """

    def __init__(self, y_true: np.ndarray, y_pred: np.ndarray, y_prob: np.ndarray):
        y_true, y_pred = np.asarray(y_true, dtype=bool), np.asarray(y_pred, dtype=bool)
        classes = y_true.shape[1]
        patterns, inverse = np.unique(np.concatenate([y_true, y_pred], axis=1), axis=0, return_inverse=True)
        inverse = np.asarray(inverse).ravel()
        self.order = np.argsort(inverse, kind="stable")
        self.starts = np.flatnonzero(np.r_[True, np.diff(inverse[self.order]) != 0])
        truth, predicted = patterns[:, :classes], patterns[:, classes:]
        self.truth = truth.astype(np.float64)
        self.predicted = predicted.astype(np.float64)
        self.true_positive = (truth & predicted).astype(np.float64)
        self.correct = (truth == predicted).all(axis=1).astype(np.float64)
        self.samples = len(inverse)
        self.orders = [_ClassOrder.of(y_true[:, column], np.asarray(y_prob, dtype=float)[:, column])
                       for column in range(classes)]

    def scores(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Every interval's score under each resample of ``counts`` (a chunk of :func:`resample_counts`,
        best as integers: ``dtype=np.int32``).

        Returns:
            ``global_accuracy``, ``balanced_accuracy``, ``mean_auc``, ``mean_f1`` of shape (resamples,) and
            ``sensitivity``, ``specificity``, ``auc`` of shape (resamples, classes); NaN where undefined.
        """
        if not np.issubdtype(counts.dtype, np.integer):
            counts = counts.astype(np.int64)
        per_pattern = np.add.reduceat(counts[:, self.order], self.starts, axis=1).astype(np.float64)
        images = per_pattern.sum(axis=1)
        positives, predicted = per_pattern @ self.truth, per_pattern @ self.predicted
        true_positives = per_pattern @ self.true_positive
        false_positives = predicted - true_positives
        true_negatives = images[:, None] - positives - false_positives
        sensitivity = _ratio(true_positives, positives)
        f1 = _ratio(2 * true_positives, positives + predicted)
        auc = np.stack([order.auc(counts) for order in self.orders], axis=1)
        return {"global_accuracy": _ratio(per_pattern @ self.correct, images),
                "balanced_accuracy": _defined_mean(sensitivity), "mean_auc": _defined_mean(auc),
                "mean_f1": _defined_mean(f1), "sensitivity": sensitivity,
                "specificity": _ratio(true_negatives, true_negatives + false_positives), "auc": auc}


def bootstrap_scores(y_true, y_pred, y_prob, *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                     groups: Sequence | None = None) -> dict[str, np.ndarray]:
    """The scores of every resample (see :meth:`ResampledScores.scores`), all chunks joined."""
    data = ResampledScores(y_true, y_pred, y_prob)
    chunks = [data.scores(counts) for counts in
              resample_counts(data.samples, resamples, seed=seed, groups=groups, dtype=np.int32)]
    return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}


def _percentiles(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    import warnings

    tail = (1.0 - confidence) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a score undefined in every resample: NaN
        low, high = np.nanquantile(values, [tail, 1.0 - tail], axis=0)
    return low, high


def _plain(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def bootstrap_intervals(y_true, y_pred, y_prob, *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                        groups: Sequence | None = None, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Percentile bootstrap intervals of the summary scores.

    Args:
        y_true: (samples, classes) 0/1 ground truth.
        y_pred: (samples, classes) 0/1 predictions (argmax one-hot, or the classes at the threshold).
        y_prob: (samples, classes) predicted probabilities (for the AUC).
        resamples: the number of resamples. Defaults to :data:`DEFAULT_RESAMPLES`.
        seed: the resampling's seed. Defaults to :data:`DEFAULT_SEED`.
        groups: a group label per image (a lesion, a patient): whole groups are resampled. Defaults to None.
        confidence: the interval's coverage. Defaults to :data:`CONFIDENCE`.

    Returns:
        ``{score: (low, high)}`` for :data:`timl.metric_names.INTERVAL_SCALARS` and ``{score: [(low, high),
        ...]}``, one pair per class, for :data:`timl.metric_names.INTERVAL_PER_CLASS`; None for a bound that is
        undefined.

    Raises:
        ValueError: fewer than 1 resample, a confidence outside (0, 1), or groups of the wrong length.
    """
    if int(resamples) < 1 or not 0.0 < confidence < 1.0:
        raise ValueError("Bootstrap intervals need resamples >= 1 and 0 < confidence < 1. "
                         f"Received: resamples={resamples!r}, confidence={confidence!r}")
    scores = bootstrap_scores(y_true, y_pred, y_prob, resamples=int(resamples), seed=seed, groups=groups)
    intervals: dict[str, Any] = {}
    for key in INTERVAL_SCALARS + INTERVAL_PER_CLASS:
        low, high = _percentiles(scores[key], confidence)
        if key in INTERVAL_SCALARS:
            intervals[key] = (_plain(low), _plain(high))
        else:
            intervals[key] = [(_plain(lower), _plain(upper)) for lower, upper in zip(low, high)]
    return intervals


def mean_intervals(values: dict[str, np.ndarray], *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                   groups: Sequence | None = None, confidence: float = CONFIDENCE) -> dict[str, tuple]:
    """Percentile bootstrap intervals of means of per-image values (the Brier score, the NLL), from the resamples
    :func:`bootstrap_intervals` draws with the same seed and groups.

    Args:
        values: score name -> one value per image.
        resamples, seed, groups, confidence: as :func:`bootstrap_intervals`.

    Returns:
        ``{name: (low, high)}``.
    """
    keys = list(values)
    matrix = np.stack([np.asarray(values[key], dtype=float) for key in keys], axis=1)
    chunks = [_ratio(counts @ matrix, counts.sum(axis=1)[:, None])
              for counts in resample_counts(len(matrix), int(resamples), seed=seed, groups=groups)]
    low, high = _percentiles(np.concatenate(chunks), confidence)
    return {key: (_plain(low[index]), _plain(high[index])) for index, key in enumerate(keys)}


@dataclasses.dataclass(frozen=True)
class Bootstrap:
    """How the intervals of one evaluation are formed (:func:`timl.evaluation.evaluate`'s ``bootstrap``).

    Attributes:
        resamples: the number of resamples; 0 turns intervals off. Defaults to :data:`DEFAULT_RESAMPLES`.
        seed: the resampling's seed. Defaults to :data:`DEFAULT_SEED`.
        groups: a group label per image (a lesion, a patient): whole groups are resampled. Defaults to None.
        confidence: the coverage of the intervals. Defaults to :data:`CONFIDENCE`.
    """

    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    groups: Sequence | None = None
    confidence: float = CONFIDENCE

    def summary_values(self, y_true, y_pred, y_prob, losses: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """The summary keys of the intervals: ``global_accuracy_ci_low``, ..., per class
        ``sensitivity_ci_low`` (a list), ..., then those of the means of ``losses`` (score name -> one value per
        image, e.g. the Brier score and the NLL of :mod:`timl.calibration`: ``brier_ci_low``, ...; see
        :func:`mean_intervals`), then ``bootstrap_resamples`` and ``bootstrap_seed``; none when ``resamples``
        is 0."""
        if not self.resamples:
            return {}
        intervals = bootstrap_intervals(y_true, y_pred, y_prob, resamples=self.resamples, seed=self.seed,
                                        groups=self.groups, confidence=self.confidence)
        values: dict[str, Any] = {}
        for key, interval in intervals.items():
            for position, bound in enumerate(INTERVAL_BOUNDS):
                values[interval_name(key, bound)] = (interval[position] if key in INTERVAL_SCALARS
                                                     else [pair[position] for pair in interval])
        for key, interval in (mean_intervals(losses, resamples=self.resamples, seed=self.seed, groups=self.groups,
                                             confidence=self.confidence) if losses else {}).items():
            values.update({interval_name(key, bound): interval[position]
                           for position, bound in enumerate(INTERVAL_BOUNDS)})
        return {**values, BOOTSTRAP_RESAMPLES: int(self.resamples), BOOTSTRAP_SEED: int(self.seed)}


def interval_metrics(summary: dict[str, Any], prefix: str, class_prefix: str) -> dict[str, float]:
    """The interval bounds of a summary as metrics beside their scores: ``{prefix}balanced_accuracy_ci_low``,
    ``{class_prefix}sens_MEL_ci_high``, ... (undefined bounds skipped; none when the summary has no intervals).

    Args:
        summary: a dict of :func:`timl.evaluation.evaluate`.
        prefix: the summary scores' group, e.g. ``test/``.
        class_prefix: the per-class scores' group, e.g. ``test_class/``.
    """
    metrics: dict[str, float] = {}
    for bound in INTERVAL_BOUNDS:
        for key in INTERVAL_SCALARS + CALIBRATION_INTERVAL_SCALARS:
            value = summary.get(interval_name(key, bound))
            if value is not None:
                metrics[interval_name(f"{prefix}{SCALAR_METRICS[key]}", bound)] = float(value)
        for key in INTERVAL_PER_CLASS:
            for class_name, value in zip(summary["classes"], summary.get(interval_name(key, bound)) or ()):
                if value is not None:
                    name = per_class_metric_name(class_prefix, PER_CLASS_METRICS[key], class_name)
                    metrics[interval_name(name, bound)] = float(value)
    return metrics


def class_intervals(summary: dict[str, Any], key: str) -> list[tuple] | None:
    """The per-class intervals of ``key`` (e.g. ``auc``) in a summary, as (low, high) pairs; None without."""
    low, high = (summary.get(interval_name(key, bound)) for bound in INTERVAL_BOUNDS)
    return None if low is None or high is None else list(zip(low, high))
