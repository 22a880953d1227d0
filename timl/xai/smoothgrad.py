"""SmoothGrad through tf-keras-vis (``Saliency`` with noisy samples)."""

from __future__ import annotations

import contextlib

import numpy as np

from timl.xai.base import prepared_model
from timl.xai.gradcam import unit_range


@contextlib.contextmanager
def numpy_global_seed(seed: int | None):
    """Seeds NumPy's global generator (used by tf-keras-vis for its noise) and restores it afterwards."""
    if seed is None:
        yield
        return
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def smoothgrad(model, x: np.ndarray, class_index: int, layer: None = None, seed: int | None = None, *,
               smooth_samples: int = 20, smooth_noise: float = 0.2) -> np.ndarray:
    """SmoothGrad: the absolute input gradient of the class logit, averaged over noisy copies of the input.

    Args:
        model: a Keras model.
        x: the model input, float32 (1, S, S, 3).
        class_index: the class to explain.
        layer: unused (the input is explained).
        seed: seed of the noise, for reproducible maps; ``None`` draws fresh noise.
        smooth_samples: how many noisy copies. Defaults to 20.
        smooth_noise: noise standard deviation as a fraction of the input's value range. Defaults to 0.2.

    Returns:
        float32 (S, S) in [0, 1] (the maximum over colour channels).

    References:
        Smilkov et al., "SmoothGrad: removing noise by adding noise", ICML Workshop 2017.
    """
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.scores import CategoricalScore

    with numpy_global_seed(seed):
        saliency = Saliency(prepared_model(model), model_modifier=None, clone=False)(
            CategoricalScore(class_index), x, smooth_samples=int(smooth_samples),
            smooth_noise=float(smooth_noise), normalize_map=False)
    return unit_range(saliency[0])
