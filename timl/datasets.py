"""Datasets: ground-truth CSVs, class columns, split strategies, class weights and image lookup.

A dataset is a CSV whose first column is ``image_name`` followed by one 0/1 column per class (one-hot for
single-label data, any number of ones for multi-label data), as in the ISIC challenge files. The ``split`` cell
of a training table says how the rows become train, dev and test sets:

- ``pre``: ``dataset`` is a root name R; the files ``R-train.csv``, ``R-dev.csv`` and, if present, ``R-test.csv``.
- ``frac=F`` (0 < F < 0.5): F of the rows for dev, another F for test, the rest for train.
- ``n=N``: N rows for dev, N rows for test, the rest for train.
- ``list``: ``dataset`` is ``train.csv;dev.csv`` or ``train.csv;dev.csv;test.csv``.
- ``kfold=K:i`` (K >= 2, 0 <= i < K): K-fold cross-validation; fold i is the test set, a 10% slice of the other
  folds the dev set.

Random splits are stratified by class (the row's label combination) where possible, and reproducible from a seed.
This module imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from timl.errors import DatasetError, MissingFileError
from timl.images import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

#: The column that names each image (without its file suffix).
IMAGE_COLUMN = "image_name"

#: The forms a ``split`` cell may take, as error messages list them.
SPLIT_FORMS = "pre, frac=F (0<F<0.5), n=N, list, kfold=K:i"


#: Share of the non-test rows that becomes the dev set in ``kfold`` splits.
KFOLD_DEV_FRACTION = 0.1

#: How many offending rows or names an error message lists before it only counts them.
MAX_LISTED = 20

SPLITS = ("train", "dev", "test")


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """A parsed ``split`` cell.

    Attributes:
        strategy: one of ``SPLIT_STRATEGIES`` ("pre", "frac", "n", "list", "kfold").
        text: the cell as written.
        fraction: F of ``frac=F``.
        count: N of ``n=N``.
        folds: K of ``kfold=K:i``.
        fold: i of ``kfold=K:i`` (0-based).
    """

    strategy: str
    text: str
    fraction: float | None = None
    count: int | None = None
    folds: int | None = None
    fold: int | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Train, dev and (optional) test sets of one ground truth, with resolved image paths.

    Attributes:
        class_names: the class columns, in order (the model's output order).
        multi_label: whether a row may have any number of ones.
        train: ``image_name`` (str), the class columns (0/1 ints) and ``path`` (the image file).
        dev: as ``train``.
        test: as ``train``, or None when the split has no test set.
        img_dir: the folder the images were found in.
        source: a description of the CSV file(s) the sets come from.
    """

    class_names: tuple[str, ...]
    multi_label: bool
    train: pd.DataFrame
    dev: pd.DataFrame
    test: pd.DataFrame | None
    img_dir: Path
    source: str

    def frame(self, split: str) -> pd.DataFrame:
        """Returns the frame of ``split`` ("train", "dev" or "test").

        Raises:
            DatasetError: an unknown split name, or "test" when the dataset has no test set.
        """
        if split not in SPLITS:
            raise DatasetError(f"Unknown split name. Expected one of: {', '.join(SPLITS)}. Received: split={split!r}")
        frame = getattr(self, split)
        if frame is None:
            raise DatasetError(f"{self.source} has no test set (split without a test file). Received: split='test'")
        return frame

    def labels(self, split: str) -> np.ndarray:
        """The ground truth of ``split`` as a float32 array (rows, classes)."""
        return self.frame(split)[list(self.class_names)].to_numpy(dtype=np.float32)

    def paths(self, split: str) -> list[str]:
        """The image file paths of ``split``, in row order."""
        return self.frame(split)["path"].tolist()

    def class_weights(self, mode: str) -> dict[int, float]:
        """Class weights from the train set; see :func:`compute_class_weights`."""
        return compute_class_weights(self.labels("train"), mode)

    def sizes(self) -> dict:
        """Row counts: ``{"train": n, "dev": n, "test": n or 0}``."""
        return {"train": len(self.train), "dev": len(self.dev), "test": 0 if self.test is None else len(self.test)}


# ---------------------------------------------------------------------------------------------------------------
# Split cells


def _split_error(text: str, reason: str = "") -> DatasetError:
    detail = f" {reason}." if reason else ""
    return DatasetError(f"Unknown or malformed split.{detail} Expected one of: {SPLIT_FORMS}. Received: split={text!r}")


