"""Speed of the explanation methods against the model's own cost.

Prints three ratios, on a small VGG-shaped model and on a tiny two-convolution model (random weights, 64 px):

1. RISE with N masks / N batched forward passes of the same model on the same image (target: at most 1.2).
2. A per-mask loop (the original TIML / RISE reference approach: each mask upsampled on its own, with
   scikit-image as the RISE authors' code does (``pip install -e '.[bench]'``), with PIL and with eager
   ``tf.image.resize``, then the masked images predicted in batches with ``model.predict``)
   / our RISE (target: at least 5). The loop runs on fewer masks and is scaled linearly to N.
3. Grad-CAM / one eager forward plus backward pass with ``tf.GradientTape`` (target: at most 3).

Mask generation alone (ours vectorised vs the per-mask loop) is timed too: the loop / RISE ratio is
``1 + loop mask generation / forward passes``, so it reaches 5 only where forward passes are cheap; the table
prints that bound (loop / N batched forward passes), which no RISE implementation running N forward passes can
beat.

Usage: ``python bench/xai_speed.py [--models vgg,tiny] [--size 64] [--num-masks 2000] [--loop-masks 200]``
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # benchmarks talk to loopback only
os.environ.setdefault("DO_NOT_TRACK", "true")

import numpy as np  # noqa: E402


def vgg_shaped_model(size: int, classes: int = 2):
    """Four VGG blocks (two 3x3 convolutions and a pooling each, 16 to 128 filters) and a dense head."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = inputs
    for block, filters in enumerate((16, 32, 64, 128), start=1):
        for conv in (1, 2):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv{conv}")(x)
        x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(256, activation="relu")(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def tiny_model(size: int, classes: int = 2):
    """Two small convolutions and a dense output: forward passes cost less than per-mask Python work."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))


MODELS = {"vgg": (vgg_shaped_model, "block4_conv2"), "tiny": (tiny_model, "conv2")}


def best_time(function, repeats: int) -> float:
    """The median wall time of ``repeats`` calls, after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_times(first, second, repeats: int) -> tuple[float, float, float]:
    """Median times of two functions called alternately (robust to load changes) and the median ratio."""
    first(), second()
    pairs = []
    for _ in range(repeats):
        start = time.perf_counter()
        first()
        middle = time.perf_counter()
        second()
        pairs.append((middle - start, time.perf_counter() - middle))
    ratio = statistics.median(a / b for a, b in pairs)
    return statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs), ratio


def batched_forwards(model, x: np.ndarray, num_masks: int, batch_size: int):
    """N forward passes of the image, in batches, through one compiled function (RISE's own call)."""
    import tensorflow as tf

    forward = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
    batch = tf.constant(np.repeat(x[None], batch_size, axis=0))

    def run():
        for _ in range(math.ceil(num_masks / batch_size)):
            forward(batch).numpy()

    return run


def vectorised_masks(size: int, num_masks: int, batch_size: int, seed: int = 0):
    """Our RISE mask generation alone: random grids with NumPy, then one upsampling and crop per batch."""
    import tensorflow as tf

    from timl.xai.rise import generate_mask_batch, upsample_masks

    upsample = tf.function(upsample_masks, reduce_retracing=True)

    def run():
        rng = np.random.default_rng(seed)
        for _ in range(math.ceil(num_masks / batch_size)):
            grid, shifts = generate_mask_batch(rng, batch_size, size, 8, 0.5)
            upsample(grid, shifts, size).numpy()

    return run


def per_mask_loop(model, x: np.ndarray, num_masks: int, batch_size: int, resize: str, seed: int = 0,
                  predict: bool | str = True):
    """The reference RISE code's approach: each mask upsampled and cropped on its own, then batched predict.

    With ``predict="each"`` every masked image is also predicted on its own inside the loop (a fully per-mask
    loop: resize, mask, predict one image, accumulate).
    """
    import tensorflow as tf
    from PIL import Image

    size, cells, keep = x.shape[0], 8, 0.5
    cell_size = math.ceil(size / cells)
    up_size = cell_size * (cells + 1)

    if resize == "skimage":  # imported once, outside the timed per-mask work
        from skimage.transform import resize as skimage_resize

    def resize_one(grid):
        if resize == "skimage":  # the RISE authors' reference code: order-1 spline, reflected edges
            return skimage_resize(grid, (up_size, up_size), order=1, mode="reflect", anti_aliasing=False)
        if resize == "pil":
            return np.asarray(Image.fromarray(grid).resize((up_size, up_size), Image.Resampling.BILINEAR))
        return tf.image.resize(grid[..., None], (up_size, up_size), method="bilinear").numpy()[..., 0]

    def run():
        rng = np.random.default_rng(seed)
        grids = (rng.random((num_masks, cells, cells)) < keep).astype(np.float32)
        masks = np.empty((num_masks, size, size), dtype=np.float32)
        saliency = np.zeros((size, size), dtype=np.float32)
        for i in range(num_masks):
            dy, dx = rng.integers(0, cell_size, size=2)
            masks[i] = resize_one(grids[i])[dy:dy + size, dx:dx + size]
            if predict == "each":
                score = np.asarray(model.predict_on_batch(x[None] * masks[i][None, ..., None]))[0, 0]
                saliency += score * masks[i]
        if predict == "each":
            return saliency / num_masks / keep
        if not predict:
            return masks
        masked = x[None] * masks[..., None]
        if predict == "per-batch":  # as the reference code: one model.predict call per batch
            predictions = np.concatenate([model.predict(masked[start:start + batch_size], verbose=0)
                                          for start in range(0, num_masks, batch_size)])
        else:
            predictions = model.predict(masked, batch_size=batch_size, verbose=0)
        saliency = predictions[:, 0] @ masks.reshape(num_masks, -1)
        return saliency.reshape(size, size) / num_masks / keep

    return run


