"""Whether a candidate model may take a registered model's alias (``champion``) from the version holding it.

A gate is ``METRIC OP EXPR`` (:class:`Gate`): ``OP`` one of ``>=``, ``<=``, ``>``, ``<``; ``EXPR`` a number, or
``champion`` optionally plus or minus a number (the current champion's value of the same metric). The alias moves
only when every gate holds on the candidate run's metrics (:func:`decide`); the two runs are compared only on the
same test data (equal MLflow dataset digest of their ``testing`` input), anything else is a refusal with its reason.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import re

from timl import metric_names as names
from timl.errors import ConfigError

#: The operators a gate accepts, as Python comparisons.
OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}

#: What a gate's right-hand side calls the current champion's value.
CHAMPION = "champion"

#: The MLflow dataset context of a run's test set (``timl.training.data.DATASET_CONTEXTS``).
TEST_CONTEXT = "testing"

_GATE = re.compile(r"^\s*(?P<metric>\S(?:.*?[^\s=!<>])?)\s*(?P<operator>>=|<=|>|<)\s*(?P<expression>.*?)\s*$")
_EXPRESSION = re.compile(rf"^{CHAMPION}\s*(?:(?P<sign>[+-])\s*(?P<offset>\S+))?$")
EXAMPLE_GATES = (f"{names.summary_group(names.TEST)}balanced_accuracy >= {CHAMPION} + 0.01",
                 f"{names.summary_group(names.TEST)}auc > 0.9")
ACCEPTED = (f"Expected METRIC OP EXPR with OP one of {', '.join(OPERATORS)} and EXPR a number, {CHAMPION}, or "
            f"{CHAMPION} + NUMBER / {CHAMPION} - NUMBER, e.g. {EXAMPLE_GATES[0]!r} or {EXAMPLE_GATES[1]!r}.")


@dataclasses.dataclass(frozen=True)
class Gate:
    """One condition on the candidate's metric: ``metric operator (champion +) offset``.

    Attributes:
        metric: the metric name (``test/balanced_accuracy``, ``test_group/gap/sens_MEL``).
        operator: one of :data:`OPERATORS`.
        offset: the number, or what is added to the champion's value when ``relative``.
        relative: whether the right-hand side is the current champion's value of ``metric`` (plus ``offset``).
        text: the gate as typed.
    """

    metric: str
    operator: str
    offset: float
    relative: bool
    text: str

    @classmethod
    def parse(cls, text: str) -> Gate:
        """Reads ``METRIC OP EXPR``.

        Raises:
            ConfigError: not of that form, an unknown operator, or a right-hand side that is neither a number nor
                ``champion [+|- number]``; the message names the gate and what would be accepted.
        """
        match = _GATE.match(text or "")
        if not match or not match["expression"]:
            raise ConfigError(f"Gate {text!r} does not parse. {ACCEPTED} Received: gate={text!r}")
        expression, relative = match["expression"], match["expression"].startswith(CHAMPION)
        found = _EXPRESSION.match(expression) if relative else None
        try:
            offset = (float(f"{found['sign']}{found['offset']}") if found and found["offset"] else 0.0) if relative \
                else float(expression)
        except ValueError:
            offset = math.nan
        if (relative and not found) or not math.isfinite(offset):
            raise ConfigError(f"Gate {text!r}: the right-hand side {expression!r} is neither a number nor "
                              f"{CHAMPION} [+|- number]. {ACCEPTED} Received: gate={text!r}")
        return cls(match["metric"], match["operator"], offset, relative, text.strip())

    def check(self, candidate: dict, champion: dict | None) -> GateResult:
        """The gate on the candidate's metrics, against the champion's (None: no champion, a relative gate holds)."""
        value = candidate.get(self.metric)
        if self.relative and champion is None:
            return GateResult(self, value, None, None, True)
        reference = champion.get(self.metric) if self.relative else None
        threshold = (None if reference is None else reference + self.offset) if self.relative else self.offset
        holds = value is not None and threshold is not None and OPERATORS[self.operator](value, threshold)
        return GateResult(self, value, reference, threshold, holds)


@dataclasses.dataclass(frozen=True)
class GateResult:
    """A gate's outcome: the candidate's value, the champion's (relative gates) and the threshold they gave."""

    gate: Gate
    candidate: float | None
    champion: float | None
    threshold: float | None
    holds: bool

    def describe(self) -> str:
        """``test/balanced_accuracy >= champion + 0.01: candidate 0.8100, champion 0.8500 (needs >= 0.8600)``."""
        shown = (lambda value: "missing" if value is None else f"{value:.4f}")
        champion = f", champion {shown(self.champion)}" if self.gate.relative else ""
        needs = f" (needs {self.gate.operator} {shown(self.threshold)})" if self.threshold is not None else ""
        return f"{self.gate.text}: candidate {shown(self.candidate)}{champion}{needs}"


