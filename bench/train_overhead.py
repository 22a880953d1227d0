"""What tracking, plots and the pipeline cost: ``timl.train`` on one SmallCNN row vs plain ``model.fit``.

Both train the same SmallCNN on the digits demo data (train split, dev as validation) for the same epochs. The
baseline gets the images preloaded as float32 arrays (loading is not timed) and only builds and fits the model;
TIML's time is the whole row: reading the dataset, decoding the images, training with per-epoch logging,
evaluation on dev and test with plots, the model saved and logged to MLflow, the results table.

    python bench/train_overhead.py [--epochs 10] [--imgsize 32] [--repeats 3]

Runs the two alternately ``--repeats`` times and prints each pair, the median times and the median ratio (goal:
at most 1.15).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import harness  # first: the benchmarks' environment


def baseline(data_dir: Path, epochs: int, imgsize: int, batch_size: int) -> float:
    import keras
    import numpy as np

    from timl import datasets, images, models

    dataset = datasets.load_dataset(str(data_dir / "digits"), "pre", seed=0, base_dir=data_dir)
    preprocessing = images.Preprocessing(imgsize)
    x_train = images.load_images(dataset.paths("train"), preprocessing).astype(np.float32) / 255.0
    x_dev = images.load_images(dataset.paths("dev"), preprocessing).astype(np.float32) / 255.0
    y_train, y_dev = dataset.labels("train"), dataset.labels("dev")
    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = models.create_model("SmallCNN", len(dataset.class_names), imgsize, weights="none", seed=0)
    model.fit(x_train, y_train, validation_data=(x_dev, y_dev), epochs=epochs, batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - start
    keras.backend.clear_session()
    return seconds


def timl_row(data_dir: Path, work: Path, epochs: int, imgsize: int, batch_size: int) -> float:
    from timl import tracking, training

    work.mkdir()
    table = work / "table.csv"
    table.write_text("method,dataset,split,epochs,imgaug,batchsize,imgsize\n"
                     f"SmallCNN,{data_dir / 'digits'},pre,{epochs},none,{batch_size},{imgsize}\n")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    tracking.configure(uri)  # the store exists before timing, as it does for any user after the first run
    start = time.perf_counter()
    outcome = training.train_table(table, out_dir=work / "out", experiment="bench", tracking_uri=uri)
    seconds = time.perf_counter() - start
    if outcome.failed:
        sys.exit(f"the TIML row failed: {outcome.failed[0].message}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--imgsize", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3,
                        help="pairs (plain, timl) run alternately; medians are reported (timings here are noisy)")
    args = parser.parse_args()
    with harness.digits_workspace() as work:
        pairs = harness.alternate(args.repeats,
                                  lambda repeat: baseline(work / "data", args.epochs, args.imgsize, args.batch_size),
                                  lambda repeat: timl_row(work / "data", work / f"run{repeat}", args.epochs,
                                                          args.imgsize, args.batch_size))
    print(f"\n| measure ({args.epochs} epochs) | seconds |\n| --- | --- |")
    for plain, ours in pairs:
        print(f"| plain model.fit / timl.train, one row | {plain:.1f} / {ours:.1f} (ratio {ours / plain:.2f}) |")
    plain = statistics.median(p for p, _ in pairs)
    ours = statistics.median(o for _, o in pairs)
    ratio = statistics.median(o / p for p, o in pairs)
    print(f"| median: plain / timl / ratio | {plain:.1f} / {ours:.1f} / {ratio:.2f} |")


if __name__ == "__main__":
    main()
