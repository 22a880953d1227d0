"""Shared fixtures: a temporary tracking store, the digits demo data, small generated datasets."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

REPO = Path(__file__).resolve().parent.parent
SHARED_ISIC = REPO.parent / "shared" / "data" / "isic2019-sample"


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch):
    """A fresh SQLite tracking store in tmp_path; the working directory is tmp_path too."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """The full digits demo data (1797 PNGs, digits.csv and the pre split), written once per session."""
    from timl.data import write_digits

    folder = tmp_path_factory.mktemp("digits")
    write_digits(folder)
    return folder


@pytest.fixture(scope="session")
def mini_digits(digits_dir, tmp_path_factory) -> Path:
    """A 3-class, 90-image subset of digits (classes D0, D1, D2) as mini.csv with images/ beside it."""
    folder = tmp_path_factory.mktemp("mini")
    frame = pd.read_csv(digits_dir / "digits.csv", dtype={"image_name": str})
    classes = ["D0", "D1", "D2"]
    subset = frame[frame[classes].sum(axis=1) == 1]
    keep = subset.groupby(subset[classes].idxmax(axis=1)).head(30)
    (folder / "images").mkdir()
    for name in keep["image_name"]:
        shutil.copy(digits_dir / "images" / f"{name}.png", folder / "images" / f"{name}.png")
    keep[["image_name", "D0", "D1", "D2"]].to_csv(folder / "mini.csv", index=False)
    return folder


def write_table(path: Path, rows: list[dict]) -> Path:
    """Writes a training table with the original TIML input columns."""
    columns = ["method", "dataset", "split", "epochs", "imgaug", "batchsize", "imgsize", "resizefilter",
               "colorspace", "classcolumns", "classweights"]
    extra = [key for row in rows for key in row if key not in columns]
    pd.DataFrame(rows, columns=columns + list(dict.fromkeys(extra))).to_csv(path, index=False)
    return path


def small_cnn_row(dataset: str, **overrides) -> dict:
    row = {"method": "SmallCNN", "dataset": dataset, "split": "n=15", "epochs": 2, "imgaug": "none",
           "batchsize": 16, "imgsize": 16, "resizefilter": "bilinear", "colorspace": "RGB",
           "classcolumns": "default", "classweights": "default"}
    row.update(overrides)
    return row


@pytest.fixture
def isic_dir() -> Path:
    if not SHARED_ISIC.is_dir():
        pytest.skip("the shared ISIC sample is not available")
    return SHARED_ISIC


def random_images(folder: Path, count: int, size=(20, 16), seed: int = 0) -> list[str]:
    """Writes ``count`` random RGB PNGs named img000..; returns the names."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        name = f"img{index:03d}"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{name}.png")
        names.append(name)
    return names


def wait_for_http(url: str, timeout: float = 120) -> None:
    """Waits until ``url`` answers 200 (a server process starting up)."""
    import time

    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(url, timeout=30).ok:
                return
        except requests.RequestException:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def train_in_own_store(folder: Path, rows: list[dict], experiment: str, **options):
    """Trains a table in ``folder`` with its own SQLite store (module fixtures); returns (outcome, uri)."""
    import mlflow

    from timl import training

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    previous = os.getcwd()
    os.chdir(folder)
    try:
        table = write_table(folder / "table.csv", rows)
        outcome = training.train_table(table, out_dir=folder / "out", experiment=experiment, tracking_uri=uri,
                                       skip_roc=True, **options)
    finally:
        os.chdir(previous)
    mlflow.set_tracking_uri(uri)
    return outcome, uri
