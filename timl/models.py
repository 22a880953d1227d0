"""Methods: the registry of TIML training methods and the builder of their Keras models.

A *method* is a preset (:class:`MethodSpec`) that expands to the parameters of one generic builder: a
backbone from :data:`BACKBONES`, a dense head, an output layer (softmax or, for multi-label ``-ml`` methods,
sigmoid), a loss, an optimizer with its learning rate, and the history key that picks the best epoch. Adding a
method is one entry in :data:`METHODS`.

Method names keep the original TIML spelling:

- ``fcNk``: two dense layers of N*1024 units (``fc4k``: two 4096 layers, like VGG's original head);
  ``1Xfc2k``: one 2048 layer; ``3Xfc4k``: three 4096 layers.
- ``doNN``: dropout of NN% after each dense layer of the head.
- ``-ml``: multi-label: sigmoid outputs, binary cross-entropy (or the soft-F1 loss with ``-lossf1``), Nadam with
  lr 1e-5, and the mean F1 over classes (``val_mean_f1``) as the best-model metric.
- Single-label methods: softmax and categorical cross-entropy, best epoch by ``val_accuracy``. The original
  ``VGG16`` and ``RESNET50`` train with SGD (lr 1e-5, momentum 0.9, Nesterov); the modern backbones with
  Adam (lr 1e-4, the usual fine-tuning rate for them); ``SmallCNN`` from scratch with Adam (lr 1e-3).

A model's input is always named ``image``: RGB float32 in [0, 1], shape (imgsize, imgsize, 3). The ImageNet
preprocessing a backbone expects is a registered layer inside the model (:class:`ImagenetPreprocessing`), and
pretrained backbones are built flat (``input_tensor=``), so their layers (e.g. ``block5_conv3``) are layers of
the model itself, as Grad-CAM needs.

Importing this module is cheap: Keras and TensorFlow are imported by :func:`create_model` and
:func:`ensure_registered` only. Code that loads a saved TIML model calls :func:`ensure_registered` first, so
that ``keras.models.load_model(path, safe_mode=True)`` finds the custom layer, metric and loss.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from timl.errors import MissingFileError, ModelError

logger = logging.getLogger(__name__)

#: The values ``weights`` accepts besides a path to a .h5/.keras file.
WEIGHTS_CHOICES = ("default", "imagenet", "none")

#: The suffixes a weights file may have (a full model or a weights-only file).
WEIGHTS_SUFFIXES = (".h5", ".keras")


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One training method: a backbone, a head, and how the model is trained.

    Attributes:
        name: the method's name in a training table (e.g. ``VGG16-fc4k-do75-ml``).
        description: one line for listings.
        backbone: a key of :data:`BACKBONES` (``"smallcnn"`` for the small network trained from scratch).
        head: sizes of the dense layers between the pooled features and the output layer.
        dropout: dropout rate after each dense layer of the head (0 for none).
        multi_label: sigmoid outputs (several classes per image) instead of softmax.
        loss: ``"categorical_crossentropy"``, ``"binary_crossentropy"`` or ``"f1"`` (soft-F1 loss).
        optimizer: ``"sgd_nesterov"``, ``"nadam"`` or ``"adam"``.
        lr: learning rate of the optimizer, unless a table row overrides it.
        quality_metric: the Keras history key whose best value picks the best epoch.
        quality_mode: ``"max"`` (or ``"min"``) for ``quality_metric``.
        default_weights: ``"imagenet"`` for pretrained backbones, ``"none"`` for training from scratch.
        default_imgsize: the image side the backbone was designed for.
        aliases: other names that resolve to this method.
        pooling: how the backbone's feature map becomes a vector: ``"flatten"`` (VGG's original head) or
            ``"avg"`` (global average pooling).
    """

    name: str
    description: str
    backbone: str
    head: tuple[int, ...] = ()
    dropout: float = 0.0
    multi_label: bool = False
    loss: str = "categorical_crossentropy"
    optimizer: str = "adam"
    lr: float = 1e-4
    quality_metric: str = "val_accuracy"
    quality_mode: str = "max"
    default_weights: str = "imagenet"
    default_imgsize: int = 224
    aliases: tuple[str, ...] = ()
    pooling: str = "avg"


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A feature extractor: a Keras application built flat, or the from-scratch SmallCNN.

    Attributes:
        application: the ``keras.applications`` constructor name, or ``""`` for a TIML builder.
        preprocessing: the :class:`ImagenetPreprocessing` mode in front of it, or ``None``.
        min_imgsize: the smallest image side it accepts.
        pretrained: whether ImageNet weights exist for it.
    """

    application: str
    preprocessing: str | None
    min_imgsize: int = 32
    pretrained: bool = True


#: Backbones by key. EfficientNet and ConvNeXt rescale internally and take [0, 255] input ("scale255").
BACKBONES: dict[str, Backbone] = {
    "vgg16": Backbone("VGG16", "caffe"),
    "resnet50": Backbone("ResNet50", "caffe"),
    "densenet169": Backbone("DenseNet169", "torch"),
    "mobilenetv2": Backbone("MobileNetV2", "tf"),
    "efficientnetb0": Backbone("EfficientNetB0", "scale255"),
    "efficientnetv2s": Backbone("EfficientNetV2S", "scale255"),
    "convnexttiny": Backbone("ConvNeXtTiny", "scale255"),
    "smallcnn": Backbone("", None, min_imgsize=8, pretrained=False),
}

#: ``ImagenetPreprocessing`` modes: (scale, per-channel mean, per-channel std, RGB->BGR), applied as
#: ``(flip(x) * scale - mean) / std`` to an RGB input in [0, 1]. "caffe" means are in BGR order.
PREPROCESSING_MODES: dict[str, tuple[float, tuple[float, ...], tuple[float, ...], bool]] = {
    "caffe": (255.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), True),
    "torch": (1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False),
    "tf": (2.0, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), False),
    "scale255": (255.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False),
}


def _vgg16_ml(name: str, head: tuple[int, ...], dropout: float = 0.0, loss: str = "binary_crossentropy") -> MethodSpec:
    layers = " + ".join(f"{units}" for units in head)
    extra = f", dropout {dropout:g}" if dropout else ""
    loss_text = "soft-F1 loss" if loss == "f1" else "binary cross-entropy"
    return _multi_label(name, f"ImageNet VGG16, flatten, dense {layers}{extra}, sigmoid, {loss_text}",
                        "vgg16", head, dropout, loss, pooling="flatten")


def _multi_label(name: str, description: str, backbone: str, head: tuple[int, ...], dropout: float = 0.0,
                 loss: str = "binary_crossentropy", pooling: str = "avg") -> MethodSpec:
    return MethodSpec(name=name, description=description, backbone=backbone, head=head, dropout=dropout,
                      multi_label=True, loss=loss, optimizer="nadam", lr=1e-5, quality_metric="val_mean_f1",
                      pooling=pooling)


def _modern(name: str, backbone: str, imgsize: int = 224) -> MethodSpec:
    return MethodSpec(name=name, description=f"ImageNet {name}, global average pooling, softmax, Adam 1e-4",
                      backbone=backbone, optimizer="adam", lr=1e-4, default_imgsize=imgsize)


_METHOD_LIST = (
    MethodSpec(name="VGG16", aliases=("VGG16flat",), backbone="vgg16", head=(2048, 2048), pooling="flatten",
               optimizer="sgd_nesterov", lr=1e-5,
               description="ImageNet VGG16, flatten, dense 2048 + 2048, softmax, SGD Nesterov 1e-5"),
    _vgg16_ml("VGG16-fc2k-ml", (2048, 2048)),
    _vgg16_ml("VGG16-fc4k-ml", (4096, 4096)),
    _vgg16_ml("VGG16-fc8k-ml", (8192, 8192)),
    _vgg16_ml("VGG16-fc2k-do75-ml", (2048, 2048), dropout=0.75),
    _vgg16_ml("VGG16-fc4k-do75-ml", (4096, 4096), dropout=0.75),
    _vgg16_ml("VGG16-1Xfc2k-do75-ml", (2048,), dropout=0.75),
    _vgg16_ml("VGG16-3Xfc4k-ml", (4096, 4096, 4096)),
    _vgg16_ml("VGG16-fc4k-ml-lossf1", (4096, 4096), loss="f1"),
    MethodSpec(name="RESNET50", backbone="resnet50", optimizer="sgd_nesterov", lr=1e-5,
               description="ImageNet ResNet50, global average pooling, softmax, SGD Nesterov 1e-5"),
    _multi_label("RESNET50-fc4k-ml", "ImageNet ResNet50, global average pooling, dense 4096 + 4096, sigmoid",
                 "resnet50", (4096, 4096)),
    _multi_label("DenseNet169-fc2k-ml", "ImageNet DenseNet169, global average pooling, dense 2048 + 2048, sigmoid",
                 "densenet169", (2048, 2048)),
    _multi_label("DenseNet169-fc4k-ml", "ImageNet DenseNet169, global average pooling, dense 4096 + 4096, sigmoid",
                 "densenet169", (4096, 4096)),
    _modern("MobileNetV2", "mobilenetv2"),
    _modern("EfficientNetB0", "efficientnetb0"),
    _modern("EfficientNetV2S", "efficientnetv2s", imgsize=384),
    _modern("ConvNeXtTiny", "convnexttiny"),
    MethodSpec(name="SmallCNN", backbone="smallcnn", head=(128,), optimizer="adam", lr=1e-3,
               default_weights="none", default_imgsize=32,
               description="Small CNN from scratch (3 Conv-BN-ReLU-MaxPool blocks, ~110k params), Adam 1e-3"),
)

#: Every method by name and by alias (an alias maps to the same :class:`MethodSpec`).
METHODS: dict[str, MethodSpec] = {
    key: spec for spec in _METHOD_LIST for key in (spec.name, *spec.aliases)
}


def list_methods() -> list[MethodSpec]:
    """Lists the registered methods, sorted by name, each once (aliases are not repeated).

    Returns:
        The :class:`MethodSpec` of every method.
    """
    unique = {spec.name: spec for spec in METHODS.values()}
    return [unique[name] for name in sorted(unique, key=str.lower)]


def get_method(name: str) -> MethodSpec:
    """Returns the method registered under a name or alias.

    Args:
        name: a method name or alias, spelled exactly as listed (e.g. ``VGG16-fc4k-ml``).

    Returns:
        The method's :class:`MethodSpec`.

    Raises:
        ModelError: the name is not registered; the message lists every name.
    """
    spec = METHODS.get(name) if isinstance(name, str) else None
    if spec is not None:
        return spec
    names = sorted(METHODS, key=str.lower)
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ModelError(f"Unknown method. Expected one of: {', '.join(names)}.{hint} Received: method={name!r}")


# --- Custom objects (layer, metric, loss), defined once, on first use, because they need Keras. ---

_CUSTOM_OBJECTS: dict[str, Any] = {}


def ensure_registered() -> dict[str, Any]:
    """Defines and registers TIML's custom Keras objects (once), so saved TIML models load.

    Call it before ``keras.models.load_model(path, safe_mode=True)`` on a TIML model. It imports Keras.

    Returns:
        The custom objects by name: ``ImagenetPreprocessing``, ``MeanF1``, ``f1_loss`` (also usable as
        ``custom_objects=`` of ``keras.models.load_model``).
    """
    return _register_custom_objects()


def custom_objects() -> dict[str, Any]:
    """Returns TIML's custom Keras objects by name (see :func:`ensure_registered`)."""
    return dict(_register_custom_objects())


