"""Images: one defensive decode function, resizing, colour spaces, and the model's preprocessing.

Every entry point (training, prediction, explanation, serving) turns files or uploaded bytes into model input
through :func:`decode_image` and :class:`Preprocessing`, so a model sees the same pixels everywhere.
Pixel values enter the model as float32 in [0, 1], three channels.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import functools
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from timl.errors import ImageError

logger = logging.getLogger(__name__)

#: The file suffixes an image may have (any case); ``image_name`` in a dataset has none of them.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

#: The formats :func:`decode_image` accepts, as Pillow names them.
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "MPO")

#: Default cap on decoded pixels (about 40 megapixels), below Pillow's own bomb limit.
DEFAULT_MAX_PIXELS = 40_000_000

RESIZE_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}



@functools.lru_cache(maxsize=1)
def _lab_transform():
    """The sRGB -> CIE L*a*b* transform (PIL cannot convert RGB to LAB by itself)."""
    srgb, lab = ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB")
    # NOCACHE: littlecms transforms are thread-safe only without their one-pixel cache (load_images uses threads).
    return ImageCms.buildTransform(srgb, lab, "RGB", "LAB", flags=ImageCms.Flags.NOCACHE)


def _convert_lab(image: Image.Image) -> np.ndarray:
    """L* scaled to 0..255; a* and b* offset by 128 (neutral grey at 128), as 8-bit LAB usually is (OpenCV).

    PIL stores a* and b* as signed bytes read back unsigned (-1 -> 255), which would put a jump in the middle
    of the colour axes; the offset makes them continuous.
    """
    array = np.asarray(ImageCms.applyTransform(image, _lab_transform()), dtype=np.uint8).copy()
    array[:, :, 1:] = (array[:, :, 1:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    return array


def _convert_mode(mode: str):
    def convert(image: Image.Image) -> np.ndarray:
        return np.asarray(image if mode == "RGB" else image.convert(mode), dtype=np.uint8)

    return convert


#: Colour conversions from 8-bit RGB, by PIL mode name: function(PIL RGB image) -> uint8 array (H, W[, C]).
COLOR_CONVERSIONS = {
    "RGB": _convert_mode("RGB"),
    "HSV": _convert_mode("HSV"),
    "YCbCr": _convert_mode("YCbCr"),
    "LAB": _convert_lab,
    "L": _convert_mode("L"),
}

#: Colour spaces a model may be trained in (PIL modes). One-channel modes are repeated to three channels.
COLOR_SPACES = tuple(COLOR_CONVERSIONS)


def _check_choice(value: str, choices, field: str) -> str:
    if value not in choices:
        raise ImageError(f"Unknown {field}. Expected one of: {', '.join(choices)}. Received: {field}={value!r}")
    return value


def _to_rgb(image: Image.Image) -> Image.Image:
    """Converts grey, 16-bit, float, palette, alpha and CMYK images to 8-bit RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            array = array / 65535.0
        else:
            low, high = float(np.min(array)), float(np.max(array))
            array = (array - low) / (high - low) if high > low else np.zeros_like(array)
        image = Image.fromarray(np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def decode_image(source: Any, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str | None = None) -> Image.Image:
    """Decodes an image file defensively into an 8-bit RGB PIL image.

    Args:
        source: a path, bytes, a binary file object, or a PIL image.
        max_pixels: refuse images with more pixels than this (decompression bombs); ``None`` keeps only
            Pillow's own limit. Defaults to ``DEFAULT_MAX_PIXELS``.
        name: how to call the image in error messages (defaults to the path, or "image").

    Returns:
        The image in RGB, with its EXIF orientation applied.

    Raises:
        ImageError: the bytes are not a supported image, are truncated, or the image is too large.
    """
    if isinstance(source, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(source))
    label = name or (str(source) if isinstance(source, (str, Path)) else "image")
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(f"Cannot decode {label}: the file is empty.")
        source = io.BytesIO(bytes(source))
    try:
        with Image.open(source) as image:
            if image.format not in SUPPORTED_FORMATS:
                raise ImageError(
                    f"Cannot decode {label}: unsupported image format. Expected one of: "
                    f"{', '.join(SUPPORTED_FORMATS)}. Received: format={image.format!r}"
                )
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageError(
                    f"Cannot decode {label}: {width}x{height} pixels exceeds the limit of {max_pixels} pixels."
                )
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except FileNotFoundError as error:
        raise ImageError(f"Cannot decode {label}: the file does not exist.") from error
    except Image.DecompressionBombError as error:
        raise ImageError(f"Cannot decode {label}: the image is too large ({error}).") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"Cannot decode {label}: not a readable image ({error}).") from error


