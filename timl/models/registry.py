"""The registry of TIML training methods: :class:`MethodSpec` presets by name, and the backbones they name.

Adding a method is one entry in :data:`METHODS`; :func:`get_method` resolves a name or alias. Importing this
module is cheap (no Keras).
"""

from __future__ import annotations

import dataclasses
import difflib

from timl.errors import ModelError

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
