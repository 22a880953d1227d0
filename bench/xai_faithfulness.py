"""Faithfulness of the explanation methods: deletion and insertion AUC (RISE paper) on a digits classifier.

Trains TIML's ``SmallCNN`` on scikit-learn's digits (8x8 images upsampled to 32 px RGB through
``timl.images.Preprocessing``), then explains the predicted class of held-out test images with every method
and prints a markdown table: mean deletion AUC (lower is better), mean insertion AUC (higher is better) and
the mean seconds per explanation. A "random" row (a uniformly random map) is the reference a method must beat.

Usage: ``python bench/xai_faithfulness.py [--images 100] [--epochs 5] [--rise-masks 1000] [--steps 64]``
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # benchmarks talk to loopback only
os.environ.setdefault("DO_NOT_TRACK", "true")

import numpy as np  # noqa: E402


def digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as float32 (n, size, size, 3) in [0, 1] and their labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from timl.images import Preprocessing

    data = load_digits()
    preprocessing = Preprocessing(size, "bilinear", "RGB")
    pixels = np.round(data.images * 255.0 / 16.0).astype(np.uint8)
    images = np.stack([preprocessing(Image.fromarray(image)) for image in pixels])
    return images, data.target.astype(np.int64)


def train(x_train, y_train, size: int, epochs: int, seed: int):
    """TIML's SmallCNN (``timl.models``) trained from scratch."""
    import keras

    from timl.models import create_model

    model = create_model("SmallCNN", 10, size, weights="none", seed=seed)
    model.fit(x_train, keras.utils.to_categorical(y_train, 10), epochs=epochs, batch_size=32, verbose=0)
    return model


def random_map(model, x, class_index, layer, seed, **params) -> np.ndarray:
    """A uniformly random saliency map: the baseline every method should beat."""
    return np.random.default_rng(seed).random(x.shape[1:3]).astype(np.float32)


def evaluate(model, images: np.ndarray, method: str, params: dict, steps: int) -> dict:
    """Mean deletion and insertion AUC and seconds per explanation of one method over the images."""
    from timl.xai import explain_array
    from timl.xai.metrics import deletion_auc, insertion_auc

    deletion, insertion, insertion_black, seconds = [], [], [], []
    for index, x in enumerate(images):
        start = time.perf_counter()
        if method == "random":
            class_index = int(np.argmax(np.asarray(model(x[None], training=False))[0]))
            saliency = random_map(model, x[None], class_index, None, index)
        else:
            result = explain_array(model, x, method, seed=index, **params)
            class_index, saliency = result.class_index, result.saliency
        seconds.append(time.perf_counter() - start)
        deletion.append(deletion_auc(model, x, saliency, class_index, steps=steps))
        insertion.append(insertion_auc(model, x, saliency, class_index, steps=steps))
        insertion_black.append(insertion_auc(model, x, saliency, class_index, steps=steps, substrate="zeros"))
    return {"deletion": float(np.mean(deletion)), "insertion": float(np.mean(insertion)),
            "insertion_black": float(np.mean(insertion_black)),
            "seconds": float(np.mean(seconds[1:] or seconds))}  # the first call includes tracing


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="test images explained")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rise-masks", type=int, default=1000, help="RISE masks (default 1000 to keep it short)")
    parser.add_argument("--steps", type=int, default=64, help="deletion/insertion steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import keras
    from sklearn.model_selection import train_test_split

    keras.utils.set_random_seed(args.seed)
    images, labels = digits(args.size)
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.25, stratify=labels,
                                                        random_state=args.seed)
    start = time.perf_counter()
    model = train(x_train, y_train, args.size, args.epochs, args.seed)
    accuracy = float(np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test))
    print(f"SmallCNN, {args.size} px, {args.epochs} epochs on {len(x_train)} digits: test accuracy "
          f"{accuracy:.3f} ({time.perf_counter() - start:.0f} s)\n")

    methods = {"gradcam": {}, "gradcam++": {}, "scorecam": {}, "smoothgrad": {},
               "rise": {"num_masks": args.rise_masks}, "random": {}}
    print(f"Mean over {args.images} test images, {args.steps} steps; deletion to black; insertion into a "
          "blurred copy (the paper's; a blurred digit is still recognised, so it discriminates little here) and "
          "into black; class explained: the predicted one.\n")
    print("| method | deletion AUC (lower is better) | insertion AUC, blur (higher is better) | "
          "insertion AUC, black (higher is better) | s / explanation |")
    print("| --- | --- | --- | --- | --- |")
    for method, params in methods.items():
        result = evaluate(model, x_test[:args.images], method, params, args.steps)
        label = {"rise": f"rise (N={args.rise_masks})", "scorecam": "scorecam (64 maps)",
                 "smoothgrad": "smoothgrad (20 samples)", "random": "random map (baseline)"}.get(method, method)
        print(f"| {label} | {result['deletion']:.3f} | {result['insertion']:.3f} | "
              f"{result['insertion_black']:.3f} | {result['seconds']:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
