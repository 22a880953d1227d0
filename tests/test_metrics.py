"""Issue 28: the server's Prometheus metrics (``GET /metrics``, counted across gunicorn workers) and its warm start
(``/health`` ready only once the model and the explanation process are warm)."""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import colour_classifier, encoded, free_port, saved_model

from timl.errors import ConfigError

TOKEN = "metrics-test-token-0123456789"
API_TOKEN = "api-test-token-0123456789abcdef"


def samples(text: str) -> dict[tuple, float]:
    """The scrape parsed with prometheus-client's parser: (sample name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(scraped: dict, sample: str, **labels) -> float:
    """One sample's value (0 when the scrape has none)."""
    return scraped.get((sample, tuple(sorted(labels.items()))), 0.0)


def colour_png(channel: int) -> bytes:
    from PIL import Image

    pixels = np.zeros((24, 24, 3), np.uint8)
    pixels[..., channel] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _post(client, url: str, data: bytes):
    return client.post(url, data={"file": (io.BytesIO(data), "x.png")}, content_type="multipart/form-data")


def test_the_scrape_counts_the_requests_sent(tmp_path):
    """Known requests (three classifications, a refused image, a 404, an explanation, one past its time limit, a
    missing model's 503), then one scrape: every count matches, no raw path or file name is a label."""
    from timl.serving import create_app

    app = create_app({"CLASSIFICATION_MODEL": "colours.h5"}, classifier=colour_classifier())
    client = app.test_client()
    for channel in (0, 0, 1):  # red, red, green: A, A, B
        assert _post(client, "/api/classify", colour_png(channel)).status_code == 200
    assert _post(client, "/api/classify", b"junk").status_code == 400
    assert client.get("/api/no-such-route/secret-name").status_code == 404
    assert _post(client, "/api/explain/gradcam/conv_a", encoded()).status_code == 200
    app.extensions["timl_model"].explanations.timeout = 1e-6
    assert _post(client, "/api/explain/gradcam/conv_a", encoded()).status_code == 504
    missing = create_app({"CLASSIFICATION_MODEL": str(tmp_path / "missing.h5")}).test_client()
    assert _post(missing, "/api/classify", encoded()).status_code == 503

    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.mimetype == "text/plain"
    scraped = samples(answer.get_data(as_text=True))
    requests = "timl_http_requests_total"
    assert value(scraped, requests, route="/api/classify", method="POST", status="200") == 3
    assert value(scraped, requests, route="/api/classify", method="POST", status="400") == 1
    assert value(scraped, requests, route="unmatched", method="GET", status="404") == 1
    explain_route = "/api/explain/<method>/<path:layer>"
    assert value(scraped, requests, route=explain_route, method="POST", status="504") == 1
    assert value(scraped, "timl_request_duration_seconds_count", route="/api/classify") == 4
    assert value(scraped, "timl_request_duration_seconds_count", route=explain_route) == 2
    assert value(scraped, "timl_batch_size_count") == 3 and value(scraped, "timl_batch_size_sum") == 3
    assert value(scraped, "timl_model_call_seconds_count") == 3 and value(scraped, "timl_model_call_seconds_sum") > 0
    assert value(scraped, "timl_batch_queue_seconds_count") == 3  # one per image
    assert value(scraped, "timl_images_decoded_total") == 5
    assert value(scraped, "timl_images_refused_total", reason="not_an_image") == 1
    assert value(scraped, "timl_unavailable_total", status="504", reason="explanation_timeout") == 1
    model = {"name": "colours", "version": ""}
    assert value(scraped, "timl_predictions_total", predicted_class="A", **model) == 2
    assert value(scraped, "timl_predictions_total", predicted_class="B", **model) == 1
    assert value(scraped, "timl_model_info", **model) == 1
    assert value(scraped, "timl_explanations_in_flight") == 0
    labels = {text for key in scraped for _, text in key[1]}
    assert not any("secret-name" in text or "x.png" in text for text in labels)
    # the other app counts in its own registry: its 503 is there, by reason
    scraped_missing = samples(missing.get("/metrics").get_data(as_text=True))
    assert value(scraped_missing, "timl_unavailable_total", status="503", reason="model_unavailable") == 1


