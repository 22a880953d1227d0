"""TIML's custom Keras objects: the :class:`ImagenetPreprocessing` and :class:`TemperatureScaling` layers, the
original TIML's per-sample mean F1 (:class:`SampleMeanF1`) and its multi-label loss (1 - F1) x binary
cross-entropy (:func:`f1_bce_loss`); and, so that models saved by earlier TIML versions still load, the macro
:class:`MeanF1` and the soft-F1 :func:`f1_loss`.

They need Keras, so they are defined on first use (:func:`ensure_registered`) and registered with
``keras.saving.register_keras_serializable(package="timl")`` (names like ``timl>ImagenetPreprocessing``), so
that saved TIML models load with ``safe_mode=True``. Importing this module is cheap unless Keras is already
loaded, in which case it registers them at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from timl.errors import ModelError

#: ``ImagenetPreprocessing`` modes: (scale, per-channel mean, per-channel std, RGB->BGR), applied as
#: ``(flip(x) * scale - mean) / std`` to an RGB input in [0, 1]. "caffe" means are in BGR order.
PREPROCESSING_MODES: dict[str, tuple[float, tuple[float, ...], tuple[float, ...], bool]] = {
    "caffe": (255.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), True),
    "torch": (1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False),
    "tf": (2.0, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), False),
    "scale255": (255.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False),
}


# --- Custom objects (layer, metric, loss), defined once, on first use, because they need Keras. ---

_CUSTOM_OBJECTS: dict[str, Any] = {}


def ensure_registered() -> dict[str, Any]:
    """Defines and registers TIML's custom Keras objects (once), so saved TIML models load.

    Call it before ``keras.models.load_model(path, safe_mode=True)`` on a TIML model. It imports Keras.

    Returns:
        The custom objects by name: ``ImagenetPreprocessing``, ``SampleMeanF1``, ``f1_bce_loss``, ``MeanF1``,
        ``f1_loss`` (also usable as ``custom_objects=`` of ``keras.models.load_model``).
    """
    return _register_custom_objects()


def custom_objects() -> dict[str, Any]:
    """Returns TIML's custom Keras objects by name (see :func:`ensure_registered`)."""
    return dict(_register_custom_objects())


def _register_custom_objects() -> dict[str, Any]:
    if not _CUSTOM_OBJECTS:
        import keras

        _CUSTOM_OBJECTS["ImagenetPreprocessing"] = _define_preprocessing_layer(keras)
        _CUSTOM_OBJECTS["TemperatureScaling"] = _define_temperature_layer(keras)
        _CUSTOM_OBJECTS["MeanF1"] = _define_mean_f1(keras)
        _CUSTOM_OBJECTS["f1_loss"] = _define_f1_loss(keras)
        _CUSTOM_OBJECTS["SampleMeanF1"] = _define_sample_mean_f1(keras)
        _CUSTOM_OBJECTS["f1_bce_loss"] = _define_f1_bce_loss(keras)
    return _CUSTOM_OBJECTS


def _define_preprocessing_layer(keras) -> type:
    @keras.saving.register_keras_serializable(package="timl")
    class ImagenetPreprocessing(keras.layers.Layer):
        """Maps RGB in [0, 1] to what an ImageNet backbone expects.

        Args:
            mode: ``"caffe"`` (VGG16, ResNet50: BGR, *255, mean subtraction), ``"torch"`` (DenseNet: mean/std
                normalisation), ``"tf"`` (MobileNetV2: [-1, 1]) or ``"scale255"`` (EfficientNet, ConvNeXt:
                [0, 255], they rescale internally).
        """

        def __init__(self, mode: str = "caffe", **kwargs):
            super().__init__(**kwargs)
            if mode not in PREPROCESSING_MODES:
                raise ModelError(f"Unknown ImageNet preprocessing mode. Expected one of: "
                                 f"{', '.join(PREPROCESSING_MODES)}. Received: mode={mode!r}")
            self.mode = mode

        def call(self, inputs):
            scale, mean, std, to_bgr = PREPROCESSING_MODES[self.mode]
            x = keras.ops.cast(inputs, self.compute_dtype)
            if to_bgr:
                x = keras.ops.flip(x, axis=-1)
            return (x * scale - keras.ops.convert_to_tensor(mean, x.dtype)) / keras.ops.convert_to_tensor(std, x.dtype)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "mode": self.mode}

    return ImagenetPreprocessing


