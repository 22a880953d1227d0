"""One model process for all workers of a server (MODEL_PROCESS): real processes, a real socket, a real gunicorn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from helpers import encoded, free_port, saved_model, wait_for_http
from timl.errors import ConfigError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is gone for this purpose
    return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower() if Path(f"/proc/{pid}").exists() else False


def _wait(condition, message: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(message)


@pytest.fixture()
def model_process(tmp_path):
    """A model process started as the server's master starts it (TTA hflip: its rows carry the views' spread)."""
    from timl.serving.config import ServerConfig
    from timl.serving.model_process import ModelProcess

    config = ServerConfig(model=str(saved_model(tmp_path)), tta="hflip", metrics=False)
    folder = tmp_path / "socket"
    folder.mkdir(mode=0o700)
    process = ModelProcess(config, folder)
    process.start()
    yield config, process
    process.stop()


def test_the_model_process_answers_as_the_workers_own_model_did_and_refuses_a_wrong_key(model_process, tmp_path):
    """Classifications, the review ranking's batches and the expert answer's prediction run in the model process
    (with the TTA setting) and equal the worker's own model's; a client with another key is refused and the model
    process goes on answering."""
    from timl.serving.model import ModelHolder
    from timl.serving.model_process import ModelProcessClient, ModelRestarting

    config, process = model_process
    client = ModelProcessClient(process.address, process.authkey)
    assert client.wait_until_ready(120)
    own = ModelHolder(config)  # the model in the worker, as with MODEL_PROCESS false
    remote = ModelHolder(config)
    remote.use_model_process(client)
    arrays = np.random.default_rng(0).random((5, 16, 16, 3)).astype("float32")

    with remote.batcher.expect() as announcement:
        probabilities, spread = remote.submit(arrays[0], announcement)
    expected, expected_spread = own.submit(arrays[0])
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    np.testing.assert_allclose(spread, expected_spread, atol=1e-6)
    np.testing.assert_allclose(remote._probabilities(arrays), own._probabilities(arrays), atol=1e-6)  # ranking
    image = tmp_path / "review.png"
    image.write_bytes(encoded(size=(40, 24)))
    assert remote.prediction(image)[0] == own.prediction(image)[0]

    stats = client.stats()
    assert stats["model_process"] == {"pid": process.pid, "ready": True}
    assert stats["images"] == 1 + 5 + 1  # the submit, the ranking batch, the review prediction (not its warm-up)

    intruder = ModelProcessClient(process.address, b"another key of 32 bytes, wrong..")
    with pytest.raises(ModelRestarting):
        intruder.submit(arrays[0])
    assert client.submit(arrays[1]).shape == (2, 3)  # still answering


def test_a_server_runs_one_model_for_its_workers_and_starts_a_new_one_when_it_stops(tmp_path):
    """Two gunicorn workers, one model process: answers equal the model's own; concurrent requests of both workers
    share model calls; the model process killed: /classify answers 503 with Retry-After (no server path in it),
    /health 503, then a new model process answers; stopping the server stops it; killing the server's master
    (no clean stop) ends it too."""
    import requests

    from timl.classifier import load_classifier

    model = saved_model(tmp_path)
    config = tmp_path / "timl_server_config.json"
    config.write_text(json.dumps({"CLASSIFICATION_MODEL": model.name, "BATCH_MAX_WAIT_MS": 50}))
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "timl.serve", "--config", str(config), "--workers", "2",
                               "--bind", f"127.0.0.1:{port}"], cwd=tmp_path, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    upload = encoded(size=(40, 24))
    classify = lambda: requests.post(f"{base}/api/classify", files={"file": ("x.png", upload)}, timeout=60)  # noqa: E731
    try:
        wait_for_http(f"{base}/health")
        health = requests.get(f"{base}/health", timeout=10).json()
        first = health["batching"]["model_process"]["pid"]
        assert health["batching"]["images"] == 0  # warm-ups are not counted; the workers only waited for it
        expected = load_classifier(keras_model=model).predict_images([upload])[0]
        answer = classify()
        assert answer.status_code == 200
        np.testing.assert_allclose(answer.json()["prediction"], expected, atol=1e-5)

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: classify(), range(48)))
            refused = list(pool.map(lambda _: requests.post(f"{base}/api/classify", files={"file": ("x.png", b"junk")},
                                                            timeout=60), range(4)))
        assert all(answer.status_code == 200 for answer in answers)
        assert all(answer.status_code == 400 for answer in refused)
        workers = set()  # which worker accepts a connection is the kernel's choice: ask until both answered
        for _ in range(200):
            workers.add(requests.get(f"{base}/health", timeout=10).json()["pid"])
            if len(workers) == 2:
                break
        batching = requests.get(f"{base}/health", timeout=10).json()["batching"]
        assert batching["images"] == 1 + 48 and batching["model_calls"] < 1 + 48  # batches formed
        assert batching["decoding"] == 0  # the refused uploads' announcements were withdrawn: no batch waits for them
        assert len(workers) == 2

        leaving = requests.get(f"{base}/health", timeout=10).json()["pid"]  # a worker stopping and replaced
        os.kill(leaving, signal.SIGTERM)
        _wait(lambda: not _alive(leaving), "the worker did not stop")
        _wait(lambda: requests.get(f"{base}/health", timeout=10).ok, "the worker's replacement did not start")
        assert requests.get(f"{base}/health", timeout=10).json()["batching"]["model_process"]["pid"] == first
        assert requests.get(f"{base}/metrics", timeout=10).status_code == 200  # the master's folders are intact

        os.kill(first, signal.SIGKILL)
        _wait(lambda: not _alive(first), "the model process did not stop")
        refused = classify()
        assert refused.status_code in (200, 503)  # a new model process may already answer on a fast machine
        if refused.status_code == 503:
            assert refused.headers["Retry-After"] == "5" and "restarting" in refused.json()["error"]
            assert str(tmp_path) not in refused.text
        _wait(lambda: requests.get(f"{base}/health", timeout=10).ok, "no new model process answered")
        health = requests.get(f"{base}/health", timeout=10).json()
        second = health["batching"]["model_process"]["pid"]
        assert second != first and health["status"] == "ok"
        np.testing.assert_allclose(classify().json()["prediction"], expected, atol=1e-5)
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    assert not _alive(second)
    text = (tmp_path / "server.log").read_text()
    assert "The model process" in text and "starting a new one" in text

    # the master killed without a clean stop: its model process ends by itself
    log = (tmp_path / "server2.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "timl.serve", "--config", str(config), "--workers", "2",
                               "--bind", f"127.0.0.1:{port}"], cwd=tmp_path, stdout=log, stderr=log)
    try:
        wait_for_http(f"{base}/health")
        orphan = requests.get(f"{base}/health", timeout=10).json()["batching"]["model_process"]["pid"]
        workers = {requests.get(f"{base}/health", timeout=10).json()["pid"] for _ in range(10)}
        server.kill()
        server.wait(timeout=30)
        _wait(lambda: not _alive(orphan), "the model process outlived its server", timeout=30)
    finally:
        for pid in workers:  # gunicorn's workers also notice their master is gone; make sure
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)
        log.close()


def test_model_process_false_keeps_a_model_in_each_worker_and_a_bad_value_is_named(tmp_path):
    from timl.serving.config import ServerConfig

    assert ServerConfig.from_mapping({"CLASSIFICATION_MODEL": "m.h5", "MODEL_PROCESS": False}).model_process is False
    assert ServerConfig.from_mapping({"CLASSIFICATION_MODEL": "m.h5"}).model_process is True
    with pytest.raises(ConfigError, match="MODEL_PROCESS must be true or false. Received: MODEL_PROCESS='yes'"):
        ServerConfig.from_mapping({"CLASSIFICATION_MODEL": "m.h5", "MODEL_PROCESS": "yes"})


def test_gunicorn_with_the_shipped_settings_runs_the_model_process_too(tmp_path):
    """``gunicorn -c serving/gunicorn.conf.py serving.wsgi:app`` (the README's other way to serve) starts the model
    process before its 2 workers, sends their model calls to it, and stops it with the server."""
    import requests

    repo = Path(__file__).resolve().parents[1]
    model = saved_model(tmp_path)
    config = tmp_path / "timl_server_config.json"
    config.write_text(json.dumps({"CLASSIFICATION_MODEL": str(model)}))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(repo / "serving" / "gunicorn.conf.py"),
                               "-b", f"127.0.0.1:{port}", "serving.wsgi:app"], cwd=repo,
                              env={**os.environ, "TIML_SERVER_CONFIG": str(config)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/health")
        answer = requests.post(f"{base}/api/classify", files={"file": ("x.png", encoded())}, timeout=60)
        assert answer.status_code == 200
        batching = requests.get(f"{base}/health", timeout=10).json()["batching"]
        pid = batching["model_process"]["pid"]
        assert batching["images"] >= 1
    finally:
        server.terminate()
        server.wait(timeout=60)
    _wait(lambda: not _alive(pid), "the model process outlived gunicorn", timeout=15)
