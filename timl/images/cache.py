"""Loading and caching: each image of a split is decoded and resized once per run into one preallocated uint8
array, kept on disk (a memory-mapped file, removed at exit) beyond a memory budget, or mapped from the machine's
shared cache file (:mod:`timl.images.shared_cache`, ``TIML_IMAGE_CACHE``)."""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from timl.errors import ImageError
from timl.images.decode import decode_image
from timl.images.preprocessing import Preprocessing
from timl.images.shared_cache import shared_cache_folder, shared_images

logger = logging.getLogger(__name__)

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
    return _fill(aligned_empty((len(paths), size, size, 3)), list(paths), preprocessing, num_workers)


def aligned_empty(shape: tuple) -> np.ndarray:
    """An uninitialised uint8 array whose data starts on a 64-byte boundary, which the tf.data pipeline hands to
    TensorFlow by reference (:func:`timl.images.pipeline._batch_fetcher`)."""
    size = int(np.prod(shape))
    buffer = np.empty(size + 64, dtype=np.uint8)
    start = -buffer.ctypes.data % 64
    return buffer[start:start + size].reshape(shape)


def _remove_folder(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def cache_images(paths: list[str], preprocessing: Preprocessing, cache_dir: str | Path | None = None, *,
                 memory_budget: int = DEFAULT_CACHE_BUDGET, num_workers: int | None = None,
                 shared_dir: str | Path | None = None) -> np.ndarray:
    """Like :func:`load_images`, but keeps large sets in a memory-mapped file instead of memory, and maps the
    machine's shared cache file when there is a shared cache (then every set, whatever its size).

    Args:
        paths: image files.
        preprocessing: size, resize filter and colour space.
        cache_dir: where the temporary folder of the memory-mapped file goes (default: the system temp folder).
            The folder is removed when the process exits.
        memory_budget: bytes of pixels kept in memory; more goes to disk (default 2 GiB).
        num_workers: threads (see :func:`load_images`).
        shared_dir: the shared cache's folder (default: the one ``TIML_IMAGE_CACHE`` names, else none).

    Returns:
        uint8 array (N, imgsize, imgsize, 3): an ``np.ndarray``, or an ``np.memmap`` over the budget (read-only
        from a shared cache).
    """
    size = preprocessing.imgsize
    shape = (len(paths), size, size, 3)
    shared = shared_dir if shared_dir is not None else shared_cache_folder()
    if shared is not None:
        return shared_images(list(paths), preprocessing, shared,
                             lambda out: _fill(out, list(paths), preprocessing, num_workers))
    if int(np.prod(shape)) <= memory_budget:
        return load_images(paths, preprocessing, num_workers=num_workers)
    folder = tempfile.mkdtemp(prefix="timl-cache-", dir=cache_dir)
    atexit.register(_remove_folder, folder)
    logger.info("Caching %d images (%.1f GB) on disk in %s", len(paths), np.prod(shape) / 1e9, folder)
    out = np.memmap(os.path.join(folder, "images.u8"), dtype=np.uint8, mode="w+", shape=shape)
    _fill(out, list(paths), preprocessing, num_workers)
    out.flush()
    return out
