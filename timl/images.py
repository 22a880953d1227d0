"""Images: one defensive decode function, resizing, colour spaces, and the model's preprocessing.

Every entry point (training, prediction, explanation, serving) turns files or uploaded bytes into model input
through :func:`decode_image` and :class:`Preprocessing`, so a model sees the same pixels everywhere.
Pixel values enter the model as float32 in [0, 1], three channels.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

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

#: Colour spaces a model may be trained in (PIL modes). One-channel modes are repeated to three channels.
COLOR_SPACES = ("RGB", "HSV", "YCbCr", "LAB", "L")


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
        resized = image.resize(size, RESIZE_FILTERS[self.resizefilter]) if image.size != size else image
        if self.colorspace != "RGB":
            resized = resized.convert(self.colorspace)
        array = np.asarray(resized, dtype=np.uint8)
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
