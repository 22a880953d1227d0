"""A search row's cells (:class:`SearchCells`): its spaces, its search run's name, its stable key, and the check
that each space's reach makes valid rows. :class:`timl.config.SearchRow` adds the sampling of a row from them
(through :class:`timl.config.RunConfig`'s validation)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable

from timl.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class SearchCells:
    """A row whose cells hold search spaces (:mod:`timl.search.space`): ``python -m timl.tune`` trains a
    configuration sampled from them per trial (:mod:`timl.search.searches`).

    Attributes:
        row: the row's number in the table.
        cells: the row's cells as written (the spaces' text included), column -> text.
        spaces: the cells that are search spaces, column -> :class:`timl.search.space.Space`.
        table_path: the table the row came from.
    """

    row: int
    cells: dict
    spaces: dict
    table_path: str = ""

    @property
    def run_name(self) -> str:
        """The search run's name: ``N-search-METHOD`` (a choice of methods joined by ``|``)."""
        method = self.spaces.get("method")
        return f"{self.row}-search-{'|'.join(method.values) if method else self.cells.get('method', '')}"

    @property
    def seed(self) -> int:
        """The row's seed (the sampler's), 0 when it is empty or a space."""
        text = self.cells.get("seed", "")
        return int(text) if text.isdigit() else 0

    def key(self, version: str) -> str:
        """A stable key of the search: a hash of its cells as written, the table path and the project version."""
        payload = json.dumps({"search": self.cells, "row": self.row, "version": version,
                              "table": str(Path(self.table_path).resolve()) if self.table_path else ""},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def check_reach(self, sample: Callable[[dict], object]) -> None:
        """Checks that each space's bounds (or every choice), the other spaces at their first candidate, make a
        valid row through ``sample`` (values -> row).

        Raises:
            ConfigError: a space that can produce an invalid cell, naming the table, the row and the space's cell.
        """
        first = {column: space.candidates()[0] for column, space in self.spaces.items()}
        for column, space in self.spaces.items():
            for candidate in space.candidates():
                try:
                    sample({**first, column: candidate})
                except ConfigError as error:
                    raise ConfigError(f"{error} (the search space {column}={space.text!r} can produce "
                                      f"{column}={candidate!r})") from None
