"""Score-CAM through tf-keras-vis (its "Faster Score-CAM" variant, limited to ``max_channels`` maps)."""

from __future__ import annotations

import functools

import numpy as np

from timl.xai.base import output_activation, prepared_model
from timl.xai.gradcam import unit_range


def _binary_logits_model(flat, class_index: int):
    """A model whose two outputs are ``[logit_c, 0]``: their softmax is ``[sigmoid(logit_c), ...]``.

    tf-keras-vis applies a softmax to the model's output before scoring; for a multi-label (sigmoid) model
    this makes the score of class c its own probability rather than a share of all classes.
    """
    import keras

    class BinaryLogits(keras.layers.Layer):
        def call(self, logits):
            chosen = logits[:, class_index:class_index + 1]
            return keras.ops.concatenate([chosen, keras.ops.zeros_like(chosen)], axis=1)

    return keras.Model(flat.inputs, BinaryLogits(name="binary_logits")(flat.outputs[0]))


def _quiet(model):
    """Makes ``model.predict`` (called by tf-keras-vis) print no progress bar; ``model`` is ours."""
    if not isinstance(model.predict, functools.partial):
        model.predict = functools.partial(model.predict, verbose=0)
    return model


def scorecam(model, x: np.ndarray, class_index: int, layer: str, seed: int | None = None, *,
             max_channels: int = 64, batch_size: int = 32) -> np.ndarray:
    """Score-CAM: each activation map of the layer, upsampled, masks the input; its weight is the class score.

    Args:
        model: a Keras model.
        x: the model input, float32 (1, S, S, 3).
        class_index: the class to explain.
        layer: the layer whose activation maps mask the input (see ``conv_layer_names``).
        seed: unused (Score-CAM is deterministic).
        max_channels: how many activation maps (those of highest variance) to use; 0 or fewer uses all.
            Defaults to 64.
        batch_size: masked images per prediction batch. Defaults to 32.

    Returns:
        float32 (S, S) in [0, 1].

    References:
        Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks",
        CVPR Workshops 2020.
    """
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.scores import CategoricalScore

    flat = prepared_model(model, layer)
    scored, index = flat, class_index
    if output_activation(model) == "sigmoid":
        scored, index = _binary_logits_model(flat, class_index), 0
    channels = int(flat.get_layer(layer).output.shape[-1])
    max_n = min(int(max_channels), channels) if max_channels and max_channels > 0 else None
    cam = Scorecam(_quiet(scored), model_modifier=None, clone=False)(
        CategoricalScore(index), x, penultimate_layer=layer, seek_penultimate_conv_layer=False,
        max_N=max_n, batch_size=int(batch_size), normalize_cam=False)
    return unit_range(cam[0])
