"""Load on the TIML REST server: gunicorn with 2 workers, N concurrent clients on /api/classify.

For a SmallCNN (32 px) and a VGG16-shaped model (VGG16 architecture without ImageNet weights, 64 px): requests/s,
p50/p95/p99 latency and errors over ``--seconds``, against the same model's in-process ``predict`` of one image,
and the workers' memory before and after (growth after warm-up).

    python bench/serve_load.py [--seconds 30] [--clients 8]

Goal: zero errors; p50 within 1.5x the in-process latency plus 10 ms. The last column is a lower bound on the
p50 of any server on this machine (Little's law with the model's best batched throughput): where it exceeds the
goal, no server can meet it with that many clients on these cores.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

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


def compute_bound(model_path: Path, clients: int, repeats: int = 10) -> tuple[float, int]:
    """The lowest p50 any server could reach here with ``clients`` clients: model inference alone.

    With ``clients`` requests always waiting, p50 >= clients / throughput (Little's law), and throughput is at
    most 1 / (the best seconds per image of the model's own batched predict, batches of 1 to ``clients``).
    Decoding, HTTP and the clients' own CPU come on top, so this is a lower bound.

    Returns:
        The bound in seconds and the batch size that gave the best time per image.
    """
    import numpy as np

    from timl.classifier import load_classifier

    classifier = load_classifier(keras_model=model_path)
    size = classifier.preprocessing.imgsize
    best, best_batch = float("inf"), 1
    batch = 1
    while batch <= clients:
        x = np.random.default_rng(0).random((batch, size, size, 3)).astype(np.float32)
        classifier.model.predict_on_batch(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            classifier.model.predict_on_batch(x)
            times.append(time.perf_counter() - start)
        per_image = statistics.median(times) / batch
        if per_image < best:
            best, best_batch = per_image, batch
        batch *= 2
    return clients * best, best_batch


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_memory(server_pid: int) -> list[int]:
    import psutil

    return [child.memory_info().rss for child in psutil.Process(server_pid).children()]


def load(url: str, data: bytes, clients: int, seconds: float) -> dict:
    import requests

    latencies, errors, lock = [], [], threading.Lock()
    stop = time.time() + seconds

    def client():
        session = requests.Session()
        while time.time() < stop:
            start = time.perf_counter()
            try:
                answer = session.post(url, files={"file": ("x.jpg", data)}, timeout=60)
                ok = answer.status_code == 200
            except requests.RequestException:
                ok = False
            with lock:
                (latencies if ok else errors).append(time.perf_counter() - start)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.time() - began
    ordered = sorted(latencies) or [float("nan")]

    def pct(q):
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"rps": len(latencies) / elapsed, "p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99),
            "errors": len(errors), "requests": len(latencies) + len(errors)}


def serve_and_measure(model_path: Path, data: bytes, clients: int, seconds: float) -> dict:
    import requests

    folder = model_path.parent
    config = folder / "timl_server_config.json"
    config.write_text(json.dumps({"CLASSIFICATION_MODEL": str(model_path)}))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "timl.serve", "--config", str(config), "--workers", "2",
                               "--bind", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if requests.get(f"{base}/health", timeout=30).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        load(f"{base}/api/classify", data, clients, 5)  # warm-up: every worker has loaded the model
        before = worker_memory(server.pid)
        result = load(f"{base}/api/classify", data, clients, seconds)
        after = worker_memory(server.pid)
        result["single_p50"] = load(f"{base}/api/classify", data, 1, min(seconds, 10))["p50"]
        result["memory_growth"] = max((a - b) / b for a, b in zip(after, before)) if before and after else float("nan")
        return result
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    data = image_bytes()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for method, imgsize in (("SmallCNN", 32), ("VGG16", 64)):
            path = build_model(Path(folder), method, imgsize)
            local = in_process_latency(path, data)
            bound = compute_bound(path, args.clients)
            served = serve_and_measure(path, data, args.clients, args.seconds)
            rows.append((method, imgsize, local, bound, served))
    print(f"\n{args.clients} clients, {args.seconds:.0f} s, gunicorn 2 workers, a 600x450 JPEG per request\n")
    print("| model | in-process predict p50 (ms) | requests/s | p50 (ms) | p95 (ms) | p99 (ms) | errors | "
          "p50 / (1.5 x in-process + 10 ms) | one client: p50 (ms) and that ratio | worker memory growth | "
          f"lowest possible p50 with {args.clients} clients: inference alone (ms), and / goal |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for method, imgsize, local, (bound, batch), served in rows:
        goal = 1.5 * local + 0.010
        print(f"| {method} {imgsize} px | {local * 1000:.1f} | {served['rps']:.1f} | {served['p50'] * 1000:.1f} | "
              f"{served['p95'] * 1000:.1f} | {served['p99'] * 1000:.1f} | {served['errors']} | "
              f"{served['p50'] / goal:.2f} | {served['single_p50'] * 1000:.1f} ({served['single_p50'] / goal:.2f}) | "
              f"{served['memory_growth'] * 100:.1f} % | {bound * 1000:.0f} (batches of {batch}): "
              f"{bound / goal:.2f} |")


if __name__ == "__main__":
    main()
