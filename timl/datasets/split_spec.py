"""The ``split`` cell of a training table, parsed without touching any file: :func:`parse_split` ->
:class:`SplitSpec` (pre, frac=F, n=N, list, kfold=K:i, kfold=K)."""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

from timl.errors import DatasetError

#: The forms a ``split`` cell may take, as error messages list them.
SPLIT_FORMS = "pre, frac=F (0<F<0.5), n=N, list, kfold=K:i (fold i of K), kfold=K (all K folds, one cross-validation)"


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """A parsed ``split`` cell.

    Attributes:
        strategy: one of ``SPLIT_STRATEGIES`` ("pre", "frac", "n", "list", "kfold").
        text: the cell as written.
        fraction: F of ``frac=F``.
        count: N of ``n=N``.
        folds: K of ``kfold=K:i`` and ``kfold=K``.
        fold: i of ``kfold=K:i`` (0-based); None for ``kfold=K``, a cross-validation (every fold, one result).
    """

    strategy: str
    text: str
    fraction: float | None = None
    count: int | None = None
    folds: int | None = None
    fold: int | None = None

    @property
    def cross_validation(self) -> bool:
        """Whether the cell is ``kfold=K``: a table row that trains its K folds as one cross-validation."""
        return self.strategy == "kfold" and self.fold is None


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
    match = re.fullmatch(r"(\d+)(?::(\d+))?", value)
    if not match:
        raise _split_error(text, "kfold needs K (every fold) or K:i (fold i) with integers K >= 2 and 0 <= i < K")
    folds = int(match.group(1))
    if match.group(2) is None:
        if folds < 2:
            raise _split_error(text, f"kfold needs K >= 2 (got K={folds})")
        return SplitSpec("kfold", text, folds=folds)
    fold = int(match.group(2))
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
        text: ``pre``, ``frac=F`` (0<F<0.5), ``n=N``, ``list``, ``kfold=K:i`` (0 <= i < K) or ``kfold=K``.

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
