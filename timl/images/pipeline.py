"""The tf.data pipeline: :func:`make_dataset` over cached images, with augmentation views in the graph."""

from __future__ import annotations

import numpy as np

from timl.errors import ImageError
from timl.images.augment import get_augmentation


def _check_array(images: np.ndarray, labels, sample_weights) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ImageError("images must be a uint8 array (N, S, S, C), as load_images returns. Received: "
                         f"images={type(images).__name__} {getattr(images, 'dtype', '')} {getattr(images, 'shape', '')}")
    for name, values in (("labels", labels), ("sample_weights", sample_weights)):
        if values is not None and len(values) != len(images):
            raise ImageError(f"{name} must have one row per image ({len(images)}). Received: len({name})={len(values)}")


#: The byte alignment with which TensorFlow takes a numpy array by reference (``load_images`` allocates with it).
ALIGNMENT = 64


def _by_reference(images: np.ndarray) -> bool:
    """Whether TensorFlow can take ``images`` by reference (64-byte aligned, C-contiguous): ``load_images`` and the
    cache files allocate so."""
    return images.ctypes.data % ALIGNMENT == 0 and images.flags.c_contiguous


def _batch_fetcher(images: np.ndarray):
    """A graph function indices (B,) -> uint8 images (B, S, S, C), gathered from the aligned numpy array of cached
    pixels (in memory or mapped).

    The pixels never become a tensor of their own: a tensor would be a second copy of the whole set, and tf.data's
    graph rewrite serialises captured tensors (a third, passing one): the in-memory cache peaked at about 4.5
    times its pixels. The array is handed to TensorFlow by reference, once per batch of indices (stateful: a
    stateless call without inputs would be constant-folded, a copy), and the batch's images gathered from it.
    """
    import tensorflow as tf

    def fetch(indices):
        whole = tf.numpy_function(lambda: images, [], tf.uint8, stateful=True)  # by reference: no copy
        return tf.gather(tf.ensure_shape(whole, images.shape), indices)

    return fetch


def _image_reader(images: np.ndarray):
    """A graph function index -> uint8 image, read image by image from an array TensorFlow cannot take by
    reference (unaligned: a caller's own)."""
    import tensorflow as tf

    def fetch_one(index):
        image = tf.numpy_function(lambda i: np.asarray(images[int(i)]), [index], tf.uint8, stateful=False)
        return tf.ensure_shape(image, images.shape[1:])

    return fetch_one


def _fetched_by_batch(pairs, images: np.ndarray, batch_size: int, multiplier: int, view, per_element: bool,
                      parallel: dict):
    """Batches of viewed uint8 images from (index, seed) elements, with one by-reference fetch per batch.

    The batch's images are gathered at once, then (unless the preset is "none") unbatched for the per-element views
    and batched again: the same elements in the same batches as one image fetched per element (a Python call per
    view gave fewer views/s: bench/image_cache.py), and views stay per element (cheaper than batched ones).
    Without views (``per_element`` False), ``view`` only gathers the extras, for the whole batch at once.
    """
    fetch = _batch_fetcher(images)
    fetched = pairs.batch(batch_size).map(lambda index, seed_pair: (fetch(index // multiplier), index, seed_pair),
                                          **parallel)
    if not per_element:
        return fetched.map(view, **parallel)
    return fetched.unbatch().map(view, **parallel).batch(batch_size)


def epoch_counter():
    """A variable holding the epoch being trained, for :func:`make_dataset` and :func:`epoch_order` (training sets
    it at the start of every epoch): with it, an epoch's order and random views depend only on the seed and the
    epoch, so a row resumed after a kill sees exactly the batches it would have seen without the kill."""
    import tensorflow as tf

    return tf.Variable(0, dtype=tf.int64, trainable=False, name="timl_epoch")


def epoch_order(count: int, seed: int, epoch):
    """The indices 0..count-1 in an order that is a function of ``seed`` and the current value of ``epoch`` (an
    :func:`epoch_counter`) only: drawn anew each epoch, the same for that epoch in any process."""
    import tensorflow as tf

    def order(_):
        return tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)]))

    return tf.data.Dataset.from_tensors(0).map(order).unbatch()


def make_dataset(images: np.ndarray, labels: np.ndarray | None, *, batch_size: int, augmentation: str = "none",
                 shuffle: bool = False, seed: int = 0, sample_weights: np.ndarray | None = None, epoch=None):
    """A tf.data pipeline over cached images, with the views of an augmentation preset computed in the graph.

    For an enumerated preset with multiplier M, each epoch holds every view of every image: N * M elements,
    image i giving elements i*M .. i*M+M-1 (in the preset's view order). Random presets give one fresh view per
    image and epoch. Dev and test sets take ``augmentation="none"`` and ``shuffle=False``.

    Args:
        images: uint8 array (N, S, S, C), e.g. from :func:`load_images` or :func:`cache_images`.
        labels: (N, classes) array, or None to yield images only.
        batch_size: elements per batch.
        augmentation: a name of ``AUGMENTATIONS`` (default "none").
        shuffle: shuffle all N * M elements, anew each epoch (default False: order preserved).
        seed: seed of the shuffle and of random presets.
        sample_weights: optional (N,) weight per image, yielded as the third element.
        epoch: an :func:`epoch_counter`: the shuffle and the random views are then a function of the seed and the
            epoch (training resumes exactly); without it they follow tf.data's own per-iteration state.

    Returns:
        A ``tf.data.Dataset`` of batches ``(float32 images in [0, 1], labels[, weights])``, or of images only.

    Raises:
        ImageError: an unknown preset, arrays of the wrong type or length, or a batch size below 1.
    """
    import tensorflow as tf

    preset = get_augmentation(augmentation)
    _check_array(images, labels, sample_weights)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ImageError(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")
    multiplier = preset.multiplier
    extras = [tf.convert_to_tensor(np.asarray(values, dtype=np.float32))
              for values in (labels, sample_weights) if values is not None]

    def view(image, index, seed_pair):
        image_index = index // multiplier
        if preset.name != "none":
            image = preset.view(image, tf.cast(index % multiplier, tf.int32), seed_pair)
        return image if not extras else (image, *(tf.gather(values, image_index) for values in extras))

    def to_float(batch, *rest):
        batch = tf.cast(batch, tf.float32) / 255.0
        return batch if not rest else (batch, *rest)

    count = len(images) * multiplier
    if epoch is not None:  # order and views keyed by (seed, epoch)
        indices = epoch_order(count, seed, epoch) if shuffle else tf.data.Dataset.range(count)
        mixed = tf.constant(seed, tf.int64) * 1_000_003

        def view_seed(index):
            return tf.random.stateless_uniform([2], seed=tf.stack([mixed + tf.cast(epoch, tf.int64), index]),
                                               minval=None, maxval=None, dtype=tf.int64)

        seeds = tf.data.Dataset.range(count).map(view_seed)
    else:
        indices = tf.data.Dataset.range(count)
        if shuffle:
            indices = indices.shuffle(max(1, count), seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    pairs = tf.data.Dataset.zip((indices, seeds))
    parallel = {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": True}
    if _by_reference(images):
        dataset = _fetched_by_batch(pairs, images, int(batch_size), multiplier, view, preset.name != "none",
                                    parallel)
    else:
        reader = _image_reader(images)
        dataset = pairs.map(lambda index, seed_pair: view(reader(index // multiplier), index, seed_pair), **parallel)
        dataset = dataset.batch(int(batch_size))
    dataset = dataset.map(to_float, **parallel)
    return dataset.prefetch(tf.data.AUTOTUNE)
