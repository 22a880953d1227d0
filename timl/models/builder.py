"""The model builder: a method's backbone features, its dense head, optimizer, loss and metrics, compiled into
a Keras model by :func:`create_model`; and inspecting a built model (:func:`describe_model`,
:func:`last_conv_layer_name`).

Keras is imported inside the functions only, so importing this module is cheap.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from timl.errors import ModelError
from timl.models.layers import ensure_registered
from timl.models.registry import BACKBONES, MethodSpec, get_method
from timl.models.weights import _resolve_weights, load_weights_file

logger = logging.getLogger(__name__)


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
        layer_class = ensure_registered()["ImagenetPreprocessing"]
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


#: Names of the layers that begin a head (one of them is the head's first layer).
HEAD_POOLINGS = ("head_flatten", "head_pool")


def _head(spec: MethodSpec, features, num_classes: int, metadata=None):
    """The method's head on a feature map: pooling, [the per-image metadata joined,] dense layers, output."""
    import keras

    x = POOLINGS[spec.pooling]()(features)
    if metadata is not None:
        x = keras.layers.Concatenate(name="head_metadata")([x, metadata])
    for index, units in enumerate(spec.head, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"head_fc{index}")(x)
        if spec.dropout:
            x = keras.layers.Dropout(spec.dropout, name=f"head_dropout{index}")(x)
    activation = "sigmoid" if spec.multi_label else "softmax"
    return keras.layers.Dense(num_classes, activation=activation, name="predictions", dtype="float32")(x)


def _metadata_input(metadata_size: int):
    import keras

    return keras.Input(shape=(metadata_size,), dtype="float32", name="metadata") if metadata_size else None


def _sgd_nesterov_decay(learning_rate: float):
    """The original TIML's SGD: momentum 0.9, Nesterov, and Keras 2's ``decay=1e-4`` (lr / (1 + 1e-4 x step))."""
    import keras

    schedule = keras.optimizers.schedules.InverseTimeDecay(learning_rate, decay_steps=1, decay_rate=1e-4)
    return keras.optimizers.SGD(learning_rate=schedule, momentum=0.9, nesterov=True)


def _nadam(learning_rate: float):
    import keras

    return keras.optimizers.Nadam(learning_rate=learning_rate)


def _adam(learning_rate: float):
    import keras

    return keras.optimizers.Adam(learning_rate=learning_rate)


#: Optimizers by ``MethodSpec.optimizer``, each a builder taking the learning rate.
OPTIMIZERS: dict[str, Callable[[float], Any]] = {"sgd_nesterov_decay": _sgd_nesterov_decay, "nadam": _nadam,
                                                 "adam": _adam}

#: Losses by ``MethodSpec.loss``.
LOSSES: dict[str, Callable[[], Any]] = {
    "categorical_crossentropy": lambda: "categorical_crossentropy",
    "binary_crossentropy": lambda: "binary_crossentropy",
    "f1_bce": lambda: ensure_registered()["f1_bce_loss"],
}


def _accuracy(multi_label: bool):
    """Keras 2's "accuracy": binary accuracy for sigmoid outputs with binary cross-entropy, else the argmax."""
    import keras

    return keras.metrics.BinaryAccuracy(name="accuracy") if multi_label else "accuracy"


def _argmax_accuracy(multi_label: bool):
    """``accuracy`` as the argmax's hit rate, what Keras 2 made of "accuracy" with a custom multi-label loss."""
    import keras

    return keras.metrics.CategoricalAccuracy(name="accuracy")


def _binary_accuracy(multi_label: bool):
    import keras

    return keras.metrics.BinaryAccuracy(name="binary_accuracy")


def _mean_f1(multi_label: bool):
    return ensure_registered()["SampleMeanF1"]()


#: Per-epoch metrics by ``MethodSpec.metrics``, each a builder taking whether the method is multi-label.
METRICS: dict[str, Callable[[bool], Any]] = {"accuracy": _accuracy, "argmax_accuracy": _argmax_accuracy,
                                             "binary_accuracy": _binary_accuracy, "mean_f1": _mean_f1}


def _reduce_lr_on_plateau(spec: MethodSpec):
    import keras

    return keras.callbacks.ReduceLROnPlateau(monitor=spec.quality_metric, mode=spec.quality_mode, factor=0.2,
                                             patience=5, verbose=1)


def _early_stopping(spec: MethodSpec):
    import keras

    return keras.callbacks.EarlyStopping(monitor=spec.quality_metric, mode=spec.quality_mode, patience=10)


#: Extra callbacks of a method's fit by ``MethodSpec.callbacks`` (the original's settings), each a builder taking
#: the method.
CALLBACKS: dict[str, Callable[[MethodSpec], Any]] = {"reduce_lr_on_plateau": _reduce_lr_on_plateau,
                                                     "early_stopping": _early_stopping}


def method_callbacks(method: str | MethodSpec) -> list:
    """The extra Keras callbacks a method trains with (e.g. the original's ReduceLROnPlateau and EarlyStopping)."""
    spec = method if isinstance(method, MethodSpec) else get_method(method)
    return [CALLBACKS[name](spec) for name in spec.callbacks]


def _metrics(spec: MethodSpec) -> list:
    return [METRICS[name](spec.multi_label) for name in spec.metrics]


