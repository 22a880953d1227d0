"""Class weights for Keras ``fit``: the ``classweights`` modes and the weights they give from a train set."""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from timl.errors import DatasetError

logger = logging.getLogger(__name__)


def compute_class_weights(labels: np.ndarray, mode: str) -> dict[int, float]:
    """Class weights for Keras ``fit``.

    Args:
        labels: the train set's ground truth (rows, classes), 0/1.
        mode: ``default`` (every class 1.0) or ``compute`` (inverse class frequency, the most frequent class at
            1.0; a class absent from the train set gets 1.0).

    Returns:
        ``{class_index: weight}``.

    Raises:
        DatasetError: an unknown mode.
    """
    if mode not in CLASS_WEIGHTS:
        raise DatasetError(f"Unknown class weight mode. Expected one of: {', '.join(CLASS_WEIGHT_MODES)}. "
                           f"Received: classweights={mode!r}")
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2:
        raise DatasetError(f"labels must be a 2-D array (rows, classes). Received: labels.shape={labels.shape}")
    return CLASS_WEIGHTS[mode](labels)


def _default_weights(labels: np.ndarray) -> dict[int, float]:
    return {index: 1.0 for index in range(labels.shape[1])}


def _inverse_frequency_weights(labels: np.ndarray) -> dict[int, float]:
    counts = labels.sum(axis=0)
    most = counts.max() if counts.size else 0.0
    absent = [index for index, count in enumerate(counts) if count == 0]
    if absent:
        logger.warning("Classes %s have no train rows; their weight is left at 1.0.", absent)
    return {index: float(most / count) if count > 0 else 1.0 for index, count in enumerate(counts)}


#: Class weight modes (the ``classweights`` column): all 1.0, or inverse class frequency in the train set.
CLASS_WEIGHTS: dict[str, Callable[[np.ndarray], dict[int, float]]] = {
    "default": _default_weights,
    "compute": _inverse_frequency_weights,
}

CLASS_WEIGHT_MODES = tuple(CLASS_WEIGHTS)
