"""Decoding: one defensive function that turns a path, bytes, a file object or a PIL image into 8-bit RGB.

It accepts the formats of ``SUPPORTED_FORMATS``, applies the EXIF orientation, converts every mode to RGB and
refuses images over a pixel cap (decompression bombs) or truncated files.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from timl.errors import ImageError

#: The file suffixes an image may have (any case); ``image_name`` in a dataset has none of them.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

#: The formats :func:`decode_image` accepts, as Pillow names them.
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "MPO")

#: Default cap on decoded pixels (about 40 megapixels), below Pillow's own bomb limit.
DEFAULT_MAX_PIXELS = 40_000_000


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
    except UnidentifiedImageError as error:  # its message shows Python internals (<_io.BytesIO object at ...>)
        raise ImageError(f"Cannot decode {label}: it is not an image file (expected a JPEG, PNG, BMP or TIFF "
                         "image).") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"Cannot decode {label}: the image file is damaged or incomplete ({error}).") from error


# Truncated files are refused rather than silently padded.
ImageFile.LOAD_TRUNCATED_IMAGES = False
