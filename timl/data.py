"""Demo data: scikit-learn's bundled handwritten digits as an ISIC-style dataset (real data, no download).

``python -m timl.data digits DIR`` writes 1797 real 8x8 digit images, upscaled to 32x32 PNG files, with
``digits.csv`` (``image_name``, ``D0`` .. ``D9`` one-hot) and the ``pre`` split files
``digits-train.csv``, ``digits-dev.csv`` and ``digits-test.csv``::

    DIR/digits.csv
    DIR/digits-train.csv   DIR/digits-dev.csv   DIR/digits-test.csv
    DIR/images/0000.png ... DIR/images/1796.png

so that ``dataset=DIR/digits, split=pre`` (or ``dataset=DIR/digits.csv, split=frac=0.15``) works with the
default image folder (``images/`` beside the CSV).
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
import numpy as np
import pandas as pd

from timl.cli import group
from timl.datasets import IMAGE_COLUMN, stratified_order

logger = logging.getLogger(__name__)

#: Share of the digits for the dev set and for the test set of the ``pre`` split files.
DIGITS_HOLDOUT = 0.15


def _digit_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The digits as uint8 RGB arrays (N, size, size, 3) and their classes (N,)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    images = np.empty((len(grey), size, size, 3), dtype=np.uint8)
    for index, pixels in enumerate(grey):
        upscaled = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BILINEAR)
        images[index] = np.asarray(upscaled.convert("RGB"))
    return images, digits.target.astype(int)


def _write_splits(table: pd.DataFrame, class_names: list[str], out_dir: Path, seed: int) -> dict[str, int]:
    order = stratified_order(table[class_names].to_numpy(), seed)
    holdout = int(round(DIGITS_HOLDOUT * len(table)))
    parts = {"dev": order[:holdout], "test": order[holdout:2 * holdout], "train": order[2 * holdout:]}
    for split, rows in parts.items():
        table.iloc[np.sort(rows)].to_csv(out_dir / f"digits-{split}.csv", index=False)
    return {split: len(rows) for split, rows in parts.items()}


def write_digits(out_dir: str | Path, *, size: int = 32, seed: int = 0) -> Path:
    """Writes scikit-learn's handwritten digits as PNG images and ISIC-style ground-truth CSV files.

    Args:
        out_dir: the folder to write into (created if needed).
        size: side of the PNG images in pixels (default 32; the originals are 8x8).
        seed: seed of the stratified train/dev/test split (70/15/15).

    Returns:
        The path of ``digits.csv``.
    """
    from PIL import Image

    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, targets = _digit_images(int(size))
    names = [f"{index:04d}" for index in range(len(images))]
    for name, pixels in zip(names, images):
        Image.fromarray(pixels, mode="RGB").save(image_dir / f"{name}.png", optimize=False, compress_level=1)
    class_names = [f"D{digit}" for digit in range(10)]
    table = pd.DataFrame(np.eye(10, dtype=int)[targets], columns=class_names)
    table.insert(0, IMAGE_COLUMN, names)
    csv_path = out_dir / "digits.csv"
    table.to_csv(csv_path, index=False)
    sizes = _write_splits(table, class_names, out_dir, seed)
    logger.info("Wrote %d digit images to %s (splits %s)", len(names), image_dir, sizes)
    return csv_path


@group(epilog="Example: python -m timl.data digits demo_data")
def cli():
    """Demo data sets for TIML."""


@cli.command("digits", epilog="Example: python -m timl.data digits demo_data  (then dataset=demo_data/digits, "
                              "split=pre)")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--size", default=32, show_default=True, type=click.IntRange(8, 1024), help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the train/dev/test split.")
def digits_command(out_dir: str, size: int, seed: int):
    """Writes scikit-learn's 1797 handwritten digits (10 classes) as PNG images and ISIC-style CSV files."""
    csv_path = write_digits(out_dir, size=size, seed=seed)
    count = sum(1 for _ in (csv_path.parent / "images").glob("*.png"))
    click.echo(f"Wrote {count} images to {csv_path.parent / 'images'}")
    click.echo(f"Ground truth: {csv_path} and {csv_path.parent / 'digits'}-{{train,dev,test}}.csv (split=pre)")


if __name__ == "__main__":
    cli()
