"""Load on the TIML REST server: gunicorn with 2 workers, N concurrent clients on /api/classify.

For a SmallCNN (32 px) and a VGG16-shaped model (VGG16 architecture without ImageNet weights, 64 px), with
dynamic batching off (``BATCH_MAX_SIZE`` 1) and on (the defaults): requests/s, p50/p95/p99 latency and errors
over ``--seconds``, one client's p50, and the workers' memory before and after (growth after warm-up); then,
batching on, the same load while two more clients request RISE explanations (2000 masks) back to back.

    python bench/serve_load.py [--seconds 30] [--clients 8] [--workers 2] [--backends-only]
    python bench/serve_load.py --compare-metrics [--rounds 2]   # /metrics on vs off, side by side
    python bench/serve_load.py --cpu-breakdown --models VGG16:64    # where a worker's CPU per request goes

Also the model's own batched throughput with Keras/TensorFlow vs ONNX Runtime (``INFERENCE_BACKEND``; issue 28),
on the same inputs, the answers compared; ``--backends-only`` measures that alone.

Each server's first requests after it says ready (/health 200) are timed against the next ones (issue 28: the first
user waits no longer than the next): the first classification, the median of the next three; the first Grad-CAM,
the median of the next two.

Goals (issue 16): requests/s / the model's own best batched throughput >= 0.8; p50 / the Little's-law bound
(N clients / that throughput: the lowest p50 any server allows) <= 1.25; one client no slower with batching by
more than 2 ms; /classify p99 with the explanations running within 2x of the p99 without; zero errors. The
"ceiling" column is what the cores allow once each request also pays for decoding its JPEG and for this
bench's own client (both measured here): cores / (cores / best + decoding + client).
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from harness import alternate, start_server

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # benchmarks talk to loopback only
os.environ.setdefault("DO_NOT_TRACK", "true")


def build_model(folder: Path, method: str, imgsize: int) -> Path:
    from timl import models
    from timl.classifier import Classifier, write_metadata
    from timl.images import Preprocessing

    model = models.create_model(method, 3, imgsize, weights="none", seed=0)
    path = folder / f"{method}.h5"
    model.save(path)
    write_metadata(path, Classifier(model, Preprocessing(imgsize), ("A", "B", "C")).metadata())
    return path


def image_bytes() -> bytes:
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (450, 600, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def in_process_latency(model_path: Path, data: bytes, repeats: int = 30) -> float:
    from timl.classifier import load_classifier

    classifier = load_classifier(keras_model=model_path)
    classifier.predict_images([data])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        classifier.predict_images([data])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def seconds_per_image(classifier, batch: int, repeats: int, clock) -> float:
    """The median of ``repeats`` model calls on a random batch of ``batch`` images, per image, by ``clock``
    (``time.perf_counter``: wall time; ``time.process_time``: this process's CPU), after one warm-up call."""
    import numpy as np

    size = classifier.preprocessing.imgsize
    x = np.random.default_rng(0).random((batch, size, size, 3)).astype(np.float32)
    classifier.model.predict_on_batch(x)
    times = []
    for _ in range(repeats):
        start = clock()
        classifier.model.predict_on_batch(x)
        times.append(clock() - start)
    return statistics.median(times) / batch


def compute_bound(model_path: Path, clients: int, repeats: int = 10) -> tuple[float, int]:
    """The lowest p50 any server could reach here with ``clients`` clients: model inference alone.

    With ``clients`` requests always waiting, p50 >= clients / throughput (Little's law), and throughput is at
    most 1 / (the best seconds per image of the model's own batched predict, batches of 1 to ``clients``).
    Decoding, HTTP and the clients' own CPU come on top, so this is a lower bound.

    Returns:
        The bound in seconds and the batch size that gave the best time per image.
    """
    from timl.classifier import load_classifier

    classifier = load_classifier(keras_model=model_path)
    best, best_batch = float("inf"), 1
    batch = 1
    while batch <= clients:
        per_image = seconds_per_image(classifier, batch, repeats, time.perf_counter)
        if per_image < best:
            best, best_batch = per_image, batch
        batch *= 2
    return clients * best, best_batch


def backend_throughput(model_path: Path, batches=(1, 8, 32), repeats: int = 10) -> list[dict]:
    """The model's own batched throughput with Keras/TensorFlow and with ONNX Runtime (the server's
    ``INFERENCE_BACKEND onnxruntime``), on the same inputs; each batch's answers compared (at most 1e-4 apart).

    Returns:
        Per batch size: ``batch``, ``keras`` and ``onnxruntime`` (images/s, median of ``repeats`` calls) and
        ``difference`` (the largest absolute difference of their probabilities).
    """
    import numpy as np

    from timl.classifier import load_classifier
    from timl.exporting import onnx_classifier

    keras_model = load_classifier(keras_model=model_path)
    onnx_model = onnx_classifier(keras_model).model
    size = keras_model.preprocessing.imgsize
    rows = []
    for batch in batches:
        x = np.random.default_rng(0).random((batch, size, size, 3)).astype(np.float32)
        row = {"batch": batch, "difference": float(np.max(np.abs(
            keras_model.model.predict_on_batch(x) - onnx_model.predict_on_batch(x))))}
        def timed(model):
            def call(_repeat: int) -> float:
                start = time.perf_counter()
                model.predict_on_batch(x)
                return time.perf_counter() - start
            return call

        # alternated, so a busy machine slows both alike; the first pair is a warm-up
        pairs = alternate(repeats + 1, timed(keras_model.model), timed(onnx_model))[1:]
        row["keras"] = batch / statistics.median(first for first, _ in pairs)
        row["onnxruntime"] = batch / statistics.median(second for _, second in pairs)
        rows.append(row)
    return rows


def print_backends(rows: list[tuple[str, int, list[dict]]]) -> None:
    """The Keras vs ONNX Runtime table: images/s per batch size, the speed-up and the answers' difference."""
    print("\n| model | batch | Keras/TensorFlow (images/s) | ONNX Runtime (images/s) | ONNX Runtime / Keras | "
          "largest difference |")
    print("| --- | --- | --- | --- | --- | --- |")
    for method, imgsize, measured in rows:
        for row in measured:
            print(f"| {method} {imgsize} px | {row['batch']} | {row['keras']:.0f} | {row['onnxruntime']:.0f} | "
                  f"{row['onnxruntime'] / row['keras']:.2f} | {row['difference']:.1e} |")


def ceiling(cores: int, best: float, decode: float, client: float) -> float:
    """Requests/s the cores allow: each request costs 1 / best of the cores' model time (``best``: the model's own
    best batched throughput, images/s), plus its decoding and the bench client's CPU (seconds)."""
    return cores / (cores / best + decode + client)


def decode_cost(model_path: Path, data: bytes, repeats: int = 30) -> float:
    """CPU seconds one request's image costs before the model: decoding the JPEG and resizing it."""
    from timl.classifier import load_classifier

    return preprocessing_cost(load_classifier(keras_model=model_path).preprocessing, data, repeats)


def preprocessing_cost(preprocessing, data: bytes, repeats: int = 30) -> float:
    """:func:`decode_cost` with a model's preprocessing already loaded (a bench measuring it again and again)."""
    from timl.images import decode_image

    times = []
    for _ in range(repeats):
        start = time.process_time()
        preprocessing(decode_image(data))
        times.append(time.process_time() - start)
    return statistics.median(times)


def worker_memory(server_pid: int) -> list[int]:
    import psutil

    return [child.memory_info().rss for child in psutil.Process(server_pid).children()]


def classify_request(url: str, data: bytes) -> tuple[tuple[str, int], bytes]:
    """The address and the bytes of one POST of ``data`` to ``url`` as the form field ``file`` (the form as
    ``requests`` encodes it, as in ``bench/uploads.py``; HTTP/1.1, the connection closed after the answer), built
    once for a whole load test (:func:`load`)."""
    from urllib.parse import urlsplit

    import requests

    prepared = requests.Request("POST", url, files={"file": ("x.jpg", data)}, headers={"Connection": "close"}).prepare()
    parts = urlsplit(prepared.url)
    head = f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in prepared.headers.items()) + "\r\n"
    return (parts.hostname, parts.port), head.encode() + prepared.body


