"""What the benchmarks share: loopback-only settings, a work folder holding the digits demo data, and the loop
that times two ways of doing the same work alternately.

Imported by a bench run as ``python bench/NAME.py`` (its folder is on ``sys.path``); importing it sets the
environment, so import it before TensorFlow or MLflow load.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # benchmarks talk to loopback only
os.environ.setdefault("DO_NOT_TRACK", "true")


@contextlib.contextmanager
def digits_workspace(size: int = 32) -> Iterator[Path]:
    """A temporary folder, made the working directory, with the digits demo data in ``data/`` (``data/digits``
    is the dataset); removed on leaving.

    Args:
        size: the images' side in pixels. Defaults to 32.
    """
    from timl.data import write_digits

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        os.chdir(work)
        write_digits(work / "data", size=size)
        yield work


def alternate(repeats: int, first: Callable[[int], float], second: Callable[[int], float]) -> list[tuple[float, float]]:
    """Runs ``first(repeat)`` then ``second(repeat)``, ``repeats`` times, so that a slow spell of the machine hits
    both alike; returns the pairs of what they returned (their seconds), for medians of pairs and of ratios."""
    return [(first(repeat), second(repeat)) for repeat in range(repeats)]
