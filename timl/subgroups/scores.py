"""Scores by subgroup: each group of a test set scored alone, the gaps between groups, and their files.

Each group large enough (``min_size`` images, default 30) is scored by :func:`timl.evaluation.evaluate` on its
own images, so its scores are exactly the evaluation's: the balanced accuracy and, per class, sensitivity,
specificity and AUC, each with the 95% percentile bootstrap interval of :mod:`timl.intervals` (the group's images
resampled, seeded). A smaller group is listed with its size and ``too small``, not scored. The gap of a score is
the largest minus the smallest value over a column's scored groups (the group ``unknown`` left out: it is no
subgroup of the population, only the images the table does not describe); the overall gap is the largest over
the columns. Metric names: :func:`timl.metric_names.subgroup_metric`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from timl import evaluation, metric_names, plots
from timl.intervals import INTERVAL_BOUNDS, Bootstrap
from timl.subgroups.spec import UNKNOWN, SubgroupSpec

#: Groups smaller than this are listed, not scored (``--subgroup-min-size``).
DEFAULT_MIN_SIZE = 30

#: The table of the groups and their scores, and the stem of the forest plots (``subgroups-<score>.png``).
TABLE_FILE, PLOT_STEM = "subgroups.csv", "subgroups"

#: A group's ``status`` in the table.
SCORED, TOO_SMALL, GAP = "scored", "too small", "gap"


@dataclasses.dataclass(frozen=True)
class GroupScores:
    """One group: its column, value, size and, when scored, ``{score: (value, low, high)}`` (None where undefined)."""

    column: str
    value: str
    size: int
    scores: dict[str, tuple] | None


@dataclasses.dataclass(frozen=True)
class SubgroupResults:
    """Every group of every column, in order, and the gaps ``{column: {score: gap}}``."""

    classes: list[str]
    min_size: int
    groups: list[GroupScores]
    gaps: dict[str, dict[str, float]]

    @property
    def score_names(self) -> list[str]:
        return metric_names.subgroup_score_names(self.classes)

    def overall_gaps(self) -> dict[str, float]:
        """The largest gap of each score over the columns."""
        overall: dict[str, float] = {}
        for gaps in self.gaps.values():
            for score, gap in gaps.items():
                overall[score] = max(gap, overall.get(score, gap))
        return overall

    def unknown_sizes(self) -> dict[str, int]:
        """The size of each column's group ``unknown`` (columns without one left out)."""
        return {group.column: group.size for group in self.groups if group.value == UNKNOWN}


def _ordered_values(labels: np.ndarray, bands: list[str]) -> list[str]:
    """A column's values in order: its bands' order (or sorted), ``unknown`` last."""
    present = set(labels.tolist())
    ordered = [band for band in bands if band in present] if bands else sorted(present - {UNKNOWN}, key=str)
    return ordered + ([UNKNOWN] if UNKNOWN in present else [])


def _group_scores(summary: dict[str, Any]) -> dict[str, tuple]:
    """The subgroup scores of an evaluation summary with their bounds."""
    def bounds(key: str, column: int | None) -> list:
        values = [summary.get(metric_names.interval_name(key, bound)) for bound in INTERVAL_BOUNDS]
        return [value if column is None or value is None else value[column] for value in values]

    names = iter(metric_names.subgroup_score_names(summary["classes"]))
    scores = {next(names): (summary[key], *bounds(key, None)) for key in metric_names.SUBGROUP_SCALARS}
    for key in metric_names.SUBGROUP_PER_CLASS:
        for column in range(len(summary["classes"])):
            scores[next(names)] = (summary[key][column], *bounds(key, column))
    return scores


def score_subgroups(spec: SubgroupSpec, labels: dict[str, np.ndarray], y_true, y_prob, class_names: Sequence[str],
                    *, multi_label: bool = False, threshold: float = 0.5, min_size: int = DEFAULT_MIN_SIZE,
                    bootstrap: Bootstrap | None = None) -> SubgroupResults:
    """Scores each group of each column alone (see the module's docstring).

    Args:
        spec: the parsed subgroups.
        labels: each image's group, by column (:func:`timl.subgroups.read_subgroup_labels`).
        y_true, y_prob, class_names, multi_label, threshold: as :func:`timl.evaluation.evaluate` takes them.
        min_size: the smallest group scored. Defaults to :data:`DEFAULT_MIN_SIZE`.
        bootstrap: the intervals' resampling (its ``groups`` ignored). Defaults to 2000 resamples, seed 0.
    """
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=float)
    bootstrap = bootstrap or Bootstrap()
    resampling = Bootstrap(resamples=bootstrap.resamples, seed=bootstrap.seed, confidence=bootstrap.confidence)
    groups, gaps = [], {}
    for column in spec.columns:
        column_labels = labels[column.name]
        for value in _ordered_values(column_labels, column.band_labels()):
            members = column_labels == value
            size = int(members.sum())
            scores = None
            if size >= min_size:
                summary = evaluation.evaluate(y_true[members], y_prob[members], class_names,
                                              multi_label=multi_label, threshold=threshold, bootstrap=resampling)
                scores = _group_scores(summary)
            groups.append(GroupScores(column.name, str(value), size, scores))
        gaps[column.name] = _gaps([group for group in groups if group.column == column.name])
    return SubgroupResults([str(name) for name in class_names], int(min_size), groups, gaps)