def _token_app(tmp_path, **settings):
    from timl.serving import create_app

    return create_app({"CLASSIFICATION_MODEL": "colours.h5", **settings}, classifier=colour_classifier())


def test_with_tokens_the_scrape_needs_one(tmp_path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({API_TOKEN: "Dr. A"}))
    for settings, accepted in (({"API_TOKENS_FILE": str(tokens)}, (API_TOKEN,)),
                               ({"API_TOKENS_FILE": str(tokens), "METRICS_TOKEN": TOKEN}, (API_TOKEN, TOKEN)),
                               ({"METRICS_TOKEN": TOKEN}, (TOKEN,))):
        client = _token_app(tmp_path, **settings).test_client()
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"}):
            refused = client.get("/metrics", headers=headers)
            assert refused.status_code == 401 and "METRICS_TOKEN" in refused.get_json()["error"], settings
        for token in accepted:
            answer = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200 and "timl_http_requests_total" in answer.get_data(as_text=True)
    assert _token_app(tmp_path).test_client().get("/metrics").status_code == 200  # no tokens: open, as /health


def test_metrics_can_be_switched_off_and_bad_settings_are_named(tmp_path):
    from timl.serving.config import ServerConfig

    assert _token_app(tmp_path, METRICS=False).test_client().get("/metrics").status_code == 404
    with pytest.raises(ConfigError, match="METRICS must be true or false. Received: METRICS='yes'"):
        ServerConfig.from_mapping({"CLASSIFICATION_MODEL": "m.h5", "METRICS": "yes"}, source="c.json")
    with pytest.raises(ConfigError, match="c.json: METRICS_TOKEN must be a string of at least 16") as error:
        ServerConfig.from_mapping({"CLASSIFICATION_MODEL": "m.h5", "METRICS_TOKEN": "short-secret"}, source="c.json")
    assert "short-secret" not in str(error.value)  # a token is never echoed
    assert "METRICS_TOKEN" not in ServerConfig.from_mapping({"CLASSIFICATION_MODEL": "m.h5", "METRICS_TOKEN": TOKEN
                                                             }).as_mapping()  # the mapping the routes see