def _register_custom_objects() -> dict[str, Any]:
    if not _CUSTOM_OBJECTS:
        import keras

        _CUSTOM_OBJECTS["ImagenetPreprocessing"] = _define_preprocessing_layer(keras)
        _CUSTOM_OBJECTS["MeanF1"] = _define_mean_f1(keras)
        _CUSTOM_OBJECTS["f1_loss"] = _define_f1_loss(keras)
    return _CUSTOM_OBJECTS


def __getattr__(name: str) -> Any:
    """Gives ``timl.models.ImagenetPreprocessing`` (and ``MeanF1``, ``f1_loss``) lazily."""
    if name in ("ImagenetPreprocessing", "MeanF1", "f1_loss"):
        return _register_custom_objects()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


# Register at import when Keras is already loaded (costs nothing then); otherwise create_model and
# ensure_registered do it.
if "keras" in sys.modules:
    _register_custom_objects()


# --- Building a model. ---

def _resolve_weights(spec: MethodSpec, weights: str) -> str | Path | None:
    """Returns "imagenet", None (random init) or the Path of a weights file."""
    weights = spec.default_weights if weights in (None, "default") else str(weights)
    if weights == "none":
        return None
    if weights == "imagenet":
        if not BACKBONES[spec.backbone].pretrained:
            raise ModelError(f"Method {spec.name} has no ImageNet weights (it is trained from scratch). Expected "
                             f"weights: default, none or a path to a .h5/.keras file. Received: weights='imagenet'")
        return "imagenet"
    if not weights.lower().endswith(WEIGHTS_SUFFIXES):
        raise ModelError(f"Unknown weights for method {spec.name}. Expected one of: {', '.join(WEIGHTS_CHOICES)}, "
                         f"or a path to a .h5/.keras file. Received: weights={weights!r}")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise MissingFileError(f"Weights file for method {spec.name} not found. Expected an existing .h5/.keras "
                               f"file. Received: weights={weights!r}")
    return path


