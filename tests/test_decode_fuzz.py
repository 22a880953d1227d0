"""Images from outside are decoded defensively: random and mutated bytes give only the documented error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from timl.errors import ImageError
from timl.images import Preprocessing, decode_image


def _encoded(format_name: str, mode: str = "RGB", size=(24, 16)) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=format_name)
    return buffer.getvalue()


SEEDS = {"jpeg": _encoded("JPEG"), "png": _encoded("PNG"), "png_rgba": _encoded("PNG", "RGBA"),
         "bmp": _encoded("BMP"), "tiff": _encoded("TIFF")}


def _decode_or_documented_error(data: bytes) -> None:
    try:
        image = decode_image(data, max_pixels=4_000_000)
    except ImageError as error:
        assert str(error).startswith("Cannot decode")
        return
    assert image.mode == "RGB" and image.width > 0 and image.height > 0
    array = Preprocessing(16)(image)
    assert array.shape == (16, 16, 3) and array.dtype == np.float32 and 0 <= array.min() <= array.max() <= 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    _decode_or_documented_error(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(sorted(SEEDS)), positions=st.lists(st.integers(0, 10_000), min_size=1, max_size=8),
       values=st.lists(st.integers(0, 255), min_size=8, max_size=8), cut=st.one_of(st.none(), st.integers(0, 5000)))
def test_mutated_images(seed, positions, values, cut):
    data = bytearray(SEEDS[seed])
    for position, value in zip(positions, values):
        data[position % len(data)] = value
    if cut is not None:
        data = data[:cut]
    _decode_or_documented_error(bytes(data))


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_truncated_files_are_refused(name):
    data = SEEDS[name]
    with pytest.raises(ImageError):
        decode_image(data[: len(data) // 2])


def test_pixel_cap_below_pillows_limit():
    big = _encoded("PNG", size=(3000, 2000))
    with pytest.raises(ImageError, match="exceeds the limit"):
        decode_image(big, max_pixels=5_000_000)
    assert decode_image(big, max_pixels=None).size == (3000, 2000)


def test_unsupported_formats_are_refused():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    with pytest.raises(ImageError, match="unsupported image format"):
        decode_image(buffer.getvalue())
