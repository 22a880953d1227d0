"""Decoding, resizing, colour spaces, caching, augmentation presets and the tf.data pipeline (timl.images)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from timl.errors import ImageError
from timl.images import (AUGMENTATIONS, COLOR_SPACES, RESIZE_FILTERS, Preprocessing, cache_images, decode_image,
                         get_augmentation, load_images, make_dataset)

SIZE = 16


def _pattern(size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _png_bytes(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _unit(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels as the pipeline delivers them: float32 in [0, 1]."""
    return np.asarray(pixels).astype(np.float32) / np.float32(255.0)


def _batches(dataset) -> list:
    return [tuple(t.numpy() for t in batch) if isinstance(batch, tuple) else batch.numpy() for batch in dataset]


def _images_of(dataset) -> np.ndarray:
    return np.concatenate([batch[0] if isinstance(batch, tuple) else batch for batch in _batches(dataset)])


# ------------------------------------------------------------------------------------------------ decoding


# Where the stored image's top-left corner (row 0, column 0) is displayed, by EXIF orientation (TIFF 6.0 /
# EXIF 2.3 tag 0x0112: the value names the display side of row 0 and of column 0), and whether width and height
# swap. Written out from the definition, not from ImageOps.
EXIF_CORNERS = {
    1: ("top", "left", False),      # row 0 top, column 0 left: as stored
    2: ("top", "right", False),     # row 0 top, column 0 right: mirrored left-right
    3: ("bottom", "right", False),  # row 0 bottom, column 0 right: turned 180 degrees
    4: ("bottom", "left", False),   # row 0 bottom, column 0 left: mirrored top-bottom
    5: ("top", "left", True),       # row 0 left, column 0 top: transposed
    6: ("top", "right", True),      # row 0 right, column 0 top: turn 90 degrees clockwise to display
    7: ("bottom", "right", True),   # row 0 right, column 0 bottom: transversed
    8: ("bottom", "left", True),    # row 0 left, column 0 bottom: turn 90 degrees counter-clockwise to display
}


def _quadrant_means(pixels: np.ndarray) -> dict:
    height, width = pixels.shape[0] // 2, pixels.shape[1] // 2
    return {(vertical, horizontal): pixels[rows, columns].reshape(-1, 3).mean(axis=0)
            for vertical, rows in (("top", slice(None, height)), ("bottom", slice(height, None)))
            for horizontal, columns in (("left", slice(None, width)), ("right", slice(width, None)))}