@dataclasses.dataclass(frozen=True)
class Decision:
    """Whether the alias moves to the candidate, and why.

    Attributes:
        champion_version: the version holding the alias now, or None (the candidate becomes the first champion).
        results: each gate's outcome.
        refusal: why the runs could not be compared (different test data), or None.
    """

    champion_version: str | None
    results: tuple[GateResult, ...] = ()
    refusal: str | None = None

    @property
    def failed(self) -> tuple[GateResult, ...]:
        return tuple(result for result in self.results if not result.holds)

    @property
    def moves(self) -> bool:
        return self.refusal is None and not self.failed

    def reasons(self) -> list[str]:
        """What stops the alias: the refusal, else each failed gate with both values."""
        return [self.refusal] if self.refusal else [f"gate failed: {result.describe()}" for result in self.failed]


def parse_gates(texts) -> tuple[Gate, ...]:
    """Every ``--gate`` read (:meth:`Gate.parse`)."""
    return tuple(Gate.parse(text) for text in texts or ())


def decide(gates: tuple[Gate, ...], candidate, champion, champion_version: str | None) -> Decision:
    """Compares the candidate run with the champion's run (None: no champion yet) through ``gates``.

    Without gates nothing is compared and the alias moves, as it always did. With gates, a champion evaluated on
    other test data (or on none logged) is a refusal; a relative gate without a champion holds.

    Raises:
        ConfigError: a gate names a metric that neither run has (the message lists the runs' metrics like it).
    """
    if not gates:
        return Decision(champion_version)
    runs = [run for run in (candidate, champion) if run is not None]
    for gate in gates:
        if not any(gate.metric in run.data.metrics for run in runs):
            raise ConfigError(f"Gate {gate.text!r} names the metric {gate.metric!r}, which neither the candidate "
                              f"run{'' if champion is None else ' nor the champion run'} has. Expected one of their "
                              f"metrics, e.g. {', '.join(_similar(gate.metric, runs))}. Received: gate={gate.text!r}")
    if champion is not None:
        refusal = different_test_data(candidate, champion, champion_version)
        if refusal:
            return Decision(champion_version, refusal=refusal)
    champion_metrics = champion.data.metrics if champion is not None else None
    return Decision(champion_version, tuple(gate.check(candidate.data.metrics, champion_metrics) for gate in gates))


def _similar(metric: str, runs) -> list[str]:
    """Up to 8 of the runs' metric names closest to ``metric`` (the test scores when nothing is close)."""
    known = sorted({name for run in runs for name in run.data.metrics})
    close = difflib.get_close_matches(metric, known, n=8, cutoff=0.5)
    return close or [name for name in known if name.startswith(names.summary_group(names.TEST))][:8] or known[:8]


def tested_on(run) -> tuple[str, str] | None:
    """(name, digest) of the run's logged test set (MLflow dataset input with context ``testing``), or None."""
    for item in run.inputs.dataset_inputs if run.inputs else ():
        if any(tag.key == "mlflow.data.context" and tag.value == TEST_CONTEXT for tag in item.tags):
            return item.dataset.name, item.dataset.digest
    return None


def different_test_data(candidate, champion, champion_version: str | None) -> str | None:
    """Why the two runs' test scores cannot be compared, or None when both logged the same test set."""
    theirs, ours = tested_on(champion), tested_on(candidate)
    who = f"the champion (version {champion_version}, run {champion.info.run_id})"
    if ours is None or theirs is None:
        missing = f"the candidate (run {candidate.info.run_id})" if ours is None else who
        return (f"Refusing to compare: {missing} logged no test dataset, so its scores cannot be compared on the "
                "same test data. Gates compare runs whose test sets have equal MLflow dataset digests.")
    if ours[1] != theirs[1]:
        return (f"Refusing to compare: different test data. The candidate (run {candidate.info.run_id}) was tested "
                f"on {ours[0]} (digest {ours[1]}), {who} on {theirs[0]} (digest {theirs[1]}). Gates compare runs "
                "whose test sets have equal digests: evaluate both on the same test CSV.")
    return None
