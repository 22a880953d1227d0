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


def test_exif_orientation_is_applied():
    wide = Image.fromarray(np.zeros((10, 20, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_image(_png_bytes(wide, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (10, 20)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "1"])
def test_modes_become_rgb(mode):
    image = Image.fromarray(_pattern()).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "TIFF" if mode == "1" else "PNG"
    decoded = decode_image(_png_bytes(image, fmt))
    assert decoded.mode == "RGB" and decoded.size == (SIZE, SIZE)


def test_rgba_transparency_is_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.asarray(decode_image(_png_bytes(image)))[0, 0].tolist() == [255, 255, 255]


def test_16_bit_grey_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 64).reshape(8, 8)).astype(np.uint16)
    for fmt in ("PNG", "TIFF"):
        decoded = np.asarray(decode_image(_png_bytes(Image.fromarray(ramp), fmt)))
        assert decoded[0, 0, 0] == 0 and decoded[-1, -1, 0] == 255
        assert 120 <= decoded[4, 0, 0] <= 135  # the middle of the ramp stays in the middle


def test_bmp_decodes():
    assert decode_image(_png_bytes(Image.fromarray(_pattern()), "BMP")).size == (SIZE, SIZE)


# ------------------------------------------------------------------------------------------------ resize, colour


@pytest.mark.parametrize("resizefilter", sorted(RESIZE_FILTERS))
def test_each_resize_filter(resizefilter):
    image = Image.fromarray(_pattern(32))
    array = Preprocessing(SIZE, resizefilter).resize(image)
    assert array.shape == (SIZE, SIZE, 3) and array.dtype == np.uint8
    expected = np.asarray(image.resize((SIZE, SIZE), RESIZE_FILTERS[resizefilter]))
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
    paths = _write(tmp_path, 5)
    preprocessing = Preprocessing(SIZE)
    images = load_images(paths, preprocessing, num_workers=3)
    assert images.shape == (5, SIZE, SIZE, 3) and images.dtype == np.uint8
    for index, path in enumerate(paths):
        np.testing.assert_array_equal(images[index], preprocessing.resize(decode_image(path)))


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
    images = np.stack([np.full((SIZE, SIZE, 3), 10 * index, dtype=np.uint8) for index in range(6)])
    labels = np.arange(6, dtype=np.float32)[:, None]
    dataset = make_dataset(images, labels, batch_size=4, augmentation="hflip", shuffle=True, seed=1)
    epochs = []
    for _ in range(2):
        batches = _batches(dataset)
        pixels = np.concatenate([b[0] for b in batches])
        targets = np.concatenate([b[1] for b in batches])[:, 0]
        np.testing.assert_allclose(pixels[:, 0, 0, 0] * 255.0 / 10.0, targets, atol=1e-4)
        assert sorted(targets.tolist()) == sorted(np.repeat(np.arange(6), 2).tolist())
        epochs.append(targets.tolist())
    assert epochs[0] != epochs[1] or epochs[0] != sorted(epochs[0])  # reshuffled each epoch


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
