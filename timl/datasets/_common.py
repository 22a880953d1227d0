"""Shared helper of the dataset modules: how error messages list offending rows or names.

Error messages list the first ``MAX_LISTED`` items and then only count the rest; tables, image lookup and
splits all phrase their lists this way.
"""

from __future__ import annotations

#: How many offending rows or names an error message lists before it only counts them.
MAX_LISTED = 20


def _listed(items: list, total: int | None = None) -> str:
    total = len(items) if total is None else total
    shown = ", ".join(str(item) for item in items[:MAX_LISTED])
    more = f" ... ({total} in all)" if total > MAX_LISTED else f" ({total} in all)" if total > 1 else ""
    return shown + more
