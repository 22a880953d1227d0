"""The digits demo data (timl.data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from click.testing import CliRunner
from PIL import Image

from timl.data import cli, write_digits
from timl.datasets import load_dataset


def test_digits_layout(digits_dir):
    frame = pd.read_csv(digits_dir / "digits.csv", dtype={"image_name": str})
    assert list(frame.columns) == ["image_name"] + [f"D{d}" for d in range(10)]
    assert len(frame) == 1797 and frame["image_name"].iloc[1] == "0001"
    assert (frame.iloc[:, 1:].sum(axis=1) == 1).all()
    assert len(list((digits_dir / "images").glob("*.png"))) == 1797
    with Image.open(digits_dir / "images" / "0000.png") as image:
        assert image.size == (32, 32) and image.mode == "RGB"
        pixels = np.asarray(image)
    assert np.array_equal(pixels[..., 0], pixels[..., 2]) and pixels.max() > 200  # grey, real strokes


def test_digits_pre_split_is_stratified_and_disjoint(digits_dir):
    parts = {split: pd.read_csv(digits_dir / f"digits-{split}.csv", dtype={"image_name": str})
             for split in ("train", "dev", "test")}
    names = [name for frame in parts.values() for name in frame["image_name"]]
    assert len(names) == len(set(names)) == 1797
    assert [len(parts[s]) for s in ("train", "dev", "test")] == [1257, 270, 270]
    counts = parts["dev"].iloc[:, 1:].sum(axis=0)
    assert counts.min() >= 26 and counts.max() <= 29
    dataset = load_dataset("digits", "pre", base_dir=digits_dir)
    assert dataset.sizes() == {"train": 1257, "dev": 270, "test": 270}


def test_write_digits_small_size_and_seed(tmp_path):
    path = write_digits(tmp_path / "d", size=8, seed=1)
    assert path == tmp_path / "d" / "digits.csv"
    with Image.open(tmp_path / "d" / "images" / "0005.png") as image:
        assert image.size == (8, 8)
    dev = pd.read_csv(tmp_path / "d" / "digits-dev.csv", dtype={"image_name": str})
    assert dev["image_name"].str.len().eq(4).all()


def test_cli(tmp_path):
    runner = CliRunner()
    help_text = runner.invoke(cli, ["--help"]).output
    assert "python -m timl.data digits" in help_text
    result = runner.invoke(cli, ["digits", str(tmp_path / "out"), "--size", "8"])
    assert result.exit_code == 0, result.output
    assert "Wrote 1797 images" in result.output
    assert (tmp_path / "out" / "digits-train.csv").is_file()
