"""Decoding: one defensive function that turns a path, bytes, a file object or a PIL image into 8-bit RGB.

It accepts the formats of ``SUPPORTED_FORMATS`` and DICOM files (:mod:`timl.images.dicom`), applies the EXIF orientation, converts every mode to RGB and
refuses images over a pixel cap (decompression bombs) or truncated files.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from timl.errors import ImageError
from timl.images.dicom import DICOM_SUFFIX, decode_dicom, is_dicom

#: The EXIF tag of an image's orientation (values 2 to 8 turn or mirror it; ImageOps.exif_transpose applies them).
EXIF_ORIENTATION = ExifTags.Base.Orientation

#: The file suffixes an image may have (any case); ``image_name`` in a dataset has none of them. ``.dcm``: DICOM
#: (issue 28), decoded by :mod:`timl.images.dicom`.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", DICOM_SUFFIX)

#: The formats :func:`decode_image` accepts, as Pillow names them.
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "MPO")

#: Default cap on decoded pixels (about 40 megapixels), below Pillow's own bomb limit.
DEFAULT_MAX_PIXELS = 40_000_000

#: The server's default cap (``MAX_IMAGE_PIXELS``): 25 megapixels, above a dermatoscope's or a phone's photo
#: (12 to 24 Mpx), so that concurrent uploads stay within a worker's memory.
SERVING_MAX_PIXELS = 25_000_000


#: The grey modes wider than 8 bits: 16-bit grey is divided by 65535, 32-bit integer and float grey are stretched
#: from their minimum to their maximum.
WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")

#: Rows converted at a time where a mode needs arithmetic or alpha compositing: the temporary arrays of one band
#: stay a few megabytes whatever the image's size, so decoding needs about the source image and its RGB copy.
BAND_ROWS = 256


def _bands(image: Image.Image):
    """The image as bands of at most ``BAND_ROWS`` full rows, top to bottom: ``(top, band image)``."""
    width, height = image.size
    for top in range(0, height, BAND_ROWS):
        yield top, image.crop((0, top, width, min(top + BAND_ROWS, height)))


def _by_bands(image: Image.Image, convert_band) -> Image.Image:
    """The RGB image that ``convert_band`` makes of each band of ``image``, pasted into one RGB image."""
    rgb = Image.new("RGB", image.size)
    for top, band in _bands(image):
        rgb.paste(convert_band(band).convert("RGB"), (0, top))
    return rgb


def _sixteen_bit_band(band: Image.Image) -> Image.Image:
    """16-bit grey to 8 bits: round(value / 65535 * 255), in integers (value * 255 / 65535 is value / 257, never
    halfway between two integers, so (value + 128) // 257 is the same rounding)."""
    pixels = np.asarray(band).astype(np.uint32)
    return Image.fromarray(((pixels + 128) // 257).astype(np.uint8))


def _stretched_bands(image: Image.Image):
    """The band converter of 32-bit integer and float grey: stretched from the image's minimum to its maximum
    (all black when they are equal), in float64 one band at a time."""
    lows, highs = [], []
    for _, band in _bands(image):
        pixels = np.asarray(band, dtype=np.float64)
        lows.append(np.min(pixels))
        highs.append(np.max(pixels))
    low, high = float(np.min(lows)), float(np.max(highs))

    def stretched(band: Image.Image) -> Image.Image:
        pixels = np.asarray(band, dtype=np.float64)
        pixels = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
        return Image.fromarray(np.clip(np.round(pixels * 255.0), 0, 255).astype(np.uint8))

    return stretched


def _composited_band(band: Image.Image) -> Image.Image:
    """A band with transparency composited over white."""
    rgba = band.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Converts grey, 16-bit, float, palette, alpha and CMYK images to 8-bit RGB.

    The conversions that need arithmetic (wide grey) or compositing (alpha) run one band of rows at a time, so a
    large image never has float64 or RGBA copies of its whole size.
    """
    if image.mode in WIDE_GREY_MODES:
        convert_band = _sixteen_bit_band if image.mode.startswith("I;16") else _stretched_bands(image)
        return _by_bands(image, convert_band)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return _by_bands(image, _composited_band)
    return image.convert("RGB")


def _is_upright_rgb(image: Image.Image) -> bool:
    """Whether a PIL image is 8-bit RGB with no EXIF turn to apply: :func:`decode_image` would only copy it."""
    return image.mode == "RGB" and image.getexif().get(EXIF_ORIENTATION, 1) not in range(2, 9)


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
        transposed = ImageOps.exif_transpose(source)  # a copy: the caller's image never changes
        return transposed if transposed.mode == "RGB" else _to_rgb(transposed)  # no second copy of an RGB image
    label = name or (str(source) if isinstance(source, (str, Path)) else "image")
    if isinstance(source, (bytes, bytearray, memoryview)) and len(source) == 0:
        raise ImageError(f"Cannot decode {label}: the file is empty.")
    if is_dicom(source):  # a .dcm path or the DICOM preamble: pydicom, same cap and errors (timl.images.dicom)
        return decode_dicom(source, max_pixels=max_pixels, label=label)
    if isinstance(source, (bytes, bytearray, memoryview)):
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
            ImageOps.exif_transpose(image, in_place=True)  # the image is ours: no copy when it has no orientation
            return image if image.mode == "RGB" else _to_rgb(image)  # an RGB image is returned as loaded, no copy
    except ImageError:
        raise
    except FileNotFoundError as error:
        raise ImageError(f"Cannot decode {label}: the file does not exist.") from error
    except Image.DecompressionBombError as error:
        raise ImageError(f"Cannot decode {label}: the image is too large ({error}).") from error
    except UnidentifiedImageError as error:  # its message shows Python internals (<_io.BytesIO object at ...>)
        raise ImageError(f"Cannot decode {label}: it is not an image file (expected a JPEG, PNG, BMP, TIFF "
                         "or DICOM image).") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"Cannot decode {label}: the image file is damaged or incomplete ({error}).") from error


# Truncated files are refused rather than silently padded.
ImageFile.LOAD_TRUNCATED_IMAGES = False
