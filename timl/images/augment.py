"""Augmentation presets: :class:`Augmentation`, the registry ``AUGMENTATIONS``, :func:`get_augmentation` and the
view functions, computed in the TensorFlow graph on cached uint8 pixels."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from timl.errors import ImageError

# Augmentation presets. Views are computed in the graph, one element at a time, on the cached uint8 pixels
# (a quarter of the bytes float32 would move); batches are converted to float32 in [0, 1] once.
# Measured on 2 busy cores at 227 px: per-element rot90/flip ops deliver ~4x what one batched
# ImageProjectiveTransformV3 call per batch does, and ~3x a per-batch gather through index maps.


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """An augmentation preset.

    Attributes:
        name: the preset's name (the ``imgaug`` cell).
        multiplier: how many views of each image an epoch holds (``augmult``); 1 for random presets.
        random: whether views are drawn at random each epoch (True) or enumerated (False).
        description: what the preset does.
        view: graph function ``(image uint8 (S, S, C), view_index int32, seed int64 (2,)) -> uint8 image``;
            enumerated presets use ``view_index`` (0 .. multiplier-1), random presets the ``seed``.
    """

    name: str
    multiplier: int
    random: bool
    description: str
    view: Callable = dataclasses.field(repr=False, compare=False)


def _identity(image, view_index, seed):
    return image


def _rotate(image, degrees):
    """Rotates a square uint8 (S, S, C) image counter-clockwise about its centre (bilinear, black corners)."""
    import tensorflow as tf

    size = tf.cast(tf.shape(image)[0], tf.float32) - 1.0
    radians = -degrees * (np.pi / 180.0)  # the transform below turns clockwise for positive angles
    cos, sin = tf.cos(radians), tf.sin(radians)
    # Maps each output pixel (x, y) back to the input pixel it comes from.
    x_offset = (size - (cos * size + sin * size)) / 2.0
    y_offset = (size - (-sin * size + cos * size)) / 2.0
    transform = tf.stack([cos, sin, x_offset, -sin, cos, y_offset, 0.0, 0.0])[None, :]
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    return tf.saturate_cast(tf.round(rotated[0]), tf.uint8)


#: For view ``mirrored * 4 + turns`` (mirror, then ``turns`` counter-clockwise quarter turns): whether the image
#: is transposed, then whether its rows and its columns are reversed. Pure index work: no interpolation.
_DIHEDRAL = np.array([[0, 0, 0], [1, 1, 0], [0, 1, 1], [1, 0, 1], [0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 1, 1]])


def _dihedral(image, view_index):
    """View ``view_index`` (0-7) of the 8 mirrors and quarter turns, as one optional transpose and two gathers
    (measured: a lighter graph, so a cheaper iterator start each epoch, than ``tf.cond`` + ``tf.image.rot90``)."""
    import tensorflow as tf

    transpose, reverse_rows, reverse_columns = tf.unstack(tf.gather(tf.constant(_DIHEDRAL), view_index))
    image = tf.cond(transpose > 0, lambda: tf.transpose(image, [1, 0, 2]), lambda: image)
    forward = tf.range(tf.shape(image)[0])
    backward = tf.reverse(forward, [0])
    image = tf.gather(image, tf.where(reverse_rows > 0, backward, forward), axis=0)
    return tf.gather(image, tf.where(reverse_columns > 0, backward, forward), axis=1)


def _flip_rotate_view(rotations: int):
    """Enumerated views: ``view_index = mirrored * rotations + r``, rotation r by ``r * 360 / rotations`` degrees
    counter-clockwise (view 0 is the original, view ``rotations`` its mirror). Multiples of 90 degrees are exact;
    other angles are bilinear with black corners."""
    step = 360.0 / rotations
    quarter_steps = rotations // 4 if rotations % 4 == 0 else 0

    def view(image, view_index, seed):
        import tensorflow as tf

        shape = image.shape
        mirrored = view_index // rotations
        rotation = view_index % rotations
        if rotations in (1, 4):
            return tf.ensure_shape(_dihedral(image, mirrored * 4 + rotation), shape)
        exact = tf.equal(rotation % quarter_steps, 0) if quarter_steps else tf.equal(rotation, 0)
        turns = rotation // quarter_steps if quarter_steps else 0 * rotation
        rotated = tf.cond(exact, lambda: _dihedral(image, mirrored * 4 + turns),
                          lambda: _rotate(_dihedral(image, mirrored * 4), tf.cast(rotation, tf.float32) * step))
        return tf.ensure_shape(rotated, shape)

    return view


def _random_view(zoom: float, brightness: float, contrast: float):
    """Random views: a random mirror and 0/90/180/270 rotation (so every flip and right-angle rotation), a crop
    of ``1 - zoom`` .. 1 of the side at a random place resized back, then brightness and contrast jitter."""

    def view(image, view_index, seed):
        import tensorflow as tf

        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)
        shape = image.shape
        image = _dihedral(image, tf.random.stateless_uniform([], seeds[0], 0, 8, dtype=tf.int32))
        if zoom <= 0 and brightness <= 0 and contrast <= 0:
            return tf.ensure_shape(image, shape)
        image = tf.cast(image, tf.float32) / 255.0
        if zoom > 0:
            side = tf.shape(image)[0]
            scale = tf.random.stateless_uniform([], seeds[2], 1.0 - zoom, 1.0)
            crop = tf.maximum(1, tf.cast(tf.round(scale * tf.cast(side, tf.float32)), tf.int32))
            image = tf.image.stateless_random_crop(image, tf.stack([crop, crop, tf.shape(image)[2]]), seeds[3])
            image = tf.image.resize(image, tf.stack([side, side]), method="bilinear")
        if brightness > 0:
            image = tf.image.stateless_random_brightness(image, brightness, seeds[4])
        if contrast > 0:
            image = tf.image.stateless_random_contrast(image, 1.0 - contrast, 1.0 + contrast, seeds[5])
        return tf.ensure_shape(tf.saturate_cast(tf.round(image * 255.0), tf.uint8), shape)

    return view


#: Augmentation presets: name -> Augmentation. Enumerated presets show every view of every image each epoch,
#: as the original TIML did; random presets draw one fresh view per image and epoch.
AUGMENTATIONS: dict[str, Augmentation] = {
    preset.name: preset
    for preset in (
        Augmentation("none", 1, False, "No augmentation: each image once per epoch.", _identity),
        Augmentation("hflip", 2, False, "Each image and its horizontal mirror (x2).", _flip_rotate_view(1)),
        Augmentation("hflip_rot4", 8, False,
                     "Each image and its mirror, each rotated by 0, 90, 180 and 270 degrees (x8); no black corners.",
                     _flip_rotate_view(4)),
        Augmentation("hflip_rot24", 48, False,
                     "Each image and its mirror, each rotated in 15-degree steps (x48, bilinear); black corners "
                     "where the rotation is not a multiple of 90 degrees.", _flip_rotate_view(24)),
        Augmentation("random", 1, True,
                     "One fresh random view per image and epoch: a random mirror and 0/90/180/270-degree rotation "
                     "(any flip or right-angle turn), a zoom (a crop of 90-100% of the side at a random place, resized back), brightness +-0.1 "
                     "and contrast x0.9-1.1.", _random_view(zoom=0.1, brightness=0.1, contrast=0.1)),
        Augmentation("random_flip", 1, True,
                     "One fresh random view per image and epoch: a random mirror and 0/90/180/270-degree rotation "
                     "only (pixels are moved, never changed).", _random_view(0.0, 0.0, 0.0)),
    )
}


def get_augmentation(name: str) -> Augmentation:
    """Returns the augmentation preset ``name``.

    Raises:
        ImageError: an unknown name (the message lists the valid ones).
    """
    preset = AUGMENTATIONS.get(name) if isinstance(name, str) else None
    if preset is None:
        raise ImageError(f"Unknown augmentation preset. Expected one of: {', '.join(AUGMENTATIONS)}. "
                         f"Received: imgaug={name!r}")
    return preset
