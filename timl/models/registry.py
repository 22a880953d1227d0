"""The registry of TIML training methods: :class:`MethodSpec` presets by name, and the backbones they name.

Adding a method is one entry in :data:`METHODS`; :func:`get_method` resolves a name or alias. Importing this
module is cheap (no Keras).
"""

from __future__ import annotations

import dataclasses
import difflib

from timl.errors import ModelError
from timl.metric_names import DEV, epoch_series

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
        loss: a key of ``LOSSES``: ``"categorical_crossentropy"``, ``"binary_crossentropy"`` or ``"f1_bce"``
            (the original's (1 - F1) x binary cross-entropy).
        optimizer: a key of ``OPTIMIZERS``: ``"sgd_nesterov_decay"`` (the original's SGD), ``"nadam"`` or
            ``"adam"``.
        lr: learning rate of the optimizer, unless a table row overrides it.
        quality_metric: the Keras history key whose best value picks the best epoch.
        quality_mode: ``"max"`` (or ``"min"``) for ``quality_metric``.
        default_weights: ``"imagenet"`` for pretrained backbones, ``"none"`` for training from scratch.
        default_imgsize: the image side the backbone was designed for.
        aliases: other names that resolve to this method.
        pooling: how the backbone's feature map becomes a vector: ``"flatten"`` (the original TIML's heads) or
            ``"avg"`` (global average pooling).
        metrics: keys of ``METRICS``, the per-epoch metrics besides the loss.
        callbacks: keys of ``CALLBACKS``, extra Keras callbacks of the fit (the original's learning-rate
            reduction and early stopping).
        differs: what differs from the original TIML's recipe and why (empty: nothing, or not an original
            method).
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
    quality_metric: str = epoch_series("accuracy", DEV)
    quality_mode: str = "max"
    default_weights: str = "imagenet"
    default_imgsize: int = 224
    aliases: tuple[str, ...] = ()
    pooling: str = "avg"
    metrics: tuple[str, ...] = ("accuracy",)
    callbacks: tuple[str, ...] = ()
    differs: str = ""


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



#: What the original methods' Keras 3 recipes cannot reproduce exactly (the README's methods table explains why).
_SGD_DIFFERS = "SGD decay as a schedule (same learning rates)"
_NADAM_DIFFERS = "Nadam momentum schedule decay 1.0, not 0.9"


def _original(name: str, backbone: str, head: tuple[int, ...], *, dropout: float = 0.5, multi_label: bool,
              loss: str, metrics: tuple[str, ...], callbacks: tuple[str, ...] = (), aliases: tuple[str, ...] = (),
              ) -> MethodSpec:
    """An original TIML method: a flattened ImageNet backbone, dense ReLU layers each followed by dropout, softmax
    with the original's SGD, or sigmoid with its Nadam."""
    sizes = " + ".join(str(units) for units in head)
    output = "sigmoid" if multi_label else "softmax"
    loss_text = {"f1_bce": "(1 - F1) x BCE", "binary_crossentropy": "BCE",
                 "categorical_crossentropy": "cross-entropy"}[loss]
    optimizer, text = ("nadam", "Nadam 1e-5") if multi_label else ("sgd_nesterov_decay", "SGD Nesterov 1e-5 decay 1e-4")
    return MethodSpec(name=name, backbone=backbone, head=head, dropout=dropout, multi_label=multi_label, loss=loss,
                      optimizer=optimizer, lr=1e-5, pooling="flatten", metrics=metrics, callbacks=callbacks,
                      quality_metric=epoch_series("mean_f1" if multi_label else "accuracy", DEV), aliases=aliases,
                      description=f"ImageNet {BACKBONES[backbone].application}, flatten, dense {sizes}, dropout "
                                  f"{dropout:g}, {output}, {loss_text}, {text}",
                      differs=_NADAM_DIFFERS if multi_label else _SGD_DIFFERS)


def _vgg16_ml(name: str, head: tuple[int, ...], dropout: float = 0.5) -> MethodSpec:
    """The original's VGG16 multi-label methods: (1 - F1) x BCE, and learning-rate reduction and early stopping
    on the dev mean F1. Its ``accuracy`` was Keras 2's resolution of "accuracy" for a custom loss: the argmax."""
    return _original(name, "vgg16", head, dropout=dropout, multi_label=True, loss="f1_bce",
                     metrics=("argmax_accuracy", "binary_accuracy", "mean_f1"),
                     callbacks=("reduce_lr_on_plateau", "early_stopping"))


def _modern(name: str, backbone: str, imgsize: int = 224) -> MethodSpec:
    return MethodSpec(name=name, description=f"ImageNet {name}, global average pooling, softmax, Adam 1e-4",
                      backbone=backbone, optimizer="adam", lr=1e-4, default_imgsize=imgsize)


_METHOD_LIST = (
    _original("VGG16", "vgg16", (2048, 2048), multi_label=False, loss="categorical_crossentropy",
              metrics=("accuracy",), aliases=("VGG16flat",)),
    _vgg16_ml("VGG16-fc2k-ml", (2048, 2048)),
    _vgg16_ml("VGG16-fc4k-ml", (4096, 4096)),
    _vgg16_ml("VGG16-fc8k-ml", (8192, 8192)),
    _vgg16_ml("VGG16-fc2k-do75-ml", (2048, 2048), dropout=0.75),
    _vgg16_ml("VGG16-fc4k-do75-ml", (4096, 4096), dropout=0.75),
    _vgg16_ml("VGG16-1Xfc2k-do75-ml", (2048,), dropout=0.75),
    _vgg16_ml("VGG16-3Xfc4k-ml", (4096, 4096, 4096)),
    _vgg16_ml("VGG16-fc4k-ml-lossf1", (4096, 4096)),
    _original("RESNET50", "resnet50", (2048, 2048), multi_label=False, loss="categorical_crossentropy",
              metrics=("accuracy",)),
    _original("RESNET50-fc4k-ml", "resnet50", (4096, 4096), multi_label=True, loss="binary_crossentropy",
              metrics=("accuracy", "mean_f1")),
    _original("DenseNet169-fc2k-ml", "densenet169", (2048, 2048), multi_label=True, loss="binary_crossentropy",
              metrics=("accuracy", "mean_f1")),
    _original("DenseNet169-fc4k-ml", "densenet169", (4096, 4096), multi_label=True, loss="binary_crossentropy",
              metrics=("accuracy", "mean_f1")),
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
