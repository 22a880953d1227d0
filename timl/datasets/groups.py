"""Groups of images that must stay on one side of a split: the ``groups`` cell parsed and its labels read.

Dermoscopy data repeats lesions and patients (ISIC 2019 has several images of one lesion, its metadata's
``lesion_id``); a split that puts near-copies of one lesion in train and test inflates every score. The ``groups``
cell names each image's group:

- ``COLUMN``: a column of the ground-truth CSV (not a class column under ``classcolumns default``);
- ``FILE.csv:COLUMN``: a table (CSV, .xlsx, .ods) with ``image_name`` and that column, e.g. the ISIC metadata.

An image without a group value (an empty cell, or no row in the file) is a group of its own.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from timl import tables
from timl.datasets._common import _listed
from timl.datasets.tables import IMAGE_COLUMN, read_image_table
from timl.errors import DatasetError, MissingFileError

logger = logging.getLogger(__name__)

#: The forms a ``groups`` cell may take, as messages list them.
GROUPS_FORMS = "COLUMN (a column of the ground-truth CSV) or FILE.csv:COLUMN (a table with image_name and COLUMN)"

#: The prefix of the label of an image without a group value: its own group (a cell never starts with it).
OWN_GROUP = "\x00image:"


@dataclasses.dataclass(frozen=True)
class GroupsSpec:
    """A parsed ``groups`` cell.

    Attributes:
        text: the cell as written.
        column: the group column.
        file: the table holding it (``FILE.csv:COLUMN``), or "" for a column of the ground truth.
    """

    text: str
    column: str
    file: str = ""


def parse_groups(text: str) -> GroupsSpec | None:
    """Parses a ``groups`` cell without touching any file; None for an empty cell.

    Raises:
        DatasetError: an empty file or column (``:lesion_id``, ``meta.csv:``).
    """
    text = (text or "").strip()
    if not text:
        return None
    file, colon, column = text.rpartition(":")
    if not colon:
        file, column = "", text
    if not column.strip() or (colon and file and not file.strip()):
        raise DatasetError(f"the groups cell names a column: {GROUPS_FORMS}. Received: groups={text!r}")
    return GroupsSpec(text, column.strip(), file.strip())


def groups_file(spec: GroupsSpec, base_dir: Path, dataset_folder: Path) -> Path:
    """The table of ``FILE.csv:COLUMN``: as given when absolute, else against ``base_dir`` (where the dataset's
    relative paths start), else beside the dataset's CSV.

    Raises:
        MissingFileError: found in neither place.
    """
    path = Path(spec.file).expanduser()
    candidates = [path] if path.is_absolute() else list(dict.fromkeys([base_dir / path, dataset_folder / path]))
    for candidate in candidates:
        if tables.table_exists(candidate):
            return candidate
    raise MissingFileError(f"groups table not found: looked for {' and '.join(map(str, candidates))}. The groups "
                           f"cell is {GROUPS_FORMS}. Received: groups={spec.text!r}")


def read_group_table(spec: GroupsSpec, path: Path) -> dict[str, str]:
    """Image name -> group value of a ``FILE.csv:COLUMN`` table (empty values left out).

    Raises:
        DatasetError: no ``image_name`` column or no such column (the available ones listed).
    """
    frame = read_image_table(path, not_found="groups table not found", field="groups", what="groups table")
    if spec.column not in frame.columns:
        raise DatasetError(f"{path}: no column {spec.column!r} for the groups. Available columns: "
                           f"{', '.join(frame.columns)}. Received: groups={spec.text!r}")
    values = frame[[IMAGE_COLUMN, spec.column]]
    values = values[(values[spec.column] != "") & (values[IMAGE_COLUMN] != "")]
    return dict(zip(values[IMAGE_COLUMN], values[spec.column]))


def group_labels(names, values) -> np.ndarray:
    """The group label of each image: its value, or a group of its own when the value is empty or None."""
    return np.array([value if value else f"{OWN_GROUP}{name}" for name, value in zip(names, values)], dtype=object)


def ungrouped_count(labels: np.ndarray) -> int:
    """How many images have no group value (each its own group)."""
    return int(sum(str(label).startswith(OWN_GROUP) for label in labels))


def shown(label: str) -> str:
    """A group label as messages show it: its value, or ``image NAME`` for an image without one."""
    label = str(label)
    return f"image {label[len(OWN_GROUP):]!r}" if label.startswith(OWN_GROUP) else repr(label)


def shared_groups(labels_by_split: dict[str, np.ndarray]) -> list[str]:
    """The groups found in two or more splits, each as ``'G' (train and test)``, in first-seen order."""
    sides: dict[str, list[str]] = {}
    for split, labels in labels_by_split.items():
        for label in dict.fromkeys(labels):
            sides.setdefault(label, []).append(split)
    return [f"{shown(label)} ({' and '.join(splits)})" for label, splits in sides.items() if len(splits) > 1]


def refuse_shared(labels_by_split: dict[str, np.ndarray], spec: GroupsSpec, source: str, split: str) -> None:
    """Refuses files whose splits share a group, naming up to 20 shared groups.

    Raises:
        DatasetError: a group in two splits.
    """
    shared = shared_groups(labels_by_split)
    if shared:
        raise DatasetError(f"{source}: the files of split {split!r} share groups, so images of one group would be "
                           f"trained and scored on: {_listed(shared)}. Make files that share no group "
                           f"(python -m timl.split DATASET --groups {spec.text}), or use split frac, n or kfold, "
                           f"which keep groups whole. Received: groups={spec.text!r}")



def read_groups_of(spec: GroupsSpec, frames: dict[str, tuple[Path, object]], base_dir: Path) -> dict[str, np.ndarray]:
    """The group label of each image of several image tables (``{role: (table path, frame with image_name)}``):
    from each frame's ``COLUMN``, or from the ``FILE.csv:COLUMN`` table (relative to ``base_dir``, else beside the
    first table).

    Raises:
        MissingFileError, DatasetError: a groups table not found, without ``image_name`` or without the column;
            a frame without the column.
    """
    if spec.file:
        first = next(iter(frames.values()))[0]
        table = read_group_table(spec, groups_file(spec, base_dir, Path(first).parent))
    labels = {}
    for role, (path, frame) in frames.items():
        names = list(frame[IMAGE_COLUMN])
        if not spec.file and spec.column not in frame.columns:
            raise DatasetError(f"{path}: no column {spec.column!r} for the groups (the {role} CSV needs it, or give "
                               f"FILE.csv:COLUMN). Available columns: {', '.join(map(str, frame.columns))}. "
                               f"Received: groups={spec.text!r}")
        values = list(frame[spec.column]) if not spec.file else [table.get(name, "") for name in names]
        labels[role] = group_labels(names, values)
    return labels