# Truncated files are refused rather than silently padded.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How an image becomes model input; stored with every model.

    Attributes:
        imgsize: side of the square model input, in pixels.
        resizefilter: one of ``RESIZE_FILTERS`` (default "bilinear").
        colorspace: one of ``COLOR_SPACES`` (default "RGB").
    """

    imgsize: int
    resizefilter: str = "bilinear"
    colorspace: str = "RGB"

    def __post_init__(self):
        if not isinstance(self.imgsize, int) or self.imgsize < 8:
            raise ImageError(f"imgsize must be an integer of at least 8. Received: imgsize={self.imgsize!r}")
        _check_choice(self.resizefilter, tuple(RESIZE_FILTERS), "resizefilter")
        _check_choice(self.colorspace, COLOR_SPACES, "colorspace")

    def resize(self, image: Image.Image) -> np.ndarray:
        """Resizes a decoded RGB image and converts its colour space: uint8 array (imgsize, imgsize, 3)."""
        size = (self.imgsize, self.imgsize)
        if image.mode != "RGB":
            image = _to_rgb(image)
        resized = image.resize(size, RESIZE_FILTERS[self.resizefilter]) if image.size != size else image
        array = COLOR_CONVERSIONS[self.colorspace](resized)
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        return array

    def __call__(self, source: Any, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Decodes and preprocesses one image: float32 array (imgsize, imgsize, 3) in [0, 1]."""
        return self.resize(decode_image(source, max_pixels=max_pixels)).astype(np.float32) / 255.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocessing":
        return cls(int(values["imgsize"]), str(values.get("resizefilter", "bilinear")),
                   str(values.get("colorspace", "RGB")))


# ---------------------------------------------------------------------------------------------------------------
# Loading and caching: each image is decoded and resized once per run.

#: Above this many bytes of cached pixels, :func:`cache_images` keeps them on disk (a memory-mapped file).
DEFAULT_CACHE_BUDGET = 2 * 1024**3


def _load_one(path: str, preprocessing: Preprocessing) -> np.ndarray:
    return preprocessing.resize(decode_image(path, name=str(path)))


def _fill(out: np.ndarray, paths: list[str], preprocessing: Preprocessing, num_workers: int | None) -> np.ndarray:
    """Decodes and resizes every path into ``out`` in a thread pool (PIL releases the GIL while it works)."""
    failures: list[str] = []

    def work(index: int) -> None:
        try:
            out[index] = _load_one(paths[index], preprocessing)
        except ImageError as error:
            failures.append(f"{paths[index]}: {error}")

    workers = num_workers or min(32, (os.cpu_count() or 1) + 2)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(work, range(len(paths))))
    if failures:
        shown = "\n".join(sorted(failures)[:50])
        more = f"\n... and {len(failures) - 50} more" if len(failures) > 50 else ""
        raise ImageError(f"{len(failures)} of {len(paths)} image(s) could not be loaded:\n{shown}{more}")
    return out


def load_images(paths: list[str], preprocessing: Preprocessing, *, num_workers: int | None = None) -> np.ndarray:
    """Decodes and resizes images once, in parallel.

    Args:
        paths: image files.
        preprocessing: size, resize filter and colour space.
        num_workers: threads (default: number of CPUs + 2, at most 32).

    Returns:
        uint8 array (N, imgsize, imgsize, 3), in the order of ``paths``.

    Raises:
        ImageError: naming every file that could not be decoded (all at once).
    """
    size = preprocessing.imgsize
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    return _fill(out, list(paths), preprocessing, num_workers)


