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

The package's modules: :mod:`timl.models.registry` (the methods and the backbones they name),
:mod:`timl.models.layers` (the custom Keras objects), :mod:`timl.models.builder` (building, compiling and
inspecting a model) and :mod:`timl.models.weights` (resolving and loading weights files). Import the names from
``timl.models``.
"""

from __future__ import annotations

from typing import Any

from timl.models.builder import (
    CALLBACKS,
    HEAD_POOLINGS,
    LOSSES,
    METRICS,
    OPTIMIZERS,
    POOLINGS,
    backbone_of,
    copy_head,
    create_head,
    create_model,
    describe_model,
    head_layer_names,
    last_conv_layer_name,
    method_callbacks,
)
from timl.models.layers import PREPROCESSING_MODES, custom_objects, ensure_registered
from timl.models.registry import (
    BACKBONES,
    METHODS,
    WEIGHTS_CHOICES,
    WEIGHTS_SUFFIXES,
    Backbone,
    MethodSpec,
    get_method,
    list_methods,
)
from timl.models.weights import load_weights_file

__all__ = [
    "BACKBONES",
    "CALLBACKS",
    "HEAD_POOLINGS",
    "LOSSES",
    "METRICS",
    "METHODS",
    "OPTIMIZERS",
    "POOLINGS",
    "PREPROCESSING_MODES",
    "WEIGHTS_CHOICES",
    "WEIGHTS_SUFFIXES",
    "Backbone",
    "ImagenetPreprocessing",
    "MeanF1",
    "MethodSpec",
    "SampleMeanF1",
    "backbone_of",
    "copy_head",
    "create_head",
    "create_model",
    "custom_objects",
    "describe_model",
    "ensure_registered",
    "f1_bce_loss",
    "f1_loss",
    "get_method",
    "head_layer_names",
    "last_conv_layer_name",
    "list_methods",
    "load_weights_file",
    "method_callbacks",
]

#: The custom Keras objects given lazily by :func:`__getattr__` (defined on first use, they need Keras).
_LAZY_CUSTOM_OBJECTS = ("ImagenetPreprocessing", "SampleMeanF1", "f1_bce_loss", "MeanF1", "f1_loss")


def __getattr__(name: str) -> Any:
    """Gives ``timl.models.ImagenetPreprocessing`` (and the other custom objects) lazily."""
    if name in _LAZY_CUSTOM_OBJECTS:
        return ensure_registered()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
