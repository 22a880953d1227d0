"""Benchmark: images/s delivered to the model by the TIML input pipeline, against per-view PIL loading.

Ours: every image is decoded and resized once (``timl.images.load_images``, epoch 1 pays for it), then the
augmented views are computed in the tf.data graph from the cached pixels (``timl.images.make_dataset``).
Baseline: what the original TIML did, each augmented view loaded from its file with PIL, resized and
flipped/rotated, batch by batch, every epoch.

Usage::

    python bench/pipeline.py [--images DIR] [--epochs 3] [--imgsize 227] [--augmentation hflip_rot4] [--copies 1]

The default image folder is ../shared/data/isic2019-sample/images relative to the repository.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # benchmarks talk to loopback only
os.environ.setdefault("DO_NOT_TRACK", "true")

from timl.images import IMAGE_SUFFIXES, Preprocessing, get_augmentation, load_images, make_dataset  # noqa: E402

DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "isic2019-sample" / "images"


def _baseline_view(path: str, view: int, rotations: int, imgsize: int) -> np.ndarray:
    """One augmented view the original way: open the file, decode, resize, mirror/rotate with PIL."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB").resize((imgsize, imgsize), Image.Resampling.BILINEAR)
    if view >= rotations:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    angle = (view % rotations) * 360.0 / rotations
    if angle:
        image = image.rotate(angle, resample=Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


def _baseline_epoch(paths: list[str], multiplier: int, imgsize: int, batch_size: int, seed: int) -> int:
    rotations = max(1, multiplier // 2)
    order = np.random.default_rng(seed).permutation(len(paths) * multiplier)
    delivered = 0
    for start in range(0, len(order), batch_size):
        batch = np.stack([_baseline_view(paths[i // multiplier], int(i % multiplier), rotations, imgsize)
                          for i in order[start:start + batch_size]])
        delivered += len(batch)
    return delivered


def _ours(paths: list[str], augmentation: str, imgsize: int, batch_size: int, epochs: int) -> list[tuple[int, float]]:
    import tensorflow  # noqa: F401  (imported before the clock starts: import time is not pipeline time)

    results = []
    start = time.perf_counter()
    images = load_images(paths, Preprocessing(imgsize))
    labels = np.zeros((len(paths), 2), dtype=np.float32)
    dataset = make_dataset(images, labels, batch_size=batch_size, augmentation=augmentation, shuffle=True, seed=0)
    for _ in range(epochs):
        delivered = 0
        for batch, _labels in dataset:
            delivered += int(batch.shape[0])
        now = time.perf_counter()
        results.append((delivered, now - start))
        start = now
    return results


@click.command()
@click.option("--images", "image_dir", type=click.Path(exists=True, file_okay=False), default=str(DEFAULT_IMAGES),
              show_default=True, help="Folder of images to read.")
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(2, 100))
@click.option("--imgsize", default=227, show_default=True, type=int)
@click.option("--augmentation", default="hflip_rot4", show_default=True)
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--copies", default=1, show_default=True, type=click.IntRange(1, 1000),
              help="Use each image this many times (a larger set: less per-epoch start-up in the numbers).")
def main(image_dir: str, epochs: int, imgsize: int, augmentation: str, batch_size: int, copies: int):
    """Compares images/s of the cached tf.data pipeline with per-view PIL loading."""
    paths = sorted(str(p) for p in Path(image_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) * copies
    multiplier = get_augmentation(augmentation).multiplier
    click.echo(f"{len(paths)} images from {image_dir}, {augmentation} (x{multiplier}), {imgsize} px, "
               f"batch {batch_size}, {epochs} epochs, {os.cpu_count()} CPUs")
    ours = _ours(paths, augmentation, imgsize, batch_size, epochs)
    baseline = []
    for epoch in range(epochs):
        start = time.perf_counter()
        delivered = _baseline_epoch(paths, multiplier, imgsize, batch_size, epoch)
        baseline.append((delivered, time.perf_counter() - start))
    click.echo(f"{'epoch':>5} {'ours img/s':>11} {'baseline img/s':>15} {'ratio':>7}")
    for epoch, ((count, seconds), (base_count, base_seconds)) in enumerate(zip(ours, baseline), start=1):
        ours_rate, base_rate = count / seconds, base_count / base_seconds
        click.echo(f"{epoch:>5} {ours_rate:>11.0f} {base_rate:>15.0f} {ours_rate / base_rate:>6.1f}x")
    ours_rate = sum(c for c, _ in ours[1:]) / sum(s for _, s in ours[1:])
    base_rate = sum(c for c, _ in baseline[1:]) / sum(s for _, s in baseline[1:])
    click.echo(f"epochs 2-{epochs}: ours {ours_rate:.0f} img/s, baseline {base_rate:.0f} img/s, "
               f"ratio {ours_rate / base_rate:.1f}x (goal: at least 10x)")


if __name__ == "__main__":
    main()
