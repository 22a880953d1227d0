"""Faithfulness of a saliency map: the deletion and insertion metrics of the RISE paper.

Pixels are removed from (deletion) or added to (insertion) the image in order of decreasing saliency, in
``steps`` equal steps, and the model's score of the explained class is read after each step; the metric is the
area under that curve, normalised to [0, 1]. A faithful map makes the score fall fast when its most salient
pixels are deleted (low deletion AUC) and rise fast when they are inserted (high insertion AUC).

References:
    Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models",
    BMVC 2018, section 4.1.
"""

from __future__ import annotations

import numpy as np

from timl.errors import ConfigError


def _zeros(x: np.ndarray) -> np.ndarray:
    return np.zeros_like(x)


def _blur(x: np.ndarray) -> np.ndarray:
    """A Gaussian blur of the image (sigma 5 px at 224 px, as in the paper, scaled to the image size)."""
    from scipy.ndimage import gaussian_filter

    sigma = max(1.0, 5.0 * x.shape[0] / 224.0)
    return gaussian_filter(x, sigma=(sigma, sigma, 0), mode="nearest").astype(np.float32)


#: What deleted pixels become (deletion) or what the image starts from (insertion).
SUBSTRATES = {"zeros": _zeros, "blur": _blur}


def _check(x, saliency, steps: int, substrate: str) -> tuple[np.ndarray, np.ndarray]:
    from timl.xai.render import resize_saliency

    x = np.asarray(x, dtype=np.float32)
    x = x[0] if x.ndim == 4 and x.shape[0] == 1 else x
    if x.ndim != 3:
        raise ConfigError(f"Expected one image of shape (S, S, 3). Received: shape={x.shape}")
    if substrate not in SUBSTRATES:
        raise ConfigError(f"Unknown substrate. Expected one of: {', '.join(SUBSTRATES)}. "
                          f"Received: substrate={substrate!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"steps must be an integer of at least 1. Received: steps={steps!r}")
    saliency = resize_saliency(np.asarray(saliency, dtype=np.float32), (x.shape[1], x.shape[0]))
    return x, saliency


def _step_images(x: np.ndarray, saliency: np.ndarray, start: np.ndarray, end: np.ndarray,
                 steps: int) -> np.ndarray:
    """``steps + 1`` images going from ``start`` to ``end``, most salient pixels switched first."""
    pixels = saliency.size
    order = np.argsort(-saliency.ravel(), kind="stable")
    rank = np.empty(pixels, dtype=np.int64)
    rank[order] = np.arange(pixels)
    counts = np.round(np.linspace(0, pixels, min(steps, pixels) + 1)).astype(np.int64)
    switched = (rank[None, :] < counts[:, None]).reshape(len(counts), *saliency.shape, 1)
    return np.where(switched, end[None], start[None]).astype(np.float32)


def score_curve(model, images: np.ndarray, class_index: int, batch_size: int = 128) -> np.ndarray:
    """The model's score of ``class_index`` on each image, predicted in batches."""
    scores = [np.asarray(model(images[i:i + batch_size], training=False))[:, class_index]
              for i in range(0, len(images), batch_size)]
    return np.concatenate(scores).astype(np.float64)


def auc(curve: np.ndarray) -> float:
    """Area under a curve of evenly spaced points over [0, 1] (trapezoid rule)."""
    curve = np.asarray(curve, dtype=np.float64)
    if curve.size < 2:
        return float(curve.mean()) if curve.size else 0.0
    return float((curve.sum() - curve[0] / 2 - curve[-1] / 2) / (curve.size - 1))


def deletion_curve(model, x, saliency, class_index: int, *, steps: int = 64, substrate: str = "zeros",
                   batch_size: int = 128) -> np.ndarray:
    """Class scores as the most salient pixels are replaced by ``substrate``: ``steps + 1`` values."""
    x, saliency = _check(x, saliency, steps, substrate)
    images = _step_images(x, saliency, x, SUBSTRATES[substrate](x), steps)
    return score_curve(model, images, class_index, batch_size)


def insertion_curve(model, x, saliency, class_index: int, *, steps: int = 64, substrate: str = "blur",
                    batch_size: int = 128) -> np.ndarray:
    """Class scores as the most salient pixels are copied onto ``substrate``: ``steps + 1`` values."""
    x, saliency = _check(x, saliency, steps, substrate)
    images = _step_images(x, saliency, SUBSTRATES[substrate](x), x, steps)
    return score_curve(model, images, class_index, batch_size)


def deletion_auc(model, x, saliency, class_index: int, *, steps: int = 64, substrate: str = "zeros",
                 batch_size: int = 128) -> float:
    """The deletion metric: area under the class score as salient pixels are removed (lower is better).

    Args:
        model: a Keras model with a (None, classes) output of probabilities.
        x: the model input, float32 (S, S, 3) in [0, 1].
        saliency: the map to evaluate, (S, S) (resized bilinearly if of another size).
        class_index: the class explained.
        steps: how many steps (each removes ``S*S/steps`` pixels; capped at the number of pixels).
            Defaults to 64.
        substrate: what removed pixels become: "zeros" (black) or "blur" (a blurred copy). Defaults to
            "zeros".
        batch_size: images per prediction batch. Defaults to 128.

    Returns:
        The normalised area in [0, 1] (for probability outputs).

    Raises:
        ConfigError: bad steps, substrate or image shape.

    References:
        Petsiuk et al., "RISE", BMVC 2018.
    """
    return auc(deletion_curve(model, x, saliency, class_index, steps=steps, substrate=substrate,
                              batch_size=batch_size))


def insertion_auc(model, x, saliency, class_index: int, *, steps: int = 64, substrate: str = "blur",
                  batch_size: int = 128) -> float:
    """The insertion metric: area under the class score as salient pixels are added (higher is better).

    Args:
        model: a Keras model with a (None, classes) output of probabilities.
        x: the model input, float32 (S, S, 3) in [0, 1].
        saliency: the map to evaluate, (S, S) (resized bilinearly if of another size).
        class_index: the class explained.
        steps: how many steps. Defaults to 64.
        substrate: the image pixels are inserted into: "blur" (the paper's) or "zeros". Defaults to "blur".
        batch_size: images per prediction batch. Defaults to 128.

    Returns:
        The normalised area in [0, 1] (for probability outputs).

    Raises:
        ConfigError: bad steps, substrate or image shape.

    References:
        Petsiuk et al., "RISE", BMVC 2018.
    """
    return auc(insertion_curve(model, x, saliency, class_index, steps=steps, substrate=substrate,
                               batch_size=batch_size))


def faithfulness(model, x, saliency, class_index: int, *, steps: int = 64) -> dict:
    """Both metrics of one saliency map.

    Returns:
        ``{"deletion_auc": float, "insertion_auc": float}`` (deletion with black pixels, insertion into a
        blurred copy, as in the paper).
    """
    return {"deletion_auc": deletion_auc(model, x, saliency, class_index, steps=steps),
            "insertion_auc": insertion_auc(model, x, saliency, class_index, steps=steps)}
