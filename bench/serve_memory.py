"""Memory of the TIML REST server under worst-case uploads: gunicorn, 2 workers, N concurrent 16-bit PNGs.

A 16-bit grey PNG just under the server's pixel cap (MAX_IMAGE_PIXELS, 25 Mpx by default) compresses to about
50 kB and decodes to 25 million pixels: the cheapest upload that costs a worker the most memory. This bench starts
a real server (``python -m timl.serve``, loopback, a tiny model), warms both workers up with small images, then
sends ``--clients`` such uploads at once to /api/classify and reads each worker's peak resident memory (VmHWM,
reset once the workers are warm) against its memory at rest.

    python bench/serve_memory.py [--clients 32] [--pixels 25000000] [--set KEY=VALUE ...]

Bound (issue 21, finding 5): a worker decodes at most DECODE_CONCURRENCY images at once (4 by default), each
needing at most 12 bytes per pixel (tests/test_images.py), so its peak stays under its memory at rest plus
DECODE_CONCURRENCY x pixels x 12 bytes (1.2 GB at the defaults), whatever the number of concurrent uploads.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import tempfile
import threading
import time
from pathlib import Path

from harness import start_server

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # benchmarks talk to loopback only
os.environ.setdefault("DO_NOT_TRACK", "true")

#: Bytes per pixel one decode may need (the bound tests/test_images.py holds decoding to).
BYTES_PER_PIXEL = 12


def build_model(folder: Path, imgsize: int = 32) -> Path:
    """A SmallCNN (untrained) saved as .h5 with its metadata sidecar."""
    from timl import models
    from timl.classifier import Classifier, write_metadata
    from timl.images import Preprocessing

    model = models.create_model("SmallCNN", 3, imgsize, weights="none", seed=0)
    path = folder / "SmallCNN.h5"
    model.save(path)
    write_metadata(path, Classifier(model, Preprocessing(imgsize), ("A", "B", "C")).metadata())
    return path


def worst_upload(pixels: int) -> tuple[bytes, tuple[int, int]]:
    """A 16-bit grey PNG (a smooth ramp: it compresses well) of fewer than ``pixels`` pixels, as close as it gets."""
    import numpy as np
    from PIL import Image

    width = math.isqrt(pixels)
    height = pixels // width - (1 if width * (pixels // width) == pixels else 0)
    ramp = (np.arange(width, dtype=np.uint32) * 65535 // max(width - 1, 1)).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(np.broadcast_to(ramp, (height, width)).copy()).save(buffer, "PNG")
    return buffer.getvalue(), (width, height)


def small_jpeg() -> bytes:
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def burst(url: str, data: bytes, name: str, clients: int) -> tuple[list, float]:
    """``clients`` uploads of ``data`` sent at once (one thread each); returns their status codes and the seconds
    until the last answer."""
    import requests

    statuses: list = []
    barrier = threading.Barrier(clients)

    def client():
        barrier.wait()
        try:
            statuses.append(requests.post(url, files={"file": (name, data)}, timeout=600).status_code)
        except requests.RequestException as error:
            statuses.append(type(error).__name__)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses, time.perf_counter() - began


def memory_kilobytes(pid: int, field: str) -> int:
    """A field of /proc/PID/status in kB (VmRSS: resident now; VmHWM: the peak since the last reset)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    """Sets the process's peak resident memory (VmHWM) to its resident memory now (Linux 4.0+)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def http_workers(server: int) -> list[int]:
    """The pids of the server's gunicorn workers (its model process decodes nothing: not one of them)."""
    import psutil

    return [child.pid for child in psutil.Process(server).children()
            if "timl.serving.model_process" not in " ".join(child.cmdline())]


def measure(clients: int, pixels: int, settings: dict) -> dict:
    upload, size = worst_upload(pixels)
    with tempfile.TemporaryDirectory() as folder:
        server, base = start_server(build_model(Path(folder)), settings)
        try:
            url = f"{base}/api/classify"
            for _ in range(3):  # warm-up: both workers load the model and answer small images
                burst(url, small_jpeg(), "small.jpg", 16)
            workers = http_workers(server.pid)
            for pid in workers:
                reset_peak(pid)
            rest = {pid: memory_kilobytes(pid, "VmRSS") * 1024 for pid in workers}
            statuses, seconds = burst(url, upload, "worst.png", clients)
            peak = {pid: memory_kilobytes(pid, "VmHWM") * 1024 for pid in workers}
            alive = http_workers(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=120)
    return {"size": size, "upload_bytes": len(upload), "statuses": statuses, "seconds": seconds, "rest": rest,
            "peak": peak, "workers_kept": alive == workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32, help="uploads sent at once")
    parser.add_argument("--pixels", type=int, default=25_000_000,
                        help="the pixel cap the uploads stay just under (the server's MAX_IMAGE_PIXELS)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="server configuration keys, e.g. DECODE_CONCURRENCY=2 (numbers as JSON)")
    args = parser.parse_args()
    settings = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    concurrency = int(settings.get("DECODE_CONCURRENCY", 4))
    result = measure(args.clients, args.pixels, settings)
    width, height = result["size"]
    mib = 2**20
    bound = concurrency * width * height * BYTES_PER_PIXEL
    print(f"\n{args.clients} concurrent uploads of a {width}x{height} 16-bit PNG ({result['upload_bytes'] / 1000:.0f} kB, "
          f"{width * height / 1e6:.1f} Mpx) to /api/classify, gunicorn 2 workers x 16 threads, settings {settings or 'default'}")
    codes = {code: result["statuses"].count(code) for code in set(result["statuses"])}
    print(f"answers: {codes} in {result['seconds']:.1f} s; workers kept: {result['workers_kept']}\n")
    print("| worker | at rest (MiB) | peak (MiB) | peak - rest (MiB) | bound (MiB) |")
    print("| --- | --- | --- | --- | --- |")
    growths = []
    for index, pid in enumerate(result["rest"]):
        growth = result["peak"][pid] - result["rest"][pid]
        growths.append(growth)
        print(f"| {index + 1} | {result['rest'][pid] / mib:.0f} | {result['peak'][pid] / mib:.0f} | "
              f"{growth / mib:.0f} | {bound / mib:.0f} |")
    verdict = "within" if max(growths) <= bound else "OVER"
    print(f"\nbound: per worker, peak - rest <= DECODE_CONCURRENCY ({concurrency}) x {width * height / 1e6:.1f} Mpx x "
          f"{BYTES_PER_PIXEL} B = {bound / mib:.0f} MiB; largest {max(growths) / mib:.0f} MiB: {verdict} the bound; "
          f"both workers together {sum(growths) / mib:.0f} MiB above rest")


if __name__ == "__main__":
    main()
