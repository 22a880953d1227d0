"""What temperature scaling does to a deliberately overconfident row: test ECE, NLL and Brier before and after.

A SmallCNN trains long (``--epochs``) on a small share of the digits demo (``split frac=F``: dev and test each
take F of the images, training the rest), with ``calibration=temperature``. The row logs its scores before
calibration (``test/ece_uncalibrated``) beside the calibrated ones (``test/ece``) and the fitted temperature;
this prints them as a table (goal: the test ECE at least halved, the dev NLL never raised, accuracy unchanged).

    python bench/calibration.py [--epochs 60] [--frac 0.45] [--imgsize 16] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys

import harness  # noqa: F401 (first: the benchmarks' environment)

from timl import metric_names as names


def calibrated_row(work, epochs: int, fraction: float, imgsize: int, seed: int) -> dict[str, float]:
    """Trains the row; returns its metrics."""
    from mlflow.tracking import MlflowClient

    from timl import tracking, training

    folder = work / f"seed{seed}"
    folder.mkdir()
    table = folder / "table.csv"
    table.write_text("method,dataset,split,epochs,imgaug,batchsize,imgsize,seed,calibration\n"
                     f"SmallCNN,{work / 'data' / 'digits'},frac={fraction},{epochs},none,32,{imgsize},{seed},"
                     "temperature\n")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    outcome = training.train_table(table, out_dir=folder / "out", experiment="bench", tracking_uri=uri)
    if outcome.failed:
        sys.exit(f"the row failed: {outcome.failed[0].message}")
    tracking.configure(uri)
    (run,) = tracking.child_runs(outcome.parent_run_id)
    return MlflowClient(uri).get_run(run.info.run_id).data.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--frac", type=float, default=0.45)
    parser.add_argument("--imgsize", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    print(f"\n| seed | T | split | ECE before / after | NLL before / after | Brier before / after | accuracy |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    with harness.digits_workspace(size=args.imgsize) as work:
        for seed in args.seeds:
            metrics = calibrated_row(work, args.epochs, args.frac, args.imgsize, seed)
            temperature = metrics[names.temperature_metric()]
            for split in (names.DEV, names.TEST):
                cells = [f"{metrics[names.uncalibrated_metric(split, name)]:.4f} / "
                         f"{metrics[names.split_metric(split, name)]:.4f}" for name in names.CALIBRATION_COMPARED]
                accuracy = metrics[names.split_metric(split, "accuracy")]
                print(f"| {seed} | {temperature:.3f} | {split} | {' | '.join(cells)} | {accuracy:.4f} |")


if __name__ == "__main__":
    main()