def _remove_folder(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def cache_images(paths: list[str], preprocessing: Preprocessing, cache_dir: str | Path | None = None, *,
                 memory_budget: int = DEFAULT_CACHE_BUDGET, num_workers: int | None = None) -> np.ndarray:
    """Like :func:`load_images`, but keeps large sets in a memory-mapped file instead of memory.

    Args:
        paths: image files.
        preprocessing: size, resize filter and colour space.
        cache_dir: where the temporary folder of the memory-mapped file goes (default: the system temp folder).
            The folder is removed when the process exits.
        memory_budget: bytes of pixels kept in memory; more goes to disk (default 2 GiB).
        num_workers: threads (see :func:`load_images`).

    Returns:
        uint8 array (N, imgsize, imgsize, 3): an ``np.ndarray``, or an ``np.memmap`` over the budget.
    """
    size = preprocessing.imgsize
    shape = (len(paths), size, size, 3)
    if int(np.prod(shape)) <= memory_budget:
        return load_images(paths, preprocessing, num_workers=num_workers)
    folder = tempfile.mkdtemp(prefix="timl-cache-", dir=cache_dir)
    atexit.register(_remove_folder, folder)
    logger.info("Caching %d images (%.1f GB) on disk in %s", len(paths), np.prod(shape) / 1e9, folder)
    out = np.memmap(os.path.join(folder, "images.u8"), dtype=np.uint8, mode="w+", shape=shape)
    _fill(out, list(paths), preprocessing, num_workers)
    out.flush()
    return out


# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# tf.data pipeline


def _check_array(images: np.ndarray, labels, sample_weights) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ImageError("images must be a uint8 array (N, S, S, C), as load_images returns. Received: "
                         f"images={type(images).__name__} {getattr(images, 'dtype', '')} {getattr(images, 'shape', '')}")
    for name, values in (("labels", labels), ("sample_weights", sample_weights)):
        if values is not None and len(values) != len(images):
            raise ImageError(f"{name} must have one row per image ({len(images)}). Received: len({name})={len(values)}")


def _image_fetcher(images: np.ndarray):
    """A graph function index -> uint8 image: a gather from a tensor, or a read of the memory-mapped file."""
    import tensorflow as tf

    if isinstance(images, np.memmap):
        def fetch(index):
            image = tf.numpy_function(lambda i: np.asarray(images[int(i)]), [index], tf.uint8, stateful=False)
            return tf.ensure_shape(image, images.shape[1:])

        return fetch
    cached = tf.convert_to_tensor(images)
    return lambda index: tf.gather(cached, index)


def make_dataset(images: np.ndarray, labels: np.ndarray | None, *, batch_size: int, augmentation: str = "none",
                 shuffle: bool = False, seed: int = 0, sample_weights: np.ndarray | None = None):
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
    fetch = _image_fetcher(images)
    extras = [tf.convert_to_tensor(np.asarray(values, dtype=np.float32))
              for values in (labels, sample_weights) if values is not None]

    def element(index, seed_pair):
        image_index = index // multiplier
        image = fetch(image_index)
        if preset.name != "none":
            image = preset.view(image, tf.cast(index % multiplier, tf.int32), seed_pair)
        return image if not extras else (image, *(tf.gather(values, image_index) for values in extras))

    def to_float(batch, *rest):
        batch = tf.cast(batch, tf.float32) / 255.0
        return batch if not rest else (batch, *rest)

    indices = tf.data.Dataset.range(len(images) * multiplier)
    if shuffle:
        indices = indices.shuffle(max(1, len(images) * multiplier), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    dataset = tf.data.Dataset.zip((indices, seeds)).map(element, num_parallel_calls=tf.data.AUTOTUNE,
                                                        deterministic=True)
    dataset = dataset.batch(int(batch_size)).map(to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
