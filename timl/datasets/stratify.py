"""Stratified, seeded orders and folds of labelled rows: what the random split strategies draw from."""

from __future__ import annotations

import numpy as np


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation of the rows that interleaves the classes in proportion.

    Rows of each stratum (the row's label combination) are shuffled; each gets the key (rank + u) / size with
    u uniform in [0, 1), and the rows are sorted by that key. Any prefix, or every K-th row, of the result then
    holds each class in about its share of the whole: a stratified sample "where possible" (a class with too
    few rows simply lands wherever its keys fall).

    Args:
        labels: (rows, classes) 0/1 array.
        seed: the seed of the shuffle.

    Returns:
        An int array, a permutation of ``range(rows)``.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    strata = np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1) if len(labels) else np.zeros(0, int)
    keys = np.empty(len(labels))
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        rng.shuffle(members)
        keys[members] = (np.arange(len(members)) + rng.random(len(members))) / len(members)
    return np.argsort(keys, kind="stable")


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Assigns each row to one of ``folds`` folds, stratified by class and reproducible from ``seed``.

    The rows of each stratum (label combination) are shuffled and dealt round-robin over the folds, continuing
    where the previous stratum stopped: each fold gets its share of every class (within one row), and the fold
    sizes differ by at most one row.

    Returns:
        An int array (rows,) of fold numbers in 0 .. folds-1.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    strata = np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1) if len(labels) else np.zeros(0, int)
    assignment = np.empty(len(labels), dtype=int)
    dealt = int(rng.integers(folds))
    for stratum in rng.permutation(np.unique(strata)):
        members = np.flatnonzero(strata == stratum)
        rng.shuffle(members)
        assignment[members] = (dealt + np.arange(len(members))) % folds
        dealt += len(members)
    return assignment


def grouped_assignment(labels: np.ndarray, groups: np.ndarray, shares, seed: int) -> np.ndarray:
    """Assigns whole groups of rows to parts (train/dev/test, or folds) of the given shares, stratified by class.

    Every row of a group lands in one part. The groups are dealt largest first (groups of one size in a seeded
    order); each goes to the part whose stratum counts lag furthest behind their targets (``share * rows`` of
    each stratum, the row's label combination), weighted by the group's own strata; ties are broken by the seed.
    For groups of one stratum (a lesion has one diagnosis) every part ends within one group's size of its target
    in every stratum: a part that lags by more than the largest group always takes the next group of its stratum.

    Args:
        labels: (rows, classes) 0/1 array.
        groups: (rows,) group label of each row (an image without a group has a label of its own).
        shares: the parts' shares of the rows, summing to 1 (e.g. ``(0.8, 0.1, 0.1)``).
        seed: the seed of the order and the ties.

    Returns:
        An int array (rows,) of part numbers in 0 .. len(shares)-1.
    """
    labels, shares = np.asarray(labels), np.asarray(shares, dtype=float)
    rng = np.random.default_rng(seed)
    if not len(labels):
        return np.zeros(0, dtype=int)
    strata = np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1)
    group_index = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
    counts = np.zeros((group_index.max() + 1, strata.max() + 1))
    np.add.at(counts, (group_index, strata), 1)
    deficit = shares[:, None] * counts.sum(axis=0)[None, :]
    shuffled = rng.permutation(len(counts))
    order = shuffled[np.argsort(-counts[shuffled].sum(axis=1), kind="stable")]
    part_of_group = np.empty(len(counts), dtype=int)
    for group in order:
        need = deficit @ counts[group]
        best = np.flatnonzero(np.isclose(need, need.max()))
        part = int(best[rng.integers(len(best))]) if len(best) > 1 else int(best[0])
        part_of_group[group] = part
        deficit[part] -= counts[group]
    return part_of_group[group_index]
