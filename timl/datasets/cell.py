"""The ``dataset`` cell of a training table, parsed once (:class:`DatasetCell`).

Every reader of the cell (the split strategies, a row's base folder, the classifier's config-table lookup) takes
its files from here: the cell is split on ``;`` (the files of a ``list`` split) and ``+`` (the members of a
union) in this module only. Parsing touches no file; whether a name is a file, a root name or a file whose name
holds a ``+`` is decided where the files are read (:mod:`timl.datasets.splits`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

#: Separates the files of a ``list`` split: ``train.csv;dev.csv[;test.csv]``.
LIST_SEPARATOR = ";"

#: Joins the ground-truth CSVs of a union in the ``dataset`` cell: ``corrected.csv+isic.csv``.
UNION_SEPARATOR = "+"

#: The endings a ``pre`` cell may carry after its root name (``data/isic-train.csv`` is the root ``data/isic``).
PRE_ENDINGS = ("-train.csv", ".csv")


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """One file of the cell: as written (stripped), and its ``+`` union members.

    Attributes:
        text: the entry (``isic.csv``, ``data/isic``, ``corrected.csv+isic.csv``, or a file named ``c++.csv``).
        members: the entry split on ``+``, each stripped (``("corrected.csv", "isic.csv")``); ``(text,)`` for an
            entry without ``+``. A member may be empty (``a.csv+``): the split strategy says so.
    """

    text: str
    members: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "DatasetEntry":
        text = text.strip()
        return cls(text, tuple(member.strip() for member in text.split(UNION_SEPARATOR)))

    @property
    def is_union(self) -> bool:
        """Whether the entry holds a ``+`` (a union, unless a file of that very name exists)."""
        return len(self.members) > 1


@dataclasses.dataclass(frozen=True)
class DatasetCell:
    """A ``dataset`` cell: the file(s) of each split role, the members of each union, the root of ``pre``.

    Attributes:
        text: the cell as written (what params, the results table and messages show: ``str(cell)``).
        parts: every ``;``-separated part, in order (one part for a cell without ``;``), empty parts included.
        root: the root name a ``pre`` split reads (``data/isic`` for ``data/isic``, ``data/isic-train.csv`` or
            ``data/isic.csv``): ``<root>-train.csv``, ``<root>-dev.csv``, ``<root>-test.csv``.
    """

    text: str
    parts: tuple[DatasetEntry, ...]
    root: str

    @classmethod
    def parse(cls, text: "str | DatasetCell") -> "DatasetCell":
        """Parses a cell (a parsed cell is returned as it is); never raises: the split strategy checks it."""
        if isinstance(text, DatasetCell):
            return text
        text = str(text)
        return cls(text, tuple(DatasetEntry.parse(part) for part in text.split(LIST_SEPARATOR)), _pre_root(text))

    def __str__(self) -> str:
        return self.text

    @property
    def is_list(self) -> bool:
        """Whether the cell names several files with ``;`` (split ``list``)."""
        return LIST_SEPARATOR in self.text

    @property
    def has_union(self) -> bool:
        """Whether any file of the cell is a ``+`` union."""
        return any(part.is_union for part in self.parts)

    @property
    def files(self) -> tuple[DatasetEntry, ...]:
        """The non-empty parts: the train, dev and (optional) test files of split ``list``."""
        return tuple(part for part in self.parts if part.text)

    @property
    def whole(self) -> DatasetEntry:
        """The cell as one file (splits ``frac``, ``n``, ``kfold``, which take one file or one union)."""
        return DatasetEntry.parse(self.text)

    def base_dir(self, *, pre: bool, table_folder: Path | None) -> Path:
        """Where the cell's relative paths start: the working directory when the cell's first file (for ``pre``:
        ``<first>-train.csv``; else the file, or its root name plus ``.csv``; the first member of a union) is
        found there, else ``table_folder`` (the training table's folder), else the working directory."""
        first = self.parts[0]
        name = first.text
        if not pre and not Path(name).exists():  # a union a.csv+b.csv: its first file
            name = first.members[0]
        candidates = [f"{name}-train.csv"] if pre else [name, f"{name}.csv"]  # a root name too
        here = any(Path(candidate).exists() for candidate in candidates)
        return Path.cwd() if here or table_folder is None else table_folder


def _pre_root(text: str) -> str:
    root = text.strip()
    for ending in PRE_ENDINGS:
        if root.lower().endswith(ending):
            return root[: -len(ending)]
    return root
