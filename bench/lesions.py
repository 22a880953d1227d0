"""The leak an image-level split hides: the digits demo data as synthetic "lesions", split by image and by lesion.

Each of ``--sources`` digits (a seeded pick from the 1797) becomes a lesion: the digit tinted over a texture of its
own (``--texture`` x 255, as a lesion's skin, hair and lighting), then ``--copies`` near-copies of that (shifted
by up to ``--shift`` pixels, Gaussian noise of ``--noise`` x 255, brightness jitter), written as PNG files with
``digit-lesions.csv`` (``image_name``, ``D0`` .. ``D9``) and ``lesions.csv`` (``image_name``, ``lesion_id``). The
same SmallCNN row trains twice per seed through ``timl.train``'s table: ``split frac=F`` by image, and the same
with ``groups lesions.csv:lesion_id``. The image-level split puts near-copies of a test image in train, so its
test score is inflated; the bench prints both test scores with their 95% bootstrap intervals (the runs'
``test/accuracy_ci_low`` ...) and whether the image-level accuracy lies above the grouped split's interval
(issue 23: "the leak is visible").

    python bench/lesions.py [--sources 250] [--copies 6] [--texture 0.4] [--epochs 10] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import harness  # first: the benchmarks' environment
import numpy as np
import pandas as pd

#: The groups cell of the grouped row: the lesion table beside the dataset's CSV.
GROUPS_CELL = "lesions.csv:lesion_id"
#: The ground truth of the lesions (``digit-lesions.csv``) and the table of their ids, in the lesions' folder.
TRUTH_NAME, LESIONS_NAME = "digit-lesions.csv", "lesions.csv"
#: The demo's lesions (:func:`write_lesions`) and epochs: tuned so that the leak shows on every seed tried (0-4)
#: with room to spare, in about a minute per seed on 2 CPU cores.
DEMO = {"sources": 250, "copies": 6, "shift": 1, "noise": 0.05, "texture": 0.4}
EPOCHS = 10


def lesion_look(pixels: np.ndarray, rng: np.random.Generator, texture: float) -> np.ndarray:
    """A lesion's own look, shared by its copies: the image tinted (each channel x 0.6-1.0) over a fixed random
    texture of ``texture`` x 255 (as skin, hair and lighting are shared by the images of one lesion)."""
    tint = rng.uniform(0.6, 1.0, 3)
    pattern = rng.normal(0.0, texture * 255.0, pixels.shape)
    return np.clip(pixels * tint + pattern, 0, 255)


def near_copy(pixels: np.ndarray, rng: np.random.Generator, shift: int, noise: float) -> np.ndarray:
    """One near-copy of an RGB image: shifted by up to ``shift`` pixels each way (edges filled black), brightness
    scaled by 0.85-1.15 and Gaussian noise of ``noise`` x 255 added."""
    dy, dx = rng.integers(-shift, shift + 1, 2)
    height, width = pixels.shape[:2]
    moved = np.zeros_like(pixels, dtype=np.float32)
    moved[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        pixels[max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    moved = moved * rng.uniform(0.85, 1.15) + rng.normal(0.0, noise * 255.0, pixels.shape[:2])[..., None]
    return np.clip(np.round(moved), 0, 255).astype(np.uint8)


def write_lesions(digits_csv: Path, out_dir: Path, *, sources: int = DEMO["sources"], copies: int = DEMO["copies"],
                  shift: int = DEMO["shift"], noise: float = DEMO["noise"], texture: float = DEMO["texture"],
                  seed: int = 0) -> Path:
    """Writes ``sources`` digits of the demo data as lesions of ``copies`` near-copies each.

    Args:
        digits_csv: the demo data's ``digits.csv`` (images in ``images/`` beside it), from ``timl.data digits``.
        out_dir: the folder to write ``digit-lesions.csv``, ``lesions.csv`` and ``images/`` into.
        sources: how many digits (a seeded pick) become lesions.
        copies: the images of each lesion.
        shift: the largest shift of a copy, in pixels.
        noise: the standard deviation of a copy's Gaussian noise, as a share of 255.
        texture: the standard deviation of a lesion's own texture (:func:`lesion_look`), as a share of 255.
        seed: the seed of the pick and of the copies.

    Returns:
        The path of the ground truth ``digit-lesions.csv``.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    digits = pd.read_csv(digits_csv, dtype={"image_name": str})
    picked = digits.iloc[np.sort(rng.choice(len(digits), size=min(sources, len(digits)), replace=False))]
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    truth, lesions = [], []
    for _, source in picked.iterrows():
        pixels = lesion_look(np.asarray(Image.open(digits_csv.parent / "images" / f"{source['image_name']}.png")
                                        .convert("RGB"), dtype=np.float32), rng, texture)
        lesion = f"L{source['image_name']}"
        for copy in range(copies):
            name = f"{lesion}_{copy}"
            Image.fromarray(near_copy(pixels, rng, shift, noise)).save(out_dir / "images" / f"{name}.png")
            truth.append({"image_name": name, **source.drop("image_name").to_dict()})
            lesions.append({"image_name": name, "lesion_id": lesion})
    pd.DataFrame(lesions).to_csv(out_dir / LESIONS_NAME, index=False)
    truth_path = out_dir / TRUTH_NAME
    pd.DataFrame(truth).to_csv(truth_path, index=False)
    return truth_path


