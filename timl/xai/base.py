"""What every explanation method shares: the result type, layers, classes and a prepared model.

The gradient methods need the model's pre-activation scores (logits) and access to an inner convolutional
layer, also when that layer sits inside a nested backbone (a ``keras.Model`` used as one layer). Instead of
cloning the caller's model (which copies every weight), :func:`prepared_model` rebuilds the graph once with
the same layer objects, flat, with a linear copy of the output layer and a copy of the explained layer; the
caller's model is never mutated.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from typing import Any, Callable

import numpy as np

from timl.errors import ModelError

logger = logging.getLogger(__name__)

#: Layer classes that count as convolutional when looking for the default layer.
CONV_LAYER_CLASSES = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose")

#: Output activations that :func:`prepared_model` replaces by a linear one.
SQUASHING_ACTIVATIONS = ("softmax", "sigmoid")


@dataclasses.dataclass
class Explanation:
    """One explained classification.

    Attributes:
        saliency: float32 array (height, width) in [0, 1], at the original image's size.
        grey: the saliency as a grey PIL image (mode "L"), original size.
        heatmap: the saliency through a colormap (RGB), original size.
        composite: the original image alpha-blended with the heatmap (RGB), original size.
        method: the explanation method's name.
        layer: the layer explained, or ``None`` for methods without a layer (rise, smoothgrad).
        class_index: the class explained.
        score: the model's score of that class on the image.
        seconds: the time the explanation took (model resolution, without decoding and rendering).
    """

    saliency: np.ndarray
    grey: Any
    heatmap: Any
    composite: Any
    method: str
    layer: str | None
    class_index: int
    score: float
    seconds: float


@dataclasses.dataclass(frozen=True)
class ExplainerSpec:
    """An explanation method in the explainer registry (:data:`timl.xai.EXPLAINERS`).

    Attributes:
        function: ``function(model, x, class_index, layer, seed, **params) -> saliency`` where ``x`` is the
            model input (1, S, S, 3) and the saliency a float32 array (S, S) in [0, 1].
        uses_layer: whether the method explains an inner layer (Grad-CAM family) or the input (RISE).
        defaults: the method's parameters and their default values.
        reference: the paper, for documentation.
        title: the method's name for people (the web pages), e.g. "Grad-CAM".
    """

    function: Callable[..., np.ndarray]
    uses_layer: bool
    defaults: dict
    reference: str = ""
    title: str = ""


# ---------------------------------------------------------------------------------------------- layers


def _is_container(layer) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def _has_4d_output(layer) -> bool:
    try:
        return len(layer.output.shape) == 4
    except (AttributeError, ValueError):  # never called, or called more than once
        return False


def _leaf_layers(model) -> list:
    """The model's layers in graph order, nested models replaced by their own layers (depth first)."""
    layers = []
    for layer in model.layers:
        if _is_container(layer):
            layers.extend(_leaf_layers(layer))
        elif type(layer).__name__ != "InputLayer":
            layers.append(layer)
    return layers


def conv_layer_names(model) -> list[str]:
    """Names of the layers an explanation can target: every layer with a 4-D (batch, h, w, c) output.

    Layers inside nested models (a backbone used as one layer) are listed with their own names.

    Args:
        model: a Keras model.

    Returns:
        The names, in graph order (the last one is the deepest).
    """
    return [layer.name for layer in _leaf_layers(model) if _has_4d_output(layer)]


def last_conv_layer(model) -> str:
    """The name of the model's last convolutional layer (the Grad-CAM default), nested backbones included.

    Args:
        model: a Keras model.

    Returns:
        The name of the last Conv2D, DepthwiseConv2D, SeparableConv2D or Conv2DTranspose layer.

    Raises:
        ModelError: the model has no convolutional layer.
    """
    for layer in reversed(_leaf_layers(model)):
        if type(layer).__name__ in CONV_LAYER_CLASSES and _has_4d_output(layer):
            return layer.name
    raise ModelError(
        "The model has no convolutional layer to explain. Expected a layer of type "
        f"{', '.join(CONV_LAYER_CLASSES)}; pass layer= one of the 4-D layers instead. "
        f"Received: layers={[layer.name for layer in _leaf_layers(model)]}"
    )


def resolve_layer(model, layer: str | None) -> str:
    """Checks a layer name, or finds the default one.

    Args:
        model: a Keras model.
        layer: a layer name from :func:`conv_layer_names`, or ``None`` for :func:`last_conv_layer`.

    Returns:
        The layer name.

    Raises:
        ModelError: the name is not a layer with a 4-D output.
    """
    if layer is None:
        return last_conv_layer(model)
    names = conv_layer_names(model)
    if layer not in names:
        raise ModelError(f"Unknown layer for this model. Expected one of: {', '.join(names)}. "
                         f"Received: layer={layer!r}")
    return layer


# --------------------------------------------------------------------------------------------- classes


def input_size(model) -> int:
    """The side of the model's square input (from ``model.input_shape``).

    Raises:
        ModelError: the model does not take one (batch, S, S, 3) image input.
    """
    shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    if shape is None or len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise ModelError("Cannot explain this model: expected one square RGB image input (None, S, S, 3). "
                         f"Received: input_shape={model.input_shape!r}")
    return int(shape[1])