def post(address: tuple[str, int], request: bytes, timeout: float = 60) -> bool:
    """Sends one prebuilt ``request`` (:func:`classify_request`) on a new connection and reads the answer to its
    end; whether it was a 200 whose body arrived whole (Content-Length bytes after the headers)."""
    with socket.create_connection(address, timeout=timeout) as connection:
        connection.sendall(request)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:")),
                  None)
    return lines[0].split(" ")[1:2] == ["200"] and (length is None or len(body) == length)


def load(url: str, data: bytes, clients: int, seconds: float) -> dict:
    """``clients`` closed-loop clients (threads of this process) posting ``data`` to ``url`` for ``seconds``:
    requests/s, latency percentiles, errors and this client's CPU seconds per request (``client_cpu``).

    Each request is prebuilt once and sent over a plain socket (:func:`post`): with ``requests`` (a
    ``Session.post`` of the form) this client took about 1.5 ms of CPU per request where it now takes about 0.25
    ms, and its threads take turns (one Python process): in the closed loop of 8 clients answered by one batch,
    that was 8 x 1.5 ms per round with no request in the server, the bench's own cost counted as the server's."""
    address, request = classify_request(url, data)
    latencies, errors, lock = [], [], threading.Lock()
    stop = time.time() + seconds

    def client():
        while time.time() < stop:
            start = time.perf_counter()
            try:
                ok = post(address, request)
            except OSError:
                ok = False
            with lock:
                (latencies if ok else errors).append(time.perf_counter() - start)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    cpu_before = sum(os.times()[:2])
    began = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.time() - began
    client_cpu = sum(os.times()[:2]) - cpu_before
    ordered = sorted(latencies) or [float("nan")]

    def pct(q):
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"rps": len(latencies) / elapsed, "p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99),
            "errors": len(errors), "requests": len(latencies) + len(errors),
            "client_cpu": client_cpu / max(1, len(latencies) + len(errors))}


