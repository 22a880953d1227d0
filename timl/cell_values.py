"""The values of a training table's cells: text, integers, resources, learning rates, each checked with a message
naming the column (:class:`timl.config.RunConfig` collects the problems of a row and reports them together)."""

from __future__ import annotations

import math


def cell_text(value) -> str:
    """A cell as stripped text: empty for a missing value, ``3`` for a number pandas read as ``3.0``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value).strip()
    if text.endswith(".0") and text[:-2].isdigit():  # a number pandas read as float
        text = text[:-2]
    return text


def parse_int(text: str, name: str, minimum: int, problems: list) -> int | None:
    """An integer cell of at least ``minimum``; None (and a problem naming the column) otherwise."""
    try:
        value = int(text)
    except ValueError:
        problems.append(f"column '{name}' must be an integer >= {minimum}. Received: {name}={text!r}")
        return None
    if value < minimum:
        problems.append(f"column '{name}' must be an integer >= {minimum}. Received: {name}={value}")
    return value


def parse_resource(text: str, name: str, problems: list, *, positive: bool) -> float | int | None:
    """A resource cell: empty (the executor's default) or a number (> 0 for cpus, >= 0 for gpus)."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 if positive else value >= 0) or not math.isfinite(value):
        bound = "> 0" if positive else ">= 0"
        problems.append(f"column '{name}' must be a number {bound} (fractions share a device). "
                        f"Received: {name}={text!r}")
        return None
    return int(value) if value.is_integer() else value


def parse_lr(text: str, problems: list) -> float | None:
    """The ``lr`` cell: empty (the method's default) or a number in (0, 10); None (and a problem) otherwise."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (0 < value < 10):
        problems.append(f"column 'lr' must be a positive number such as 1e-4. Received: lr={text!r}")
        return None
    return value