def num_classes(model) -> int:
    """The number of classes (the size of the model's single 2-D output).

    Raises:
        ModelError: the model does not have one (batch, classes) output.
    """
    shape = model.output_shape
    if isinstance(shape, list) or len(shape) != 2:
        raise ModelError("Cannot explain this model: expected one (None, classes) output. "
                         f"Received: output_shape={shape!r}")
    return int(shape[1])


def check_class_index(model, class_index: int) -> int:
    """Checks a class index against the model's number of classes.

    Raises:
        ModelError: the index is not an integer in [0, classes).
    """
    classes = num_classes(model)
    if isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer)) or not (
            0 <= class_index < classes):
        raise ModelError(f"Invalid class_index: the model has {classes} classes, so expected an integer "
                         f"from 0 to {classes - 1}. Received: class_index={class_index!r}")
    return int(class_index)


def output_activation(model) -> str:
    """The name of the output layer's activation ("softmax", "sigmoid", "linear", ...), or "unknown"."""
    activation = getattr(_output_layer(model), "activation", None)
    return getattr(activation, "__name__", "unknown") if activation is not None else "unknown"


# -------------------------------------------------------------------------------------- prepared model


def _is_calibration(layer) -> bool:
    """Whether a layer is a calibration layer (``TemperatureScaling``) appended after the output layer."""
    return type(layer).__name__ == "TemperatureScaling"


def _output_layer(model):
    """The leaf layer that produces the model's output, looking inside nested models and past a calibration
    layer (which rescales the output layer's probabilities: the logits are the output layer's)."""
    operation = model
    while _is_container(operation) or _is_calibration(operation):
        if _is_calibration(operation):
            operation = operation.input._keras_history.operation
        elif not hasattr(operation, "_run_through_graph"):  # Sequential
            operation = operation.layers[-1]
        else:
            operation = operation.outputs[0]._keras_history.operation
    return operation


def _copy_layer(layer, **overrides):
    """A new, unbuilt layer with ``layer``'s configuration (weights are copied once it is built)."""
    return type(layer).from_config(dict(layer.get_config(), **overrides))


def _find_leaf_layer(model, name: str):
    for layer in reversed(_leaf_layers(model)):
        if layer.name == name:
            return layer
    raise ModelError(f"Unknown layer for this model. Expected one of: {', '.join(conv_layer_names(model))}. "
                     f"Received: layer={name!r}")


def _call_flat(operation, args, kwargs, replacements):
    """Calls a layer on symbolic tensors; nested models are unrolled into their own layers."""
    operation = replacements.get(id(operation), operation)
    if not _is_container(operation):
        return operation(*args, **kwargs)
    if not hasattr(operation, "_run_through_graph"):  # Sequential: a chain
        x = args[0]
        for layer in operation.layers:
            x = _call_flat(layer, (x,), {}, replacements)
        return x

    def operation_fn(inner):
        return lambda *a, **k: _call_flat(inner, a, k, replacements)

    return operation._run_through_graph(list(args) if len(args) > 1 else args[0], operation_fn=operation_fn)


_PREPARED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _build_prepared(model, layer: str | None):
    """Builds the flat model; returns it with the (original, copy) layer pairs whose weights must follow."""
    import keras

    pairs = []
    output_layer = _output_layer(model)
    activation = getattr(getattr(output_layer, "activation", None), "__name__", None)
    if activation in SQUASHING_ACTIVATIONS:
        pairs.append((output_layer, _copy_layer(output_layer, activation="linear")))
    if layer is not None:
        target = _find_leaf_layer(model, layer)
        pairs.append((target, _copy_layer(target)))
    replacements = {id(original): copy for original, copy in pairs}
    # A calibration layer divides the logits by a temperature after the output layer: the flat model ends at the
    # logits, which the explanations score (a positive rescale leaves their normalised maps as they are).
    replacements.update({id(calibration): keras.layers.Identity() for calibration in model.layers
                         if _is_calibration(calibration)})
    inputs = keras.Input(shape=tuple(model.input_shape[1:]), name="image")
    outputs = _call_flat(model, (inputs,), {}, replacements)
    flat = keras.Model([inputs], outputs, name=f"{model.name}_flat")  # a list, as tf-keras-vis passes
    logger.debug("Prepared a flat linear-output model of %s for layer %s", model.name, layer)
    return flat, pairs


def prepared_model(model, layer: str | None = None):
    """A flat model sharing ``model``'s layers, with a linear output (logits); cached per model and layer.

    Nested models are unrolled, so every leaf layer is a layer of the result. The output layer, if it ends with
    softmax or sigmoid, is replaced by a linear copy, and ``layer`` (if given) by a copy of itself, so that the
    copy's ``output`` is a tensor of the flat graph (what tf-keras-vis reads). Only these copies hold their
    own weights; they are refreshed from the originals on every call, so the result follows later changes of
    the caller's model, which is never modified.

    Args:
        model: a Keras model with one image input and one (batch, classes) output.
        layer: the name of a leaf layer whose output the caller needs (Grad-CAM family), or ``None``.

    Returns:
        A Functional model from the image to the class logits.
    """
    per_model = _PREPARED.setdefault(model, {})
    if layer not in per_model:
        per_model[layer] = _build_prepared(model, layer)
    flat, pairs = per_model[layer]
    for original, copy in pairs:
        copy.set_weights(original.get_weights())
    return flat


def clear_cache() -> None:
    """Forgets every prepared model (they are otherwise kept as long as the original model lives)."""
    _PREPARED.clear()