@pytest.mark.parametrize("orientation", sorted(EXIF_CORNERS))
def test_exif_orientation_is_applied(orientation):
    stored = np.zeros((24, 40, 3), dtype=np.uint8)  # 40 wide, 24 high; its top-left quadrant red
    stored[:12, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_image(_png_bytes(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes()))
    vertical, horizontal, swapped = EXIF_CORNERS[orientation]
    assert decoded.size == ((24, 40) if swapped else (40, 24))
    quadrants = _quadrant_means(np.asarray(decoded).astype(float))
    red = [corner for corner, mean in quadrants.items() if mean[0] > 200 and mean[1] < 30 and mean[2] < 30]
    dark = [corner for corner, mean in quadrants.items() if mean.max() < 30]
    assert red == [(vertical, horizontal)] and len(dark) == 3, quadrants


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_preprocessing_a_pil_image_turns_it_as_its_file_says(orientation):
    """An opened, not yet turned image is turned as decoding its file would; an upright one (what decode_image
    returns: the server's path) is resized as it is, without a full-size copy."""
    stored = np.zeros((24, 40, 3), dtype=np.uint8)
    stored[:12, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _png_bytes(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    preprocessing = Preprocessing(16)
    expected = preprocessing(data)
    assert np.array_equal(preprocessing(Image.open(io.BytesIO(data))), expected)
    decoded = decode_image(data)
    before = Image.core.get_stats()["new_count"]
    assert np.array_equal(preprocessing(decoded), expected)
    assert Image.core.get_stats()["new_count"] - before <= 2, "the resize's images only (two passes)"


def test_exif_corners_tell_the_eight_orientations_apart():
    assert len(set(EXIF_CORNERS.values())) == 8


def _grey(values) -> Image.Image:
    return Image.fromarray(np.array(values, dtype=np.uint8), "L")


def _palette(transparent: int | None = None) -> Image.Image:
    image = Image.new("P", (2, 2))
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.putdata([0, 1, 1, 0])
    if transparent is not None:
        image.info["transparency"] = transparent
    return image


def _cmyk() -> Image.Image:
    """Four flat 8x8 blocks (JPEG's block size): cyan, magenta / yellow, black."""
    pixels = np.zeros((16, 16, 4), dtype=np.uint8)
    pixels[:8, :8], pixels[:8, 8:] = (255, 0, 0, 0), (0, 255, 0, 0)
    pixels[8:, :8], pixels[8:, 8:] = (0, 0, 255, 0), (0, 0, 0, 255)
    return Image.fromarray(pixels, "CMYK")


def _blocks(top_left, top_right, bottom_left, bottom_right, size: int = 8) -> np.ndarray:
    """The expected RGB of a 2x2 image, each pixel repeated to a size x size block."""
    return np.array([[top_left, top_right], [bottom_left, bottom_right]]).repeat(size, 0).repeat(size, 1)


# What _to_rgb documents: grey repeated to three channels, palette indices to their palette colour, alpha
# composited over white (a = 128 of 255: 255 * 127/255 + c * 128/255), CMYK through Pillow's conversion,
# 16-bit grey divided by 65535 (not stretched to its own range), 32-bit integer and float grey stretched from
# their minimum to their maximum. Each expected value is computed by hand.
MODE_CASES = {
    "L": (_grey([[0, 77], [200, 255]]), "PNG", _blocks(0, 77, 200, 255, 1)[..., None].repeat(3, 2), 0),
    "P": (_palette(), "PNG", _blocks((10, 20, 30), (200, 100, 50), (200, 100, 50), (10, 20, 30), 1), 0),
    "P+transparency": (_palette(transparent=1), "PNG",
                       _blocks((10, 20, 30), (255, 255, 255), (255, 255, 255), (10, 20, 30), 1), 0),
    "RGBA": (Image.fromarray(np.array([[[255, 0, 0, 255], [255, 0, 0, 0]], [[0, 0, 255, 128], [0, 255, 0, 64]]],
                                      np.uint8), "RGBA"), "PNG",
             _blocks((255, 0, 0), (255, 255, 255), (127, 127, 255), (191, 255, 191), 1), 1),
    "LA": (Image.fromarray(np.array([[[100, 255], [100, 0]], [[0, 128], [0, 64]]], np.uint8), "LA"), "PNG",
           _blocks((100,) * 3, (255,) * 3, (127,) * 3, (191,) * 3, 1), 1),
    "CMYK": (_cmyk(), "JPEG", _blocks((0, 255, 255), (255, 0, 255), (255, 255, 0), (0, 0, 0)), 3),
    "1": (Image.fromarray(np.array([[0, 1], [1, 0]], bool)), "TIFF", _blocks((0,) * 3, (255,) * 3, (255,) * 3,
                                                                             (0,) * 3, 1), 0),
    # 1000/65535*255 = 3.89, 2000 -> 7.78, 30000 -> 116.7, 19789 = 77*257 -> 77
    "I;16": (Image.fromarray(np.array([[1000, 2000], [30000, 77 * 257]], np.uint16)), "PNG",
             _blocks((4,) * 3, (8,) * 3, (117,) * 3, (77,) * 3, 1), 0),
    # (v - -100) / 400 * 255: 0, 63.75, 127.5, 255
    "I": (Image.fromarray(np.array([[-100, 0], [100, 300]], np.int32)), "TIFF",
          _blocks((0,) * 3, (64,) * 3, (128,) * 3, (255,) * 3, 1), 0),
    "F": (Image.fromarray(np.array([[-1.0, 0.0], [1.0, 3.0]], np.float32)), "TIFF",
          _blocks((0,) * 3, (64,) * 3, (128,) * 3, (255,) * 3, 1), 0),
}


@pytest.mark.parametrize("case", sorted(MODE_CASES))
def test_modes_become_rgb(case):
    image, fmt, expected, tolerance = MODE_CASES[case]
    assert image.mode == case.split("+")[0]
    decoded = decode_image(_png_bytes(image, fmt))
    assert decoded.mode == "RGB" and decoded.size == image.size
    pixels = np.asarray(decoded).astype(int)
    assert np.abs(pixels - expected).max() <= tolerance, pixels.reshape(-1, 3).tolist()


def test_rgba_transparency_is_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.asarray(decode_image(_png_bytes(image)))[0, 0].tolist() == [255, 255, 255]


def test_16_bit_grey_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 64).reshape(8, 8)).astype(np.uint16)
    for fmt in ("PNG", "TIFF"):
        decoded = np.asarray(decode_image(_png_bytes(Image.fromarray(ramp), fmt)))
        assert decoded[0, 0, 0] == 0 and decoded[-1, -1, 0] == 255
        assert 120 <= decoded[4, 0, 0] <= 135  # the middle of the ramp stays in the middle


def test_16_bit_grey_rounds_every_value_as_dividing_by_65535():
    """Every 16-bit value becomes round(value / 65535 * 255), the float64 formula the integer arithmetic replaced."""
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    decoded = np.asarray(decode_image(_png_bytes(Image.fromarray(values))))[..., 0]
    assert np.array_equal(decoded, np.round(values / 65535.0 * 255.0).astype(np.uint8))


@pytest.mark.parametrize("mode", ["I", "F", "RGBA", "LA", "P+transparency"])
def test_banded_conversion_matches_the_whole_image_formula(mode):
    """Images taller than one band of rows (BAND_ROWS) convert as the whole-image formula would: stretched from
    the minimum to the maximum of the whole image (not of each band), alpha composited over white."""
    from timl.images.decode import BAND_ROWS

    rng = np.random.default_rng(5)
    shape = (2 * BAND_ROWS + 37, 23)
    if mode in ("I", "F"):
        values = rng.normal(0, 1000, shape).astype(np.int32 if mode == "I" else np.float32)
        values[-1, -1] = 5000  # the maximum in the last band, the minimum in the first
        values[0, 0] = -5000
        image = Image.fromarray(values)
        array = values.astype(np.float64)
        grey = np.round((array - array.min()) / (array.max() - array.min()) * 255.0).astype(np.uint8)
        expected = grey[..., None].repeat(3, 2)
    else:
        rgba = Image.fromarray(rng.integers(0, 256, (*shape, 4), dtype=np.uint8), "RGBA")
        image = rgba.convert(mode) if mode != "P+transparency" else rgba.convert("RGB").quantize(16)
        if mode == "P+transparency":
            image.info["transparency"] = 3
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        expected = np.asarray(Image.alpha_composite(white, image.convert("RGBA")).convert("RGB"))
    assert np.array_equal(np.asarray(decode_image(image)), expected)


def _deflated_tiff(image: Image.Image) -> bytes:
    return _png_bytes(image, "TIFF", compression="tiff_adobe_deflate")


# Uploads that compress to a few kilobytes and decode to many megapixels, of the modes that need arithmetic or
# compositing: before, a 6300x6300 16-bit PNG (77 kB) peaked at 28 bytes per pixel (1.1 GB) in float64 copies.
PEAK_CASES = {
    "16-bit PNG": (lambda: _png_bytes(Image.fromarray(np.zeros((6300, 6300), np.uint16)))),
    "RGBA PNG": (lambda: _png_bytes(Image.new("RGBA", (4000, 4000), (10, 20, 30, 40)))),
    "float TIFF": (lambda: _deflated_tiff(Image.fromarray(np.zeros((4000, 4000), np.float32)))),
}
# The peak resident memory of this process (VmHWM: ru_maxrss would count the parent's size at the fork), reset to
# the current size (clear_refs 5) once the upload is read, just before decoding.
PEAK_SCRIPT = """
import json, re, sys
from timl.images import decode_image

def kilobytes(field):
    return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))

data = open(sys.argv[1], "rb").read()
open("/proc/self/clear_refs", "w").write("5")
start = kilobytes("VmRSS")
image = decode_image(data, max_pixels=None)
print(json.dumps({"pixels": image.size[0] * image.size[1], "peak": (kilobytes("VmHWM") - start) * 1024}))
"""


@pytest.mark.parametrize("case", sorted(PEAK_CASES))
def test_decoding_memory_is_proportional_to_the_pixels(case, tmp_path):
    """Decoding needs the source image and its RGB copy, not float64 or RGBA copies of the whole image: its peak
    (above the process's memory before decoding, in a fresh process) stays under 12 bytes per pixel."""
    import json
    import subprocess
    import sys

    path = tmp_path / "upload"
    path.write_bytes(PEAK_CASES[case]())
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], capture_output=True, text=True,
                            check=True, timeout=120)
    measured = json.loads(result.stdout)
    per_pixel = measured["peak"] / measured["pixels"]
    print(f"{case}: {measured['pixels'] / 1e6:.1f} Mpx, peak {measured['peak'] / 2**20:.0f} MiB, "
          f"{per_pixel:.1f} bytes/pixel")
    assert per_pixel < 12, f"{case}: {per_pixel:.1f} bytes per pixel"