def lesion_rows(truth_path: Path, *, frac: float, epochs: int, imgsize: int, seeds: list[int]) -> list[dict]:
    """The table's rows: per seed, the SmallCNN row split by image, then the same row split by lesion."""
    row = {"method": "SmallCNN", "dataset": str(truth_path), "split": f"frac={frac}", "epochs": epochs,
           "imgaug": "none", "batchsize": 32, "imgsize": imgsize, "weights": "none"}
    return [dict(row, seed=seed, groups=groups) for seed in seeds for groups in ("", GROUPS_CELL)]


def train(rows: list[dict], work: Path):
    """Trains the rows as one table in ``work`` (own SQLite store); returns the outcome (exits if a row failed)."""
    from timl import training

    table = work / "lesions-table.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    outcome = training.train_table(table, out_dir=work / "out", experiment="lesions",
                                   tracking_uri=f"sqlite:///{work / 'mlflow.db'}", skip_roc=True)
    if outcome.failed:
        sys.exit(f"a row failed: {outcome.failed[0].message}")
    return outcome


def scores(run_id: str) -> dict:
    """A run's test accuracy and balanced accuracy with their intervals, and its split's sizes."""
    from timl import metric_names, tracking

    run = tracking.get_run(run_id)
    metrics, params = run.data.metrics, run.data.params
    found = {}
    for name, metric in (("accuracy", metric_names.TEST_ACCURACY),
                         ("balanced_accuracy", metric_names.TEST_BALANCED_ACCURACY)):
        found[name] = metrics[metric]
        for bound in metric_names.INTERVAL_BOUNDS:
            found[f"{name}_{bound}"] = metrics[metric_names.interval_name(metric, bound)]
    found["images"] = "/".join(f"{metrics[metric_names.ORIGINAL_METRIC_COLUMNS[column]]:.0f}"
                               for column in ("trainsize", "valsize", "testsize"))
    found["groups"] = "/".join(params.get(f"num_groups_{split}", "-") for split in ("train", "dev", "test"))
    return found


def markdown(results: list[tuple[int, dict, dict]]) -> str:
    """The table: per seed, both splits' test scores with intervals, and whether the leak is visible."""
    lines = ["| seed | split | train/dev/test images | test accuracy [95% CI] | test balanced accuracy [95% CI] |",
             "| --- | --- | --- | --- | --- |"]
    for seed, image_level, grouped in results:
        for label, found in (("by image (`frac`)", image_level), (f"by lesion (`groups {GROUPS_CELL}`)", grouped)):
            lines.append(f"| {seed} | {label} | {found['images']} | " + " | ".join(
                f"{found[name]:.3f} [{found[name + '_ci_low']:.3f}, {found[name + '_ci_high']:.3f}]"
                for name in ("accuracy", "balanced_accuracy")) + " |")
    return "\n".join(lines)


def leak_visible(image_level: dict, grouped: dict) -> bool:
    """Whether the image-level split's test accuracy lies above the grouped split's 95% interval."""
    return image_level["accuracy"] > grouped["accuracy_ci_high"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=DEMO["sources"], help="digits that become lesions")
    parser.add_argument("--copies", type=int, default=DEMO["copies"], help="near-copies per lesion")
    parser.add_argument("--shift", type=int, default=DEMO["shift"], help="largest shift of a copy in pixels")
    parser.add_argument("--noise", type=float, default=DEMO["noise"], help="noise of a copy, share of 255")
    parser.add_argument("--texture", type=float, default=DEMO["texture"], help="a lesion's own texture, share of 255")
    parser.add_argument("--frac", type=float, default=0.2, help="dev and test share each")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--imgsize", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one pair of rows per seed")
    args = parser.parse_args()
    start = time.perf_counter()
    with harness.digits_workspace(size=args.imgsize) as work:
        truth = write_lesions(work / "data" / "digits.csv", work / "lesions", sources=args.sources,
                              copies=args.copies, shift=args.shift, noise=args.noise,
                              texture=args.texture)
        outcome = train(lesion_rows(truth, frac=args.frac, epochs=args.epochs, imgsize=args.imgsize,
                                    seeds=args.seeds), work)
        found = [scores(row.run_id) for row in outcome.rows]
    results = [(seed, found[2 * index], found[2 * index + 1]) for index, seed in enumerate(args.seeds)]
    print(f"\n{args.sources} lesions x {args.copies} near-copies (texture {args.texture}, shift {args.shift} px, "
          f"noise {args.noise}), SmallCNN {args.epochs} epochs at {args.imgsize} px, split frac={args.frac}:\n")
    print(markdown(results))
    visible = sum(leak_visible(image_level, grouped) for _, image_level, grouped in results)
    print(f"\nimage-level test accuracy above the grouped split's 95% interval: {visible} of {len(results)} seeds "
          f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
