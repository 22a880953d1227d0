"""Splitting a ground truth into train, dev and test sets, and loading a Dataset.

Applies the split strategy a ``split`` cell names (``SPLIT_STRATEGIES``: pre, frac, n, list, kfold; the cell parsed
by :mod:`timl.datasets.split_spec`; random splits stratified by class and reproducible from a seed, as
:mod:`timl.datasets.stratify` orders them) in :func:`load_dataset`, which reads, checks and splits the ground truth
and finds its images.

A file of the ``dataset`` cell may be a union of CSVs joined with ``+`` (``corrected.csv+isic.csv``): their rows
together, an image listed by several files taking its label from the first (experts' corrections first override
the original ground truth), each file's images found beside it unless an image folder is given.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from timl import tables
from timl.datasets._common import _listed
from timl.datasets.cell import UNION_SEPARATOR, DatasetCell, DatasetEntry
from timl.datasets.dataset import SPLITS, Dataset
from timl.datasets.groups import GroupsSpec, group_labels, groups_file, parse_groups, read_group_table, refuse_shared
from timl.datasets.lookup import attach_paths
from timl.datasets.split_spec import SplitSpec, parse_split
from timl.datasets.stratify import grouped_assignment, stratified_folds, stratified_order
from timl.datasets.tables import IMAGE_COLUMN, UnknownClassColumn, read_ground_truth
from timl.errors import DatasetError, MissingFileError

logger = logging.getLogger(__name__)

#: Share of the non-test rows that becomes the dev set in ``kfold`` splits.
KFOLD_DEV_FRACTION = 0.1


# ---------------------------------------------------------------------------------------------------------------
# Split strategies


def _check_not_empty(parts: dict[str, pd.DataFrame], spec: SplitSpec, source: str, total: int,
                     groups: np.ndarray | None = None) -> None:
    empty = [name for name, frame in parts.items() if frame is not None and len(frame) == 0]
    if empty:
        whole = f" in {len(set(groups))} whole groups" if groups is not None else ""
        raise DatasetError(f"{source}: split {spec.text!r} on {total} rows{whole} leaves the {' and '.join(empty)} "
                           f"set(s) empty; use fewer dev/test rows, fewer folds or more data. Received: "
                           f"split={spec.text!r}")


def _take(frame: pd.DataFrame, order: np.ndarray) -> pd.DataFrame:
    return frame.iloc[np.sort(order)].reset_index(drop=True)


def _grouped_parts(frame: pd.DataFrame, class_names, groups: np.ndarray, shares, seed: int) -> list[pd.DataFrame]:
    """The rows of ``frame`` dealt to parts of the given shares, every group whole (:func:`grouped_assignment`)."""
    part = grouped_assignment(frame[list(class_names)].to_numpy(), groups, shares, seed)
    return [frame[part == index].reset_index(drop=True) for index in range(len(shares))]


def _random_split(frame: pd.DataFrame, class_names, count: int, spec: SplitSpec, seed: int, source: str,
                  groups: np.ndarray | None = None) -> dict:
    if groups is not None:
        share = count / len(frame)
        train, dev, test = _grouped_parts(frame, class_names, groups, (1 - 2 * share, share, share), seed)
        parts = {"train": train, "dev": dev, "test": test}
        _check_not_empty(parts, spec, source, len(frame), groups)
    else:
        order = stratified_order(frame[list(class_names)].to_numpy(), seed)
        parts = {"train": _take(frame, order[2 * count:]), "dev": _take(frame, order[:count]),
                 "test": _take(frame, order[count:2 * count])}
    _check_not_empty(parts, spec, source, len(frame))
    return parts


def _kfold_split(frame: pd.DataFrame, class_names, spec: SplitSpec, seed: int, source: str,
                 groups: np.ndarray | None = None) -> dict:
    if spec.cross_validation:
        raise DatasetError(f"split {spec.text!r} is a cross-validation: a training table trains its {spec.folds} folds "
                           f"(kfold={spec.folds}:0 ... kfold={spec.folds}:{spec.folds - 1}); one fold is loaded as "
                           f"kfold={spec.folds}:i. Received: split={spec.text!r}")
    if groups is not None:
        shares = np.full(spec.folds, 1 / spec.folds)
        in_test = grouped_assignment(frame[list(class_names)].to_numpy(), groups, shares, seed) == spec.fold
        rest = frame[~in_test].reset_index(drop=True)
        train, dev = _grouped_parts(rest, class_names, groups[~in_test],
                                    (1 - KFOLD_DEV_FRACTION, KFOLD_DEV_FRACTION), seed + 1)
        parts = {"train": train, "dev": dev, "test": frame[in_test].reset_index(drop=True)}
        _check_not_empty(parts, spec, source, len(frame), groups)
        return parts
    in_test = stratified_folds(frame[list(class_names)].to_numpy(), spec.folds, seed) == spec.fold
    rest = frame[~in_test].reset_index(drop=True)
    rest_order = stratified_order(rest[list(class_names)].to_numpy(), seed + 1)
    dev_count = int(np.ceil(KFOLD_DEV_FRACTION * len(rest))) if len(rest) > 1 else 0
    parts = {"train": _take(rest, rest_order[dev_count:]), "dev": _take(rest, rest_order[:dev_count]),
             "test": frame[in_test].reset_index(drop=True)}
    _check_not_empty(parts, spec, source, len(frame))
    return parts


@dataclasses.dataclass
class _Request:
    """What a split strategy needs besides the split itself, and where the rows of ``+`` unions came from.

    Attributes:
        groups: the ``groups`` cell parsed, or None.
        origins: image name -> the CSV of a ``+`` union its row was taken from (filled while reading), so its
            image is looked up beside that file.
        group_of: image name -> its group label (filled while reading, with ``groups``).
    """

    dataset: DatasetCell
    classcolumns: str
    multi_label: bool
    seed: int
    base_dir: Path
    groups: GroupsSpec | None = None
    origins: dict[str, Path] = dataclasses.field(default_factory=dict)
    group_of: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def group_column(self) -> str | None:
        """The ground-truth column of the groups (``groups`` = ``COLUMN``), else None."""
        return self.groups.column if self.groups is not None and not self.groups.file else None

    def labels(self, frame: pd.DataFrame) -> np.ndarray | None:
        """The group label of each row of a frame read for this request; None without ``groups``."""
        if self.groups is None:
            return None
        return np.array([self.group_of[name] for name in frame[IMAGE_COLUMN]], dtype=object)


def _resolve(name: str, base_dir: Path) -> Path:
    path = Path(name.strip()).expanduser()
    return path if path.is_absolute() else base_dir / path


def _single_file_path(dataset: str, base_dir: Path) -> Path:
    """The CSV of a one-file split (``frac``, ``n``, ``kfold``): the file named, else, for a root name as the
    original TIML took (``data/isic`` for ``data/isic.csv``), that name plus ``.csv``."""
    path = _resolve(dataset, base_dir)
    with_suffix = path.with_name(path.name + ".csv")
    if not tables.table_exists(path) and path.suffix.lower() != ".csv" and with_suffix.is_file():
        return with_suffix
    return path


def _describe(files: tuple[Path, ...]) -> str:
    """The file(s) of one dataset entry, as messages and the Dataset's source name them: ``a.csv+b.csv``."""
    return UNION_SEPARATOR.join(str(path) for path in files)