def _check_sizes(spec: MethodSpec, num_classes: int, imgsize: int) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ModelError(f"num_classes of method {spec.name} must be an integer >= 1. "
                         f"Received: num_classes={num_classes!r}")
    minimum = BACKBONES[spec.backbone].min_imgsize
    if not isinstance(imgsize, int) or isinstance(imgsize, bool) or imgsize < minimum:
        raise ModelError(f"imgsize of method {spec.name} must be an integer >= {minimum} (the smallest input its "
                         f"backbone accepts). Received: imgsize={imgsize!r}")


def _keras_cache_dir() -> str:
    try:
        from keras.src.backend.config import keras_home  # private, but the one true location
        home = keras_home()
    except ImportError:  # pragma: no cover - a Keras that moved it
        home = os.environ.get("KERAS_HOME", os.path.join("~", ".keras"))
    return os.path.join(home, "models")


def _application_features(spec: MethodSpec, x, imagenet: bool):
    """Builds a Keras application flat on tensor ``x`` and returns its feature map."""
    import keras

    backbone = BACKBONES[spec.backbone]
    constructor = getattr(keras.applications, backbone.application)
    if not imagenet:
        return constructor(include_top=False, weights=None, input_tensor=x).output
    try:
        return constructor(include_top=False, weights="imagenet", input_tensor=x).output
    except Exception as error:  # keras' get_file raises a bare Exception when the download fails
        raise ModelError(
            f"Cannot load ImageNet weights for method {spec.name}: they are not in the Keras cache "
            f"({_keras_cache_dir()}) and could not be downloaded (offline?). Use weights=none, or a local .h5 "
            f"file, or run once online to fill the cache. Received: weights='imagenet' (cause: {error})"
        ) from error


