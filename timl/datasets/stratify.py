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