def test_the_metrics_folder_is_made_and_removed_or_the_operators_emptied(tmp_path, monkeypatch):
    from timl.serving import metrics

    monkeypatch.delenv(metrics.DIRECTORY_VARIABLE, raising=False)
    folder, made = metrics.multiprocess_directory()
    assert made and folder.is_dir() and str(folder) == os.environ[metrics.DIRECTORY_VARIABLE]
    metrics.remove_directory(folder)
    assert not folder.exists() and metrics.DIRECTORY_VARIABLE not in os.environ, "a later server would use it"
    given = tmp_path / "prometheus"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")  # an earlier run's counts
    (given / "notes.txt").write_text("kept")
    monkeypatch.setenv(metrics.DIRECTORY_VARIABLE, str(given))
    assert metrics.multiprocess_directory() == (given, False)
    assert sorted(path.name for path in given.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("text", ["al", "yes", "1"])
def test_a_bad_warm_start_level_is_named(monkeypatch, text):
    from timl.serving.model import warm_start_from_environment

    monkeypatch.setenv("TIML_WARM_START", text)
    with pytest.raises(ConfigError, match=f"TIML_WARM_START must be one of all, model, none. Received: "
                                          f"TIML_WARM_START='{text}'"):
        warm_start_from_environment()
    monkeypatch.setenv("TIML_WARM_START", " Model ")
    assert warm_start_from_environment() == "model"


def _health(base: str):
    import requests

    try:
        answer = requests.get(f"{base}/health", timeout=10)
    except requests.RequestException:
        return None
    return answer.status_code, answer.json()


def _wait_until_every_worker_is_ready(base: str, server: subprocess.Popen, workers: int) -> list[dict]:
    """Polls /health until ``workers`` distinct worker pids have answered 200; returns every answer seen."""
    seen: list = []
    deadline = time.time() + 150
    while time.time() < deadline and server.poll() is None:
        answer = _health(base)
        if answer is not None:
            seen.append(answer)
            if len({facts["pid"] for status, facts in seen if status == 200}) >= workers:
                return seen
        time.sleep(0.1)
    raise AssertionError(f"the workers did not all become ready: {seen[-3:]}")


def _classify_seconds(base: str, data: bytes) -> float:
    import requests

    start = time.perf_counter()
    answer = requests.post(f"{base}/api/classify", files={"file": ("x.png", data)}, timeout=60)
    assert answer.status_code == 200, answer.text
    return time.perf_counter() - start


@pytest.mark.slow
def test_two_gunicorn_workers_start_warm_and_are_both_counted(tmp_path):
    """``timl.serve --workers 2``: /health answers 503 "starting" until a worker's model and explanation process
    are warm; the first classification after ready is not much slower than the next; a scrape counts both workers'
    requests (each worker's own file holds some)."""
    import requests
    from prometheus_client.multiprocess import MultiProcessCollector

    model = saved_model(tmp_path)
    config = tmp_path / "timl_server_config.json"
    config.write_text(json.dumps({"CLASSIFICATION_MODEL": model.name}))
    folder = tmp_path / "prometheus"
    port = free_port()
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "TIML_WARM_START": "all"}
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "timl.serve", "--config", str(config), "--workers", "2",
                                   "--bind", f"127.0.0.1:{port}"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                  env=environment)
    base = f"http://127.0.0.1:{port}"
    try:
        seen = _wait_until_every_worker_is_ready(base, server, 2)
        starting = [facts for status, facts in seen if status == 503]
        assert starting and all(facts["status"] == "starting" and not facts["ready"] for facts in starting)
        assert all(facts["ready"] and facts["model_loaded"] for status, facts in seen if status == 200)
        data = encoded()
        first = _classify_seconds(base, data)
        later = statistics.median(_classify_seconds(base, data) for _ in range(3))
        assert first < 5 * later + 0.5, (first, later)  # cold, the first one loaded TensorFlow and the model
        sent, pids = 4, {}
        for _ in range(10):  # bursts of concurrent requests until both workers have answered some
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: _classify_seconds(base, data), range(8)))
            sent += 8
            pids = {path.stem.split("_")[-1]: path for path in folder.glob("counter_*.db")}
            per_worker = {pid: _classify_count(MultiProcessCollector.merge([path], accumulate=False))
                          for pid, path in pids.items()}
            if len([count for count in per_worker.values() if count]) == 2:
                break
        assert len([count for count in per_worker.values() if count]) == 2, per_worker
        scraped = samples(requests.get(f"{base}/metrics", timeout=10).text)
        assert value(scraped, "timl_http_requests_total", route="/api/classify", method="POST", status="200") == sent
        assert sum(per_worker.values()) == sent
        assert value(scraped, "timl_batch_size_sum") == sent  # the warm-up's prediction is not counted
        assert value(scraped, "timl_batch_queue_seconds_count") == sent  # each image's wait, from both workers
        assert value(scraped, "timl_model_call_seconds_count") == value(scraped, "timl_batch_size_count")
    finally:
        server.terminate()
        server.wait(timeout=60)


def _classify_count(families) -> float:
    return sum(sample.value for family in families for sample in family.samples
               if sample.name == "timl_http_requests_total" and sample.labels.get("route") == "/api/classify"
               and sample.labels.get("status") == "200")