def _small_cnn_features(x, filters: tuple[int, ...] = (32, 64, 128)):
    """Conv-BN-ReLU-MaxPool blocks.

    BatchNormalization momentum is 0.5 (Keras' default 0.99 lags the fast-changing statistics of a network
    trained from scratch for a few short epochs: measured 0.88 instead of 0.96 validation accuracy on digits).
    """
    import keras

    for index, width in enumerate(filters, start=1):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{index}_conv")(x)
        x = keras.layers.BatchNormalization(momentum=0.5, name=f"block{index}_bn")(x)
        x = keras.layers.ReLU(name=f"block{index}_relu")(x)
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"block{index}_pool")(x)
    return x


def _backbone_features(spec: MethodSpec, inputs, imagenet: bool):
    backbone = BACKBONES[spec.backbone]
    x = inputs
    if backbone.preprocessing is not None:
        layer_class = _register_custom_objects()["ImagenetPreprocessing"]
        x = layer_class(mode=backbone.preprocessing, name="imagenet_preprocessing")(x)
    if spec.backbone == "smallcnn":
        return _small_cnn_features(x)
    return _application_features(spec, x, imagenet)


def _flatten():
    import keras

    return keras.layers.Flatten(name="head_flatten")


def _global_average():
    import keras

    return keras.layers.GlobalAveragePooling2D(name="head_pool")