def test_an_rgb_jpeg_is_decoded_once_without_a_copy(tmp_path):
    """An RGB JPEG (every upload from a dermatoscope) comes back as decoded, with Pillow's pixels: no RGB copy (it
    cost a second image's memory and about a third of decoding's CPU per request); Pillow keeps RGB at 4 bytes per
    pixel, so the peak stays under 6."""
    import json
    import subprocess
    import sys

    buffer = io.BytesIO()
    Image.fromarray(_pattern()).resize((3000, 3000)).save(buffer, "JPEG", quality=90)
    assert np.array_equal(np.asarray(decode_image(buffer.getvalue())),
                          np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))
    path = tmp_path / "upload.jpg"
    path.write_bytes(buffer.getvalue())
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], capture_output=True, text=True,
                            check=True, timeout=120)
    measured = json.loads(result.stdout)
    assert measured["peak"] / measured["pixels"] < 6, f"{measured['peak'] / measured['pixels']:.1f} bytes per pixel"


def test_bmp_decodes():
    assert decode_image(_png_bytes(Image.fromarray(_pattern()), "BMP")).size == (SIZE, SIZE)


# ------------------------------------------------------------------------------------------------ resize, colour


# Each filter name and the Pillow filter it must mean, written out (not read from RESIZE_FILTERS).
PILLOW_FILTERS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                  "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


