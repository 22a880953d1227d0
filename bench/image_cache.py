"""Benchmark: memory and views/s of the decoded-image cache, before and after issue 27 (item 5), and two processes
sharing one cache file against each its own copy.

    python bench/image_cache.py [--counts 1000,4000,16000] [--views 16000] [--repeats 1] [--images DIR]

Each measurement runs in a fresh process (its peak RSS is its own): it imports TensorFlow, holds N images of
224 px (the ISIC sample's images, repeated) and reads ``--views`` views (``hflip_rot4``, batches of 32) through
the tf.data pipeline, after 2000 views of warm-up. ``before``: the pipeline as it was (the pixels converted into
a tensor that ``tf.gather`` reads); ``after``: :func:`timl.images.make_dataset` now (each batch's images gathered from
the aligned numpy array handed to TensorFlow by reference, once per batch); ``shared``: the same, the pixels mapped from the
shared cache file (``TIML_IMAGE_CACHE``). The in-memory rows fill one preallocated (aligned) array, as :func:`timl.images.load_images` does, from the sample's decoded images (the
decoding itself is the same before and after); the shared rows map a file decoded once by the bench.

Printed: pixels (MB), peak RSS (MB; TensorFlow alone holds the "base"), peak / pixels, (peak - base) / pixels,
views/s; then two processes at once, each with its own in-memory copy vs both mapping one file: their RSS and PSS
(proportional set size: a shared page counted half in each) summed, while both are alive.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness  # noqa: F401  (first: the benchmarks' environment)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "isic2019-sample" / "images"
IMGSIZE, BATCH, AUGMENTATION, WARM_VIEWS = 224, 32, "hflip_rot4", 2000


def _status(pid: str = "self") -> dict[str, float]:
    """VmRSS and VmHWM of /proc/PID/status and Pss of its smaps_rollup, in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line.split(":")[0]] = int(line.split()[1]) / 1024
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            values["Pss"] = int(line.split()[1]) / 1024
    return values