#: Feature map -> vector, by ``MethodSpec.pooling``.
POOLINGS: dict[str, Callable[[], Any]] = {"flatten": _flatten, "avg": _global_average}


def _head(spec: MethodSpec, features, num_classes: int):
    import keras

    x = POOLINGS[spec.pooling]()(features)
    for index, units in enumerate(spec.head, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"head_fc{index}")(x)
        if spec.dropout:
            x = keras.layers.Dropout(spec.dropout, name=f"head_dropout{index}")(x)
    activation = "sigmoid" if spec.multi_label else "softmax"
    return keras.layers.Dense(num_classes, activation=activation, name="predictions", dtype="float32")(x)


def _sgd_nesterov(learning_rate: float):
    import keras

    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9, nesterov=True)


def _nadam(learning_rate: float):
    import keras

    return keras.optimizers.Nadam(learning_rate=learning_rate)


def _adam(learning_rate: float):
    import keras

    return keras.optimizers.Adam(learning_rate=learning_rate)


#: Optimizers by ``MethodSpec.optimizer``, each a builder taking the learning rate.
OPTIMIZERS: dict[str, Callable[[float], Any]] = {"sgd_nesterov": _sgd_nesterov, "nadam": _nadam, "adam": _adam}

#: Losses by ``MethodSpec.loss``.
LOSSES: dict[str, Callable[[], Any]] = {
    "categorical_crossentropy": lambda: "categorical_crossentropy",
    "binary_crossentropy": lambda: "binary_crossentropy",
    "f1": lambda: _register_custom_objects()["f1_loss"],
}


def _metrics(spec: MethodSpec) -> list:
    import keras

    if not spec.multi_label:
        return ["accuracy"]
    return [keras.metrics.BinaryAccuracy(name="accuracy"), _register_custom_objects()["MeanF1"]()]


def _compile(model, spec: MethodSpec, lr: float | None) -> None:
    learning_rate = spec.lr if lr is None else float(lr)
    if not learning_rate > 0:
        raise ModelError(f"The learning rate of method {spec.name} must be > 0. Received: lr={lr!r}")
    # No XLA: on CPU its compile time dominates (one DenseNet169 step: 300 s with XLA, 133 s without) and a
    # 3-epoch SmallCNN run is 30% faster without it.
    model.compile(optimizer=OPTIMIZERS[spec.optimizer](learning_rate), loss=LOSSES[spec.loss](),
                  metrics=_metrics(spec), jit_compile=False)


def create_model(method: str | MethodSpec, num_classes: int, imgsize: int, *, weights: str = "default",
                 lr: float | None = None, seed: int | None = None):
    """Builds and compiles the Keras model of a method.

    Args:
        method: a method name or alias (see :func:`list_methods`), or a :class:`MethodSpec`.
        num_classes: number of outputs (classes).
        imgsize: side of the square input in pixels (at least 32 for pretrained backbones).
        weights: ``"default"`` (the method's ``default_weights``), ``"imagenet"`` (Keras' cache, downloaded
            when online), ``"none"`` (random initialisation) or a path to a .h5/.keras file: a full saved model
            whose weights are copied into the new architecture (layers whose shapes differ, e.g. the output
            layer for another number of classes, keep their initial weights), or a weights-only file.
            Defaults to ``"default"``.
        lr: learning rate; ``None`` uses the method's. Defaults to ``None``.
        seed: if given, ``keras.utils.set_random_seed(seed)`` before building (reproducible initial weights).

    Returns:
        A compiled Functional ``keras.Model``; input ``image`` (imgsize, imgsize, 3) float32 RGB in [0, 1];
        output (num_classes,) softmax or sigmoid. Metrics: ``accuracy``, and ``mean_f1`` for multi-label.

    Raises:
        ModelError: unknown method, bad sizes, weights or learning rate, or ImageNet weights that are not cached
            and cannot be downloaded.
        MissingFileError: a weights path that does not exist.
    """
    spec = method if isinstance(method, MethodSpec) else get_method(method)
    _check_sizes(spec, num_classes, imgsize)
    source = _resolve_weights(spec, weights)
    _register_custom_objects()
    import keras

    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    inputs = keras.Input(shape=(imgsize, imgsize, 3), dtype="float32", name="image")
    features = _backbone_features(spec, inputs, imagenet=source == "imagenet")
    outputs = _head(spec, features, num_classes)
    model = keras.Model(inputs, outputs, name=re.sub(r"[^0-9a-zA-Z_]", "_", spec.name).lower())
    if isinstance(source, Path):
        load_weights_file(model, source)
    _compile(model, spec, lr)
    logger.info("Built %s: %d classes, %d px, weights=%s, %d parameters", spec.name, num_classes, imgsize,
                weights, model.count_params())
    return model


