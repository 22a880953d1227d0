"""Grad-CAM and Grad-CAM++ through tf-keras-vis, on the prepared (flat, linear-output) model."""

from __future__ import annotations

import numpy as np

from timl.xai.base import prepared_model


def unit_range(array) -> np.ndarray:
    """Scales an array to float32 in [0, 1] (min-max); a constant array becomes zeros."""
    array = np.nan_to_num(np.asarray(array, dtype=np.float32))
    low, high = float(array.min()), float(array.max())
    if high - low <= 1e-12:
        return np.zeros_like(array, dtype=np.float32)
    return np.clip((array - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _cam(visualizer_class, model, x, class_index, layer, **kwargs) -> np.ndarray:
    from tf_keras_vis.utils.scores import CategoricalScore

    visualizer = visualizer_class(prepared_model(model, layer), model_modifier=None, clone=False)
    cam = visualizer(CategoricalScore(class_index), x, penultimate_layer=layer, seek_penultimate_conv_layer=False,
                     normalize_cam=False, **kwargs)
    return unit_range(cam[0])


def gradcam(model, x: np.ndarray, class_index: int, layer: str, seed: int | None = None) -> np.ndarray:
    """Grad-CAM: the layer's activations weighted by the spatially averaged gradients of the class logit.

    Args:
        model: a Keras model.
        x: the model input, float32 (1, S, S, 3).
        class_index: the class to explain.
        layer: the layer whose activations are weighted (see ``conv_layer_names``).
        seed: unused (Grad-CAM is deterministic).

    Returns:
        float32 (S, S) in [0, 1].

    References:
        Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
        ICCV 2017.
    """
    from tf_keras_vis.gradcam import Gradcam

    return _cam(Gradcam, model, x, class_index, layer)


def gradcam_plus_plus(model, x: np.ndarray, class_index: int, layer: str,
                      seed: int | None = None) -> np.ndarray:
    """Grad-CAM++: like Grad-CAM with pixel-wise weights from higher-order gradients.

    Args:
        model: a Keras model.
        x: the model input, float32 (1, S, S, 3).
        class_index: the class to explain.
        layer: the layer whose activations are weighted (see ``conv_layer_names``).
        seed: unused (Grad-CAM++ is deterministic).

    Returns:
        float32 (S, S) in [0, 1].

    References:
        Chattopadhyay et al., "Grad-CAM++: Generalized Gradient-based Visual Explanations for Deep
        Convolutional Networks", WACV 2018.
    """
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus

    return _cam(GradcamPlusPlus, model, x, class_index, layer)
