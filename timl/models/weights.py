"""Weights files: resolving a method's ``weights`` argument, and loading a saved model's or a weights file's
weights into a built model.
"""

from __future__ import annotations

import logging
from pathlib import Path

from timl.errors import MissingFileError, ModelError
from timl.models.layers import ensure_registered
from timl.models.registry import BACKBONES, WEIGHTS_CHOICES, WEIGHTS_SUFFIXES, MethodSpec

logger = logging.getLogger(__name__)


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

