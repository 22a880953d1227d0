"""What cached activations save: a table of head variants on one frozen backbone, with ``activations=auto`` against
the same table without it.

    python bench/activation_cache.py [--epochs 5] [--imgsize 64] [--method VGG16-fc2k-ml]

The table has 4 rows on the digits demo data: the method and its 0.75-dropout variant (``-do75``) at two
learning rates, every row with ``freeze=backbone`` (only the head trains; weights=none, as ImageNet weights
cannot be downloaded here). Without the column, every epoch runs the frozen backbone over every image; with
``activations=auto`` the backbone runs once for the whole table (the cache starts empty) and the heads train on
its activations. Prints both totals, the ratio (goal >= 5) and each row's test accuracy on both sides. What the
cache saves is the backbone's share of an epoch: it grows with the image size (at 32 px VGG16's dense head costs
a third of what the frozen backbone does per image; at 224 px a fiftieth).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import harness  # first: the benchmarks' environment


def _table(path: Path, data: Path, method: str, epochs: int, imgsize: int, cached: bool) -> Path:
    columns = "method,dataset,split,epochs,imgaug,batchsize,imgsize,weights,freeze,lr,seed" + (
        ",activations" if cached else "")
    rows = [f"{name},{data / 'digits.csv'},n=300,{epochs},none,32,{imgsize},none,backbone,{lr},0"
            + (",auto" if cached else "")
            for name in (method, method.replace("-ml", "-do75-ml")) for lr in ("1e-3", "3e-3")]
    path.write_text("\n".join([columns, *rows]) + "\n")
    return path


def _run(table: Path, out: Path, uri: str) -> tuple[float, list[float]]:
    from mlflow.tracking import MlflowClient

    from timl import tracking
    from timl.training import train_table

    tracking.configure(uri)
    start = time.perf_counter()
    outcome = train_table(table, out_dir=out, experiment=out.name, tracking_uri=uri, skip_roc=True)
    seconds = time.perf_counter() - start
    if outcome.failed:
        sys.exit(f"{out.name}: a row failed: {outcome.failed[0].message}")
    client = MlflowClient()
    return seconds, [client.get_run(row.run_id).data.metrics["test/accuracy"] for row in outcome.rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--imgsize", type=int, default=64,
                        help="the backbone's share of a row's work grows with the image (ISIC rows use 224-227)")
    parser.add_argument("--method", default="VGG16-fc2k-ml", help="a method with a -do75 variant")
    args = parser.parse_args()
    with harness.digits_workspace(args.imgsize) as work:
        os.environ["TIML_ACTIVATION_CACHE"] = str(work / "cache")
        uri = f"sqlite:///{work / 'mlflow.db'}"
        plain = _run(_table(work / "plain.csv", work / "data", args.method, args.epochs, args.imgsize, False),
                     work / "plain", uri)
        cached = _run(_table(work / "cached.csv", work / "data", args.method, args.epochs, args.imgsize, True),
                      work / "cached", uri)
    print(f"\n| measure (4 head variants of {args.method}, {args.epochs} epochs, {args.imgsize} px) | seconds |"
          "\n| --- | --- |")
    print(f"| frozen backbone, every epoch over the images / activations=auto (cache empty at start) | "
          f"{plain[0]:.1f} / {cached[0]:.1f} = {plain[0] / cached[0]:.1f}x (goal >= 5x) |")
    print(f"| test accuracy per row, without / with the cache | {', '.join(f'{a:.3f}' for a in plain[1])} / "
          f"{', '.join(f'{a:.3f}' for a in cached[1])} (means {statistics.mean(plain[1]):.3f} / "
          f"{statistics.mean(cached[1]):.3f}) |")


if __name__ == "__main__":
    main()