def explain_clients(url: str, data: bytes, clients: int, stop: threading.Event) -> list:
    """``clients`` threads requesting explanations back to back until ``stop``; returns their status codes."""
    import requests

    statuses: list = []

    def client():
        session = requests.Session()
        while not stop.is_set():
            try:
                statuses.append(session.post(url, files={"file": ("x.jpg", data)}, timeout=300).status_code)
            except requests.RequestException:
                statuses.append("error")
            if statuses[-1] == 503:
                time.sleep(0.5)  # the queue is full: wait as Retry-After asks (in part)

    for _ in range(clients):
        threading.Thread(target=client, daemon=True).start()
    return statuses


def first_requests(base: str, data: bytes) -> dict:
    """Seconds of the first classification and the first Grad-CAM after the server said ready, and of the next
    ones (medians)."""
    import requests

    def timed(route: str) -> float:
        start = time.perf_counter()
        answer = requests.post(f"{base}/api/{route}", files={"file": ("x.jpg", data)}, timeout=300)
        if answer.status_code != 200:
            raise RuntimeError(f"/api/{route} answered {answer.status_code}: {answer.text[:200]}")
        return time.perf_counter() - start

    classify = [timed("classify") for _ in range(4)]
    layer = requests.get(f"{base}/api/info", timeout=60).json()["default_layer"]
    explain = [timed(f"explain/gradcam/{layer}") for _ in range(3)]
    return {"classify": classify[0], "classify_next": statistics.median(classify[1:]),
            "explain": explain[0], "explain_next": statistics.median(explain[1:])}


