"""Tables that name images: image-name lists, class columns, checked ground truth and metadata, read by
:func:`timl.tables.read_cells` (CSV in any spreadsheet's dialect, .xlsx, .ods).

A ground-truth file is checked as a whole: every problem (missing ``image_name`` column, unknown class column,
values other than 0/1, rows that are not one-hot, duplicate or empty image names) is gathered into one message.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from timl import tables
from timl.datasets._common import _listed
from timl.errors import DatasetError

logger = logging.getLogger(__name__)

#: The column that names each image (without its file suffix).
IMAGE_COLUMN = "image_name"


class UnknownClassColumn(DatasetError):
    """``classcolumns`` (or ``groups``) names a column the ground truth does not have: said first and alone, before
    any check of the rows."""


def _select_class_columns(columns: list[str], classcolumns: str, problems: list[str],
                          group_column: str | None = None) -> tuple[str, ...]:
    available = [column for column in columns if column not in (IMAGE_COLUMN, group_column)]
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
    return f"line {tables.line_of(frame, index)} ({frame[IMAGE_COLUMN].iat[index]!r})"


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
        problems.append(f"empty image_name at {_listed([f'line {tables.line_of(frame, i)}' for i in empty])}")
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


def _is_not_image_column(column: str) -> bool:
    return column != IMAGE_COLUMN


def read_image_table(path: str | Path, *, not_found: str = "Ground-truth CSV not found", field: str = "dataset",
                     what: str | None = None, numeric: bool = False) -> pd.DataFrame:
    """Reads a table whose rows name images (ground truth, test dataframe, predictions, metadata, split lists):
    every cell as stripped text.

    Datasets, split, predict, explain, inspect and the classifier's config-table lookup all read such files here,
    through :func:`timl.tables.read_cells`, so a file reads the same everywhere: CSV with ``,``, ``;`` or tab,
    .xlsx, .ods (``FILE.xlsx#Sheet``).

    Args:
        path: the table file.
        not_found: the message's start when the file does not exist. Defaults to "Ground-truth CSV not found".
        field: the option or cell that named the file, for the message. Defaults to "dataset".
        what: when given, the table must have an ``image_name`` column and the message calls the file this
            (e.g. "test dataframe").
        numeric: whether every column but ``image_name`` holds numbers (metadata, predicted probabilities):
            their decimal commas in a ``;``-separated file read as points. Defaults to False.

    Returns:
        A frame of strings (empty cells are ""), column names stripped.

    Raises:
        MissingFileError: no such file.
        DatasetError: not a readable table, or no ``image_name`` column when ``what`` is given.
    """
    frame = tables.read_cells(path, what=what or "ground-truth CSV", field=field, not_found=not_found,
                              error=DatasetError, numeric_columns=_is_not_image_column if numeric else None)
    if what is not None and IMAGE_COLUMN not in frame.columns:
        raise DatasetError(f"{path}: the {what} needs an '{IMAGE_COLUMN}' column. "
                           f"Received columns: {', '.join(frame.columns)}")
    return frame


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


def read_ground_truth(path: str | Path, classcolumns: str = "default", multi_label: bool = False, *,
                      group_column: str | None = None) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Reads and checks one ground-truth CSV.

    Args:
        path: the CSV file (``image_name`` then one 0/1 column per class).
        classcolumns: ``default`` (every column but ``image_name``) or a ``;``-separated list of columns.
        multi_label: if False (default), every row must be one-hot over the class columns.
        group_column: a column of image groups (the ``groups`` cell's ``COLUMN``): never a class column, and
            kept (as text) after the class columns. Defaults to None.

    Returns:
        A frame with ``image_name`` (str) and the class columns (0/1 ints) (and ``group_column``), and the class
        names.

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
    if group_column is not None and group_column not in frame.columns:
        problems.append(f"no column {group_column!r} for the groups (the groups cell names a column of the ground "
                        f"truth, or FILE.csv:COLUMN). Available columns: {', '.join(frame.columns)}. "
                        f"Received: groups={group_column!r}")
        group_column = None
    class_names = _select_class_columns(list(frame.columns), classcolumns, problems, group_column)
    if problems:  # the class columns themselves are wrong: checking the rows against them would only add noise
        raise UnknownClassColumn(f"{path}: " + "; ".join(problems))
    values = _check_values(frame, class_names, problems)
    _check_rows(frame, values, multi_label, problems)
    if len(frame) == 0:
        problems.append("the file has no data rows")
    if problems:
        raise DatasetError(f"{path}: " + "; ".join(problems))
    kept = [frame[[IMAGE_COLUMN]].reset_index(drop=True), values.reset_index(drop=True)]
    if group_column is not None:
        kept.append(frame[[group_column]].reset_index(drop=True))
    result = pd.concat(kept, axis=1)
    return result, class_names


def read_metadata(path: str | Path, names: list[str]) -> np.ndarray:
    """Per-image numbers of a metadata CSV (``image_name`` and numeric columns, like the ISIC metadata one-hot
    file), as float32 rows in the order of ``names``.

    Raises:
        MissingFileError: no such file.
        DatasetError: no numeric column, a cell that is not a number (its line and column named), or images
            without a row (listed).
    """
    path = Path(path)
    frame = read_image_table(path, not_found="Metadata CSV not found", field="metadata", what="metadata CSV",
                             numeric=True)
    columns = [column for column in frame.columns if column != IMAGE_COLUMN]
    if not columns:
        raise DatasetError(f"{path}: the metadata CSV needs numeric columns after image_name. "
                           f"Received columns: {', '.join(frame.columns)}")
    values = frame[columns].apply(pd.to_numeric, errors="coerce")
    bad = np.argwhere(values.isna().to_numpy())
    if len(bad):
        line, column = int(bad[0][0]), columns[int(bad[0][1])]
        raise DatasetError(f"{path}, line {tables.line_of(frame, line)}, column '{column}': expected a number. "
                           f"Received: {frame[column].iloc[line]!r}")
    table = pd.DataFrame(values.to_numpy(np.float32), index=frame[IMAGE_COLUMN])
    absent = [name for name in names if name not in table.index]
    if absent:
        raise DatasetError(f"{path}: no metadata for {len(absent)} image(s): {_listed(absent)}")
    return table.loc[list(names)].to_numpy(np.float32)