def test_the_resize_filters_are_the_four_named():
    assert sorted(RESIZE_FILTERS) == sorted(PILLOW_FILTERS)


def test_the_resize_test_image_tells_the_filters_apart():
    image = Image.fromarray(_pattern(32))
    results = {name: np.asarray(image.resize((SIZE, SIZE), resample)) for name, resample in PILLOW_FILTERS.items()}
    for first in results:
        for second in results:
            if first < second:
                assert (results[first] != results[second]).mean() > 0.5, (first, second)


@pytest.mark.parametrize("resizefilter", sorted(PILLOW_FILTERS))
def test_each_resize_filter(resizefilter):
    image = Image.fromarray(_pattern(32))
    array = Preprocessing(SIZE, resizefilter).resize(image)
    assert array.shape == (SIZE, SIZE, 3) and array.dtype == np.uint8
    expected = np.asarray(image.resize((SIZE, SIZE), PILLOW_FILTERS[resizefilter]))
    np.testing.assert_array_equal(array, expected)


def test_nearest_upscale_repeats_pixels():
    small = _pattern(8)
    array = Preprocessing(16, "nearest").resize(Image.fromarray(small))
    np.testing.assert_array_equal(array, small.repeat(2, axis=0).repeat(2, axis=1))


@pytest.mark.parametrize("colorspace", COLOR_SPACES)
def test_each_colour_space_gives_three_channels(colorspace):
    array = Preprocessing(SIZE, "bilinear", colorspace)(_png_bytes(Image.fromarray(_pattern())))
    assert array.shape == (SIZE, SIZE, 3) and array.dtype == np.float32
    assert 0.0 <= array.min() and array.max() <= 1.0


@pytest.mark.parametrize("colorspace, rgb, expected", [
    ("HSV", (255, 0, 0), (0, 255, 255)),
    ("L", (255, 255, 255), (255, 255, 255)),
    ("YCbCr", (128, 128, 128), (128, 128, 128)),
    ("LAB", (128, 128, 128), (137, 128, 128)),  # grey: a* = b* = 0, stored with a +128 offset
    ("LAB", (255, 255, 255), (255, 128, 128)),
])
def test_colour_space_values(colorspace, rgb, expected):
    array = Preprocessing(SIZE, "bilinear", colorspace).resize(Image.new("RGB", (SIZE, SIZE), rgb))
    np.testing.assert_allclose(array[0, 0], expected, atol=1)


def test_lab_axes_are_continuous():
    red = Preprocessing(SIZE, colorspace="LAB").resize(Image.new("RGB", (SIZE, SIZE), (200, 30, 40)))[0, 0]
    green = Preprocessing(SIZE, colorspace="LAB").resize(Image.new("RGB", (SIZE, SIZE), (30, 200, 40)))[0, 0]
    assert red[1] > 128 > green[1]  # a*: red positive, green negative


