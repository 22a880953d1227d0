"""Shared fixtures: a temporary tracking store, the digits demo data, the ISIC sample (helpers: helpers.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from helpers import SHARED_ISIC
# the registry's hooks: component markers, and skips that fail where TIML_REQUIRE_ALL=1 (CI)
from require_all import (pytest_configure, pytest_make_collect_report, pytest_runtest_makereport,  # noqa: F401
                         pytest_runtest_setup, require)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
# Tests talk to loopback only: no MLflow usage telemetry from this process, its subprocesses or the UI it serves
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# The servers the tests start warm their model only: each explanation process loading TensorFlow at every start
# would add seconds to each (tests/test_metrics.py starts one with the default, "all").
os.environ.setdefault("TIML_WARM_START", "model")


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


@pytest.fixture
def isic_dir() -> Path:
    require("isic sample")
    return SHARED_ISIC