def _parse_frac(text: str, value: str) -> SplitSpec:
    try:
        fraction = float(value)
    except ValueError:
        raise _split_error(text, "F must be a number") from None
    if not 0 < fraction < 0.5:
        raise _split_error(text, "F must be between 0 and 0.5 (exclusive)")
    return SplitSpec("frac", text, fraction=fraction)


def _parse_n(text: str, value: str) -> SplitSpec:
    if not re.fullmatch(r"\d+", value) or int(value) < 1:
        raise _split_error(text, "N must be a positive integer")
    return SplitSpec("n", text, count=int(value))


def _parse_kfold(text: str, value: str) -> SplitSpec:
    match = re.fullmatch(r"(\d+):(\d+)", value)
    if not match:
        raise _split_error(text, "kfold needs K:i with integers K >= 2 and 0 <= i < K")
    folds, fold = int(match.group(1)), int(match.group(2))
    if folds < 2 or fold >= folds:
        raise _split_error(text, f"kfold needs K >= 2 and 0 <= i < K (got K={folds}, i={fold})")
    return SplitSpec("kfold", text, folds=folds, fold=fold)


def _parse_plain(name: str) -> Callable[[str, str | None], SplitSpec]:
    def parse(text: str, value: str | None) -> SplitSpec:
        if value is not None:
            raise _split_error(text, f"'{name}' takes no value")
        return SplitSpec(name, text)

    return parse


_SPLIT_PARSERS: dict[str, Callable] = {
    "pre": _parse_plain("pre"),
    "frac": _parse_frac,
    "n": _parse_n,
    "list": _parse_plain("list"),
    "kfold": _parse_kfold,
}


def parse_split(text: str) -> SplitSpec:
    """Validates a ``split`` cell without touching any file.

    Args:
        text: ``pre``, ``frac=F`` (0<F<0.5), ``n=N``, ``list`` or ``kfold=K:i`` (0 <= i < K).

    Returns:
        The parsed SplitSpec.

    Raises:
        DatasetError: the cell is not one of the accepted forms.
    """
    if not isinstance(text, str):
        raise _split_error(repr(text))
    name, separator, value = text.strip().partition("=")
    name = name.strip().lower()
    parser = _SPLIT_PARSERS.get(name)
    if parser is None or (name in ("frac", "n", "kfold") and not separator):
        raise _split_error(text)
    return parser(text, value.strip() if separator else None)


# ---------------------------------------------------------------------------------------------------------------
# Reading and checking one ground-truth file


def _listed(items: list, total: int | None = None) -> str:
    total = len(items) if total is None else total
    shown = ", ".join(str(item) for item in items[:MAX_LISTED])
    more = f" ... ({total} in all)" if total > MAX_LISTED else f" ({total} in all)" if total > 1 else ""
    return shown + more


def _select_class_columns(columns: list[str], classcolumns: str, problems: list[str]) -> tuple[str, ...]:
    available = [column for column in columns if column != IMAGE_COLUMN]
    if classcolumns.strip() == "default":
        selected = available
    else:
        selected = [name.strip() for name in classcolumns.split(";") if name.strip()]
        unknown = [name for name in selected if name not in available]
        if unknown:
            problems.append(f"unknown class column(s) {', '.join(map(repr, unknown))} in classcolumns. "
                            f"Available columns: {', '.join(available)}. Received: classcolumns={classcolumns!r}")
            selected = [name for name in selected if name in available]
        duplicated = sorted({name for name in selected if selected.count(name) > 1})
        if duplicated:
            problems.append(f"class column(s) {', '.join(duplicated)} listed twice. Received: classcolumns={classcolumns!r}")
    if not selected and not problems:
        problems.append("no class columns: the CSV needs one 0/1 column per class after image_name.")
    return tuple(dict.fromkeys(selected))


def _row_label(frame: pd.DataFrame, index: int) -> str:
    return f"line {index + 2} ({frame[IMAGE_COLUMN].iat[index]!r})"


def _check_values(frame: pd.DataFrame, class_names: tuple[str, ...], problems: list[str]) -> pd.DataFrame:
    values = frame[list(class_names)].apply(pd.to_numeric, errors="coerce")
    bad = ~values.isin([0, 1])
    if bad.to_numpy().any():
        where = []
        for index in np.flatnonzero(bad.to_numpy().any(axis=1)):
            columns = [name for name in class_names if bad[name].iat[index]]
            where.append(f"{_row_label(frame, index)} column(s) {', '.join(columns)}: "
                         f"{', '.join(repr(frame[c].iat[index]) for c in columns)}")
        problems.append(f"class values must be 0 or 1; bad values at {_listed(where)}")
    return values.where(~bad, 0).astype(np.int64)