@pytest.mark.parametrize("kwargs, field", [
    ({"resizefilter": "cubic"}, "resizefilter"),
    ({"colorspace": "CMYK"}, "colorspace"),
])
def test_unknown_filter_or_colour_space(kwargs, field):
    with pytest.raises(ImageError, match=rf"Expected one of: .*Received: {field}="):
        Preprocessing(SIZE, **kwargs)


# ------------------------------------------------------------------------------------------------ loading


def _write(tmp_path, count: int, size: int = 24) -> list[str]:
    paths = []
    for index in range(count):
        path = tmp_path / f"i{index}.png"
        Image.fromarray(_pattern(size, index)).save(path)
        paths.append(str(path))
    return paths


def test_load_images_keeps_order(tmp_path):
    """Each image in its place, resized as Pillow's bilinear filter (the default, written out) resizes it."""
    paths = _write(tmp_path, 5)
    images = load_images(paths, Preprocessing(SIZE), num_workers=3)
    assert images.shape == (5, SIZE, SIZE, 3) and images.dtype == np.uint8
    for index in range(5):
        expected = Image.fromarray(_pattern(24, index)).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        np.testing.assert_array_equal(images[index], np.asarray(expected))


def test_load_images_names_every_failure(tmp_path):
    paths = _write(tmp_path, 2)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    paths += [str(tmp_path / "bad.png"), str(tmp_path / "gone.png")]
    with pytest.raises(ImageError) as error:
        load_images(paths, Preprocessing(SIZE))
    assert "2 of 4 image(s)" in str(error.value)
    assert "bad.png" in str(error.value) and "gone.png" in str(error.value)


