"""The explainer registry (:data:`EXPLAINERS`) and the two entry points, :func:`explain` and :func:`explain_array`.

Every list of explanation methods (the explain command's help, the pyfunc's ``explain`` param, the server's
``/info``, its OpenAPI document and 404 message, the web pages, the tests) comes from :data:`EXPLAINERS`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np

from timl.errors import ModelError
from timl.xai import base
from timl.xai.base import Explanation, ExplainerSpec
from timl.xai.gradcam import gradcam, gradcam_plus_plus
from timl.xai.render import render, resize_saliency
from timl.xai.rise import rise
from timl.xai.scorecam import scorecam
from timl.xai.smoothgrad import smoothgrad

logger = logging.getLogger(__name__)

#: Explanation methods by name, in the order listings show them.
EXPLAINERS: dict[str, ExplainerSpec] = {
    "gradcam": ExplainerSpec(gradcam, uses_layer=True, defaults={},
                          reference="Selvaraju et al. 2017", title="Grad-CAM"),
    "gradcam++": ExplainerSpec(gradcam_plus_plus, uses_layer=True, defaults={},
                            reference="Chattopadhyay et al. 2018", title="Grad-CAM++"),
    "scorecam": ExplainerSpec(scorecam, uses_layer=True, defaults={"max_channels": 64, "batch_size": 32},
                           reference="Wang et al. 2020", title="Score-CAM"),
    "smoothgrad": ExplainerSpec(smoothgrad, uses_layer=False, defaults={"smooth_samples": 20, "smooth_noise": 0.2},
                             reference="Smilkov et al. 2017", title="SmoothGrad"),
    "rise": ExplainerSpec(rise, uses_layer=False,
                       defaults={"num_masks": 2000, "mask_cells": 8, "keep_probability": 0.5, "batch_size": 100},
                       reference="Petsiuk et al. 2018", title="RISE"),
}


#: The method used when none is named (the explain command's ``--method``).
DEFAULT_EXPLAINER = "gradcam"


def list_explainers() -> list[str]:
    """The names of the explanation methods, in registry order."""
    return list(EXPLAINERS)


def get_explainer(method: str) -> ExplainerSpec:
    """The registry entry of an explanation method.

    Raises:
        ModelError: unknown method; the message lists the valid ones.
    """
    if method not in EXPLAINERS:
        raise ModelError(f"Unknown explanation method. Expected one of: {', '.join(EXPLAINERS)}. "
                         f"Received: method={method!r}")
    return EXPLAINERS[method]


@dataclasses.dataclass
class SaliencyMap:
    """An explanation at the model's input resolution (what :func:`explain_array` returns).

    Attributes:
        saliency: float32 (S, S) in [0, 1].
        method: the method's name.
        layer: the layer explained, ``None`` for methods without a layer.
        class_index: the class explained.
        score: the model's score of that class on the input.
        seconds: the time the method took.
    """

    saliency: np.ndarray
    method: str
    layer: str | None
    class_index: int
    score: float
    seconds: float


def _check_params(method: str, spec: ExplainerSpec, params: dict) -> dict:
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        accepted = ", ".join(spec.defaults) or "none"
        raise ModelError(f"Unknown parameter for explanation method {method!r}. Expected: {accepted}. "
                         f"Received: params={unknown}")
    return {**spec.defaults, **params}


def _model_input(model, x: np.ndarray) -> np.ndarray:
    size = base.input_size(model)
    x = np.asarray(x, dtype=np.float32)
    if x.shape == (size, size, 3):
        x = x[None]
    if x.shape != (1, size, size, 3):
        raise ModelError(f"The input does not fit the model: expected an array of shape ({size}, {size}, 3). "
                         f"Received: shape={x.shape}")
    return x


def explain_array(model, x: np.ndarray, method: str, layer: str | None = None, class_index: int | None = None,
                  *, seed: int | None = None, **params: Any) -> SaliencyMap:
    """Explains the model's classification of one preprocessed input, at the model's resolution.

    Args:
        model: a Keras model with one (None, S, S, 3) input and one (None, classes) output.
        x: the model input, float32 (S, S, 3) (or (1, S, S, 3)) in [0, 1].
        method: a name from :data:`EXPLAINERS` (``list_explainers()``).
        layer: the layer to explain for the Grad-CAM family (``conv_layer_names(model)``); ``None`` picks the
            last convolutional layer. Ignored by methods without a layer (rise, smoothgrad).
        class_index: the class to explain; ``None`` explains the predicted (highest scoring) class.
        seed: seed of the random methods (rise, smoothgrad), for reproducible maps.
        **params: the method's parameters (``EXPLAINERS[method].defaults`` lists them with their defaults).

    Returns:
        A :class:`SaliencyMap`.

    Raises:
        ModelError: unknown method, layer, parameter or class, or an input the model does not take.
    """
    spec = get_explainer(method)
    params = _check_params(method, spec, params)
    x = _model_input(model, x)
    scores = np.asarray(model(x, training=False))[0]
    class_index = int(np.argmax(scores)) if class_index is None else base.check_class_index(model, class_index)
    if spec.uses_layer:
        layer = base.resolve_layer(model, layer)
    elif layer is not None:
        logger.debug("Method %s explains the input; ignoring layer=%r", method, layer)
        layer = None
    start = time.perf_counter()
    saliency = spec.function(model, x, class_index, layer, seed, **params)
    seconds = time.perf_counter() - start
    return SaliencyMap(saliency.astype(np.float32), method, layer, class_index, float(scores[class_index]), seconds)


def explain(model, image, method: str, layer: str | None = None, class_index: int | None = None, *,
            preprocessing=None, colormap: str = "jet", alpha: float = 0.5, seed: int | None = None,
            **params: Any) -> Explanation:
    """Explains the model's classification of an image, rendered at the image's own resolution.

    Args:
        model: a Keras model with one (None, S, S, 3) input in [0, 1] and one (None, classes) output.
        image: the original image: a path, bytes or a PIL image (decoded with ``timl.images.decode_image``).
        method: a name from :data:`EXPLAINERS` (``list_explainers()``).
        layer: the layer to explain for the Grad-CAM family; ``None`` picks the last convolutional layer
            (inside a nested backbone too). Ignored by rise and smoothgrad.
        class_index: the class to explain; ``None`` explains the predicted class.
        preprocessing: how the image becomes model input; defaults to
            ``Preprocessing(S, "bilinear", "RGB")`` with S read from ``model.input_shape``.
        colormap: matplotlib colormap of the heatmap. Defaults to "jet".
        alpha: weight of the heatmap in the composite. Defaults to 0.5.
        seed: seed of the random methods (rise, smoothgrad).
        **params: the method's parameters, e.g. ``num_masks=500`` for rise.

    Returns:
        An :class:`Explanation` whose saliency and images have the original image's width and height.

    Raises:
        ModelError: unknown method, layer, parameter or class.
        ImageError: the image cannot be decoded.
        ConfigError: unknown colormap or bad alpha.
    """
    from timl.images import Preprocessing, decode_image

    original = decode_image(image)
    preprocessing = preprocessing or Preprocessing(base.input_size(model), "bilinear", "RGB")
    result = explain_array(model, preprocessing(original), method, layer, class_index, seed=seed, **params)
    grey, heatmap, composite = render(original, result.saliency, colormap=colormap, alpha=alpha)
    return Explanation(saliency=resize_saliency(result.saliency, original.size), grey=grey, heatmap=heatmap,
                       composite=composite, method=result.method, layer=result.layer,
                       class_index=result.class_index, score=result.score, seconds=result.seconds)