def forward_backward(model, x: np.ndarray, class_index: int):
    import tensorflow as tf

    seed_input = tf.constant(x[None])

    def run():
        with tf.GradientTape() as tape:
            tape.watch(seed_input)
            score = model(seed_input, training=False)[:, class_index]
        return tape.gradient(score, seed_input).numpy()

    return run


def measure(name: str, args) -> None:
    """Measures and prints the table of one model."""
    from timl.xai import explain_array
    from timl.xai.gradcam import gradcam
    from timl.xai.rise import rise

    build, layer = MODELS[name]
    model = build(args.size)
    x = np.random.default_rng(0).random((args.size, args.size, 3)).astype(np.float32)
    n, batch, repeats = args.num_masks, args.batch_size, args.repeats
    scale = n / args.loop_masks

    t_rise, t_forwards, rise_ratio = paired_times(
        lambda: rise(model, x[None], 0, num_masks=n, batch_size=batch, seed=0),
        batched_forwards(model, x, n, batch), repeats)
    t_masks = best_time(vectorised_masks(args.size, n, batch), repeats)
    loops = {}
    for resize in ("pil", "tf"):
        loops[resize] = best_time(per_mask_loop(model, x, args.loop_masks, batch, resize), repeats) * scale
        loops[f"{resize} masks"] = best_time(
            per_mask_loop(model, x, args.loop_masks, batch, resize, predict=False), repeats) * scale
    try:
        import skimage  # noqa: F401  (the bench extra: pip install -e '.[bench]')
    except ImportError:
        print("scikit-image is not installed (pip install -e '.[bench]'): the reference-code loop is skipped")
    else:
        loops["reference"] = best_time(
            per_mask_loop(model, x, args.loop_masks, batch, "skimage", predict="per-batch"), repeats) * scale
        loops["reference masks"] = best_time(
            per_mask_loop(model, x, args.loop_masks, batch, "skimage", predict=False), repeats) * scale
    loops["each"] = best_time(per_mask_loop(model, x, args.loop_masks, batch, "pil", predict="each"), 1) * scale
    explain_array(model, x, "gradcam", class_index=0)  # builds and caches the prepared model
    t_gradcam, t_fb, gradcam_ratio = paired_times(lambda: gradcam(model, x[None], 0, layer),
                                                  forward_backward(model, x, 0), repeats * 10)

    print(f"\n### {name}: {args.size} px, {model.count_params():,} parameters; RISE N={n}, batch {batch}; "
          f"per-mask loops measured on {args.loop_masks} masks and scaled to N\n")
    print("| measure | time (s) | ratio | target |")
    print("| --- | --- | --- | --- |")
    print(f"| RISE, N masks | {t_rise:.3f} | | |")
    print(f"| N batched forward passes | {t_forwards:.3f} | RISE / forwards = {rise_ratio:.2f} | <= 1.2 |")
    for resize, label in (("pil", "PIL"), ("tf", "tf.image.resize")):
        print(f"| per-mask loop ({label} resize) + batched predict | {loops[resize]:.3f} | "
              f"loop / RISE = {loops[resize] / t_rise:.2f} | >= 5 |")
    if "reference" in loops:
        print(f"| RISE reference code (scikit-image resize per mask, one model.predict per batch) | "
              f"{loops['reference']:.3f} | loop / RISE = {loops['reference'] / t_rise:.2f} | >= 5 |")
    print(f"| per-mask loop (PIL resize, one prediction per mask) | {loops['each']:.3f} | "
          f"loop / RISE = {loops['each'] / t_rise:.2f} | >= 5 |")
    slowest_loop = max(loops[key] for key in ("pil", "tf", "reference") if key in loops)
    print(f"| upper bound for any RISE that runs N forward passes: slowest batched loop / forwards | | "
          f"{slowest_loop / t_forwards:.2f} | |")
    print(f"| mask generation only, ours (vectorised) | {t_masks:.3f} | | |")
    for resize, label in (("pil", "PIL"), ("tf", "tf.image.resize"), ("reference", "scikit-image")):
        if f"{resize} masks" not in loops:
            continue
        masks = loops[f"{resize} masks"]
        print(f"| mask generation only, per-mask loop ({label}) | {masks:.3f} | "
              f"loop / ours = {masks / t_masks:.1f} | |")
    print(f"| Grad-CAM ({layer}) | {t_gradcam:.4f} | | |")
    print(f"| one forward + backward | {t_fb:.4f} | Grad-CAM / (fwd+bwd) = {gradcam_ratio:.2f} | <= 3 |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg,tiny", help="comma-separated: vgg, tiny")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--num-masks", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--loop-masks", type=int, default=200, help="masks of the per-mask loops (scaled to N)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    for name in args.models.split(","):
        measure(name.strip(), args)


if __name__ == "__main__":
    main()