def _gaps(groups: list[GroupScores]) -> dict[str, float]:
    """The largest minus the smallest value of each score over the scored groups (``unknown`` left out) that
    define it; a score defined in fewer than two groups has no gap."""
    values: dict[str, list[float]] = {}
    for group in groups:
        if group.scores is not None and group.value != UNKNOWN:
            for score, (value, _, _) in group.scores.items():
                if value is not None:
                    values.setdefault(score, []).append(value)
    return {score: float(max(found) - min(found)) for score, found in values.items() if len(found) > 1}


def subgroup_metrics(results: SubgroupResults, split: str) -> dict[str, float]:
    """The results as metrics of a split's group: ``test_group/sex/male/samples``, ``.../sens_MEL``,
    ``.../sens_MEL_ci_low``, the gaps ``test_group/gap/sex/sens_MEL`` and ``test_group/gap/sens_MEL``.
    A too small group logs its size only."""
    metrics: dict[str, float] = {}
    for group in results.groups:
        name = metric_names.subgroup_metric(split, group.column, group.value, metric_names.SUBGROUP_SIZE)
        metrics[name] = float(group.size)
        for score, (value, *bounds) in (group.scores or {}).items():
            name = metric_names.subgroup_metric(split, group.column, group.value, score)
            if value is not None:
                metrics[name] = float(value)
            metrics.update({metric_names.interval_name(name, bound): float(limit)
                            for bound, limit in zip(INTERVAL_BOUNDS, bounds) if limit is not None})
    for column, gaps in results.gaps.items():
        metrics.update({metric_names.subgroup_gap_metric(split, score, column): gap for score, gap in gaps.items()})
    metrics.update({metric_names.subgroup_gap_metric(split, score): gap
                    for score, gap in results.overall_gaps().items()})
    return metrics


def subgroup_table(results: SubgroupResults):
    """The groups (and the columns' gaps, status ``gap``) as a frame: ``column``, ``value``, ``size``,
    ``status``, then each score, its ``_ci_low`` and ``_ci_high``."""
    import pandas as pd

    rows = []
    for group in results.groups:
        row = {"column": group.column, "value": group.value, "size": group.size,
               "status": SCORED if group.scores is not None else TOO_SMALL}
        for score, triple in (group.scores or {}).items():
            row.update(zip(_score_columns(score), triple))
        rows.append(row)
    for column, gaps in results.gaps.items():
        rows.append({"column": column, "value": "", "size": None, "status": GAP, **gaps})
    columns = ["column", "value", "size", "status"] + [name for score in results.score_names
                                                       for name in _score_columns(score)]
    frame = pd.DataFrame(rows, columns=columns)
    frame["size"] = frame["size"].astype("Int64")  # the gap rows have none
    return frame


def _score_columns(score: str) -> list[str]:
    return [score, *(metric_names.interval_name(score, bound) for bound in INTERVAL_BOUNDS)]


def write_subgroup_report(out_dir: str | Path, results: SubgroupResults, prefix: str = "",
                          overall: dict[str, Any] | None = None) -> list[Path]:
    """Writes ``<prefix>subgroups.csv`` and a forest plot per score, ``<prefix>subgroups-<score>.png``: each
    group's value and interval as a bar, its size in its label, too small groups named without a bar, a dashed
    line at the whole set's score (``overall``, an evaluation summary) when given. Returns the files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table_path = out_dir / f"{prefix}{TABLE_FILE}"
    subgroup_table(results).to_csv(table_path, index=False)
    whole = _group_scores(overall) if overall else {}
    files = [table_path]
    for score in results.score_names:
        rows = [(f"{group.column}={group.value} (n={group.size}{'' if group.scores else ', too small'})",
                 *(group.scores[score] if group.scores else (None, None, None))) for group in results.groups]
        path = out_dir / plots.sanitize_file_name(f"{prefix}{PLOT_STEM}-{score}.png")
        files.append(plots.plot_forest(rows, path, title=f"{score} by subgroup (95% intervals)",
                                       reference=whole.get(score, (None,))[0]))
    return files