def _check_rows(frame: pd.DataFrame, values: pd.DataFrame, multi_label: bool, problems: list[str]) -> None:
    names = frame[IMAGE_COLUMN]
    empty = np.flatnonzero((names == "").to_numpy())
    if len(empty):
        problems.append(f"empty image_name at {_listed([f'line {i + 2}' for i in empty])}")
    duplicated = names[names.duplicated(keep=False) & (names != "")]
    if len(duplicated):
        unique = list(dict.fromkeys(duplicated))
        problems.append(f"duplicate image names: {_listed(unique)}")
    if not multi_label and len(values.columns):
        sums = values.sum(axis=1).to_numpy()
        not_one_hot = np.flatnonzero(sums != 1)
        if len(not_one_hot):
            rows = [f"{_row_label(frame, i)} has {sums[i]} ones" for i in not_one_hot]
            problems.append(f"single-label rows must be one-hot (exactly one 1 among the class columns; "
                            f"use a multi-label method otherwise): {_listed(rows)}")


def read_image_table(path: str | Path, *, not_found: str = "Ground-truth CSV not found", field: str = "dataset",
                     what: str | None = None) -> pd.DataFrame:
    """Reads a CSV whose rows name images (ground truth, test dataframe, predictions): every cell as stripped text.

    The one reader of such files: datasets, predict, explain, inspect and the classifier's config-table lookup
    all use it, so a file reads the same everywhere.

    Args:
        path: the CSV file.
        not_found: the message's start when the file does not exist. Defaults to "Ground-truth CSV not found".
        field: the option or cell that named the file, for the message. Defaults to "dataset".
        what: when given, the table must have an ``image_name`` column and the message calls the file this
            (e.g. "test dataframe").

    Returns:
        A frame of strings (empty cells are ""), column names stripped.

    Raises:
        MissingFileError: no such file.
        DatasetError: not a readable CSV, or no ``image_name`` column when ``what`` is given.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{not_found}. Received: {field}={str(path)!r}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not a readable CSV file ({error}).") from error
    frame.columns = [str(column).strip() for column in frame.columns]
    if what is not None and IMAGE_COLUMN not in frame.columns:
        raise DatasetError(f"{path}: the {what} needs an '{IMAGE_COLUMN}' column. "
                           f"Received columns: {', '.join(frame.columns)}")
    return frame.apply(lambda column: column.str.strip())


def read_image_names(path: str | Path, *, what: str = "test dataframe", field: str = "test_dataframe") -> list[str]:
    """The ``image_name`` column of a CSV (other columns are ignored).

    Raises:
        MissingFileError, DatasetError: no such file, or no ``image_name`` column.
    """
    frame = read_image_table(path, not_found=f"{what[0].upper()}{what[1:]} not found", field=field, what=what)
    return list(frame[IMAGE_COLUMN])


def class_columns(path: str | Path) -> tuple[str, ...]:
    """The class columns of a ground-truth CSV with ``classcolumns=default``: every column but ``image_name``."""
    return tuple(column for column in read_image_table(path).columns if column != IMAGE_COLUMN)


def read_ground_truth(path: str | Path, classcolumns: str = "default",
                      multi_label: bool = False) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Reads and checks one ground-truth CSV.

    Args:
        path: the CSV file (``image_name`` then one 0/1 column per class).
        classcolumns: ``default`` (every column but ``image_name``) or a ``;``-separated list of columns.
        multi_label: if False (default), every row must be one-hot over the class columns.

    Returns:
        A frame with ``image_name`` (str) and the class columns (0/1 ints), and the class names.

    Raises:
        MissingFileError: the file does not exist.
        DatasetError: every problem of the file in one message (missing ``image_name`` column, unknown class
            column, values other than 0/1, rows that are not one-hot, duplicate image names).
    """
    path = Path(path)
    frame = read_image_table(path)
    problems: list[str] = []
    if IMAGE_COLUMN not in frame.columns:
        raise DatasetError(f"{path}: missing the {IMAGE_COLUMN!r} column (the first column must name the images). "
                           f"Received columns: {', '.join(frame.columns)}")
    class_names = _select_class_columns(list(frame.columns), classcolumns, problems)
    values = _check_values(frame, class_names, problems)
    _check_rows(frame, values, multi_label, problems)
    if len(frame) == 0:
        problems.append("the file has no data rows")
    if problems:
        raise DatasetError(f"{path}: " + "; ".join(problems))
    result = pd.concat([frame[[IMAGE_COLUMN]].reset_index(drop=True), values.reset_index(drop=True)], axis=1)
    return result, class_names


