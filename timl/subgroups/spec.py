"""The subgroups of a test set: the ``--subgroups`` option (and the ``subgroups`` column) parsed, and each
image's group read from its table.

The text is ``FILE:COLUMN[,COLUMN...]``: a table (``.csv``, ``.tsv``, ``.txt``, ``.xlsx``, ``.xlsm``, ``.ods``, or
``FILE.xlsx#Sheet``) with ``image_name`` and the columns, such as the ISIC metadata's ``sex`` and
``anatom_site_general``. The file part ends at the first ``:`` after the table's suffix, so a Windows drive
(``C:\\data\\meta.csv:sex``) reads. A column followed by ``:`` and ascending numbers groups a numeric column in
bands: ``age_approx:0,30,45,60,75`` makes ``<0``, ``0-30``, ``30-45``, ``45-60``, ``60-75`` and ``75+`` (a band
holds its lower edge). Commas separate both the columns and the edges: after a banded column, a number is one more
edge and anything else the next column.

An image without a row in the table, or with an empty cell, is in the group ``unknown``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np

from timl import tables
from timl.datasets.tables import IMAGE_COLUMN, read_image_table
from timl.errors import ConfigError, DatasetError, MissingFileError
from timl.metric_names import SUBGROUP_GAP

#: The group of an image without a row or a value in the subgroups table.
UNKNOWN = "unknown"

#: The forms the option and the column take, as messages list them.
SUBGROUPS_FORMS = ("FILE.csv:COLUMN[,COLUMN...] (a table with image_name and those columns; also .tsv, .txt, "
                   ".xlsx, .ods, FILE.xlsx#Sheet), a numeric column in bands as COLUMN:EDGE,EDGE,... with ascending "
                   "numbers, e.g. meta.csv:sex,anatom_site_general,age_approx:0,30,45,60,75")

#: The table suffixes that end the file part (before ``#Sheet`` and the ``:``).
_FILE_PART = re.compile(r"^(.+?\.(?:csv|tsv|txt|xlsx|xlsm|ods)(?:#[^:]*)?):(.*)$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class SubgroupColumn:
    """One column that makes groups: its values, or bands of its numbers between ``edges``."""

    name: str
    edges: tuple[float, ...] = ()

    def band_labels(self) -> list[str]:
        """The bands in order: ``<0``, ``0-30``, ..., ``75+``; empty for a column of values."""
        if not self.edges:
            return []
        shown = [f"{edge:g}" for edge in self.edges]
        return [f"<{shown[0]}", *(f"{low}-{high}" for low, high in zip(shown, shown[1:])), f"{shown[-1]}+"]

    def band_of(self, values: np.ndarray) -> np.ndarray:
        """The band label of each number (a band holds its lower edge)."""
        return np.array(self.band_labels(), dtype=object)[np.searchsorted(self.edges, values, side="right")]


@dataclasses.dataclass(frozen=True)
class SubgroupSpec:
    """A parsed ``--subgroups`` value (or ``subgroups`` cell).

    Attributes:
        text: as written.
        file: the table's path as written (``FILE.xlsx#Sheet`` included).
        columns: the columns, in the order given.
    """

    text: str
    file: str
    columns: tuple[SubgroupColumn, ...]


def _problem(text: str, what: str) -> ConfigError:
    return ConfigError(f"--subgroups (or the subgroups column) {what}. Accepted: {SUBGROUPS_FORMS}. "
                       f"Received: subgroups={text!r}")


def _edge(token: str) -> float | None:
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse_columns(text: str, part: str) -> list[SubgroupColumn]:
    columns: list[tuple[str, list[float]]] = []
    banded = False
    for token in (token.strip() for token in part.split(",")):
        if not token:
            raise _problem(text, "has an empty column or edge between commas")
        if banded and _edge(token) is not None:
            columns[-1][1].append(_edge(token))
            continue
        name, colon, first = (piece.strip() for piece in token.partition(":"))
        if not name:
            raise _problem(text, f"names no column before {token!r}")
        if colon and _edge(first) is None:
            raise _problem(text, f"gives column {name!r} a band edge that is not a number: {first!r}")
        columns.append((name, [_edge(first)] if colon else []))
        banded = bool(colon)
    return [SubgroupColumn(name, tuple(edges)) for name, edges in columns]


def parse_subgroups(text: str | None) -> SubgroupSpec | None:
    """Parses ``--subgroups`` (or a ``subgroups`` cell) without touching any file; None when empty.

    Raises:
        ConfigError: no table before the columns, an empty or repeated column, edges that are not ascending
            numbers, or a column named ``gap`` (the gap metrics' name).
    """
    text = (text or "").strip()
    if not text:
        return None
    match = _FILE_PART.match(text)
    if not match or not match.group(2).strip():
        raise _problem(text, "names a table and its columns")
    columns = _parse_columns(text, match.group(2))
    for column in columns:
        if any(high <= low for low, high in zip(column.edges, column.edges[1:])):
            raise _problem(text, f"gives column {column.name!r} band edges that are not ascending: "
                                 f"{', '.join(f'{edge:g}' for edge in column.edges)}")
    names = [column.name for column in columns]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise _problem(text, f"names column(s) {repeated} twice")
    if SUBGROUP_GAP in names:
        raise _problem(text, f"names a column {SUBGROUP_GAP!r}, which the gap metrics' names use; rename it")
    return SubgroupSpec(text, match.group(1).strip(), tuple(columns))


def subgroups_file(spec: SubgroupSpec, *folders: Path) -> Path:
    """The table of a spec: as given when absolute, else in the first of ``folders`` that has it (the working
    directory, then the test CSV's folder).

    Raises:
        MissingFileError: found in none.
    """
    path = Path(spec.file).expanduser()
    candidates = [path] if path.is_absolute() else list(dict.fromkeys(folder / path for folder in folders))
    for candidate in candidates:
        if tables.table_exists(candidate):
            return candidate
    raise MissingFileError(f"subgroups table not found: looked for {' and '.join(map(str, candidates))}. "
                           f"Accepted: {SUBGROUPS_FORMS}. Received: subgroups={spec.text!r}")


def _bands(column: SubgroupColumn, frame, path: Path) -> np.ndarray:
    """The band of each row of ``frame`` (``unknown`` for an empty cell); a cell that is no number is an error."""
    cells = frame[column.name]
    numbers = np.array([_edge(cell) if cell else math.nan for cell in cells], dtype=float)
    bad = np.flatnonzero(np.isnan(numbers) & (cells != "").to_numpy())
    if bad.size:
        raise DatasetError(f"{path}, line {tables.line_of(frame, int(bad[0]))}, column {column.name!r}: the bands "
                           f"{', '.join(column.band_labels())} need a number (or an empty cell: {UNKNOWN}). "
                           f"Received: {column.name}={cells.iloc[bad[0]]!r}")
    labels = np.full(len(numbers), UNKNOWN, dtype=object)
    known = ~np.isnan(numbers)
    labels[known] = column.band_of(numbers[known])
    return labels


def read_subgroup_labels(spec: SubgroupSpec, path: Path, image_names) -> dict[str, np.ndarray]:
    """Each image's group in each column of the spec (``unknown`` without a row or a value); an image with
    several rows takes its first.

    Returns:
        ``{column: labels}``, one label per image of ``image_names``, in the spec's column order.

    Raises:
        MissingFileError: no such table.
        DatasetError: a table without ``image_name``, a column it lacks (the available ones listed), or a
            banded column's cell that is not a number.
    """
    frame = read_image_table(path, not_found="subgroups table not found", field="subgroups",
                             what="subgroups table")
    missing = [column.name for column in spec.columns if column.name not in frame.columns]
    if missing:
        available = [name for name in frame.columns if name != IMAGE_COLUMN]
        raise DatasetError(f"{path}: no column(s) {missing} for --subgroups (or the subgroups column). Available "
                           f"columns: {', '.join(available)}. Received: subgroups={spec.text!r}")
    first = ~frame[IMAGE_COLUMN].duplicated().to_numpy()
    rows = {name: position for position, name in enumerate(frame[IMAGE_COLUMN]) if first[position]}
    where = np.array([rows.get(str(name), -1) for name in image_names], dtype=int)
    labels = {}
    if frame.empty:
        return {column.name: np.full(len(where), UNKNOWN, dtype=object) for column in spec.columns}
    for column in spec.columns:
        values = _bands(column, frame, path) if column.edges else frame[column.name].to_numpy(dtype=object)
        values = np.where(values == "", UNKNOWN, values)
        labels[column.name] = np.where(where >= 0, values[np.maximum(where, 0)], UNKNOWN).astype(object)
    return labels
