"""The server under concurrency: dynamic batching of /classify, the explanation queue, API tokens, the bind rule."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from helpers import colour_classifier, encoded, free_port, saved_model, tiny_classifier, wait_for_http
from timl.serving.batching import Batcher
from timl.serving.explaining import ExplanationQueue, QueueFull, _ThreadSlot

TOKEN = "a-token-of-dr-a-0123456789"


def distinct_images(count: int) -> list[tuple[bytes, np.ndarray]]:
    """PNGs of different sizes, each of one colour of its own, with what the colour classifier
    (helpers.colour_classifier) predicts for it, computed here: softmax(20 * colour / 255)."""
    from PIL import Image

    images = []
    for index in range(count):
        colour = np.array([100 + 4 * index, 160 - 3 * index, 120 + (7 * index) % 40])  # no probability near 1
        buffer = io.BytesIO()
        Image.new("RGB", (20 + 7 * index, 16 + 5 * (index % 4)), tuple(int(value) for value in colour)).save(
            buffer, "PNG")
        logits = 20 * colour / 255
        images.append((buffer.getvalue(), np.exp(logits) / np.exp(logits).sum()))
    return images


def slow(predict, seconds: float):
    def call(batch):
        time.sleep(seconds)
        return predict(batch)
    return call


def test_concurrent_submissions_share_model_calls_and_keep_their_answers():
    batcher = Batcher(slow(lambda batch: batch.sum(axis=(1, 2)), 0.05), max_size=8, max_wait=0.05)
    arrays = [np.full((4, 4), index, np.float32) for index in range(24)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(batcher.submit, arrays))
    assert [float(answer) for answer in answers] == [16.0 * index for index in range(24)]  # never mixed
    assert batcher.arrays == 24 and batcher.calls < 12, batcher.stats()
    assert max(int(size) for size in batcher.stats()["batch_sizes"]) <= 8


def test_a_lone_request_does_not_wait_and_the_wait_is_bounded():
    batcher = Batcher(lambda batch: batch, max_size=8, max_wait=1.0)
    batcher.submit(np.zeros(2))  # the thread starts
    start = time.perf_counter()
    batcher.submit(np.ones(2))
    assert time.perf_counter() - start < 0.2  # nothing else in flight: no waiting for company
    bounded = Batcher(lambda batch: batch, max_size=8, max_wait=0.3)
    with bounded.expect():  # a request announced that never arrives: the batch waits max_wait, not longer
        start = time.perf_counter()
        bounded.submit(np.ones(2))
        waited = time.perf_counter() - start
    assert 0.25 <= waited < 1.0


def test_each_model_call_reports_its_seconds_and_how_long_its_images_waited_in_the_queue():
    """What /metrics' timl_model_call_seconds and timl_batch_queue_seconds count: a model call of 0.1 s, and the
    images that waited behind it for the next call (about 0.1 s in the queue) against one that came alone (none)."""
    seen = []
    batcher = Batcher(slow(lambda batch: batch, 0.1), max_size=8, max_wait=0.0,
                      observe=lambda size, seconds, waits: seen.append((size, seconds, waits)))
    batcher.submit(np.zeros(2))  # alone: no wait in the queue
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(batcher.submit, np.ones(2))
        time.sleep(0.02)  # the first call has begun: these two wait for it to end
        rest = [pool.submit(batcher.submit, np.ones(2)) for _ in range(2)]
        [future.result() for future in [first, *rest]]
    assert [size for size, _, _ in seen] == [1, 1, 2]
    assert all(0.1 <= seconds < 2 for _, seconds, _ in seen)
    assert all(0.05 <= wait < 2 for wait in seen[2][2])  # queued while the call before theirs ran
    assert max(seen[0][2][0], seen[1][2][0]) < min(seen[2][2])  # the lone ones went at once



def test_closed_loop_clients_are_batched_together_and_a_client_left_alone_waits_once():
    """Four clients each sending their next image a few milliseconds after their answer (what HTTP clients do):
    the batches hold all four (one call of 4 costs less CPU per image than two of 2) rather than whoever came back
    first. When three clients stop, the one left waits for company at most once (max_wait), then never."""
    batcher = Batcher(slow(lambda batch: batch, 0.02), max_size=8, max_wait=0.25)
    batcher.submit(np.zeros(2))

    def client(index: int):
        pause = np.random.default_rng(index)
        for _ in range(12):
            batcher.submit(np.full(2, index, np.float32))
            time.sleep(pause.uniform(0.001, 0.012))  # the answer travels, the next upload arrives

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(client, range(4)))
    sizes = batcher.stats()["batch_sizes"]
    calls_of_four = sum(count for size, count in sizes.items() if int(size) == 4)
    assert calls_of_four * 4 >= 0.75 * 48, sizes  # without waiting for the clients in flight: mostly 1-3
    waits = []
    for _ in range(4):
        start = time.perf_counter()
        batcher.submit(np.ones(2))
        waits.append(time.perf_counter() - start)
    assert max(waits[1:]) < 0.15, waits  # alone: no more waiting for the others

def test_a_failing_input_fails_only_its_own_request():
    def predict(batch):
        if np.isnan(batch).any():
            raise ValueError("a NaN input")
        return batch * 2

    batcher = Batcher(slow(predict, 0.05), max_size=8, max_wait=0.05)
    arrays = [np.full(3, index, np.float32) for index in range(8)]
    arrays[5] = np.full(3, np.nan, np.float32)

    def submit(array):
        try:
            return batcher.submit(array)
        except ValueError as error:
            return error

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(submit, arrays))
    assert isinstance(answers[5], ValueError) and "NaN" in str(answers[5])
    assert all(np.array_equal(answers[index], arrays[index] * 2) for index in range(8) if index != 5)


def test_the_app_batches_concurrent_classifications_without_mixing_answers():
    from timl.serving import create_app

    app = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "BATCH_MAX_WAIT_MS": 50}, classifier=colour_classifier())
    images, expected = zip(*distinct_images(16))
    assert min(np.abs(a - b).max() for i, a in enumerate(expected) for b in expected[i + 1:]) > 1e-4

    def classify(index: int):
        answer = app.test_client().post("/api/classify", data={"file": (io.BytesIO(images[index]), f"{index}.png")},
                                        content_type="multipart/form-data")
        return answer.status_code, answer.get_json()

    def bad():
        return app.test_client().post("/api/classify", data={"file": (io.BytesIO(b"junk"), "bad.png")},
                                      content_type="multipart/form-data").status_code

    for _ in range(3):
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(classify, index) for index in range(16)] + [pool.submit(bad)]
            answers = [future.result() for future in futures[:-1]]
            assert futures[-1].result() == 400  # a bad upload fails alone
        for index, (status, body) in enumerate(answers):
            assert status == 200 and body["filename"] == f"{index}.png"
            np.testing.assert_allclose(body["prediction"], expected[index], atol=1e-5)
    stats = app.test_client().get("/health").get_json()["batching"]
    assert stats["images"] == 48 and stats["model_calls"] < 48, stats


def test_decodes_per_worker_are_bounded_by_decode_concurrency(tmp_path, monkeypatch):
    """24 concurrent requests (classify, explain and the review analysis) of one worker with DECODE_CONCURRENCY 2:
    never more than 2 files (uploads, review images) decoding at once, each decode made to last 0.1 s; every
    answer 200. An explanation's own pass over the decoded image (a PIL image) is not counted: it runs in its
    explanation slot. And the defaults: 25 Mpx and 4 decodes per worker."""
    from PIL import Image

    import timl.images
    from timl.serving import create_app
    from timl.serving.config import ServerConfig

    real_decode = timl.images.decode_image
    lock, decoding, most = threading.Lock(), [0], [0]

    def counted_decode(source, *args, **kwargs):
        if isinstance(source, Image.Image):
            return real_decode(source, *args, **kwargs)
        with lock:
            decoding[0] += 1
            most[0] = max(most[0], decoding[0])
        try:
            time.sleep(0.1)
            return real_decode(source, *args, **kwargs)
        finally:
            with lock:
                decoding[0] -= 1

    monkeypatch.setattr(timl.images, "decode_image", counted_decode)
    (tmp_path / "review").mkdir()
    (tmp_path / "review" / "a.png").write_bytes(encoded())
    app = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "DECODE_CONCURRENCY": 2, "EXPLAIN_QUEUE": 8,
                      "EVALUATION_IMAGES_DIR": str(tmp_path / "review"), "EVALUATION_DB": str(tmp_path / "a.db")},
                     classifier=tiny_classifier())
    image = encoded()

    def request(route: str) -> int:
        client = app.test_client()
        if route == "analysis":
            return client.get("/api/evaluate/images/a.png/analysis?images=heatmap&size=16").status_code
        return client.post(route, data={"file": (io.BytesIO(image), "x.png")},
                           content_type="multipart/form-data").status_code

    routes = ["/api/classify"] * 20 + ["/api/explain/gradcam/conv_b"] * 2 + ["analysis"] * 2
    with ThreadPoolExecutor(len(routes)) as pool:
        statuses = list(pool.map(request, routes))
    assert statuses == [200] * len(routes)
    assert most[0] == 2, most[0]  # reached, never passed
    assert (ServerConfig(model="m").max_image_pixels, ServerConfig(model="m").decode_concurrency) == (25_000_000, 4)
    assert ServerConfig.from_mapping({"CLASSIFICATION_MODEL": "m"}).as_mapping()["DECODE_CONCURRENCY"] == 4


# 32 decodes of an 8 Mpx 16-bit PNG by 16 threads, 2 at a time (as a worker's request threads and decoding slots):
# the peak and the memory kept afterwards, above the process's memory before, in a fresh process.
RETAINED_SCRIPT = """
import io, json, re, sys, threading
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from PIL import Image
from timl.images import decode_image, Preprocessing
from timl.serving.memory import return_freed_images