def _compile(model, spec: MethodSpec, lr: float | None) -> None:
    learning_rate = spec.lr if lr is None else float(lr)
    if not learning_rate > 0:
        raise ModelError(f"The learning rate of method {spec.name} must be > 0. Received: lr={lr!r}")
    # No XLA: on CPU its compile time dominates (one DenseNet169 step: 300 s with XLA, 133 s without) and a
    # 3-epoch SmallCNN run is 30% faster without it.
    model.compile(optimizer=OPTIMIZERS[spec.optimizer](learning_rate), loss=LOSSES[spec.loss](),
                  metrics=_metrics(spec), jit_compile=False)


def create_model(method: str | MethodSpec, num_classes: int, imgsize: int, *, weights: str = "default",
                 lr: float | None = None, seed: int | None = None, metadata_size: int = 0,
                 freeze_backbone: bool = False):
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
        metadata_size: length of a per-image metadata vector joined to the pooled features (a second input,
            ``metadata``); 0 for none. Defaults to 0.
        freeze_backbone: only the head trains; the backbone keeps its loaded weights (and its batch
            normalisation its statistics). Defaults to False.

    Returns:
        A compiled Functional ``keras.Model``; input ``image`` (imgsize, imgsize, 3) float32 RGB in [0, 1]
        (and ``metadata`` when ``metadata_size``); output (num_classes,) softmax or sigmoid. Metrics: the
        method's (``accuracy``, and ``mean_f1`` for multi-label methods).

    Raises:
        ModelError: unknown method, bad sizes, weights or learning rate, or ImageNet weights that are not cached
            and cannot be downloaded.
        MissingFileError: a weights path that does not exist.
    """
    spec = method if isinstance(method, MethodSpec) else get_method(method)
    _check_sizes(spec, num_classes, imgsize)
    source = _resolve_weights(spec, weights)
    ensure_registered()
    import keras

    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    inputs = keras.Input(shape=(imgsize, imgsize, 3), dtype="float32", name="image")
    metadata = _metadata_input(metadata_size)
    features = _backbone_features(spec, inputs, imagenet=source == "imagenet")
    outputs = _head(spec, features, num_classes, metadata)
    model = keras.Model([inputs, metadata] if metadata is not None else inputs, outputs,
                        name=re.sub(r"[^0-9a-zA-Z_]", "_", spec.name).lower())
    if isinstance(source, Path):
        load_weights_file(model, source)
    if source is None:
        _from_scratch_batch_norm(model)
    if freeze_backbone:
        head = set(head_layer_names(model))
        for layer in model.layers:
            layer.trainable = layer.name in head
    _compile(model, spec, lr)
    logger.info("Built %s: %d classes, %d px, weights=%s, %d parameters", spec.name, num_classes, imgsize,
                weights, model.count_params())
    return model


#: Batch-normalisation momentum of an ImageNet backbone trained from scratch (``weights=none``).
SCRATCH_BN_MOMENTUM = 0.9


def _from_scratch_batch_norm(model) -> None:
    """Lets the batch-normalisation statistics of a backbone trained from scratch follow its weights.

    Keras applications use momentum 0.99-0.999, right for fine-tuning ImageNet weights but far too slow for
    weights that change fast from a random start: the moving statistics lag, and the model is at chance in
    inference mode while it learns in training mode (measured: MobileNetV2 on the digits, 6 epochs, train
    accuracy 0.92, dev 0.10). SmallCNN sets its own (0.5).
    """
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.momentum > SCRATCH_BN_MOMENTUM:
            layer.momentum = SCRATCH_BN_MOMENTUM


def head_layer_names(model) -> list[str]:
    """The names of a TIML model's head layers: from its pooling on (the metadata input included)."""
    names = [layer.name for layer in model.layers]
    start = min(names.index(name) for name in HEAD_POOLINGS if name in names)
    return list(dict.fromkeys(names[start:] + (["metadata"] if "metadata" in names else [])))


def backbone_of(model):
    """The image -> feature map part of a TIML model (the layers before its head), sharing its weights."""
    import keras

    pooling = next(model.get_layer(name) for name in HEAD_POOLINGS if name in [layer.name for layer in model.layers])
    return keras.Model(model.get_layer("image").output, pooling.input, name=f"{model.name}_backbone")


def create_head(method: str | MethodSpec, feature_shape: tuple[int, ...], num_classes: int, *,
                metadata_size: int = 0, lr: float | None = None, seed: int | None = None):
    """The method's head alone, compiled: a feature map (``features``) [and metadata] -> predictions.

    Its layers are named as in :func:`create_model`, so :func:`copy_head` can move its weights into the full
    model once it has trained on cached activations.
    """
    spec = method if isinstance(method, MethodSpec) else get_method(method)
    ensure_registered()
    import keras

    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    features = keras.Input(shape=tuple(feature_shape), dtype="float32", name="features")
    metadata = _metadata_input(metadata_size)
    outputs = _head(spec, features, num_classes, metadata)
    model = keras.Model([features, metadata] if metadata is not None else features, outputs,
                        name=f"{re.sub(r'[^0-9a-zA-Z_]', '_', spec.name).lower()}_head")
    _compile(model, spec, lr)
    return model


def copy_head(source, target) -> None:
    """Copies the head's weights between a head alone (:func:`create_head`) and a whole model, either way: every
    layer of ``source`` with weights that ``target`` has under the same name."""
    names = {layer.name for layer in target.layers}
    for layer in source.layers:
        if layer.weights and layer.name in names:
            target.get_layer(layer.name).set_weights(layer.get_weights())


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