def _define_temperature_layer(keras) -> type:
    from timl.calibration import TINY_PROBABILITY

    @keras.saving.register_keras_serializable(package="timl")
    class TemperatureScaling(keras.layers.Layer):
        """Calibrates a model's probabilities by temperature scaling: ``softmax(log p / T)`` after a softmax,
        ``sigmoid(logit(p) / T_k)`` per class after sigmoids (:func:`timl.calibration.apply_temperatures`).
        The temperatures are configuration, not weights: the layer adds nothing to train or to copy.

        Args:
            temperatures: one temperature (softmax) or one per class (sigmoid), each > 0.
            multi_label: the probabilities are sigmoids. Defaults to False.
        """

        def __init__(self, temperatures=(1.0,), multi_label: bool = False, **kwargs):
            super().__init__(**kwargs)
            self.temperatures = [float(value) for value in temperatures]
            if not self.temperatures or min(self.temperatures) <= 0:
                raise ModelError(f"Temperatures must be positive numbers. Received: temperatures={temperatures!r}")
            self.multi_label = bool(multi_label)

        def call(self, inputs):
            ops = keras.ops
            x = ops.cast(inputs, "float32")
            temperatures = ops.convert_to_tensor(self.temperatures, "float32")
            if self.multi_label:
                x = ops.clip(x, TINY_PROBABILITY, 1.0 - 1e-7)
                return ops.sigmoid((ops.log(x) - ops.log1p(-x)) / temperatures)
            return ops.softmax(ops.log(ops.clip(x, TINY_PROBABILITY, 1.0)) / temperatures, axis=-1)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "temperatures": self.temperatures, "multi_label": self.multi_label}

    return TemperatureScaling


def _define_mean_f1(keras) -> type:
    @keras.saving.register_keras_serializable(package="timl")
    class MeanF1(keras.metrics.F1Score):
        """Mean over classes of the per-class F1 score, outputs thresholded at ``threshold``.

        Args:
            threshold: a class is predicted when its output is above this. Defaults to 0.5.
            name: the metric's name (history key ``mean_f1`` / ``val_mean_f1``). Defaults to ``"mean_f1"``.
            dtype: the metric's dtype. Defaults to Keras' float type.
        """

        def __init__(self, threshold: float = 0.5, name: str = "mean_f1", dtype=None):
            super().__init__(average="macro", threshold=threshold, name=name, dtype=dtype)

        def get_config(self):
            config = super().get_config()
            config.pop("average", None)
            return config

    return MeanF1


def _define_f1_loss(keras) -> Callable:
    @keras.saving.register_keras_serializable(package="timl")
    def f1_loss(y_true, y_pred):
        """Soft-F1 loss: 1 - mean over classes of the F1 computed with probabilities instead of 0/1.

        The F1 is a batch statistic; it is returned once per sample so that sample weights still apply.

        References:
            The "soft F1" (differentiable macro F1) used by the original TIML ``-lossf1`` methods.
        """
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        true_pos = keras.ops.sum(y_true * y_pred, axis=0)
        false_pos = keras.ops.sum((1.0 - y_true) * y_pred, axis=0)
        false_neg = keras.ops.sum(y_true * (1.0 - y_pred), axis=0)
        soft_f1 = 2.0 * true_pos / (2.0 * true_pos + false_pos + false_neg + keras.config.epsilon())
        return keras.ops.ones_like(y_pred[:, 0]) * (1.0 - keras.ops.mean(soft_f1))

    return f1_loss


def _sample_f1(keras, y_true, y_pred):
    """Each sample's F1 over its labels (0 where it is undefined), from 0/1 truths and outputs as given."""
    ops, epsilon = keras.ops, keras.config.epsilon()
    y_true = ops.cast(y_true, y_pred.dtype)
    true_pos = ops.sum(y_true * y_pred, axis=-1)
    precision = true_pos / (ops.sum(y_pred, axis=-1) + epsilon)
    recall = true_pos / (ops.sum(y_true, axis=-1) + epsilon)
    f1 = 2.0 * precision * recall / (precision + recall + epsilon)
    return ops.where(ops.isnan(f1), ops.zeros_like(f1), f1)


def _define_sample_mean_f1(keras) -> type:
    @keras.saving.register_keras_serializable(package="timl")
    class SampleMeanF1(keras.metrics.MeanMetricWrapper):
        """The original TIML's ``mean_f1_score``: each sample's F1 over its labels (outputs rounded at 0.5),
        averaged over the samples.

        Args:
            name: the metric's name (history keys ``mean_f1`` / ``val_mean_f1``). Defaults to ``"mean_f1"``.
            dtype: the metric's dtype. Defaults to Keras' float type.
        """

        def __init__(self, name: str = "mean_f1", dtype=None):
            super().__init__(fn=lambda y_true, y_pred: _sample_f1(keras, y_true, keras.ops.round(y_pred)),
                             name=name, dtype=dtype)

        def get_config(self):
            return {"name": self.name, "dtype": self.dtype}

    return SampleMeanF1


def _define_f1_bce_loss(keras) -> Callable:
    @keras.saving.register_keras_serializable(package="timl")
    def f1_bce_loss(y_true, y_pred):
        """The original TIML's multi-label loss: (1 - the batch's mean soft F1) x each sample's binary
        cross-entropy (soft F1: each sample's F1 over its labels computed with probabilities, not 0/1).

        The F1 factor is a batch statistic; it multiplies each sample's cross-entropy, so sample weights apply.
        """
        soft_f1 = _sample_f1(keras, y_true, y_pred)
        return (1.0 - keras.ops.mean(soft_f1)) * keras.losses.binary_crossentropy(y_true, y_pred)

    return f1_bce_loss


# Register at import when Keras is already loaded (costs nothing then); otherwise create_model and
# ensure_registered do it.
if "keras" in sys.modules:
    _register_custom_objects()
