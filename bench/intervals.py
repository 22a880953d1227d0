"""What the bootstrap intervals cost: :mod:`timl.intervals` against a per-resample loop with scikit-learn.

A synthetic single-label test set (``--images`` images, ``--classes`` classes, probabilities with ties at two
decimals, a classifier right about 70% of the time) gets the 95% intervals of every summary score from
``--resamples`` resamples, vectorised (goal: under 5 s for 10,000 images, 8 classes, 2000 resamples). The loop
baseline draws the same resamples and scores each with scikit-learn (accuracy, balanced accuracy, per class
``roc_auc_score``, F1 and the confusion matrix for sensitivity and specificity); it runs ``--loop-resamples`` of
them and its time is scaled to ``--resamples``. Then a typical dev or test set (``--row-images``): the fixed
cost a row pays for its intervals.

    python bench/intervals.py [--images 10000] [--classes 8] [--resamples 2000] [--loop-resamples 100]
"""

from __future__ import annotations

import argparse
import time

import harness  # noqa: F401 (first: the benchmarks' environment)
import numpy as np

from timl import evaluation, intervals


def synthetic(images: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, images)
    y_true = np.eye(classes, dtype=int)[labels]
    y_prob = np.round(rng.dirichlet(np.ones(classes), images) + 0.35 * y_true, 2)
    return y_true, y_prob / y_prob.sum(axis=1, keepdims=True)


def vectorised(y_true, y_prob, resamples: int) -> float:
    start = time.perf_counter()
    y_pred = evaluation.predict_labels(y_prob)
    intervals.bootstrap_intervals(y_true, y_pred, y_prob, resamples=resamples)
    return time.perf_counter() - start


def sklearn_loop(y_true, y_prob, resamples: int) -> float:
    """Scores ``resamples`` resamples one by one with scikit-learn; returns the seconds."""
    from sklearn import metrics

    labels, predicted = y_true.argmax(axis=1), y_prob.argmax(axis=1)
    classes = y_true.shape[1]
    start = time.perf_counter()
    scores = []
    for counts in intervals.resample_counts(len(labels), resamples):
        for row in counts.astype(int):
            drawn = np.repeat(np.arange(len(labels)), row)
            truth, guess = labels[drawn], predicted[drawn]
            matrix = metrics.confusion_matrix(truth, guess, labels=range(classes))
            negatives = matrix.sum() - matrix.sum(axis=1)
            specificity = (negatives - (matrix.sum(axis=0) - np.diag(matrix))) / negatives
            aucs = [metrics.roc_auc_score(y_true[drawn, column], y_prob[drawn, column]) for column in range(classes)]
            scores.append((metrics.accuracy_score(truth, guess), metrics.balanced_accuracy_score(truth, guess),
                           np.mean(aucs), metrics.f1_score(truth, guess, average="macro"), specificity))
    np.percentile([score[:4] for score in scores], [2.5, 97.5], axis=0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--resamples", type=int, default=intervals.DEFAULT_RESAMPLES)
    parser.add_argument("--loop-resamples", type=int, default=100)
    parser.add_argument("--row-images", type=int, default=1000)
    arguments = parser.parse_args()

    y_true, y_prob = synthetic(arguments.images, arguments.classes)
    seconds = min(vectorised(y_true, y_prob, arguments.resamples) for _ in range(3))
    loop = sklearn_loop(y_true, y_prob, arguments.loop_resamples) * arguments.resamples / arguments.loop_resamples
    print(f"{arguments.images} images, {arguments.classes} classes, {arguments.resamples} resamples:")
    print(f"  vectorised (timl.intervals), best of 3:   {seconds:7.2f} s (goal < 5 s)")
    print(f"  per-resample loop with scikit-learn:      {loop:7.1f} s (from {arguments.loop_resamples} resamples)")
    print(f"  ratio loop / vectorised:                  {loop / seconds:7.0f}x")
    row_true, row_prob = synthetic(arguments.row_images, arguments.classes, seed=1)
    row = min(vectorised(row_true, row_prob, arguments.resamples) for _ in range(3))
    print(f"  a row's set of {arguments.row_images} images:             {row:7.3f} s")


if __name__ == "__main__":
    main()
