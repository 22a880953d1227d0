"""What the benchmarks share: loopback-only settings, a work folder holding the digits demo data, and the loop
that times two ways of doing the same work alternately, and a TIML server on loopback for the serving benches.

Imported by a bench run as ``python bench/NAME.py`` (its folder is on ``sys.path``); importing it sets the
environment, so import it before TensorFlow or MLflow load.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
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


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_path: Path, settings: dict, workers: int = 2,
                 code: Path | None = None) -> tuple[subprocess.Popen, str]:
    """A TIML server (gunicorn, ``workers`` workers, loopback) on the model with extra configuration ``settings``;
    returns it and its URL once it answers (RuntimeError after 180 s). ``code``: another checkout of TIML whose
    ``timl`` package the server runs (its working directory, and first on its ``PYTHONPATH``); by default the one
    this process would import."""
    import requests

    port = free_port()
    config = model_path.parent / f"timl_server_config_{port}.json"  # its own: servers on one model side by side
    config.write_text(json.dumps({"CLASSIFICATION_MODEL": str(model_path), **settings}))
    server = subprocess.Popen([sys.executable, "-m", "timl.serve", "--config", str(config), "--workers", str(workers),
                               "--bind", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=code, env=None if code is None else {**os.environ, "PYTHONPATH": str(code)})
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if requests.get(f"{base}/health", timeout=30).ok:
                return server, base
        except requests.RequestException:
            pass
        time.sleep(0.5)
    server.terminate()
    raise RuntimeError("The server did not answer /health within 180 s.")