def test_cache_images_on_disk_over_budget(tmp_path):
    paths = _write(tmp_path, 4)
    in_memory = cache_images(paths, Preprocessing(SIZE))
    on_disk = cache_images(paths, Preprocessing(SIZE), tmp_path, memory_budget=100)
    assert not isinstance(in_memory, np.memmap) and isinstance(on_disk, np.memmap)
    np.testing.assert_array_equal(in_memory, on_disk)
    first = np.concatenate(_batches(make_dataset(on_disk, None, batch_size=3, augmentation="hflip")))
    np.testing.assert_allclose(first[1], in_memory[0, :, ::-1] / 255.0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ augmentation


def _cached(count: int = 3) -> np.ndarray:
    return np.stack([_pattern(SIZE, seed) for seed in range(count)])


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_every_preset(name):
    preset = get_augmentation(name)
    assert preset.name == name and preset.description and preset.multiplier >= 1
    assert preset.multiplier == 1 or not preset.random
    images = _cached(3)
    labels = np.eye(3, dtype=np.float32)
    dataset = make_dataset(images, labels, batch_size=5, augmentation=name, shuffle=False)
    batches = _batches(dataset)
    pixels = np.concatenate([b[0] for b in batches])
    targets = np.concatenate([b[1] for b in batches])
    assert pixels.shape == (3 * preset.multiplier, SIZE, SIZE, 3) and pixels.dtype == np.float32
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0
    np.testing.assert_array_equal(targets, np.repeat(labels, preset.multiplier, axis=0))


@pytest.mark.parametrize("name, multiplier", [("none", 1), ("hflip", 2), ("hflip_rot4", 8), ("hflip_rot24", 48),
                                              ("random", 1)])
def test_multipliers(name, multiplier):
    assert AUGMENTATIONS[name].multiplier == multiplier


def test_hflip_views_are_mirrors():
    images = _cached(2)
    views = _images_of(make_dataset(images, None, batch_size=4, augmentation="hflip"))
    for index in range(2):
        np.testing.assert_array_equal(views[2 * index], _unit(images[index]))
        np.testing.assert_array_equal(views[2 * index + 1], _unit(images[index][:, ::-1]))


def test_hflip_rot4_views_are_rotations():
    image = _unit(_cached(1)[0])
    views = _images_of(make_dataset(_cached(1), None, batch_size=8, augmentation="hflip_rot4"))
    for turn in range(4):
        np.testing.assert_array_equal(views[turn], np.rot90(image, turn))
        np.testing.assert_array_equal(views[4 + turn], np.rot90(image[:, ::-1], turn))


def test_hflip_rot24_views():
    image = _cached(1)[0]
    views = _images_of(make_dataset(_cached(1), None, batch_size=48, augmentation="hflip_rot24"))
    assert len(views) == 48
    for step in (0, 6, 12, 18):
        np.testing.assert_array_equal(views[step], _unit(np.rot90(image, step // 6)))
        np.testing.assert_array_equal(views[24 + step], _unit(np.rot90(image[:, ::-1], step // 6)))
    smooth = np.tile(np.linspace(0, 255, 32).astype(np.uint8)[None, :, None], (32, 1, 3))
    rotated = _images_of(make_dataset(smooth[None], None, batch_size=48, augmentation="hflip_rot24"))[1]
    expected = np.asarray(Image.fromarray(smooth).rotate(15, resample=Image.Resampling.BILINEAR)) / 255.0
    np.testing.assert_allclose(rotated[8:24, 8:24], expected[8:24, 8:24], atol=3 / 255)  # counter-clockwise
    assert rotated[0, 0].max() == 0.0  # black corners


def test_shuffle_keeps_labels_with_their_images():
    # image i: its left column 10*i, the rest 10*i + 5, so each element shows its image (label) and its view
    images = np.stack([np.full((SIZE, SIZE, 3), 10 * index + 5, dtype=np.uint8) for index in range(6)])
    images[:, :, 0] -= 5
    labels = np.arange(6, dtype=np.float32)[:, None]
    dataset = make_dataset(images, labels, batch_size=4, augmentation="hflip", shuffle=True, seed=1)
    every_element = [(index, flipped) for index in range(6) for flipped in (False, True)]
    epochs = []
    for _ in range(3):
        batches = _batches(dataset)
        pixels = np.concatenate([b[0] for b in batches]) * 255.0
        targets = np.concatenate([b[1] for b in batches])[:, 0]
        image_of = np.round((pixels[:, 0, 0, 0] + pixels[:, 0, -1, 0] - 5) / 20).astype(int)
        np.testing.assert_array_equal(image_of, targets)  # every label stays with its image
        order = [(int(t), bool(p[0, -1, 0] < p[0, 0, 0])) for t, p in zip(targets, pixels)]
        assert sorted(order) == every_element  # each epoch: every image's two views once
        epochs.append(order)
    assert epochs[0] != every_element  # shuffled
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]  # anew each epoch


def test_no_shuffle_preserves_order_and_weights():
    images = _cached(5)
    dataset = make_dataset(images, np.zeros((5, 2)), batch_size=2, sample_weights=np.arange(5.0))
    batches = _batches(dataset)
    assert [len(b) for b in batches] == [3, 3, 3]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), _unit(images))
    np.testing.assert_array_equal(np.concatenate([b[2] for b in batches]), np.arange(5.0))


def test_random_presets_change_each_epoch_and_repeat_with_seed():
    images = _cached(4)
    dataset = make_dataset(images, None, batch_size=4, augmentation="random", seed=3)
    first, second = _images_of(dataset), _images_of(dataset)
    again = _images_of(make_dataset(images, None, batch_size=4, augmentation="random", seed=3))
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, again)


def test_random_flip_views_are_flips_and_right_angle_turns():
    images = _cached(4)
    views = _images_of(make_dataset(images, None, batch_size=4, augmentation="random_flip", seed=5))
    for image, view in zip(images, views):
        candidates = [np.rot90(base, turn) for base in (image, image[:, ::-1]) for turn in range(4)]
        assert any(np.array_equal(view, _unit(candidate)) for candidate in candidates)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ImageError, match=r"none, hflip, hflip_rot4, hflip_rot24, random.*Received: imgaug='flip'"):
        get_augmentation("flip")
    with pytest.raises(ImageError, match="imgaug='flip'"):
        make_dataset(_cached(1), None, batch_size=1, augmentation="flip")


@pytest.mark.parametrize("kwargs, pattern", [
    ({"images": np.zeros((2, 4, 4, 3), np.float32)}, "uint8 array"),
    ({"labels": np.zeros((3, 2))}, "one row per image"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
])
def test_make_dataset_checks_arguments(kwargs, pattern):
    arguments = {"images": _cached(2), "labels": None, "batch_size": 2, **kwargs}
    images = arguments.pop("images")
    labels = arguments.pop("labels")
    with pytest.raises(ImageError, match=pattern):
        make_dataset(images, labels, **arguments)


def test_real_isic_images(isic_dir):
    paths = sorted(str(p) for p in (isic_dir / "images").glob("*.jpg"))[:3]
    images = load_images(paths, Preprocessing(32, "bicubic", "HSV"))
    assert images.shape == (3, 32, 32, 3)
    views = _images_of(make_dataset(images, None, batch_size=8, augmentation="hflip_rot4"))
    assert views.shape == (24, 32, 32, 3)
