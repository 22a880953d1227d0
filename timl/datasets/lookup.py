"""Finding image files: the file of each image name in an image folder, in any suffix case.

The folder is listed once, so looking up many thousands of names stays fast; names with a ``/`` are looked up
in the sub-folder they name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import pandas as pd

from timl.datasets._common import _listed
from timl.datasets.cell import UNION_SEPARATOR
from timl.datasets.tables import IMAGE_COLUMN
from timl.errors import DatasetError, MissingFileError
from timl.images import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)


def _index_folder(img_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Maps exact and lower-cased stems of the folder's image files to file names (suffix order breaks ties)."""
    exact: dict[str, str] = {}
    lowered: dict[str, str] = {}
    rank = {suffix: position for position, suffix in enumerate(IMAGE_SUFFIXES)}
    with os.scandir(img_dir) as entries:
        names = sorted((entry.name for entry in entries if not entry.is_dir()),
                       key=lambda name: (rank.get(os.path.splitext(name)[1].lower(), 99), name))
    for name in names:
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in rank:
            exact.setdefault(stem, name)
            lowered.setdefault(stem.lower(), name)
    return exact, lowered


def _find_nested(name: str, img_dir: Path) -> str | None:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (img_dir / (name + suffix), img_dir / (name + suffix.upper())):
            if candidate.is_file():
                return str(candidate)
    return None


def outside_names(names: Iterable[str]) -> list[str]:
    """The image names that would lead out of the image folder: absolute names and names with a ``..`` part.

    Names with ``/`` name a sub-folder and stay allowed; links inside the folder are the user's own files (the
    review export makes such links) and are not resolved.
    """
    return [name for name in names
            if os.path.isabs(name) or ".." in name.replace(os.sep, "/").split("/")]


def find_images(names: Iterable[str], img_dir: str | Path) -> tuple[list[str | None], list[str]]:
    """Finds the file of each image name: the name plus one of ``IMAGE_SUFFIXES`` in any case.

    The folder is listed once, so this is fast for many thousands of images. Names with a ``/`` are looked up
    in the sub-folder they name.

    Args:
        names: image names (without suffix), as in the ``image_name`` column.
        img_dir: the folder holding the images.

    Returns:
        The path of each name (None where no file exists), and the names without a file, in order.

    Raises:
        DatasetError: names that lead out of the folder (absolute, or with a ``..`` part), listed.
    """
    img_dir = Path(img_dir)
    names = list(names)
    outside = outside_names(names)
    if outside:
        raise DatasetError(f"{len(outside)} image name(s) lead out of the image folder {img_dir}: an image_name "
                           "names a file inside it (a sub-folder with '/' is fine; no absolute name, no '..'). "
                           f"Received: {_listed(outside)}")
    exact, lowered = _index_folder(img_dir) if img_dir.is_dir() else ({}, {})
    paths: list[str | None] = []
    for name in names:
        if "/" in name or os.sep in name:
            paths.append(_find_nested(name, img_dir) if img_dir.is_dir() else None)
            continue
        file_name = exact.get(name) or lowered.get(name.lower())
        paths.append(str(img_dir / file_name) if file_name else None)
    missing = [name for name, path in zip(names, paths) if path is None]
    return paths, missing


def image_paths(names: list[str], img_dir: str | Path, source: str | Path) -> list[str]:
    """The image file of every name, or one error listing the names without a file.

    Args:
        names: image names, as in the ``image_name`` column.
        img_dir: the image folder.
        source: the file the names came from, for the message.

    Raises:
        MissingFileError: no such folder, or images not found (the first 20 names and the count).
        DatasetError: names that lead out of the folder (absolute, or with a ``..`` part), listed.
    """
    img_dir = Path(img_dir)
    if not img_dir.is_dir():
        raise MissingFileError(f"{source}: image folder not found: {img_dir}. Give the folder that holds the images "
                               "with --img-dir (default: images/ beside the table that names them). "
                               f"Received: img_dir={str(img_dir)!r}")
    try:
        paths, missing = find_images(names, img_dir)
    except DatasetError as error:
        raise DatasetError(f"{source}: {error}") from None
    if missing:
        raise MissingFileError(
            f"{source}: {len(missing)} image(s) not found in {img_dir} (looked for image_name plus one of "
            f"{', '.join(IMAGE_SUFFIXES)}, any case): {_listed(sorted(missing))}"
        )
    return [str(path) for path in paths]


def _find_paths(names: list[str], img_dir: Path, source: str, origins: dict[str, Path]) -> list[str]:
    """The image file of every name: in ``img_dir``, except rows of a ``+`` union (``origins``), found in the
    ``images/`` folder beside their CSV. Every folder's missing images in one error."""
    groups: dict[Path, list[int]] = {}
    for position, name in enumerate(names):
        groups.setdefault(origins[name].parent / "images" if name in origins else img_dir, []).append(position)
    paths: list[str] = [""] * len(names)
    problems = []
    for folder, positions in groups.items():
        listed_by = sorted({str(origins[names[p]]) for p in positions if names[p] in origins})
        try:
            found = image_paths([names[p] for p in positions], folder,
                                UNION_SEPARATOR.join(listed_by) if len(groups) > 1 and listed_by else source)
        except MissingFileError as error:
            problems.append(str(error))
            continue
        for position, path in zip(positions, found):
            paths[position] = path
    if problems:
        raise MissingFileError("\n".join(problems))
    return paths


def attach_paths(frames: dict[str, pd.DataFrame | None], img_dir: Path, source: str,
                  origins: dict[str, Path]) -> dict:
    """Each frame of ``frames`` (split -> frame with ``image_name``, or None) with its images' files as ``path``
    (see :func:`_find_paths`).

    Raises:
        MissingFileError: images not found, every folder's missing names in one message.
    """
    names = [name for frame in frames.values() if frame is not None for name in frame[IMAGE_COLUMN]]
    paths = _find_paths(names, img_dir, source, origins)
    result, start = {}, 0
    for split, frame in frames.items():
        if frame is None:
            result[split] = None
            continue
        result[split] = frame.assign(path=paths[start:start + len(frame)]).reset_index(drop=True)
        start += len(frame)
    return result
