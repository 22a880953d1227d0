"""The shared image cache: a split's decoded pixels in one file per (image files, preprocessing) in a machine-wide
folder, written once and mapped read-only by every process that needs them (parallel rows and trials of one
machine then hold one copy of the pixels, in the page cache, instead of one each).

It is on when ``TIML_IMAGE_CACHE`` names a folder (``auto``: ``~/.cache/timl/images``); unset, each process keeps
its own cache (:func:`timl.images.cache_images`). A file is named after a key that changes when any image file
changes: the sha256 of the preprocessing (size, resize filter, colour space) and of every file's absolute path,
size and modification time in nanoseconds (a stat per image, no read of its bytes). The first process decodes
the images into a temporary file beside it and renames it into place, under a lock (``fcntl.flock`` on
``<file>.lock``), so two processes never both decode; later ones map it. A file of the wrong size (cut short,
damaged) is decoded again. The folder is kept under ``TIML_IMAGE_CACHE_MAX_GB`` (default 20; ``unlimited``):
when a new file is written, the least recently used files (by modification time, which mapping a file renews) are
removed until the folder fits (a process that has one mapped keeps reading it: Linux removes it once unmapped).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from timl.images.preprocessing import Preprocessing

try:  # POSIX; elsewhere the rename alone keeps the file whole (two processes may then both decode)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

logger = logging.getLogger(__name__)

#: The environment variable that turns the shared cache on: a folder, or ``auto`` for ``DEFAULT_IMAGE_CACHE``.
IMAGE_CACHE_VARIABLE = "TIML_IMAGE_CACHE"

#: The shared cache's folder for ``TIML_IMAGE_CACHE=auto``.
DEFAULT_IMAGE_CACHE = Path("~/.cache/timl/images")

#: The environment variable bounding the shared cache folder: gigabytes, or ``unlimited``.
MAX_SIZE_VARIABLE = "TIML_IMAGE_CACHE_MAX_GB"
DEFAULT_MAX_GB = 20.0

#: Bumped when the file's layout changes, so that older files are not read.
CACHE_VERSION = 1


def shared_cache_folder() -> Path | None:
    """The shared cache's folder that ``TIML_IMAGE_CACHE`` names, or None (unset, empty or ``off``: no sharing)."""
    value = os.environ.get(IMAGE_CACHE_VARIABLE, "").strip()
    if value.lower() in ("", "off", "none"):
        return None
    return (DEFAULT_IMAGE_CACHE if value.lower() == "auto" else Path(value)).expanduser()


def max_cache_bytes() -> int | None:
    """The shared cache folder's bound in bytes from ``TIML_IMAGE_CACHE_MAX_GB`` (None: ``unlimited``).

    Raises:
        ConfigError: not a positive number of gigabytes, nor ``unlimited``.
    """
    from timl.errors import ConfigError

    value = os.environ.get(MAX_SIZE_VARIABLE, "").strip()
    if not value:
        return int(DEFAULT_MAX_GB * 1e9)
    if value.lower() == "unlimited":
        return None
    try:
        gigabytes = float(value)
    except ValueError:
        gigabytes = -1.0
    if not gigabytes > 0:
        raise ConfigError(f"{MAX_SIZE_VARIABLE} must be a positive number of gigabytes (e.g. 20) or unlimited. "
                          f"Received: {MAX_SIZE_VARIABLE}={value!r}")
    return int(gigabytes * 1e9)


def _evict(folder: Path, keep: Path, limit: int | None) -> None:
    """Removes the least recently used cache files until the folder's files fit ``limit`` bytes (never ``keep``,
    the file just written)."""
    if limit is None:
        return
    files = []
    for path in folder.glob("*.npy"):
        with contextlib.suppress(OSError):  # removed meanwhile by another process
            status = path.stat()
            files.append((status.st_mtime_ns, status.st_size, path))
    total = sum(size for _, size, _ in files)
    removed = 0
    for _, size, path in sorted(files):
        if total <= limit:
            break
        if path == keep:
            continue
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".lock").unlink(missing_ok=True)
        total -= size
        removed += size
    if removed:
        logger.info("Removed %.3g MB of least recently used image cache files from %s (%s: %.3g GB)",
                    removed / 1e6, folder, MAX_SIZE_VARIABLE, limit / 1e9)


