"""Bad traffic never takes the REST server down: 500 generated requests per endpoint, no 5xx, every error JSON.

Also a short load test on a real gunicorn server (the full one is bench/serve_load.py).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import wait_for_http
from helpers import free_port, encoded, saved_model, tiny_classifier

FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

_PNG = encoded(size=(20, 12))
_JPEG = encoded(size=(20, 12), format_name="JPEG")


@pytest.fixture(scope="module")
def client():
    from timl.serving import create_app

    app = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "MAX_UPLOAD_MB": 0.1, "MAX_IMAGE_PIXELS": 200_000},
                     classifier=tiny_classifier())
    return app.test_client()


def _mutated(data: bytes, positions: list[int], values: list[int], cut: int | None) -> bytes:
    mutable = bytearray(data)
    for position, value in zip(positions, values):
        mutable[position % len(mutable)] = value
    return bytes(mutable[:cut] if cut is not None else mutable)


files = st.one_of(
    st.binary(max_size=3000),
    st.builds(_mutated, st.sampled_from([_PNG, _JPEG]), st.lists(st.integers(0, 5000), max_size=6),
              st.lists(st.integers(0, 255), min_size=6, max_size=6), st.one_of(st.none(), st.integers(0, 4000))),
    st.just(_PNG),
)
field_names = st.one_of(st.just("file"), st.text(max_size=10))
file_names = st.text(max_size=40)
query_values = st.one_of(st.text(max_size=12), st.integers(-10, 3000).map(str), st.floats(allow_nan=True).map(str))
queries = st.dictionaries(st.sampled_from(["masks", "cells", "keep", "seed", "class", "x"]), query_values, max_size=4)


def _check(answer) -> None:
    assert answer.status_code < 500, (answer.status_code, answer.get_data()[:300])
    if answer.status_code >= 400:
        assert answer.is_json and isinstance(answer.get_json().get("error"), str)


@pytest.mark.slow
@FUZZ
@given(data=files, field=field_names, name=file_names)
def test_fuzz_classify(client, data, field, name):
    _check(client.post("/api/classify", data={field: (io.BytesIO(data), name)}, content_type="multipart/form-data"))


@pytest.mark.slow
@FUZZ
@given(data=files, method=st.one_of(st.sampled_from(["gradcam", "gradcam++", "rise", "smoothgrad"]), st.text(max_size=12)),
       layer=st.one_of(st.sampled_from(["conv_a", "conv_b", "-"]), st.text(max_size=12)), query=queries)
def test_fuzz_explain(client, data, method, layer, query):
    from urllib.parse import quote, urlencode

    if query.get("masks", "").lstrip("-").isdigit():
        query["masks"] = str(min(int(query["masks"]), 300))  # keep RISE cheap; bounds are tested elsewhere
    url = f"/api/explain/{quote(method, safe='')}/{quote(layer, safe='')}?{urlencode(query)}"
    _check(client.post(url, data={"file": (io.BytesIO(data), "x.png")}, content_type="multipart/form-data"))


@pytest.mark.slow
@FUZZ
@given(verb=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
       path=st.one_of(st.sampled_from(["/", "/health", "/api/info", "/api/openapi.json", "/api/classify",
                                        "/static/classify.html", "/static/../../etc/passwd", "/api/evaluate/images"]),
                      st.text(max_size=30).map(lambda text: "/" + text.lstrip("/"))),
       body=st.binary(max_size=200))
def test_fuzz_any_route(client, verb, path, body):
    from urllib.parse import quote

    answer = client.open(quote(path, safe="/"), method=verb, data=body)
    assert answer.status_code < 500
    if answer.status_code >= 400 and verb != "HEAD":
        assert answer.is_json


def test_openapi_lists_every_api_route(client):
    import re

    spec = client.get("/api/openapi.json").get_json()
    assert {"/api/info", "/api/classify", "/api/explain/{method}/{layer}"} <= set(spec["paths"])
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), verb.lower())
              for rule in client.application.url_map.iter_rules() if rule.rule.startswith("/api/")
              and rule.rule != "/api/openapi.json" for verb in rule.methods - {"HEAD", "OPTIONS"}}
    described = {(path, verb) for path, verbs in spec["paths"].items() for verb in verbs}
    assert routes - described == set(), "every REST route (the evaluate routes of evaluate.html too) is described"
    assert described - routes == set(), "the description names no route the server lacks"


@pytest.mark.slow
def test_short_load_on_gunicorn(tmp_path):
    """2 workers; 8 clients on /classify and 2 on /explain for 30 s (``TIML_LOAD_SECONDS``; 60 for the full
    minute): no 5xx, no connection error, flat memory, p95 reported; then 32 clients: only 200 (or 503), no
    worker crash."""
    import psutil
    import requests

    model = saved_model(tmp_path)
    config = tmp_path / "timl_server_config.json"
    config.write_text(json.dumps({"CLASSIFICATION_MODEL": str(model)}))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "timl.serve", "--config", str(config), "--workers", "2",
                               "--bind", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    image = encoded(size=(300, 200), format_name="JPEG")
    try:
        wait_for_http(f"{base}/health")
        statuses: list = []

        latencies: list = []

        def hammer(url: str, seconds: float):
            session, stop = requests.Session(), time.time() + seconds
            while time.time() < stop:
                start = time.perf_counter()
                try:
                    statuses.append(session.post(url, files={"file": ("x.jpg", image)}, timeout=60).status_code)
                    if url.endswith("/classify"):
                        latencies.append(time.perf_counter() - start)
                except requests.RequestException as error:
                    statuses.append(type(error).__name__)

        def run(clients: dict, seconds: float):
            threads = [threading.Thread(target=hammer, args=(url, seconds))
                       for url, count in clients.items() for _ in range(count)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        mixed = {f"{base}/api/classify": 8, f"{base}/api/explain/gradcam/conv_b": 2}
        run(mixed, 4)  # warm-up
        workers = psutil.Process(server.pid).children()
        before = [worker.memory_info().rss for worker in workers]
        statuses.clear()
        latencies.clear()
        seconds = float(os.environ.get("TIML_LOAD_SECONDS", "30"))
        run(mixed, seconds)
        after = [worker.memory_info().rss for worker in workers]
        p95 = sorted(latencies)[int(0.95 * len(latencies))]
        growth = max((a - b) / b for a, b in zip(after, before))
        print(f"\nload: {len(statuses)} requests in {seconds:.0f} s, /classify p95 {p95 * 1000:.0f} ms, "
              f"worker memory growth {growth * 100:.1f} %")
        assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
        assert growth < 0.10
        statuses.clear()
        run({f"{base}/api/classify": 32}, 8)
        assert set(statuses) <= {200, 503}, {s: statuses.count(s) for s in set(statuses)}
        assert [worker.pid for worker in psutil.Process(server.pid).children()] == [w.pid for w in workers]
    finally:
        server.terminate()
        server.wait(timeout=60)
