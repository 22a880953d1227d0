"""What test-time augmentation costs and what it changes on the digits demo.

    python bench/tta.py [--epochs 8] [--imgsize 32] [--repeats 30] [--resamples 2000]

Cost: one model call holding the 8 views of one image (``hflip_rot4``, :meth:`timl.classifier.Classifier.
predict_views`) against one call holding 8 different images (``predict_arrays``), timed alternately
``--repeats`` times; the median of the per-repeat ratios (goal <= 1.3) for SmallCNN at ``--imgsize`` and for
MobileNetV2 (weights none) at 224 px. Then the same for a batch of 32 images (256 views in one call against 256
images).

Scores: two SmallCNN rows trained on the digits demo (split ``pre``), one with ``imgaug none`` and one with
``imgaug hflip_rot4``; each predicts the test set without TTA and with every preset; balanced accuracy with its
95% bootstrap interval (:mod:`timl.intervals`) and the paired difference to no TTA (the same resamples for
both sides). Digits are not mirror or rotation invariant (a 6 turned is a 9): the model trained without those
views is expected to lose with them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import harness  # noqa: F401 (first: the benchmarks' environment)
import numpy as np


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def cost(classifier, images: int, repeats: int) -> tuple[float, float, float]:
    """Median seconds of one call of ``images`` x 8 views and of one call of ``images * 8`` images, and the
    median of their per-repeat ratios."""
    from harness import alternate

    size = classifier.preprocessing.imgsize
    rng = np.random.default_rng(0)
    distinct = rng.integers(0, 256, (images * 8, size, size, 3), dtype=np.uint8)  # as load_images gives them
    originals = distinct[:images]
    classifier.predict_views(originals, "hflip_rot4", batch_size=images)  # warm-up: one trace per shape
    classifier.predict_arrays(distinct, batch_size=images * 8)
    pairs = alternate(repeats, lambda _: _timed(lambda: classifier.predict_views(originals, "hflip_rot4",
                                                                                  batch_size=images)),
                      lambda _: _timed(lambda: classifier.predict_arrays(distinct, batch_size=images * 8)))
    return (statistics.median(pair[0] for pair in pairs), statistics.median(pair[1] for pair in pairs),
            statistics.median(pair[0] / pair[1] for pair in pairs))


def _model(method: str, imgsize: int):
    from timl import models
    from timl.classifier import Classifier
    from timl.images import Preprocessing

    built = models.create_model(method, num_classes=10, imgsize=imgsize, weights="none")
    return Classifier(built, Preprocessing(imgsize), tuple(f"D{index}" for index in range(10)))


def print_costs(imgsize: int, repeats: int) -> None:
    print("Cost of hflip_rot4 (one call of the views against one call of as many different images):")
    for method, size in (("SmallCNN", imgsize), ("MobileNetV2", 224)):
        classifier = _model(method, size)
        for images in (1, 32):
            tta, plain, ratio = cost(classifier, images, repeats)
            print(f"  {method:12s} {size:3d} px, {images:2d} image(s) x 8 views: {tta * 1000:8.1f} ms; "
                  f"{images * 8:3d} images: {plain * 1000:8.1f} ms; median ratio {ratio:5.2f} (goal <= 1.3)")


def train_rows(work: Path, epochs: int, imgsize: int) -> list[Path]:
    """Trains the two SmallCNN rows; returns their .h5 files."""
    from timl import tracking
    from timl.training import train_table

    table = work / "tta.csv"
    table.write_text("method,dataset,split,epochs,imgaug,batchsize,imgsize,weights,seed\n"
                     f"SmallCNN,data/digits,pre,{epochs},none,32,{imgsize},none,0\n"
                     f"SmallCNN,data/digits,pre,{epochs},hflip_rot4,32,{imgsize},none,0\n")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    tracking.configure(uri)
    outcome = train_table(table, out_dir=work / "out", experiment="bench-tta", tracking_uri=uri, skip_roc=True)
    if outcome.failed:
        sys.exit(f"a row failed: {outcome.failed[0].message}")
    return [next((work / "out").glob(f"{row}-keras_model-*.h5")) for row in (0, 1)]


def print_scores(models: list[Path], resamples: int) -> None:
    """Each model's test balanced accuracy without TTA and with every preset, intervals and paired differences."""
    from timl import datasets, evaluation, images, intervals, tta
    from timl.classifier import classifier_from_keras_file

    test_csv = Path("data/digits-test.csv")
    truth, class_names = datasets.read_ground_truth(test_csv)
    y_true = truth[list(class_names)].to_numpy()
    print(f"\nBalanced accuracy on the digits test set ({len(truth)} images), 95% bootstrap intervals "
          f"({resamples} resamples); the difference to no TTA paired on the same resamples:")
    for label, path in zip(("imgaug none", "imgaug hflip_rot4"), models):
        classifier = classifier_from_keras_file(path)
        paths = datasets.image_paths(list(truth["image_name"]), Path("data/images"), test_csv)
        arrays = images.load_images(paths, classifier.preprocessing)
        baseline = None
        for preset in tta.TTA_CHOICES:
            y_prob = classifier.predict_arrays(arrays, 64, tta=preset)
            scores = intervals.bootstrap_scores(y_true, evaluation.predict_labels(y_prob), y_prob,
                                                resamples=resamples)["balanced_accuracy"]
            score = evaluation.evaluate(y_true, y_prob, class_names)["balanced_accuracy"]
            low, high = np.nanquantile(scores, [0.025, 0.975])
            line = f"  {label:18s} tta {preset:10s}: {score:.3f} [{low:.3f}, {high:.3f}]"
            if baseline is None:
                baseline = (score, scores)
            else:
                low, high = np.nanquantile(scores - baseline[1], [0.025, 0.975])
                line += f"   vs none {score - baseline[0]:+.3f} [{low:+.3f}, {high:+.3f}]"
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--imgsize", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--skip-scores", action="store_true", help="only the cost")
    arguments = parser.parse_args()
    print_costs(arguments.imgsize, arguments.repeats)
    if arguments.skip_scores:
        return
    with harness.digits_workspace(arguments.imgsize) as work:
        print_scores(train_rows(work, arguments.epochs, arguments.imgsize), arguments.resamples)


if __name__ == "__main__":
    main()