def _before_dataset(images, labels):
    """The pipeline before issue 27: the pixels as a tensor, each view gathered from it (timl/images/pipeline.py
    at b752f74, without the epoch keying the bench does not use)."""
    import tensorflow as tf

    from timl.images import get_augmentation

    preset = get_augmentation(AUGMENTATION)
    multiplier, cached = preset.multiplier, tf.convert_to_tensor(images)
    label_tensor = tf.convert_to_tensor(labels)

    def element(index, seed_pair):
        image = preset.view(tf.gather(cached, index // multiplier), tf.cast(index % multiplier, tf.int32), seed_pair)
        return image, tf.gather(label_tensor, index // multiplier)

    count = len(images) * multiplier
    indices = tf.data.Dataset.range(count).shuffle(count, seed=0, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=0, rerandomize_each_iteration=True).batch(2)
    dataset = tf.data.Dataset.zip((indices, seeds)).map(element, num_parallel_calls=tf.data.AUTOTUNE,
                                                        deterministic=True)
    dataset = dataset.batch(BATCH).map(lambda batch, rest: (tf.cast(batch, tf.float32) / 255.0, rest),
                                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _pixels(paths: list[str], count: int, shared: str | None):
    """N images: mapped from the shared cache file, or one preallocated array filled from the decoded sample."""
    from timl.images import Preprocessing, cache_images, load_images
    from timl.images.cache import aligned_empty

    if shared:
        return cache_images([paths[i % len(paths)] for i in range(count)], Preprocessing(IMGSIZE), shared_dir=shared)
    unique = load_images(paths, Preprocessing(IMGSIZE))
    out = aligned_empty((count, IMGSIZE, IMGSIZE, 3))
    for start in range(0, count, len(unique)):
        out[start:start + len(unique)] = unique[:count - start]
    return out


def child(args) -> None:
    """One measurement, printed as a JSON line."""
    import numpy as np
    import tensorflow as tf

    from timl.images import make_dataset

    paths = sorted(str(p) for p in Path(args.images).iterdir() if p.suffix.lower() in (".jpg", ".png"))
    for _ in make_dataset(np.zeros((2, 8, 8, 3), np.uint8), None, batch_size=2):  # TensorFlow's runtime loaded
        pass
    base = _status()["VmRSS"]
    images = _pixels(paths, args.count, args.shared)
    labels = np.zeros((args.count, 2), np.float32)
    dataset = _before_dataset(images, labels) if args.pipeline == "before" else make_dataset(
        images, labels, batch_size=BATCH, augmentation=AUGMENTATION, shuffle=True, seed=0)
    batches = iter(dataset.repeat())
    for _ in range(WARM_VIEWS // BATCH):
        next(batches)
    start = time.perf_counter()
    for _ in range(args.views // BATCH):
        tf.debugging.assert_type(next(batches)[0], tf.float32)
    rate = (args.views // BATCH) * BATCH / (time.perf_counter() - start)
    if args.barrier:  # two processes at once: both measured while both hold their images
        Path(args.barrier, str(os.getpid())).touch()
        while len(list(Path(args.barrier).iterdir())) < 2:
            time.sleep(0.1)
    print(json.dumps({"pixels": images.nbytes / 2**20, "base": base, "views_per_s": rate, **_status()}))
    if args.barrier:
        time.sleep(2)  # the other one reads its PSS while this one still maps the file


def _spawn(args, count: int, pipeline: str, shared: str | None = None, barrier: str | None = None):
    command = [sys.executable, __file__, "--child", "--count", str(count), "--pipeline", pipeline, "--views",
               str(args.views), "--images", args.images] + (["--shared", shared] if shared else []) + (
        ["--barrier", barrier] if barrier else [])
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def _result(process) -> dict:
    out, _ = process.communicate()
    if process.returncode:
        sys.exit(f"a measurement failed (exit {process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1000,4000,16000", help="image counts, comma-separated")
    parser.add_argument("--views", type=int, default=16000, help="views read per measurement (after the warm-up)")
    parser.add_argument("--images", default=str(DEFAULT_IMAGES), help="folder of images to repeat")
    parser.add_argument("--pair-count", type=int, default=4000,
                        help="images of the two-process comparison (0: none)")
    parser.add_argument("--repeats", type=int, default=1, help="measurements of each row, before and after alternating")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", choices=("before", "after"), help=argparse.SUPPRESS)
    parser.add_argument("--shared", help=argparse.SUPPRESS)
    parser.add_argument("--barrier", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    print(f"| images | pixels MB | pipeline | peak RSS MB | peak / pixels | (peak - base) / pixels | views/s |\n"
          f"| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as work:
        for count in map(int, args.counts.split(",")):
            for name, pipeline, shared in (("before", "before", None), ("after", "after", None),
                                           ("after, shared file", "after", work)) * args.repeats:
                result = _result(_spawn(args, count, pipeline, shared))
                print(f"| {count} | {result['pixels']:.0f} | {name} | {result['VmHWM']:.0f} | "
                      f"{result['VmHWM'] / result['pixels']:.2f} | "
                      f"{(result['VmHWM'] - result['base']) / result['pixels']:.2f} | {result['views_per_s']:.0f} |",
                      flush=True)
        if not args.pair_count:
            return
        print(f"\n| two processes at once, {args.pair_count} images each | RSS MB (sum) | PSS MB (sum) |\n| --- | --- | --- |")
        for name, shared in (("each its own in-memory copy", None), ("both map one shared file", work)):
            barrier = tempfile.mkdtemp(dir=work)
            pair = [_result(process) for process in [_spawn(args, args.pair_count, "after", shared, barrier)
                                                     for _ in range(2)]]
            print(f"| {name} | {sum(r['VmRSS'] for r in pair):.0f} | {sum(r['Pss'] for r in pair):.0f} |", flush=True)


if __name__ == "__main__":
    main()