def _used(path: Path, mapped: np.memmap) -> np.memmap:
    """Marks a cache file used now (its modification time: the eviction's order); returns its mapping."""
    with contextlib.suppress(OSError):  # a read-only folder: it is only evicted earlier
        os.utime(path)
    return mapped


def _file_identity(path: str) -> list:
    """What the key knows of one image file: absolute path, size and mtime in ns (``missing`` if it has none)."""
    absolute = os.path.abspath(path)
    try:
        status = os.stat(absolute)
    except OSError:
        return [absolute, "missing"]
    return [absolute, status.st_size, status.st_mtime_ns]


def cache_key(paths: list[str], preprocessing: Preprocessing) -> str:
    """The name of the cache file of these images with this preprocessing (it changes when any file changes)."""
    content = {"version": CACHE_VERSION, "preprocessing": preprocessing.to_dict(),
               "files": [_file_identity(path) for path in paths]}
    digest = hashlib.sha256(json.dumps(content).encode()).hexdigest()[:32]
    return f"{preprocessing.imgsize}px-{preprocessing.resizefilter}-{preprocessing.colorspace}-{len(paths)}-{digest}.npy"


def _open_valid(path: Path, shape: tuple) -> np.memmap | None:
    """The cache file mapped read-only, or None when there is none or it is not whole (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        mapped = np.load(path, mmap_mode="r")
        if isinstance(mapped, np.memmap) and mapped.dtype == np.uint8 and mapped.shape == shape \
                and path.stat().st_size == mapped.offset + mapped.nbytes:
            return mapped
    except (OSError, ValueError, EOFError) as error:
        logger.warning("The image cache file %s cannot be read (%s): decoding the images again", path, error)
        return None
    logger.warning("The image cache file %s is not whole: decoding the images again", path)
    return None


@contextlib.contextmanager
def _locked(path: Path):
    """Holds an exclusive lock on ``path`` (created if needed) while the block runs."""
    with open(path, "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def shared_images(paths: list[str], preprocessing: Preprocessing, folder: str | Path, fill) -> np.memmap:
    """The decoded images of ``paths``, mapped read-only from the shared cache file (decoded first if missing).

    Args:
        paths: image files.
        preprocessing: size, resize filter and colour space.
        folder: the shared cache's folder (created if needed).
        fill: ``fill(out)`` decodes every path into the writable array ``out`` (N, S, S, 3), in order.

    Returns:
        A read-only ``np.memmap`` (N, S, S, 3) uint8.

    Raises:
        ImageError: images that cannot be decoded (no file is left behind).
    """
    limit = max_cache_bytes()  # a bad setting fails before any decoding
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / cache_key(paths, preprocessing)
    shape = (len(paths), preprocessing.imgsize, preprocessing.imgsize, 3)
    mapped = _open_valid(path, shape)
    if mapped is not None:
        logger.info("Mapped %d cached images from %s", len(paths), path)
        return _used(path, mapped)
    with _locked(path.with_name(path.name + ".lock")):
        mapped = _open_valid(path, shape)  # another process may have written it while this one waited
        if mapped is not None:
            logger.info("Mapped %d cached images from %s", len(paths), path)
            return _used(path, mapped)
        for stale in folder.glob(f".{path.name}.*.partial"):  # left by a killed process (the lock is ours)
            stale.unlink(missing_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
            fill(out)
            out.flush()
            del out
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        logger.info("Decoded %d images into the shared cache file %s", len(paths), path)
        mapped = np.load(path, mmap_mode="r")
    _evict(folder, path, limit)
    return mapped
