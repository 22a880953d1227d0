"""Images: one defensive decode function, resizing, colour spaces, and the model's preprocessing.

Every entry point (training, prediction, explanation, serving) turns files or uploaded bytes into model input
through :func:`decode_image` and :class:`Preprocessing`, so a model sees the same pixels everywhere.
Pixel values enter the model as float32 in [0, 1], three channels.

Modules: ``decode`` (:func:`decode_image`: formats, EXIF orientation, modes, the pixel cap), ``preprocessing``
(:class:`Preprocessing`, resize filters and colour spaces), ``cache`` (decoding a split once into uint8 pixels:
:func:`load_images`, :func:`cache_images`), ``shared_cache`` (one file of them per image set and
preprocessing that the processes of a machine map, ``TIML_IMAGE_CACHE``), ``augment`` (the augmentation presets and
their views) and ``pipeline`` (the tf.data pipeline, :func:`make_dataset`). Every public name is re-exported here; importing this
package imports no TensorFlow.
"""

from timl.images.augment import AUGMENTATIONS, Augmentation, get_augmentation
from timl.images.cache import DEFAULT_CACHE_BUDGET, cache_images, load_images
from timl.images.decode import (DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, SERVING_MAX_PIXELS, SUPPORTED_FORMATS,
                                 decode_image)
from timl.images.pipeline import epoch_counter, epoch_order, make_dataset
from timl.images.preprocessing import COLOR_CONVERSIONS, COLOR_SPACES, RESIZE_FILTERS, Preprocessing
from timl.images.shared_cache import DEFAULT_IMAGE_CACHE, IMAGE_CACHE_VARIABLE, shared_cache_folder

__all__ = [
    "AUGMENTATIONS",
    "Augmentation",
    "COLOR_CONVERSIONS",
    "COLOR_SPACES",
    "DEFAULT_CACHE_BUDGET",
    "DEFAULT_IMAGE_CACHE",
    "IMAGE_CACHE_VARIABLE",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "Preprocessing",
    "RESIZE_FILTERS",
    "SERVING_MAX_PIXELS",
    "SUPPORTED_FORMATS",
    "cache_images",
    "decode_image",
    "get_augmentation",
    "load_images",
    "epoch_counter",
    "epoch_order",
    "make_dataset",
    "shared_cache_folder",
]
