"""Search spaces in a training table's cells: ``loguniform(1e-5,1e-2)``, ``uniform(0.1,0.5)``, ``int(16,128)``,
``int(16,128,16)``, ``choice(VGG16,RESNET50)``.

A row with such cells is a search (:class:`timl.config.SearchRow`): ``python -m timl.tune`` samples a
configuration from its spaces for each trial. :func:`parse_space` reads one cell; text that does not start with
one of :data:`SPACE_KINDS` and ``(`` is a plain value. The spaces become Optuna distributions
(:meth:`Space.distribution`) only when a search runs, so reading a table never imports Optuna.
"""

from __future__ import annotations

import dataclasses
import math
import re

from timl.errors import ConfigError

#: The columns whose value a search may vary: what a model is and how it trains. The others say what is learnt
#: and from which data (dataset, split, class columns, groups, subgroups, metadata, activations), where it
#: trains (cpus, gpus) or nothing at all (notes): a search over them compares different problems.
SEARCH_COLUMNS = ("method", "epochs", "imgaug", "batchsize", "imgsize", "resizefilter", "colorspace",
                  "classweights", "weights", "lr", "seed", "freeze", "tta", "calibration")

#: The forms a space cell takes, as messages list them.
ACCEPTED_FORMS = ("loguniform(LOW,HIGH) with 0 < LOW < HIGH", "uniform(LOW,HIGH) with LOW < HIGH",
                  "int(LOW,HIGH) or int(LOW,HIGH,STEP) with integers LOW <= HIGH and STEP >= 1",
                  "choice(A,B,...) with one value or more")

SPACE_KINDS = ("loguniform", "uniform", "int", "choice")

_SPACE = re.compile(r"^\s*(loguniform|uniform|int|choice)\s*\((.*)\)\s*$", re.DOTALL)
_LOOKS_LIKE_SPACE = re.compile(r"^\s*(loguniform|uniform|int|choice)\s*\(", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Space:
    """One cell's search space.

    Attributes:
        kind: one of :data:`SPACE_KINDS`.
        values: the bounds (``low, high``), with ``int`` the step too, or the choices (as text).
        text: the cell as written.
    """

    kind: str
    values: tuple
    text: str

    def candidates(self) -> list[str]:
        """Cells this space can produce that a check of the space's reach validates: its bounds, or every
        choice."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "int":
            low, high, step = self.values
            return [str(low), str(low + (high - low) // step * step)]
        return [repr(float(self.values[0])), repr(float(self.values[1]))]

    def distribution(self):
        """The Optuna distribution of this space."""
        import optuna

        if self.kind == "choice":
            return optuna.distributions.CategoricalDistribution(list(self.values))
        if self.kind == "int":
            low, high, step = self.values
            return optuna.distributions.IntDistribution(low, high, step=step)
        return optuna.distributions.FloatDistribution(*self.values, log=self.kind == "loguniform")

    def grid(self) -> list:
        """Every value of the space, for a grid search.

        Raises:
            ConfigError: a continuous space (uniform, loguniform) has no grid.
        """
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "int":
            low, high, step = self.values
            return list(range(low, high + 1, step))
        raise ConfigError(f"--sampler grid needs spaces with a finite set of values (choice, int). Received: "
                          f"{self.text}")


def looks_like_space(text: str) -> bool:
    """Whether a cell is meant as a search space (it starts with a space's name and ``(``)."""
    return bool(_LOOKS_LIKE_SPACE.match(text or ""))


def parse_space(column: str, text: str) -> Space:
    """Parses one cell that :func:`looks_like_space`.

    Raises:
        ConfigError: a column a search cannot vary, or a space that does not parse (the message names the column
            and lists :data:`ACCEPTED_FORMS`).
    """
    def problem(why: str) -> ConfigError:
        return ConfigError(f"column '{column}': {why}. Accepted search spaces: {'; '.join(ACCEPTED_FORMS)}. "
                           f"Received: {column}={text!r}")

    if column not in SEARCH_COLUMNS:
        raise ConfigError(f"column '{column}' cannot hold a search space (a search varies how a model is built "
                           f"and trained, not its data, classes or resources); search spaces go in the columns "
                           f"{', '.join(SEARCH_COLUMNS)}. Received: {column}={text!r}")
    match = _SPACE.match(text)
    if match is None:
        raise problem("a search space is NAME(ARGUMENTS) with a lower-case name")
    kind, arguments = match.group(1), [part.strip() for part in match.group(2).split(",")]
    if kind == "choice":
        if arguments == [""] or any(not argument for argument in arguments):
            raise problem("choice() needs one value or more, none of them empty")
        return Space(kind, tuple(dict.fromkeys(arguments)), text)
    if kind == "int":
        return _int_space(arguments, text, problem)
    try:
        low, high = (float(argument) for argument in arguments)
    except ValueError:
        raise problem(f"{kind}() takes two numbers, LOW and HIGH")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise problem(f"{kind}() needs finite numbers with LOW < HIGH")
    if kind == "loguniform" and low <= 0:
        raise problem("loguniform() needs LOW > 0 (a logarithm of 0 or less does not exist)")
    return Space(kind, (low, high), text)


def _int_space(arguments: list[str], text: str, problem) -> Space:
    try:
        numbers = [int(argument) for argument in arguments]
    except ValueError:
        raise problem("int() takes two or three integers, LOW, HIGH and an optional STEP")
    if len(numbers) not in (2, 3):
        raise problem("int() takes two or three integers, LOW, HIGH and an optional STEP")
    low, high, step = (*numbers, 1)[:3]
    if low > high or step < 1:
        raise problem("int() needs LOW <= HIGH and STEP >= 1")
    return Space("int", (low, high, step), text)


def find_spaces(cells: dict[str, str]) -> dict[str, Space]:
    """The search spaces of a row's cells (column -> text), by column; empty for a row of plain values.

    Raises:
        ConfigError: a bad space (:func:`parse_space`).
    """
    return {column: parse_space(column, text) for column, text in cells.items() if looks_like_space(text)}