# --- Weights files. ---

def _read_saved_model(path: Path):
    """Returns the full model saved at ``path``, or None when it is a weights-only file."""
    import keras

    if path.name.lower().endswith(".weights.h5"):
        return None
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:
        if path.suffix.lower() == ".h5" and "No model config found" in str(error):
            return None
        raise ModelError(f"Cannot read the model file {path}: {error}. Expected a model saved by Keras "
                         f"(.keras or .h5) or a weights file (.weights.h5). Received: weights={str(path)!r}") from error


def load_weights_file(model, path: str | Path) -> None:
    """Loads weights from a saved model or a weights file into ``model`` (in place).

    A full model (.keras, .h5) gives its weights layer by layer, in order, to the layers of ``model`` that
    have weights; layers whose weight shapes differ (e.g. the output layer for another number of classes)
    keep theirs, with a warning. A weights-only file is read by ``model.load_weights(skip_mismatch=True)``.

    Args:
        model: the built Keras model to fill.
        path: the .h5/.keras file.

    Raises:
        ModelError: the file cannot be read or none of its layers fit the model.
    """
    ensure_registered()
    path = Path(path)
    source = _read_saved_model(path)
    if source is None:
        try:
            model.load_weights(path, skip_mismatch=True)
        except Exception as error:
            raise ModelError(f"Cannot load the weights file {path} into model {model.name}: {error}. "
                             f"Received: weights={str(path)!r}") from error
        return
    _copy_weights(source, model, path)


def _copy_weights(source, model, path: Path) -> None:
    source_layers = [layer for layer in source.layers if layer.weights]
    target_layers = [layer for layer in model.layers if layer.weights]
    if len(source_layers) != len(target_layers):
        raise ModelError(f"The model in {path} does not fit method architecture {model.name}: it has "
                         f"{len(source_layers)} layers with weights, {len(target_layers)} expected. "
                         f"Received: weights={str(path)!r}")
    skipped = []
    for source_layer, target_layer in zip(source_layers, target_layers):
        values = source_layer.get_weights()
        shapes_match = [v.shape for v in values] == [tuple(w.shape) for w in target_layer.weights]
        if shapes_match:
            target_layer.set_weights(values)
        else:
            skipped.append(target_layer.name)
    if len(skipped) == len(target_layers):
        raise ModelError(f"No layer of the model in {path} fits architecture {model.name}. "
                         f"Received: weights={str(path)!r}")
    if skipped:
        logger.warning("Weights from %s: layers %s keep their initial weights (shapes differ)", path, skipped)


# --- Inspecting a model. ---

def describe_model(model) -> str:
    """Returns ``model.summary()`` as plain text (for logging as an artifact)."""
    lines: list[str] = []
    model.summary(print_fn=lambda text, *args, **kwargs: lines.append(text), line_length=120)
    return "\n".join(lines).rstrip() + "\n"


def last_conv_layer_name(model) -> str:
    """Returns the name of the model's last convolution layer with a 4-D output (the Grad-CAM default).

    Args:
        model: a Keras model; only its top-level layers are searched (TIML backbones are built flat).

    Returns:
        The layer's name (e.g. ``block5_conv3`` for VGG16).

    Raises:
        ModelError: the model has no such layer.
    """
    import keras

    conv_types = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
                  keras.layers.Conv2DTranspose)
    for layer in reversed(model.layers):
        if isinstance(layer, conv_types) and len(layer.output.shape) == 4:
            return layer.name
    raise ModelError(f"Model {model.name} has no convolution layer with a 4-D output. Expected a model with a "
                     f"Conv2D/DepthwiseConv2D/SeparableConv2D layer. Received: model={model.name!r}")
