"""The model's preprocessing: resize filters, colour spaces (LAB included) and :class:`Preprocessing`."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
from PIL import Image, ImageCms

from timl.errors import ImageError
from timl.images.decode import DEFAULT_MAX_PIXELS, _is_upright_rgb, _to_rgb, decode_image

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
        """Decodes and preprocesses one image: float32 array (imgsize, imgsize, 3) in [0, 1]. An image already
        decoded (upright RGB, as :func:`decode_image` returns it) is resized as it is, without a copy."""
        if not (isinstance(source, Image.Image) and _is_upright_rgb(source)):
            source = decode_image(source, max_pixels=max_pixels)
        return self.resize(source).astype(np.float32) / 255.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocessing":
        return cls(int(values["imgsize"]), str(values.get("resizefilter", "bilinear")),
                   str(values.get("colorspace", "RGB")))
