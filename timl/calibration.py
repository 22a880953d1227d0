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

Temperature scaling (a row's ``calibration`` cell ``temperature``, :mod:`timl.training.calibrate`):
:func:`fit_temperatures` finds the temperature ``T`` that minimises the dev set's NLL of ``softmax(log p / T)``
(one for a softmax model; ``log p`` is the logits up to a per-image constant, which softmax ignores) or, for a
sigmoid model, one per class of ``sigmoid(logit(p) / T_k)``; :func:`apply_temperatures` applies them as the
model's ``TemperatureScaling`` layer does (:mod:`timl.models.layers`). A positive temperature keeps the order
of a softmax's probabilities and the side of 0.5 of a sigmoid's: the predicted classes never change.

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

#: The values of a row's ``calibration`` cell: ``none`` (the original probabilities) or ``temperature``.
CALIBRATION_METHODS = ("none", "temperature")

#: The temperatures a fit searches, as bounds of ``log T``: from about 0.02 to 50.
_LOG_TEMPERATURE_BOUNDS = (-4.0, 4.0)

#: The smallest probability whose log is taken (float32 softmax outputs underflow to 0).
TINY_PROBABILITY = 1e-30


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


def image_brier(y_true: np.ndarray, y_prob: np.ndarray, *, multi_label: bool = False) -> np.ndarray:
    """Each image's Brier score: single-label ``sum_k (p_k - y_k)^2``; multi-label ``mean_k (p_k - y_k)^2``."""
    squared = (np.asarray(y_prob, dtype=float) - np.asarray(y_true, dtype=float)) ** 2
    return squared.mean(axis=1) if multi_label else squared.sum(axis=1)


def image_log_loss(y_true: np.ndarray, y_prob: np.ndarray, *, multi_label: bool = False) -> np.ndarray:
    """Each image's negative log likelihood: single-label ``-log p_true``; multi-label the classes' binary log
    loss ``-(y log p + (1 - y) log(1 - p))`` averaged over the classes."""
    y_true = np.asarray(y_true, dtype=bool)
    y_prob = np.clip(np.asarray(y_prob, dtype=float), _EPSILON, 1.0 - _EPSILON)
    if multi_label:
        return -np.where(y_true, np.log(y_prob), np.log1p(-y_prob)).mean(axis=1)
    return -np.log(np.where(y_true, y_prob, 1.0).prod(axis=1))


def brier_score(y_true: np.ndarray, y_prob: np.ndarray, *, multi_label: bool = False) -> float:
    """The Brier score: the mean over images of :func:`image_brier`."""
    return float(image_brier(y_true, y_prob, multi_label=multi_label).mean())


def negative_log_likelihood(y_true: np.ndarray, y_prob: np.ndarray, *, multi_label: bool = False) -> float:
    """The mean negative log likelihood: the mean over images of :func:`image_log_loss`."""
    return float(image_log_loss(y_true, y_prob, multi_label=multi_label).mean())


def calibration_summary(y_true: np.ndarray, y_prob: np.ndarray, *, multi_label: bool = False) -> dict[str, float]:
    """The summary's calibration scores, keys :data:`CALIBRATION_KEYS`: ``ece``, ``mce``, ``brier``, ``nll``."""
    ece, mce = calibration_errors(y_true, y_prob, multi_label=multi_label)
    return {"ece": ece, "mce": mce, "brier": brier_score(y_true, y_prob, multi_label=multi_label),
            "nll": negative_log_likelihood(y_true, y_prob, multi_label=multi_label)}


def _scores(y_prob: np.ndarray, multi_label: bool) -> np.ndarray:
    """The logits a probability comes from, up to what the activation ignores: ``log p`` for softmax (up to a
    per-image constant), ``logit(p)`` for sigmoid."""
    if multi_label:
        clipped = np.clip(y_prob, TINY_PROBABILITY, 1.0 - 1e-7)
        return np.log(clipped) - np.log1p(-clipped)
    return np.log(np.clip(y_prob, TINY_PROBABILITY, 1.0))


def apply_temperatures(y_prob, temperatures, *, multi_label: bool = False) -> np.ndarray:
    """Rescales probabilities by temperatures: ``softmax(log p / T)``, or per class ``sigmoid(logit(p) / T_k)``.

    Args:
        y_prob: (samples, classes) probabilities of a softmax (rows sum to 1) or of sigmoids.
        temperatures: one temperature (softmax) or one per class (sigmoid), each > 0.
        multi_label: sigmoid outputs. Defaults to False.
    """
    scaled = _scores(np.asarray(y_prob, dtype=float), multi_label) / np.asarray(temperatures, dtype=float)
    if multi_label:
        return 1.0 / (1.0 + np.exp(-scaled))
    scaled -= scaled.max(axis=1, keepdims=True)
    exponentials = np.exp(scaled)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def _fit_one(y_true: np.ndarray, y_prob: np.ndarray, multi_label: bool) -> float:
    """The temperature of least NLL on (y_true, y_prob); 1 when no temperature lowers it."""
    from scipy.optimize import minimize_scalar

    def loss(log_temperature: float) -> float:
        calibrated = apply_temperatures(y_prob, np.exp(log_temperature), multi_label=multi_label)
        return negative_log_likelihood(y_true, calibrated, multi_label=multi_label)

    found = minimize_scalar(loss, bounds=_LOG_TEMPERATURE_BOUNDS, method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x)) if found.fun < loss(0.0) else 1.0


def fit_temperatures(y_true, y_prob, *, multi_label: bool = False) -> list[float]:
    """Fits temperature scaling on a dev set: the temperature (softmax: one; sigmoid: one per class) that
    minimises the negative log likelihood; a temperature that would not lower it stays 1, so the fitted NLL is
    never above the original.

    Args:
        y_true: (samples, classes) 0/1 ground truth of the dev set.
        y_prob: (samples, classes) the model's probabilities on it.
        multi_label: sigmoid outputs. Defaults to False.

    Returns:
        The temperatures: a list of one (softmax) or one per class (sigmoid).

    References: Guo et al., ICML 2017, section 4.2.
    """
    y_true, y_prob = np.asarray(y_true, dtype=bool), np.asarray(y_prob, dtype=float)
    if not multi_label:
        return [_fit_one(y_true, y_prob, False)]
    return [_fit_one(y_true[:, [column]], y_prob[:, [column]], True) for column in range(y_true.shape[1])]
