"""Test-time augmentation: the registry ``TTA_PRESETS``, :func:`get_tta` and :func:`predict_views`.

A preset is a fixed list of views of an image (the original, its mirror, its quarter turns): the same exact
index moves as the enumerated ``imgaug`` presets (:data:`timl.images.augment._DIHEDRAL`), so a view at prediction
time is pixel for pixel a view the model may have trained on. Every view of a batch of images goes through ONE
model call (the views stacked along the batch axis); the probabilities are averaged over the views and their
standard deviation reported as the views' spread.

Every entry point reads this registry: ``predict --tta``, the pyfunc param ``tta``, the server setting ``TTA`` and
the table column ``tta``. ``none`` (:data:`NO_TTA`) means one view, the image itself.

Importing this module imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from timl.errors import ConfigError
from timl.images.augment import _DIHEDRAL

#: The value that asks for no test-time augmentation.
NO_TTA = "none"


@dataclasses.dataclass(frozen=True)
class TtaPreset:
    """A test-time augmentation preset.

    Attributes:
        name: the preset's name (``--tta``, the ``tta`` param, cell and setting).
        views: the dihedral view of each view, as the enumerated ``imgaug`` presets number them
            (``mirrored * 4 + quarter turns counter-clockwise``; 0 is the image itself).
        description: what the views are.
    """

    name: str
    views: tuple[int, ...]
    description: str

    @property
    def num_views(self) -> int:
        return len(self.views)


#: Test-time augmentation presets: name -> TtaPreset. View 0 of each is the image itself.
TTA_PRESETS: dict[str, TtaPreset] = {
    preset.name: preset
    for preset in (
        TtaPreset("hflip", (0, 4), "The image and its horizontal mirror (2 views)."),
        TtaPreset("vflip", (0, 6), "The image and its vertical mirror (2 views)."),
        TtaPreset("rot4", (0, 1, 2, 3), "The image turned by 0, 90, 180 and 270 degrees (4 views)."),
        TtaPreset("hflip_rot4", tuple(range(8)),
                  "The image and its mirror, each turned by 0, 90, 180 and 270 degrees (8 views)."),
    )
}

#: Every accepted value: ``none`` and the presets.
TTA_CHOICES = (NO_TTA, *TTA_PRESETS)


def get_tta(name: str | None, *, field: str = "tta", error: Callable[[str], Exception] = ConfigError
            ) -> TtaPreset | None:
    """The preset ``name``; None for ``none`` or empty (no test-time augmentation).

    Args:
        name: a preset name, ``none`` or empty.
        field: what the value was given as, for the message (``tta``, ``--tta``, ``TTA``). Defaults to "tta".
        error: the exception class to raise. Defaults to ConfigError.

    Raises:
        ConfigError (or ``error``): an unknown name; the message lists the accepted ones.
    """
    text = "" if name is None else str(name).strip()
    if text in ("", NO_TTA):
        return None
    preset = TTA_PRESETS.get(text)
    if preset is None:
        raise error(f"Unknown test-time augmentation preset. Expected one of: {', '.join(TTA_CHOICES)}. "
                    f"Received: {field}={name!r}")
    return preset


def view(images: np.ndarray, dihedral: int) -> np.ndarray:
    """One dihedral view of a batch (N, S, S, C): an optional transpose, then rows and columns reversed."""
    transpose, reverse_rows, reverse_columns = (bool(flag) for flag in _DIHEDRAL[dihedral])
    if transpose:
        images = images.transpose(0, 2, 1, 3)
    if reverse_rows:
        images = images[:, ::-1]
    if reverse_columns:
        images = images[:, :, ::-1]
    return images


def stack_views(images: np.ndarray, preset: TtaPreset) -> np.ndarray:
    """Every view of a batch stacked along the batch axis: (V * N, S, S, C), view-major (view v of image i at
    ``v * N + i``)."""
    return np.concatenate([view(images, dihedral) for dihedral in preset.views])


@dataclasses.dataclass
class ViewPredictions:
    """Predictions averaged over views: ``mean`` (N, C), the probabilities; ``std`` (N, C), their spread."""

    mean: np.ndarray
    std: np.ndarray


def predict_views(model, images: np.ndarray, preset: TtaPreset, batch_size: int = 32, progress=None,
                  metadata: np.ndarray | None = None) -> ViewPredictions:
    """Predicts every view of each batch of images in one model call and averages over the views.

    Args:
        model: a Keras model (or anything with ``predict_on_batch`` and ``output_shape``).
        images: (N, S, S, 3) float32 in [0, 1] or uint8 (scaled once per batch).
        preset: the views.
        batch_size: images per model call (the call holds ``batch_size * num_views`` arrays). Defaults to 32.
        progress: optional ``progress(done, total)`` called after each batch, in images.
        metadata: (N, K) per-image numbers of a model with a metadata input (repeated for each view).

    Returns:
        The mean and the standard deviation over the views of each image's outputs.
    """
    means, spreads = [], []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size])
        stacked = stack_views(batch, preset)  # uint8 views move a quarter of the bytes float32 would
        if stacked.dtype == np.uint8:
            stacked = stacked.astype(np.float32) / 255.0
        inputs = stacked if metadata is None else [
            stacked, np.tile(np.asarray(metadata[start:start + batch_size], np.float32), (preset.num_views, 1))]
        outputs = np.asarray(model.predict_on_batch(inputs), np.float64)
        outputs = outputs.reshape((preset.num_views, len(batch)) + outputs.shape[1:])
        means.append(outputs.mean(axis=0))
        spreads.append(outputs.std(axis=0))
        if progress is not None:
            progress(min(start + batch_size, len(images)), len(images))
    if not means:
        empty = np.zeros((0,) + tuple(model.output_shape[1:]), np.float64)
        return ViewPredictions(empty, empty.copy())
    return ViewPredictions(np.concatenate(means), np.concatenate(spreads))


#: The prefix of the spread columns (``tta_std_<class>``).
TTA_STD_PREFIX = "tta_std_"


def std_columns(class_names) -> list[str]:
    """The names of the spread columns: ``tta_std_<class>`` per class."""
    return [f"{TTA_STD_PREFIX}{name}" for name in class_names]
