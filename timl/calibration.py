"""Calibration: how far predicted probabilities are from the frequencies they claim.

Scores of one set of predictions, part of every summary of :func:`timl.evaluation.evaluate`:

* ``ece``, the expected calibration error: the predictions are put into :data:`BINS` equal-width bins of
  confidence; the ECE is the mean over bins of ``|accuracy - confidence|``, each bin weighted by its share of
  the predictions. Single-label: the top label's (confidence = the highest probability, correct = it is the true
  class). Multi-label: each class's own ECE (confidence = its probability, accuracy = how often the class is
  present) averaged over the classes.
* ``mce``, the maximum calibration error: the largest ``|accuracy - confidence|`` of a non-empty bin (for
  multi-label, the largest over the classes).
* ``brier``, the Brier score: single-label, the mean over images of ``sum_k (p_k - y_k)^2`` (Brier's original
  multiclass score, 0 to 2; scikit-learn's ``brier_score_loss`` of a multiclass problem); multi-label, the mean
  of each class's binary Brier score.
* ``nll``, the negative log likelihood (log loss, natural log): single-label, the mean of ``-log p_true``;
  multi-label, the mean of each class's binary log loss. Probabilities are clipped to ``[eps, 1 - eps]`` as
  scikit-learn's ``log_loss`` does.

:func:`reliability_bins` gives the bins of the reliability diagram (:func:`timl.plots.draw_reliability`).

References: Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks", ICML 2017 (ECE, MCE,
reliability diagrams, temperature scaling); Naeini, Cooper & Hauskrecht, AAAI 2015 (ECE, MCE); Brier, Monthly
Weather Review 78 (1950); Kull et al., NeurIPS 2019 (classwise ECE).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from timl.metric_names import CALIBRATION_SCALARS

#: The number of equal-width confidence bins of the ECE, the MCE and the reliability diagram.
BINS = 15

#: The summary keys of the calibration scores, in the order the summary holds them.
CALIBRATION_KEYS = CALIBRATION_SCALARS

_EPSILON = float(np.finfo(np.float64).eps)


@dataclasses.dataclass(frozen=True)
class ReliabilityBins:
    """The bins of a reliability diagram: for each of :data:`BINS` equal-width confidence bins, how many
    predictions fell in it, their mean confidence and how often they were right (NaN for an empty bin).

    Attributes:
        edges: the ``bins + 1`` bin edges, 0 to 1.
        counts: predictions per bin.
        confidence: mean confidence per bin.
        accuracy: fraction correct per bin (for multi-label: fraction of the class present).
        multi_label: whether the bins pool every (image, class) pair of a multi-label set.
    """

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    multi_label: bool = False

    def gaps(self) -> np.ndarray:
        """``|accuracy - confidence|`` per bin (NaN where empty)."""
        return np.abs(self.accuracy - self.confidence)

    def expected_error(self) -> float:
        """The ECE: the bins' gaps weighted by their share of the predictions."""
        total = self.counts.sum()
        return float(np.nansum(self.gaps() * self.counts) / total) if total else 0.0

    def maximum_error(self) -> float:
        """The MCE: the largest gap of a non-empty bin."""
        return float(np.nanmax(self.gaps())) if self.counts.any() else 0.0


def bin_predictions(confidence, correct, bins: int = BINS, *, multi_label: bool = False) -> ReliabilityBins:
    """Puts predictions into equal-width confidence bins (a confidence of exactly 1 goes into the last bin).

    Args:
        confidence: one confidence in [0, 1] per prediction.
        correct: whether each prediction was right (0/1, or for multi-label whether the class is present).
        bins: the number of bins. Defaults to :data:`BINS`.
        multi_label: recorded on the result. Defaults to False.
    """
    confidence = np.clip(np.asarray(confidence, dtype=float).ravel(), 0.0, 1.0)
    correct = np.asarray(correct, dtype=float).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
    return ReliabilityBins(edges, counts.astype(int), mean_confidence, accuracy, multi_label)


def reliability_bins(y_true: np.ndarray, y_prob: np.ndarray, *, multi_label: bool = False,
                     bins: int = BINS) -> ReliabilityBins:
    """The bins of a set's reliability diagram: single-label, the top label's confidence and correctness;
    multi-label, every (image, class) probability against the class's presence.

    Args:
        y_true: (samples, classes) 0/1 ground truth.
        y_prob: (samples, classes) predicted probabilities.
        multi_label: see above. Defaults to False.
        bins: the number of bins. Defaults to :data:`BINS`.
    """
    y_true, y_prob = np.asarray(y_true, dtype=bool), np.asarray(y_prob, dtype=float)
    if multi_label:
        return bin_predictions(y_prob, y_true, bins, multi_label=True)
    top = np.argmax(y_prob, axis=1)
    return bin_predictions(y_prob.max(axis=1), y_true[np.arange(len(top)), top], bins)


def calibration_errors(y_true: np.ndarray, y_prob: np.ndarray, *, multi_label: bool = False,
                       bins: int = BINS) -> tuple[float, float]:
    """The ECE and the MCE (see the module's docstring): top-label, or for multi-label per class (ECE averaged
    over the classes, MCE the largest)."""
    if not multi_label:
        binned = reliability_bins(y_true, y_prob, bins=bins)
        return binned.expected_error(), binned.maximum_error()
    y_true, y_prob = np.asarray(y_true, dtype=bool), np.asarray(y_prob, dtype=float)
    per_class = [bin_predictions(y_prob[:, column], y_true[:, column], bins) for column in range(y_true.shape[1])]
    return (float(np.mean([binned.expected_error() for binned in per_class])),
            float(max(binned.maximum_error() for binned in per_class)))


def brier_score(y_true: np.ndarray, y_prob: np.ndarray, *, multi_label: bool = False) -> float:
    """The Brier score: single-label ``mean_i sum_k (p_ik - y_ik)^2``; multi-label the mean of the classes'
    binary scores, ``mean_ik (p_ik - y_ik)^2``."""
    squared = (np.asarray(y_prob, dtype=float) - np.asarray(y_true, dtype=float)) ** 2
    return float(squared.mean() if multi_label else squared.sum(axis=1).mean())


def negative_log_likelihood(y_true: np.ndarray, y_prob: np.ndarray, *, multi_label: bool = False) -> float:
    """The mean negative log likelihood: single-label ``-log p_true``; multi-label the classes' binary log loss
    ``-(y log p + (1 - y) log(1 - p))`` averaged over images and classes."""
    y_true = np.asarray(y_true, dtype=bool)
    y_prob = np.clip(np.asarray(y_prob, dtype=float), _EPSILON, 1.0 - _EPSILON)
    if multi_label:
        return float(-np.where(y_true, np.log(y_prob), np.log1p(-y_prob)).mean())
    return float(-np.log(y_prob[y_true]).mean())


def calibration_summary(y_true: np.ndarray, y_prob: np.ndarray, *, multi_label: bool = False) -> dict[str, float]:
    """The summary's calibration scores, keys :data:`CALIBRATION_KEYS`: ``ece``, ``mce``, ``brier``, ``nll``."""
    ece, mce = calibration_errors(y_true, y_prob, multi_label=multi_label)
    return {"ece": ece, "mce": mce, "brier": brier_score(y_true, y_prob, multi_label=multi_label),
            "nll": negative_log_likelihood(y_true, y_prob, multi_label=multi_label)}