def _union_members(entry: DatasetEntry, base_dir: Path) -> tuple[Path, ...] | None:
    """The CSVs of a ``+`` union (each may be a root name, as a one-file dataset may), or None when ``entry``
    names one file (a file whose name holds a ``+`` included).

    Raises:
        DatasetError: an empty member (``a.csv+``).
    """
    if not entry.is_union or tables.table_exists(_single_file_path(entry.text, base_dir)):
        return None
    if not all(entry.members):
        raise DatasetError(f"a '{UNION_SEPARATOR}' union needs a CSV file on each side of every "
                           f"'{UNION_SEPARATOR}' (a.csv+b.csv). Received: dataset={entry.text!r}")
    return tuple(_single_file_path(member, base_dir) for member in entry.members)


def _read_union(members: tuple[Path, ...], request: _Request) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The union of the rows of ``members`` (same class columns; an image listed by several files keeps the
    first file's row), every problem of every file in one error. Records each row's file in ``request.origins``.

    Raises:
        MissingFileError: member files that do not exist (and no other problem).
        DatasetError: bad file content, or class columns that differ between the files.
    """
    read: list[tuple[Path, pd.DataFrame, tuple[str, ...]]] = []
    missing, problems = [], []
    for position, path in enumerate(members, 1):
        if not tables.table_exists(path):
            missing.append(f"Ground-truth CSV not found: file {position} of the '{UNION_SEPARATOR}' union, "
                           f"{str(path)!r}. Received: dataset={request.dataset.text!r}")
            continue
        try:
            read.append((path, *read_ground_truth(path, request.classcolumns, request.multi_label,
                                                  group_column=request.group_column)))
        except UnknownClassColumn:
            raise  # the same cell is wrong for every file: said once, for the first
        except DatasetError as error:
            problems.append(str(error))
    if read:
        first, reference = read[0][0], read[0][2]
        problems += [f"{path}: class columns {', '.join(names)} differ from those of {first}: "
                     f"{', '.join(reference)}; the files of a '{UNION_SEPARATOR}' union need the same class columns"
                     for path, _, names in read[1:] if set(names) != set(reference)]
    if problems:
        raise DatasetError("\n".join(missing + problems))
    if missing:
        raise MissingFileError("\n".join(missing))
    kept = [IMAGE_COLUMN, *reference, *([request.group_column] if request.group_column else [])]
    union = pd.concat([frame[kept] for _, frame, _ in read], ignore_index=True)
    origin = [path for path, frame, _ in read for _ in range(len(frame))]
    first_listed = ~union[IMAGE_COLUMN].duplicated(keep="first").to_numpy()
    union = union[first_listed].reset_index(drop=True)
    request.origins.update(zip(union[IMAGE_COLUMN], (path for path, kept in zip(origin, first_listed) if kept)))
    for path, frame, _ in read:
        taken = sum(1 for kept, source in zip(first_listed, origin) if kept and source == path)
        logger.info("Union %s: %d of the %d rows of %s (the others listed by an earlier file)",
                    _describe(members), taken, len(frame), path)
    return union, reference


def _read_entry(files: tuple[Path, ...], request: _Request) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Reads one entry of the dataset cell: one ground-truth CSV, or the union of several; with ``groups``, records
    each image's group in ``request.group_of``."""
    if len(files) > 1:
        frame, class_names = _read_union(files, request)
    else:
        frame, class_names = read_ground_truth(files[0], request.classcolumns, request.multi_label,
                                               group_column=request.group_column)
    if request.groups is not None:
        frame = _read_groups(frame, files, request)
    return frame, class_names


def _read_groups(frame: pd.DataFrame, files: tuple[Path, ...], request: _Request) -> pd.DataFrame:
    """Records the group of each row of ``frame`` (its ``groups`` column, dropped, or the ``FILE.csv:COLUMN``
    table's value; an image without a value is a group of its own)."""
    names = frame[IMAGE_COLUMN]
    if request.group_column:
        values = frame[request.group_column]
        frame = frame.drop(columns=[request.group_column])
    else:
        table = read_group_table(request.groups, groups_file(request.groups, request.base_dir, files[0].parent))
        values = [table.get(name, "") for name in names]
    request.group_of.update(zip(names, group_labels(names, values)))
    return frame


def _single_file(spec: SplitSpec, request: _Request):
    if request.dataset.is_list:
        raise DatasetError(f"split {spec.text!r} needs one CSV file; a ';'-separated list needs split=list. "
                           f"Received: dataset={request.dataset.text!r}")
    files = _union_members(request.dataset.whole, request.base_dir)
    if files is None:
        path = _single_file_path(request.dataset.text, request.base_dir)
        if not tables.table_exists(path) and path.suffix.lower() != ".csv":
            raise MissingFileError(f"split {spec.text!r} reads one ground-truth CSV, named as a file or as its root "
                                   f"name (<root>.csv); found neither {str(path)!r} nor {str(path) + '.csv'!r}. "
                                   f"Received: dataset={request.dataset.text!r}")
        files = (path,)
    frame, class_names = _read_entry(files, request)
    return frame, class_names, files


def _split_frac(spec: SplitSpec, request: _Request):
    frame, class_names, files = _single_file(spec, request)
    count = int(round(spec.fraction * len(frame)))
    parts = _random_split(frame, class_names, count, spec, request.seed, _describe(files), request.labels(frame))
    return parts, class_names, dict.fromkeys(SPLITS, files)


def _split_n(spec: SplitSpec, request: _Request):
    frame, class_names, files = _single_file(spec, request)
    if 2 * spec.count >= len(frame):
        raise DatasetError(f"{_describe(files)}: split {spec.text!r} takes {spec.count} rows for dev and {spec.count} "
                           f"for test, leaving no train rows out of {len(frame)}. Use N < {(len(frame) + 1) // 2}. "
                           f"Received: split={spec.text!r}")
    parts = _random_split(frame, class_names, spec.count, spec, request.seed, _describe(files),
                          request.labels(frame))
    return parts, class_names, dict.fromkeys(SPLITS, files)


def _split_kfold(spec: SplitSpec, request: _Request):
    frame, class_names, files = _single_file(spec, request)
    parts = _kfold_split(frame, class_names, spec, request.seed, _describe(files), request.labels(frame))
    return parts, class_names, dict.fromkeys(SPLITS, files)


def _split_pre(spec: SplitSpec, request: _Request):
    root = _resolve(request.dataset.root, request.base_dir)
    files = {split: Path(f"{root}-{split}.csv") for split in SPLITS}
    missing = [str(files[split]) for split in ("train", "dev") if not files[split].is_file()]
    if missing:
        union = (f" (a '{UNION_SEPARATOR}' union works with split frac, n, kfold and list, not pre)"
                 if request.dataset.has_union else "")
        raise MissingFileError(f"split 'pre' reads <root>-train.csv, <root>-dev.csv and optionally <root>-test.csv; "
                               f"not found: {', '.join(missing)}{union}. Received: dataset={request.dataset.text!r}")
    return _read_files({split: (path,) if path.is_file() else None for split, path in files.items()}, request, spec)


def _split_list(spec: SplitSpec, request: _Request):
    entries = request.dataset.files
    if len(entries) not in (2, 3):
        raise DatasetError(f"split 'list' needs 'train.csv;dev.csv' or 'train.csv;dev.csv;test.csv' in the dataset "
                           f"cell ({len(entries)} file(s) given). Received: dataset={request.dataset.text!r}")
    files: dict[str, tuple[Path, ...] | None] = {
        split: _union_members(entry, request.base_dir) or (_resolve(entry.text, request.base_dir),)
        for split, entry in zip(SPLITS, entries)}
    files.setdefault("test", None)
    return _read_files(files, request, spec)


def _read_files(files: dict[str, tuple[Path, ...] | None], request: _Request, spec: SplitSpec):
    """Reads the files of a pre/list split and gathers every problem of every file into one error; with
    ``groups``, refuses files that share a group."""
    frames: dict[str, pd.DataFrame | None] = {}
    class_sets: dict[str, tuple[str, ...]] = {}
    problems: list[str] = []
    for split, entry in files.items():
        if entry is None:
            frames[split] = None
            continue
        try:
            frames[split], class_sets[split] = _read_entry(entry, request)
        except UnknownClassColumn:
            raise  # the same cell is wrong for every file: said once, for the first
        except (DatasetError, MissingFileError) as error:
            problems.append(str(error))
    if not problems:
        problems += _cross_checks(frames, class_sets, files)
    if problems:
        raise DatasetError("\n".join(problems))
    if request.groups is not None:
        refuse_shared({split: request.labels(frame) for split, frame in frames.items() if frame is not None},
                      request.groups, ", ".join(_describe(entry) for entry in files.values() if entry),
                      spec.text)
    return frames, class_sets["train"], {split: entry for split, entry in files.items() if entry is not None}


def _cross_checks(frames: dict, class_sets: dict, files: dict) -> list[str]:
    problems = []
    reference = class_sets["train"]
    for split, names in class_sets.items():
        if names != reference:
            problems.append(f"{_describe(files[split])}: class columns {', '.join(names)} differ from those of "
                            f"{_describe(files['train'])}: {', '.join(reference)}")
    seen: dict[str, str] = {}
    shared: list[str] = []
    for split, frame in frames.items():
        if frame is None:
            continue
        for name in frame[IMAGE_COLUMN]:
            if name in seen and seen[name] != split:
                shared.append(f"{name!r} ({seen[name]} and {split})")
            seen.setdefault(name, split)
    if shared:
        problems.append(f"{', '.join(_describe(p) for p in files.values() if p)}: images in two splits: "
                        f"{_listed(shared)}")
    return problems


#: Split strategies: name -> function(spec, request) -> (frames by split, class names, the CSV file(s) of each
#: split that has a file: one, or the members of a ``+`` union).
SPLIT_STRATEGIES: dict[str, Callable] = {
    "pre": _split_pre,
    "frac": _split_frac,
    "n": _split_n,
    "list": _split_list,
    "kfold": _split_kfold,
}


# ---------------------------------------------------------------------------------------------------------------
# Loading


def load_dataset(dataset: str | DatasetCell, split: str, *, classcolumns: str = "default", multi_label: bool = False,
                 img_dir: str | Path | None = None, seed: int = 0, base_dir: str | Path | None = None,
                 groups: str | None = None) -> Dataset:
    """Reads, checks and splits a ground truth, and finds its images.

    Args:
        dataset: the ``dataset`` cell, parsed (:class:`DatasetCell`, as a row holds it) or as written: a CSV
            file or its root name (``frac``, ``n``, ``kfold``: ``data/isic`` reads ``data/isic.csv``),
            a root name (``pre``: ``<root>-train.csv``, ...) or ``train.csv;dev.csv[;test.csv]`` (``list``).
            Except with ``pre``, a file may be a union ``a.csv+b.csv[+...]``: the rows of every file (same class
            columns), an image listed by several taking the first file's row. Relative paths are resolved
            against ``base_dir`` (default: the working directory).
        split: the split cell; see :func:`parse_split`.
        classcolumns: ``default`` or a ``;``-separated list of class columns.
        multi_label: allow any number of ones per row (default False: one-hot rows).
        img_dir: the image folder; defaults to ``images/`` beside the (first) CSV file, and for the rows of a
            union to ``images/`` beside the file each row came from. Relative paths are resolved against
            ``base_dir``.
        seed: seed of random splits.
        base_dir: the folder relative paths start from.
        groups: the ``groups`` cell: ``COLUMN`` of the ground truth or ``FILE.csv:COLUMN`` (a table with
            ``image_name``, relative to ``base_dir`` else to the CSV's folder). With it, ``frac``, ``n`` and
            ``kfold`` keep every group on one side (:func:`timl.datasets.grouped_assignment`) and ``pre``/``list``
            files that share a group are refused; an image without a value is its own group. Defaults to None.

    Returns:
        The Dataset.

    Raises:
        DatasetError: a malformed split or groups cell, bad CSV content, an image (with ``groups``: a group) in
            two splits, an empty split, union files with different class columns, or a groups column that does
            not exist; every problem of the file(s) in one message.
        MissingFileError: a CSV file or image files that do not exist (the first 20 missing names and the count).
    """
    spec = parse_split(split)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    request = _Request(DatasetCell.parse(dataset), classcolumns, multi_label, int(seed), base, parse_groups(groups))
    frames, class_names, files = SPLIT_STRATEGIES[spec.strategy](spec, request)
    entries = list(dict.fromkeys(files.values()))
    source = ";".join(_describe(entry) for entry in entries)
    folder = _resolve(str(img_dir), base) if img_dir is not None else entries[0][0].parent / "images"
    frames = attach_paths(frames, folder, source, request.origins if img_dir is None else {})
    logger.info("Dataset %s (split %s): %s", source, spec.text,
                {name: 0 if frame is None else len(frame) for name, frame in frames.items()})
    labels = {split: request.labels(frame) for split, frame in frames.items() if frame is not None}
    dataset = Dataset(class_names=tuple(class_names), multi_label=multi_label, train=frames["train"],
                      dev=frames["dev"], test=frames["test"], img_dir=folder, source=source,
                      files={split: entry for split, entry in files.items() if frames[split] is not None},
                      groups=labels if request.groups is not None else {},
                      group_cell=request.groups.text if request.groups is not None else "")
    if dataset.grouped:
        logger.info("Dataset %s grouped by %s: %s groups, %d image(s) without a group value (each its own group)",
                    source, dataset.group_cell, dataset.group_counts(), dataset.ungrouped_images())
    return dataset


def image_groups(dataset: str | DatasetCell, split: str, *, classcolumns: str = "default", multi_label: bool = False,
                 seed: int = 0, base_dir: str | Path | None = None, groups: str) -> dict[str, str]:
    """Image name -> group label of every image of a grouped dataset (:func:`load_dataset`'s arguments), read
    without looking for the images: what a cross-validation's pooled intervals resample by."""
    spec = parse_split(split)
    request = _Request(DatasetCell.parse(dataset), classcolumns, multi_label, int(seed),
                       Path(base_dir) if base_dir is not None else Path.cwd(), parse_groups(groups))
    SPLIT_STRATEGIES[spec.strategy](spec, request)
    return dict(request.group_of)