def kilobytes(field):
    return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))

if sys.argv[1] == "fixed":
    assert return_freed_images()
buffer = io.BytesIO()
Image.fromarray(np.zeros((2000, 4000), np.uint16)).save(buffer, "PNG")
data, slots, preprocessing = buffer.getvalue(), threading.Semaphore(2), Preprocessing(32)
open("/proc/self/clear_refs", "w").write("5")
start = kilobytes("VmRSS")

def classify(_):
    with slots:
        return preprocessing(decode_image(data)).shape

with ThreadPoolExecutor(16) as pool:
    list(pool.map(classify, range(32)))
print(json.dumps({"peak": (kilobytes("VmHWM") - start) * 1024, "kept": (kilobytes("VmRSS") - start) * 1024}))
"""


@pytest.mark.component("linux")
def test_freed_images_leave_the_worker():
    """With the server's malloc setting (timl.serving.memory, applied by create_app), 16 threads decoding 2 at a
    time peak under 2 decodes' worth (12 bytes per pixel each) and keep less than one image once done, besides the
    one Pillow block the server keeps for the next upload (16 MB, PILLOW_BLOCKS_KEPT); glibc's default kept the freed
    images in per-thread arenas (peak 983 MiB, kept 223 MiB)."""
    from PIL import Image

    from timl.serving.memory import PILLOW_BLOCKS_KEPT

    pixels = 8_000_000
    result = subprocess.run([sys.executable, "-c", RETAINED_SCRIPT, "fixed"], capture_output=True, text=True,
                            check=True, timeout=300)
    measured = json.loads(result.stdout)
    print(f"peak {measured['peak'] / 2**20:.0f} MiB, kept {measured['kept'] / 2**20:.0f} MiB")
    other = 32 * 2**20  # the threads' stacks, the interpreter's own allocations
    kept_block = PILLOW_BLOCKS_KEPT * Image.core.get_block_size()
    assert measured["peak"] < 2 * pixels * 12 + other and measured["kept"] < pixels * 4 + kept_block


REUSED_SCRIPT = """
import io, json, sys
import numpy as np
from PIL import Image
from timl.images import decode_image, Preprocessing
from timl.serving.memory import return_freed_images

