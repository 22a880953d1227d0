"""This checkout's server against another checkout's (an earlier commit), alternately on the same machine.

The default server of each (gunicorn, 2 workers, the defaults of its own code) on a VGG16-shaped model at 64 px,
8 clients on ``/api/classify`` (a 600x450 JPEG per request, as in ``bench/serve_load.py``), then one client alone;
per round the other checkout first, then this one, so a slow spell of the machine hits both alike. Reports
requests/s, the server's CPU per request (its workers and model process, every thread) and the lone client's p50
(each server measured as a ``bench/serve_configs.py`` configuration).

    git worktree add /tmp/timl-before COMMIT
    python bench/serve_compare.py /tmp/timl-before [--rounds 3] [--seconds 20] [--models VGG16:64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from serve_configs import measure
from serve_load import build_model, image_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout (a folder holding its timl package)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=["VGG16:64"], help="METHOD:SIZE ...")
    args = parser.parse_args()
    if not (args.other / "timl" / "__init__.py").is_file():
        parser.error(f"{args.other} holds no timl package (expected {args.other / 'timl' / '__init__.py'})")
    data = image_bytes()
    print(f"{args.clients} clients, {args.seconds:.0f} s per server, load average {os.getloadavg()[0]:.1f} at the "
          f"start; other: {args.other}\n")
    print("| model | round | other: requests/s | this: requests/s | this / other | other: CPU ms per request | "
          "this: CPU ms per request | other: one client p50 (ms) | this: one client p50 (ms) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for method, imgsize in (spec.split(":") for spec in args.models):
            path = build_model(Path(folder), method, int(imgsize))
            ratios = []
            for index in range(1, args.rounds + 1):
                other = measure(path, data, 2, {}, args.clients, args.seconds, args.other.resolve())
                this = measure(path, data, 2, {}, args.clients, args.seconds)
                ratios.append(this["rps"] / other["rps"])
                print(f"| {method} {imgsize} px | {index} | {other['rps']:.1f} | {this['rps']:.1f} | "
                      f"{ratios[-1]:.2f} | {other['cpu'] * 1000:.1f} | {this['cpu'] * 1000:.1f} | "
                      f"{other['single_p50'] * 1000:.1f} | {this['single_p50'] * 1000:.1f} |", flush=True)
            print(f"| {method} {imgsize} px | median of the ratios | | | {statistics.median(ratios):.2f} | | | | |")


if __name__ == "__main__":
    main()