def compare_metrics(model_path: Path, data: bytes, clients: int, seconds: float, rounds: int) -> list[tuple]:
    """requests/s with /metrics on (the default) and off (``METRICS`` false), ``rounds`` times alternately, so a
    slow spell of the machine hits both alike; the /metrics scrape itself is not part of the load."""
    pairs = []
    for _ in range(rounds):
        measured = []
        for settings in ({}, {"METRICS": False}):
            server, base = start_server(model_path, settings)
            try:
                load(f"{base}/api/classify", data, clients, 5)  # warm-up
                measured.append(load(f"{base}/api/classify", data, clients, seconds)["rps"])
            finally:
                server.terminate()
                server.wait(timeout=120)
        pairs.append(tuple(measured))
    return pairs


def serve_and_measure(model_path: Path, data: bytes, clients: int, seconds: float, settings: dict,
                      with_explanations: bool = False, workers: int = 2) -> dict:
    """The load on one server configuration: ``clients`` on /classify, then one client; optionally again with
    two clients requesting RISE explanations (2000 masks) the whole time."""
    server, base = start_server(model_path, settings, workers)
    try:
        first = first_requests(base, data)
        load(f"{base}/api/classify", data, clients, 5)  # warm-up: every worker has loaded the model
        before = worker_memory(server.pid)
        result = load(f"{base}/api/classify", data, clients, seconds)
        after = worker_memory(server.pid)
        result["single_p50"] = load(f"{base}/api/classify", data, 1, min(seconds, 10))["p50"]
        result["memory_growth"] = max((a - b) / b for a, b in zip(after, before)) if before and after else float("nan")
        if with_explanations:
            stop = threading.Event()
            statuses = explain_clients(f"{base}/api/explain/rise/-?seed=0", data, 2, stop)
            time.sleep(5)  # the explanation processes have started and loaded the model
            busy = load(f"{base}/api/classify", data, clients, seconds)
            stop.set()
            result["with_rise"] = {**busy, "explanations": statuses[:]}
        result["first"] = first
        return result
    finally:
        server.terminate()
        server.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=["SmallCNN:32", "VGG16:64"], help="METHOD:SIZE ...")
    parser.add_argument("--backends-only", action="store_true",
                        help="Only the model's own throughput with Keras/TensorFlow vs ONNX Runtime (no server).")
    parser.add_argument("--compare-metrics", action="store_true",
                        help="only requests/s with /metrics on vs off (METRICS false), --rounds times alternately")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of the measured servers")
    parser.add_argument("--cpu-breakdown", action="store_true",
                        help="only where a worker's CPU per request goes: the model, decoding, the rest, by thread")
    args = parser.parse_args()
    data = image_bytes()
    if args.cpu_breakdown:
        print_cpu_breakdown(args, data)
        return
    if args.compare_metrics:
        print_metrics_cost(args, data)
        return
    if args.backends_only:
        with tempfile.TemporaryDirectory() as folder:
            print_backends([(method, int(imgsize), backend_throughput(build_model(Path(folder), method, int(imgsize))))
                            for method, imgsize in (spec.split(":") for spec in args.models)])
        return
    rows, backends, onnx_served = [], [], {}
    with tempfile.TemporaryDirectory() as folder:
        for method, imgsize in (spec.split(":") for spec in args.models):
            imgsize = int(imgsize)
            path = build_model(Path(folder), method, imgsize)
            local = in_process_latency(path, data)
            bound = compute_bound(path, args.clients)
            decode = decode_cost(path, data)
            backends.append((method, imgsize, backend_throughput(path)))
            unbatched = serve_and_measure(path, data, args.clients, args.seconds, {"BATCH_MAX_SIZE": 1},
                                          workers=args.workers)
            batched = serve_and_measure(path, data, args.clients, args.seconds, {}, with_explanations=True,
                                        workers=args.workers)
            onnx_served[method] = serve_and_measure(path, data, args.clients, args.seconds,
                                                    {"INFERENCE_BACKEND": "onnxruntime"}, workers=args.workers)
            rows.append((method, imgsize, local, bound, unbatched, batched, decode))
    print(f"\n{args.clients} clients, {args.seconds:.0f} s each, gunicorn {args.workers} workers, a 600x450 JPEG per request; "
          "best = the model's own best batched throughput (one process, batches of 1 to "
          f"{args.clients}); bound = the lowest p50 it allows with {args.clients} clients (Little's law)\n")
    cores = len(os.sched_getaffinity(0))
    print("| model | batching | requests/s | / best | / ceiling | p50 (ms) | / bound | p95 (ms) | p99 (ms) | errors | "
          "one client: p50 (ms) | worker memory growth |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for method, imgsize, local, (bound, batch), unbatched, batched, decode in rows:
        best = args.clients / bound  # images per second
        for name, served in (("off (BATCH_MAX_SIZE 1)", unbatched), ("on (defaults)", batched),
                             ("on, INFERENCE_BACKEND onnxruntime", onnx_served[method])):
            # what the cores allow when each request also costs its decoding and the client's own work
            allowed = ceiling(cores, best, decode, served["client_cpu"])
            print(f"| {method} {imgsize} px | {name} | {served['rps']:.1f} | {served['rps'] / best:.2f} | "
                  f"{served['rps'] / allowed:.2f} | {served['p50'] * 1000:.1f} | {served['p50'] / bound:.2f} | "
                  f"{served['p95'] * 1000:.1f} | {served['p99'] * 1000:.1f} | {served['errors']} | "
                  f"{served['single_p50'] * 1000:.1f} | {served['memory_growth'] * 100:.1f} % |")
    print("\n| model | decoding + resizing a request's JPEG (CPU ms) | the client's CPU per request (ms) | ceiling "
          "(images/s) |")
    print("| --- | --- | --- | --- |")
    for method, imgsize, local, (bound, batch), unbatched, batched, decode in rows:
        best = args.clients / bound
        allowed = ceiling(cores, best, decode, batched["client_cpu"])
        print(f"| {method} {imgsize} px | {decode * 1000:.1f} | {batched['client_cpu'] * 1000:.1f} | {allowed:.0f} |")
    print("\n| model | in-process predict p50 (ms) | best (images/s, batch) | bound (ms) | one client: batching on - off "
          "(ms) | /classify p99 with 2 clients on RISE (ms) | / p99 without | their requests/s | errors | "
          "explanations answered (200 / 503 / other) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for method, imgsize, local, (bound, batch), unbatched, batched, decode in rows:
        rise = batched["with_rise"]
        codes = rise["explanations"]
        print(f"| {method} {imgsize} px | {local * 1000:.1f} | {args.clients / bound:.0f} ({batch}) | "
              f"{bound * 1000:.0f} | {(batched['single_p50'] - unbatched['single_p50']) * 1000:+.1f} | "
              f"{rise['p99'] * 1000:.1f} | {rise['p99'] / batched['p99']:.2f} | {rise['rps']:.1f} | {rise['errors']} | "
              f"{codes.count(200)} / {codes.count(503)} / {len(codes) - codes.count(200) - codes.count(503)} |")
    print_backends(backends)

    print("\n| model | batching | first classification after ready (ms) | the next (ms) | first Grad-CAM (ms) | "
          "the next (ms) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for method, imgsize, local, (bound, batch), unbatched, batched, decode in rows:
        for name, served in (("off", unbatched), ("on", batched)):
            first = served["first"]
            print(f"| {method} {imgsize} px | {name} | {first['classify'] * 1000:.0f} | "
                  f"{first['classify_next'] * 1000:.0f} | {first['explain'] * 1000:.0f} | "
                  f"{first['explain_next'] * 1000:.0f} |")


def thread_cpu(server_pid: int) -> dict:
    """CPU seconds so far of every thread of the server's workers: {(worker pid, thread id): (name, seconds)}."""
    import psutil

    times = {}
    for worker in psutil.Process(server_pid).children():
        try:
            for thread in worker.threads():
                name = Path(f"/proc/{worker.pid}/task/{thread.id}/comm").read_text().strip()
                times[worker.pid, thread.id] = (name, thread.user_time + thread.system_time)
        except (OSError, psutil.Error):
            continue  # a worker that stopped, or a thread that ended
    return times


def model_cpu_per_image(model_path: Path, sizes, repeats: int = 10) -> dict[int, float]:
    """CPU seconds per image of the model's own calls (one process, this machine's TensorFlow threads) at each
    batch size: what the model alone costs, whatever else the machine runs (process time, not wall time)."""

    from timl.classifier import load_classifier

    classifier = load_classifier(keras_model=model_path)
    costs = {}
    for batch in sizes:
        costs[batch] = seconds_per_image(classifier, batch, repeats, time.process_time)
    return costs


def cpu_breakdown(model_path: Path, data: bytes, clients: int, seconds: float, settings: dict | None = None) -> dict:
    """Where one served request's CPU goes: the workers' CPU per request under ``clients`` clients (every thread
    measured), against the model's own CPU per image at the batch sizes the server formed and the decoding's; the
    rest is HTTP, multipart, JSON, Flask and the hand-offs between threads.

    Returns:
        ``per_request`` (the workers' CPU seconds per request), ``model`` (the model's own, at the batch sizes
        formed), ``decode``, ``rest``, ``batch_sizes`` (one worker's model calls per batch size), ``threads``
        (the busiest threads: name, CPU seconds per request) and ``rps``.
    """
    import requests

    server, base = start_server(model_path, settings or {})
    try:
        load(f"{base}/api/classify", data, clients, 5)  # warm-up
        before, sizes_before = thread_cpu(server.pid), requests.get(f"{base}/health", timeout=60).json()
        served = load(f"{base}/api/classify", data, clients, seconds)
        after, sizes_after = thread_cpu(server.pid), requests.get(f"{base}/health", timeout=60).json()
    finally:
        server.terminate()
        server.wait(timeout=120)
    count = max(1, served["requests"])
    spent = {key: (name, seconds_after - before.get(key, (name, 0.0))[1])
             for key, (name, seconds_after) in after.items()}
    # /health answers from either worker; the model process's counts are the same whichever answers
    same_worker = sizes_before["pid"] == sizes_after["pid"] or "model_process" in sizes_after["batching"]
    sizes = {int(size): calls - (sizes_before["batching"]["batch_sizes"].get(size, 0) if same_worker else 0)
             for size, calls in sizes_after["batching"]["batch_sizes"].items()}
    sizes = {size: calls for size, calls in sizes.items() if calls > 0} or {1: 1}
    costs = model_cpu_per_image(model_path, sorted(sizes))
    model = sum(costs[size] * size * calls for size, calls in sizes.items()) / sum(s * c for s, c in sizes.items())
    per_request = sum(cpu for _, cpu in spent.values()) / count
    decode = decode_cost(model_path, data)
    busiest = sorted(spent.items(), key=lambda item: -item[1][1])[:8]
    return {"per_request": per_request, "model": model, "decode": decode, "rest": per_request - model - decode,
            "batch_sizes": sizes, "rps": served["rps"],
            "threads": [(f"{name} ({pid}/{tid})", cpu / count) for (pid, tid), (name, cpu) in busiest]}


def print_cpu_breakdown(args, data: bytes) -> None:
    """The --cpu-breakdown tables: per model, the CPU of one request and the busiest threads."""
    print(f"\n{args.clients} clients, {args.seconds:.0f} s, gunicorn 2 workers, batching on (defaults); load average "
          f"{os.getloadavg()[0]:.1f} at the start\n")
    with tempfile.TemporaryDirectory() as folder:
        for method, imgsize in (spec.split(":") for spec in args.models):
            found = cpu_breakdown(build_model(Path(folder), method, int(imgsize)), data, args.clients, args.seconds)
            print(f"| {method} {imgsize} px | CPU ms per request |\n| --- | --- |")
            print(f"| the workers, all threads | {found['per_request'] * 1000:.1f} |")
            print(f"| the model's own calls at the batch sizes formed {found['batch_sizes']} | "
                  f"{found['model'] * 1000:.1f} |")
            print(f"| decoding + resizing | {found['decode'] * 1000:.1f} |")
            print(f"| the rest (HTTP, multipart, JSON, Flask, hand-offs, idle threads) | {found['rest'] * 1000:.1f} |")
            print(f"\n{found['rps']:.1f} requests/s; the busiest threads (name (worker/thread), CPU ms per request of "
                  "the whole server):")
            for name, cpu in found["threads"]:
                print(f"    {name}: {cpu * 1000:.1f}")


def metrics_cpu_per_request(blocks: int = 15, requests_per_block: int = 100) -> tuple[float, float, float]:
    """CPU seconds per /classify request through two in-process apps on the same tiny classifier, /metrics on (in
    prometheus-client's multiprocess mode, as under gunicorn) and off, alternately in blocks: a noise-proof view of
    what counting costs. Returns the medians on, off and of the paired differences."""
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="timl-bench-metrics-"))
    import keras

    from timl.classifier import Classifier
    from timl.images import Preprocessing
    from timl.serving import create_app

    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    classifier = Classifier(keras.Model(inputs, outputs), Preprocessing(32), ("A", "B", "C"))
    clients = {flag: create_app({"CLASSIFICATION_MODEL": "m.h5", "METRICS": flag}, classifier=classifier).test_client()
               for flag in (True, False)}
    data = image_bytes()

    def block(client, count: int = requests_per_block) -> float:
        start = time.process_time()
        for _ in range(count):
            client.post("/api/classify", data={"file": (io.BytesIO(data), "x.jpg")}, content_type="multipart/form-data")
        return (time.process_time() - start) / count

    for client in clients.values():
        block(client, 10)
    pairs = [(block(clients[True]), block(clients[False])) for _ in range(blocks)]
    return (statistics.median(on for on, _ in pairs), statistics.median(off for _, off in pairs),
            statistics.median(on - off for on, off in pairs))


def print_metrics_cost(args, data: bytes) -> None:
    """The --compare-metrics table: requests/s with /metrics on and off per round, and the cost."""
    on, off, difference = metrics_cpu_per_request()
    print(f"\nCPU per /classify request in one process (a 600x450 JPEG, a tiny model): metrics on {on * 1e6:.0f} us, "
          f"off {off * 1e6:.0f} us, median paired difference {difference * 1e6:.0f} us")
    print(f"\n{args.clients} clients, {args.seconds:.0f} s per server, gunicorn 2 workers, batching on (defaults)\n")
    print("| model | round | requests/s, metrics on | requests/s, metrics off | cost |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for method, imgsize in (spec.split(":") for spec in args.models):
            path = build_model(Path(folder), method, int(imgsize))
            pairs = compare_metrics(path, data, args.clients, args.seconds, args.rounds)
            for index, (on, off) in enumerate(pairs, 1):
                print(f"| {method} {imgsize} px | {index} | {on:.1f} | {off:.1f} | {(1 - on / off) * 100:+.1f} % |")
            on, off = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
            print(f"| {method} {imgsize} px | all | {on / len(pairs):.1f} | {off / len(pairs):.1f} | "
                  f"{(1 - on / off) * 100:+.1f} % |")


if __name__ == "__main__":
    main()