# ---------------------------------------------------------------------------------------------------------------
# Images


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


def find_images(names: Iterable[str], img_dir: str | Path) -> tuple[list[str | None], list[str]]:
    """Finds the file of each image name: the name plus one of ``IMAGE_SUFFIXES`` in any case.

    The folder is listed once, so this is fast for many thousands of images. Names with a ``/`` are looked up
    in the sub-folder they name.

    Args:
        names: image names (without suffix), as in the ``image_name`` column.
        img_dir: the folder holding the images.

    Returns:
        The path of each name (None where no file exists), and the names without a file, in order.
    """
    img_dir = Path(img_dir)
    names = list(names)
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
    """
    img_dir = Path(img_dir)
    if not img_dir.is_dir():
        raise MissingFileError(f"{source}: image folder not found. Received: img_dir={str(img_dir)!r}")
    paths, missing = find_images(names, img_dir)
    if missing:
        raise MissingFileError(
            f"{source}: {len(missing)} image(s) not found in {img_dir} (looked for image_name plus one of "
            f"{', '.join(IMAGE_SUFFIXES)}, any case): {_listed(sorted(missing))}"
        )
    return [str(path) for path in paths]


def _attach_paths(frames: dict[str, pd.DataFrame | None], img_dir: Path, source: str) -> dict:
    names = [name for frame in frames.values() if frame is not None for name in frame[IMAGE_COLUMN]]
    paths = image_paths(names, img_dir, source)
    result, start = {}, 0
    for split, frame in frames.items():
        if frame is None:
            result[split] = None
            continue
        result[split] = frame.assign(path=paths[start:start + len(frame)]).reset_index(drop=True)
        start += len(frame)
    return result


# ---------------------------------------------------------------------------------------------------------------
# Class weights


def compute_class_weights(labels: np.ndarray, mode: str) -> dict[int, float]:
    """Class weights for Keras ``fit``.

    Args:
        labels: the train set's ground truth (rows, classes), 0/1.
        mode: ``default`` (every class 1.0) or ``compute`` (inverse class frequency, the most frequent class at
            1.0; a class absent from the train set gets 1.0).

    Returns:
        ``{class_index: weight}``.

    Raises:
        DatasetError: an unknown mode.
    """
    if mode not in CLASS_WEIGHTS:
        raise DatasetError(f"Unknown class weight mode. Expected one of: {', '.join(CLASS_WEIGHT_MODES)}. "
                           f"Received: classweights={mode!r}")
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2:
        raise DatasetError(f"labels must be a 2-D array (rows, classes). Received: labels.shape={labels.shape}")
    return CLASS_WEIGHTS[mode](labels)


def _default_weights(labels: np.ndarray) -> dict[int, float]:
    return {index: 1.0 for index in range(labels.shape[1])}


def _inverse_frequency_weights(labels: np.ndarray) -> dict[int, float]:
    counts = labels.sum(axis=0)
    most = counts.max() if counts.size else 0.0
    absent = [index for index, count in enumerate(counts) if count == 0]
    if absent:
        logger.warning("Classes %s have no train rows; their weight is left at 1.0.", absent)
    return {index: float(most / count) if count > 0 else 1.0 for index, count in enumerate(counts)}


#: Class weight modes (the ``classweights`` column): all 1.0, or inverse class frequency in the train set.
CLASS_WEIGHTS: dict[str, Callable[[np.ndarray], dict[int, float]]] = {
    "default": _default_weights,
    "compute": _inverse_frequency_weights,
}

CLASS_WEIGHT_MODES = tuple(CLASS_WEIGHTS)


# ---------------------------------------------------------------------------------------------------------------
# Split strategies


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation of the rows that interleaves the classes in proportion.

    Rows of each stratum (the row's label combination) are shuffled; each gets the key (rank + u) / size with
    u uniform in [0, 1), and the rows are sorted by that key. Any prefix, or every K-th row, of the result then
    holds each class in about its share of the whole: a stratified sample "where possible" (a class with too
    few rows simply lands wherever its keys fall).

    Args:
        labels: (rows, classes) 0/1 array.
        seed: the seed of the shuffle.

    Returns:
        An int array, a permutation of ``range(rows)``.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    strata = np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1) if len(labels) else np.zeros(0, int)
    keys = np.empty(len(labels))
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        rng.shuffle(members)
        keys[members] = (np.arange(len(members)) + rng.random(len(members))) / len(members)
    return np.argsort(keys, kind="stable")


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Assigns each row to one of ``folds`` folds, stratified by class and reproducible from ``seed``.

    The rows of each stratum (label combination) are shuffled and dealt round-robin over the folds, continuing
    where the previous stratum stopped: each fold gets its share of every class (within one row), and the fold
    sizes differ by at most one row.

    Returns:
        An int array (rows,) of fold numbers in 0 .. folds-1.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    strata = np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1) if len(labels) else np.zeros(0, int)
    assignment = np.empty(len(labels), dtype=int)
    dealt = int(rng.integers(folds))
    for stratum in rng.permutation(np.unique(strata)):
        members = np.flatnonzero(strata == stratum)
        rng.shuffle(members)
        assignment[members] = (dealt + np.arange(len(members))) % folds
        dealt += len(members)
    return assignment


def _check_not_empty(parts: dict[str, pd.DataFrame], spec: SplitSpec, source: str, total: int) -> None:
    empty = [name for name, frame in parts.items() if frame is not None and len(frame) == 0]
    if empty:
        raise DatasetError(f"{source}: split {spec.text!r} on {total} rows leaves the {' and '.join(empty)} "
                           f"set(s) empty; use fewer dev/test rows, fewer folds or more data. Received: "
                           f"split={spec.text!r}")


def _take(frame: pd.DataFrame, order: np.ndarray) -> pd.DataFrame:
    return frame.iloc[np.sort(order)].reset_index(drop=True)


def _random_split(frame: pd.DataFrame, class_names, count: int, spec: SplitSpec, seed: int, source: str) -> dict:
    order = stratified_order(frame[list(class_names)].to_numpy(), seed)
    parts = {"train": _take(frame, order[2 * count:]), "dev": _take(frame, order[:count]),
             "test": _take(frame, order[count:2 * count])}
    _check_not_empty(parts, spec, source, len(frame))
    return parts


def _kfold_split(frame: pd.DataFrame, class_names, spec: SplitSpec, seed: int, source: str) -> dict:
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
    """What a split strategy needs besides the split itself."""

    dataset: str
    classcolumns: str
    multi_label: bool
    seed: int
    base_dir: Path


def _resolve(name: str, base_dir: Path) -> Path:
    path = Path(name.strip()).expanduser()
    return path if path.is_absolute() else base_dir / path


def _single_file(spec: SplitSpec, request: _Request):
    path = _resolve(request.dataset, request.base_dir)
    if ";" in request.dataset:
        raise DatasetError(f"split {spec.text!r} needs one CSV file; a ';'-separated list needs split=list. "
                           f"Received: dataset={request.dataset!r}")
    frame, class_names = read_ground_truth(path, request.classcolumns, request.multi_label)
    return frame, class_names, path


def _split_frac(spec: SplitSpec, request: _Request):
    frame, class_names, path = _single_file(spec, request)
    count = int(round(spec.fraction * len(frame)))
    return _random_split(frame, class_names, count, spec, request.seed, str(path)), class_names, [path]


def _split_n(spec: SplitSpec, request: _Request):
    frame, class_names, path = _single_file(spec, request)
    if 2 * spec.count >= len(frame):
        raise DatasetError(f"{path}: split {spec.text!r} takes {spec.count} rows for dev and {spec.count} for test, "
                           f"leaving no train rows out of {len(frame)}. Use N < {(len(frame) + 1) // 2}. "
                           f"Received: split={spec.text!r}")
    return _random_split(frame, class_names, spec.count, spec, request.seed, str(path)), class_names, [path]


def _split_kfold(spec: SplitSpec, request: _Request):
    frame, class_names, path = _single_file(spec, request)
    return _kfold_split(frame, class_names, spec, request.seed, str(path)), class_names, [path]


def _pre_root(dataset: str) -> str:
    root = dataset.strip()
    for ending in ("-train.csv", ".csv"):
        if root.lower().endswith(ending):
            return root[: -len(ending)]
    return root


def _split_pre(spec: SplitSpec, request: _Request):
    root = _resolve(_pre_root(request.dataset), request.base_dir)
    files = {split: Path(f"{root}-{split}.csv") for split in SPLITS}
    missing = [str(files[split]) for split in ("train", "dev") if not files[split].is_file()]
    if missing:
        raise MissingFileError(f"split 'pre' reads <root>-train.csv, <root>-dev.csv and optionally <root>-test.csv; "
                               f"not found: {', '.join(missing)}. Received: dataset={request.dataset!r}")
    if not files["test"].is_file():
        files["test"] = None
    return _read_files(files, request)


def _split_list(spec: SplitSpec, request: _Request):
    names = [name for name in request.dataset.split(";") if name.strip()]
    if len(names) not in (2, 3):
        raise DatasetError(f"split 'list' needs 'train.csv;dev.csv' or 'train.csv;dev.csv;test.csv' in the dataset "
                           f"cell ({len(names)} file(s) given). Received: dataset={request.dataset!r}")
    files = {split: _resolve(name, request.base_dir) for split, name in zip(SPLITS, names)}
    files.setdefault("test", None)
    return _read_files(files, request)


def _read_files(files: dict[str, Path | None], request: _Request):
    """Reads the files of a pre/list split and gathers every problem of every file into one error."""
    frames: dict[str, pd.DataFrame | None] = {}
    class_sets: dict[str, tuple[str, ...]] = {}
    problems: list[str] = []
    for split, path in files.items():
        if path is None:
            frames[split] = None
            continue
        try:
            frames[split], class_sets[split] = read_ground_truth(path, request.classcolumns, request.multi_label)
        except (DatasetError, MissingFileError) as error:
            problems.append(str(error))
    if not problems:
        problems += _cross_checks(frames, class_sets, files)
    if problems:
        raise DatasetError("\n".join(problems))
    return frames, class_sets["train"], [path for path in files.values() if path is not None]


def _cross_checks(frames: dict, class_sets: dict, files: dict) -> list[str]:
    problems = []
    reference = class_sets["train"]
    for split, names in class_sets.items():
        if names != reference:
            problems.append(f"{files[split]}: class columns {', '.join(names)} differ from those of "
                            f"{files['train']}: {', '.join(reference)}")
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
        problems.append(f"{', '.join(str(p) for p in files.values() if p)}: images in two splits: {_listed(shared)}")
    return problems


#: Split strategies: name -> function(spec, request) -> (frames by split, class names, CSV paths).
SPLIT_STRATEGIES: dict[str, Callable] = {
    "pre": _split_pre,
    "frac": _split_frac,
    "n": _split_n,
    "list": _split_list,
    "kfold": _split_kfold,
}


def load_dataset(dataset: str, split: str, *, classcolumns: str = "default", multi_label: bool = False,
                 img_dir: str | Path | None = None, seed: int = 0, base_dir: str | Path | None = None) -> Dataset:
    """Reads, checks and splits a ground truth, and finds its images.

    Args:
        dataset: a CSV file (``frac``, ``n``, ``kfold``), a root name (``pre``) or ``train.csv;dev.csv[;test.csv]``
            (``list``). Relative paths are resolved against ``base_dir`` (default: the working directory).
        split: the split cell; see :func:`parse_split`.
        classcolumns: ``default`` or a ``;``-separated list of class columns.
        multi_label: allow any number of ones per row (default False: one-hot rows).
        img_dir: the image folder; defaults to ``images/`` beside the (first) CSV file. Relative paths are
            resolved against ``base_dir``.
        seed: seed of random splits.
        base_dir: the folder relative paths start from.

    Returns:
        The Dataset.

    Raises:
        DatasetError: a malformed split, bad CSV content, an image in two splits or an empty split; every problem
            of the file(s) in one message.
        MissingFileError: a CSV file or image files that do not exist (the first 20 missing names and the count).
    """
    spec = parse_split(split)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    request = _Request(str(dataset), classcolumns, multi_label, int(seed), base)
    frames, class_names, files = SPLIT_STRATEGIES[spec.strategy](spec, request)
    source = ";".join(str(path) for path in files)
    folder = _resolve(str(img_dir), base) if img_dir is not None else files[0].parent / "images"
    frames = _attach_paths(frames, folder, source)
    logger.info("Dataset %s (split %s): %s", source, spec.text,
                {name: 0 if frame is None else len(frame) for name, frame in frames.items()})
    return Dataset(class_names=tuple(class_names), multi_label=multi_label, train=frames["train"], dev=frames["dev"],
                   test=frames["test"], img_dir=folder, source=source)
