"""The decoded-image cache's memory and the shared cache file (timl.images.cache, timl.images.shared_cache,
``TIML_IMAGE_CACHE``): the in-memory path holds about one copy of its pixels, processes of one machine map one
file (decoded once), a changed image makes a new file, a damaged file is decoded again."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from timl.images import Preprocessing, cache_images, load_images, make_dataset, shared_cache_folder
from timl.images import shared_cache
from timl.images.cache import aligned_empty

REPO = Path(__file__).resolve().parents[1]
SIZE = 32


def _write(folder: Path, count: int, size: int = 40) -> list[str]:
    paths = []
    for index in range(count):
        path = folder / f"i{index}.png"
        Image.fromarray(np.random.default_rng(index).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _status(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


def test_load_images_allocates_one_copy(tmp_path):
    """Decoding a split allocates its pixels once (one preallocated array, no list of images then stacked)."""
    paths = _write(tmp_path, 200)
    tracemalloc.start()
    try:
        images = load_images(paths, Preprocessing(64), num_workers=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.2 * images.nbytes, (peak, images.nbytes)


@pytest.mark.component("linux")  # /proc/self/clear_refs resets the peak RSS
def test_pipeline_keeps_no_second_copy_of_the_pixels():
    """Iterating the tf.data pipeline over cached pixels adds well under one copy of them to the process's peak
    memory: the pixels are read from the numpy array, never copied into a tensor (it was 2 more copies, 1 held
    and 1 passing: the in-memory cache peaked at about 4.5 times its pixels with TensorFlow's own memory)."""
    warm = make_dataset(np.zeros((4, 8, 8, 3), np.uint8), np.zeros((4, 2)), batch_size=2, augmentation="hflip")
    for _ in warm:  # TensorFlow's kernels and threads loaded before the baseline
        pass
    images = aligned_empty((2000, 192, 192, 3))  # 221 MB, as load_images allocates them
    images.fill(7)
    labels = np.zeros((len(images), 2), np.float32)
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    baseline = _status("VmRSS")
    dataset = make_dataset(images, labels, batch_size=8, shuffle=True, seed=0)
    count = sum(int(batch.shape[0]) for batch, _ in dataset)
    assert count == len(images)
    growth = _status("VmHWM") - baseline
    print(f"peak growth {growth / 1e6:.1f} MB for {images.nbytes / 1e6:.1f} MB of pixels")
    assert growth < 0.5 * images.nbytes, (growth, images.nbytes)


@pytest.mark.parametrize("augmentation", ["none", "hflip_rot4", "random"])
def test_batched_fetch_gives_the_per_image_batches(augmentation):
    """The aligned array's fetch (one by-reference call per batch) yields exactly the batches of the image-by-image
    read (an unaligned array): same images, views, seeds, order and last short batch, in two epochs, so a resumed
    row sees what it would have seen."""
    from timl.images import epoch_counter

    aligned = aligned_empty((13, 16, 16, 3))
    aligned[:] = np.random.default_rng(0).integers(0, 256, aligned.shape, dtype=np.uint8)
    raw = np.empty(aligned.size + 1, np.uint8)
    unaligned = (raw[1:] if raw[1:].ctypes.data % 64 else raw[:-1]).reshape(aligned.shape)
    unaligned[:] = aligned
    labels, weights = np.eye(13, 3, dtype=np.float32), np.arange(13, dtype=np.float32)
    seen = []
    for images in (aligned, unaligned):
        epoch = epoch_counter()
        dataset = make_dataset(images, labels, batch_size=5, augmentation=augmentation, shuffle=True, seed=3,
                               sample_weights=weights, epoch=epoch)
        batches = []
        for number in range(2):
            epoch.assign(number)
            batches += [[part.numpy() for part in batch] for batch in dataset]
        seen.append(batches)
    shapes = [[[part.shape for part in batch] for batch in batches] for batches in seen]
    assert shapes[0] == shapes[1]
    assert all(np.array_equal(a, b) for first, second in zip(*seen) for a, b in zip(first, second))


def test_image_cache_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("TIML_IMAGE_CACHE", raising=False)
    assert shared_cache_folder() is None
    monkeypatch.setenv("TIML_IMAGE_CACHE", "off")
    assert shared_cache_folder() is None
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TIML_IMAGE_CACHE", "auto")
    assert shared_cache_folder() == tmp_path / ".cache" / "timl" / "images"
    monkeypatch.setenv("TIML_IMAGE_CACHE", str(tmp_path / "pixels"))
    paths = _write(tmp_path, 3)
    mapped = cache_images(paths, Preprocessing(SIZE))  # what every row's split goes through
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    assert [file.name for file in (tmp_path / "pixels").glob("*.npy")] == [shared_cache.cache_key(
        paths, Preprocessing(SIZE))]
    np.testing.assert_array_equal(mapped, load_images(paths, Preprocessing(SIZE)))
    assert mapped.ctypes.data % 64 == 0 and load_images(paths, Preprocessing(SIZE)).ctypes.data % 64 == 0
    first = np.concatenate([batch.numpy() for batch in make_dataset(mapped, None, batch_size=2)])
    np.testing.assert_allclose(first, mapped / 255.0, atol=1e-6)


CHILD = textwrap.dedent("""
    import hashlib, json, logging, sys
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from timl.images import Preprocessing, cache_images
    images = cache_images(json.loads(sys.argv[1]), Preprocessing(32))
    print(type(images).__name__, hashlib.sha256(images.tobytes()).hexdigest())
""")


def test_two_processes_map_one_file(tmp_path):
    """Two processes started together: one decodes (under the lock), the other waits and maps the same file."""
    paths = _write(tmp_path, 150, size=200)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TIML_IMAGE_CACHE": str(tmp_path / "shared")}
    children = [subprocess.Popen([sys.executable, "-c", CHILD, __import__("json").dumps(paths)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [child.communicate(timeout=120) for child in children]
    assert all(child.returncode == 0 for child in children), outputs
    logs = "".join(err for _, err in outputs)
    assert logs.count("Decoded 150 images into the shared cache file") == 1, logs
    assert logs.count("Mapped 150 cached images from") == 1, logs
    assert outputs[0][0] == outputs[1][0] and outputs[0][0].startswith("memmap ")
    assert len(list((tmp_path / "shared").glob("*.npy"))) == 1
    assert not list((tmp_path / "shared").glob(".*.partial"))


def test_changed_image_makes_a_new_file(tmp_path):
    paths = _write(tmp_path, 3)
    before = cache_images(paths, Preprocessing(SIZE), shared_dir=tmp_path / "shared")
    key = shared_cache.cache_key(paths, Preprocessing(SIZE))
    Image.new("RGB", (40, 40), (255, 0, 0)).save(paths[1])  # another picture in the same file
    changed = cache_images(paths, Preprocessing(SIZE), shared_dir=tmp_path / "shared")
    assert shared_cache.cache_key(paths, Preprocessing(SIZE)) != key
    assert (changed[1] == [255, 0, 0]).all() and not (before[1] == [255, 0, 0]).all()
    np.testing.assert_array_equal(changed[0], before[0])
    os.utime(paths[2], ns=(0, 1))  # only its modification time
    assert shared_cache.cache_key(paths, Preprocessing(SIZE)) not in (key,)
    assert shared_cache.cache_key(paths, Preprocessing(SIZE, colorspace="HSV")) != shared_cache.cache_key(
        paths, Preprocessing(SIZE))
    assert len(list((tmp_path / "shared").glob("*.npy"))) == 2


def test_damaged_file_is_decoded_again(tmp_path, caplog):
    paths = _write(tmp_path, 4)
    expected = load_images(paths, Preprocessing(SIZE))
    folder = tmp_path / "shared"
    cache_images(paths, Preprocessing(SIZE), shared_dir=folder)
    file = folder / shared_cache.cache_key(paths, Preprocessing(SIZE))
    file.write_bytes(file.read_bytes()[:-100])  # cut short
    (folder / f".{file.name}.999.partial").write_bytes(b"left by a killed process")
    rebuilt = cache_images(paths, Preprocessing(SIZE), shared_dir=folder)
    assert "decoding the images again" in caplog.text
    np.testing.assert_array_equal(rebuilt, expected)
    file.write_bytes(b"not a numpy file")
    np.testing.assert_array_equal(cache_images(paths, Preprocessing(SIZE), shared_dir=folder), expected)
    assert "cannot be read" in caplog.text
    assert sorted(path.name for path in folder.iterdir()) == [file.name, file.name + ".lock"]


def test_failed_decode_leaves_no_file(tmp_path):
    paths = _write(tmp_path, 2) + [str(tmp_path / "gone.png")]
    with pytest.raises(Exception, match="gone.png"):
        cache_images(paths, Preprocessing(SIZE), shared_dir=tmp_path / "shared")
    assert not list((tmp_path / "shared").glob("*.npy")) and not list((tmp_path / "shared").glob(".*"))


def test_the_shared_cache_stays_under_its_bound_removing_the_least_recently_used(tmp_path, monkeypatch, caplog):
    """TIML_IMAGE_CACHE_MAX_GB: a new file evicts the files used longest ago (mapping a file counts as a use), never
    the one just written; a bad value is refused naming the variable before anything is decoded."""
    import logging
    import time

    from timl.errors import ConfigError

    folder = tmp_path / "shared"
    sets = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        sets.append(_write(tmp_path / name, 3))
    a, b, c = sets
    cache_images(a, Preprocessing(SIZE), shared_dir=folder)
    file_size = (folder / shared_cache.cache_key(a, Preprocessing(SIZE))).stat().st_size
    monkeypatch.setenv("TIML_IMAGE_CACHE_MAX_GB", str((2 * file_size + 100) / 1e9))  # room for two files
    time.sleep(0.05)
    cache_images(b, Preprocessing(SIZE), shared_dir=folder)
    time.sleep(0.05)
    cache_images(a, Preprocessing(SIZE), shared_dir=folder)  # mapped again: now b is the least recently used
    time.sleep(0.05)
    with caplog.at_level(logging.INFO, logger="timl.images.shared_cache"):
        newest = cache_images(c, Preprocessing(SIZE), shared_dir=folder)
    kept = sorted(path.name for path in folder.glob("*.npy"))
    assert kept == sorted(shared_cache.cache_key(paths, Preprocessing(SIZE)) for paths in (a, c))
    assert "least recently used image cache files" in caplog.text
    np.testing.assert_array_equal(newest, load_images(c, Preprocessing(SIZE)))
    np.testing.assert_array_equal(cache_images(b, Preprocessing(SIZE), shared_dir=folder),
                                  load_images(b, Preprocessing(SIZE)))  # an evicted set is decoded again
    monkeypatch.setenv("TIML_IMAGE_CACHE_MAX_GB", "unlimited")
    cache_images(c, Preprocessing(SIZE, colorspace="HSV"), shared_dir=folder)
    assert len(list(folder.glob("*.npy"))) == 3  # two of the bound's, one more: nothing removed
    monkeypatch.setenv("TIML_IMAGE_CACHE_MAX_GB", "lots")
    with pytest.raises(ConfigError, match="TIML_IMAGE_CACHE_MAX_GB must be a positive number.*'lots'"):
        cache_images(c, Preprocessing(16), shared_dir=folder)