if sys.argv[1] == "fixed":
    return_freed_images()
buffer = io.BytesIO()
Image.fromarray(np.random.default_rng(0).integers(0, 255, (450, 600, 3), dtype=np.uint8)).save(buffer, "JPEG")
before = Image.core.get_stats()
for _ in range(20):
    Preprocessing(64)(buffer.getvalue())
after = Image.core.get_stats()
print(json.dumps({key: after[key] - before[key] for key in ("allocated_blocks", "reused_blocks")}))
"""


@pytest.mark.parametrize("setting", ["fixed", "default"])
def test_one_freed_image_block_is_reused_by_the_next_upload(setting):
    """With the server's memory setting, upload after upload reuses freed image memory (Pillow's block cache, one
    block): fewer fresh pages for each request's images (about 0.7 ms of a worker's CPU per 600x450 JPEG under load);
    without it, every image is a new allocation."""
    result = subprocess.run([sys.executable, "-c", REUSED_SCRIPT, setting], capture_output=True, text=True,
                            check=True, timeout=120)
    counts = json.loads(result.stdout)
    if setting == "fixed":
        assert counts["reused_blocks"] >= 19, counts  # a block for each of the 20 uploads
    else:
        assert counts["reused_blocks"] == 0 and counts["allocated_blocks"] >= 20, counts


@pytest.mark.parametrize("value", [0, 257, "many", True])
def test_decode_concurrency_is_checked(value):
    from timl.errors import ConfigError
    from timl.serving.config import ServerConfig

    with pytest.raises(ConfigError, match="DECODE_CONCURRENCY must be a number between 1 and 256"):
        ServerConfig.from_mapping({"CLASSIFICATION_MODEL": "m", "DECODE_CONCURRENCY": value})


def _wait_for(condition, message: str, timeout: float = 30) -> None:
    """Waits until ``condition()`` is true (polled every 10 ms); fails with ``message`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.01)


def test_the_explanation_queue_answers_503_with_retry_after_when_full():
    release = threading.Event()
    queue = ExplanationQueue([_ThreadSlot(None)], max_waiting=1, timeout=30)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(queue.run, lambda _, event: event.wait(30) and "first", release)
        _wait_for(lambda: queue.stats()["admitted"] == 1, "the first explanation was not admitted")
        waiting = pool.submit(queue.run, lambda _: "second")
        _wait_for(lambda: queue.stats()["admitted"] == 2, "the second explanation was not admitted")
        with pytest.raises(QueueFull) as full:
            queue.run(lambda _: "third")
        assert full.value.retry_after >= 1 and "busy" in str(full.value)
        release.set()
        assert running.result() == "first" and waiting.result() == "second"
    assert queue.run(lambda _: "later") == "later"  # the slot is free again


def test_explanations_over_http_queue_time_out_and_do_not_block_classification(tmp_path):
    """A real gunicorn worker: explanations run in their own process, a full queue answers 503 JSON with
    Retry-After, an explanation past EXPLAIN_TIMEOUT_S answers 504 and the next one works, and /classify answers
    while an explanation runs."""
    import requests

    model = saved_model(tmp_path, size=96)  # 20000 RISE masks take far longer than the limit of 2 s here
    config = tmp_path / "timl_server_config.json"
    config.write_text(json.dumps({"CLASSIFICATION_MODEL": model.name, "EXPLAIN_CONCURRENCY": 1, "EXPLAIN_QUEUE": 0,
                                  "EXPLAIN_TIMEOUT_S": 2}))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "timl.serve", "--config", str(config), "--workers", "1",
                               "--bind", f"127.0.0.1:{port}"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    files = {"file": ("x.png", encoded(size=(64, 48)))}
    try:
        wait_for_http(f"{base}/health")
        quick = requests.post(f"{base}/api/explain/rise/-?masks=50&seed=0", files=files, timeout=120)
        assert quick.status_code == 200, quick.text  # the explanation process is up, its model loaded

        long_request = f"{base}/api/explain/rise/-?masks=20000&seed=0"
        with ThreadPoolExecutor(1) as pool:
            long = pool.submit(requests.post, long_request, files=files, timeout=120)
            _wait_for(lambda: requests.get(f"{base}/health", timeout=10).json()["explanations"]["admitted"] == 1,
                      "the long explanation did not start")
            busy = requests.post(f"{base}/api/explain/gradcam/conv_a", files=files, timeout=60)
            assert busy.status_code == 503 and "busy" in busy.json()["error"]
            assert int(busy.headers["Retry-After"]) >= 1
            classified = requests.post(f"{base}/api/classify", files=files, timeout=10)
            assert classified.status_code == 200  # classification goes on beside the explanation
            timed_out = long.result()
        assert timed_out.status_code == 504 and "EXPLAIN_TIMEOUT_S" in timed_out.json()["error"]
        again = requests.post(f"{base}/api/explain/gradcam/conv_a", files=files, timeout=120)
        assert again.status_code == 200 and again.json()["heatmap"]
        stats = requests.get(f"{base}/health", timeout=10).json()["explanations"]
        assert stats["rejected"] == 1 and stats["admitted"] == 0
    finally:
        server.terminate()
        server.wait(timeout=30)


def _token_app(tmp_path):
    from timl.serving import create_app

    (tmp_path / "review").mkdir()
    (tmp_path / "review" / "a.png").write_bytes(encoded())
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({TOKEN: "Dr. A"}))
    return create_app({"CLASSIFICATION_MODEL": "tiny.h5", "API_TOKENS_FILE": str(tokens),
                       "EVALUATION_IMAGES_DIR": str(tmp_path / "review"), "EVALUATION_DB": str(tmp_path / "r.db")},
                      classifier=tiny_classifier())


#: Routes under the REST prefix that answer without a token (the README documents them): none. /health, the pages
#: and their script are outside the prefix.
OPEN_REST_RULES: frozenset[str] = frozenset()
#: A value for each variable part of a REST route, so that the request reaches the route (not a 404).
ROUTE_VALUES = {"text": "x", "method": "gradcam", "layer": "conv_a", "name": "a.png"}


def test_tokens_are_required_on_every_rest_route_and_not_on_health(tmp_path):
    """Every rule of the app's URL map under the REST prefix, whichever blueprint (or none) added it, answers 401
    without a valid Bearer token, except the documented open ones (OPEN_REST_RULES, listed here)."""
    import re

    from timl.serving.config import ServerConfig

    prefix = ServerConfig(model="m").rest_prefix
    app = _token_app(tmp_path)
    client = app.test_client()
    rules = [rule for rule in app.url_map.iter_rules()
             if rule.rule.startswith(f"{prefix}/") and rule.rule not in OPEN_REST_RULES]
    assert prefix == "/api" and len(rules) >= 13
    for rule in rules:
        url = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda part: ROUTE_VALUES[part.group(1)], rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"}):
                answer = client.open(url, method=method, headers=headers)
                assert answer.status_code == 401, (method, url, headers)
                assert "token" in answer.get_json()["error"] and answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/health").status_code == 200
    assert client.get("/static/classify.html").status_code == 200
    assert "window.TIML_TOKENS = true" in client.get("/static/timl-config.js").get_data(as_text=True)
    authorised = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/info", headers=authorised).status_code == 200
    answer = client.post("/api/classify", headers=authorised,
                         data={"file": (io.BytesIO(encoded()), "a.png")}, content_type="multipart/form-data")
    assert answer.status_code == 200


def test_expert_answers_record_the_tokens_user(tmp_path):
    client = _token_app(tmp_path).test_client()
    authorised = {"Authorization": f"Bearer {TOKEN}"}
    answer = {"image": "a.png", "evaluator": "typed name", "agree": True, "label": "", "predicted": "A", "comment": ""}
    stored = client.post("/api/evaluate/answers", json=answer, headers=authorised)
    assert stored.status_code == 201 and stored.get_json()["user"] == "Dr. A"
    rows = list(csv.DictReader(io.StringIO(client.get("/api/evaluate/answers.csv", headers=authorised)
                                           .get_data(as_text=True))))
    assert [(row["evaluator"], row["user"]) for row in rows] == [("typed name", "Dr. A")]


def test_a_store_from_before_tokens_gains_the_user_column(tmp_path):
    import sqlite3

    from timl.serving import create_app

    database = tmp_path / "old.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE answers (id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL, "
                           "image TEXT NOT NULL, evaluator TEXT NOT NULL, agree INTEGER NOT NULL, label TEXT NOT NULL, "
                           "predicted TEXT NOT NULL, comment TEXT NOT NULL)")
        connection.execute("INSERT INTO answers (created, image, evaluator, agree, label, predicted, comment) "
                           "VALUES ('2026-01-01T00:00:00', 'a.png', 'Dr. Old', 1, '', 'A', '')")
    client = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "EVALUATION_DB": str(database)},
                        classifier=tiny_classifier()).test_client()
    rows = list(csv.DictReader(io.StringIO(client.get("/api/evaluate/answers.csv").get_data(as_text=True))))
    assert [(row["evaluator"], row["user"]) for row in rows] == [("Dr. Old", "")]


@pytest.mark.parametrize("content, message", [
    ("not json", "not a readable JSON"), ('["a"]', "token -> user name"), ('{"short": "Dr. A"}', "shorter than")])
def test_a_bad_tokens_file_is_named(tmp_path, content, message):
    from timl.errors import ConfigError
    from timl.serving import create_app

    tokens = tmp_path / "tokens.json"
    tokens.write_text(content)
    with pytest.raises(ConfigError, match=message) as error:
        create_app({"CLASSIFICATION_MODEL": "tiny.h5", "API_TOKENS_FILE": str(tokens)}, classifier=tiny_classifier())
    assert "API_TOKENS_FILE" in str(error.value) and str(tokens) in str(error.value)


def test_serving_beyond_loopback_needs_tokens_or_insecure(tmp_path):
    from timl.errors import ConfigError
    from timl.serving.exposure import check_exposure
    from timl.serving.config import ServerConfig

    model = saved_model(tmp_path)
    config = tmp_path / "timl_server_config.json"
    config.write_text(json.dumps({"CLASSIFICATION_MODEL": model.name}))
    # refused before anything binds: the process exits at once, naming the way out
    result = subprocess.run([sys.executable, "-m", "timl.serve", "--config", str(config), "--bind", "0.0.0.0:0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Refusing to listen on 0.0.0.0:0" in result.stderr + result.stdout
    assert "API_TOKENS_FILE" in result.stderr + result.stdout and "--insecure" in result.stderr + result.stdout
    plain = ServerConfig(model="m.h5")
    for bind in ("127.0.0.1:8080", "localhost:80", "[::1]:8080", "unix:/tmp/timl.sock"):
        check_exposure(bind, plain, insecure=False)
    for bind in ("0.0.0.0:8080", "[::]:8080", "192.168.1.5:80", "example.org:80"):
        with pytest.raises(ConfigError):
            check_exposure(bind, plain, insecure=False)
        check_exposure(bind, plain, insecure=True)
        check_exposure(bind, ServerConfig(model="m.h5", api_tokens_file="tokens.json"), insecure=False)


def test_the_client_sends_its_token(tmp_path):
    import requests

    model = saved_model(tmp_path)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({TOKEN: "Dr. A"}))
    config = tmp_path / "timl_server_config.json"
    config.write_text(json.dumps({"CLASSIFICATION_MODEL": model.name, "API_TOKENS_FILE": tokens.name}))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "timl.serve", "--config", str(config), "--workers", "1",
                               "--bind", f"127.0.0.1:{port}"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    image = tmp_path / "x.png"
    image.write_bytes(encoded())
    try:
        wait_for_http(f"{base}/health")
        assert requests.get(f"{base}/api/info", timeout=30).status_code == 401
        command = [sys.executable, "-m", "timl.client", str(image), f"{base}/api/classify"]
        refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1 and "status: 401" in refused.stdout
        accepted = subprocess.run(command + ["--token", TOKEN], capture_output=True, text=True, timeout=120)
        assert accepted.returncode == 0 and "status: 200" in accepted.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
