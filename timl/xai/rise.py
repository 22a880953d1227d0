"""RISE: randomized input sampling, our own vectorised implementation.

All masks of a batch are made at once: random keep/drop cells, then bilinear upsampling to
``cell_size * (mask_cells + 1)`` pixels and a random shift of each mask, both as two batched matrix products
(bilinear upsampling is separable and linear; a shifted crop is a block of rows of its matrix).
Masking, prediction and the score-weighted sum of the masks run in one compiled TensorFlow function per model,
so an explanation with N masks costs about N batched forward passes.
"""

from __future__ import annotations

import math
import weakref

import numpy as np

_STEPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def interpolation_matrix(cells: int, up_size: int) -> np.ndarray:
    """The (up_size, cells) matrix of 1-D bilinear upsampling (half-pixel centres, edges clamped).

    Bilinear upsampling is separable and linear, so an upsampled grid is ``R @ grid @ R.T``; a shifted crop
    of it takes a block of rows of ``R``.
    """
    source = np.clip((np.arange(up_size) + 0.5) * cells / up_size - 0.5, 0.0, cells - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, cells - 1)
    weight = source - low
    matrix = np.zeros((up_size, cells), dtype=np.float32)
    np.add.at(matrix, (np.arange(up_size), low), 1.0 - weight)
    np.add.at(matrix, (np.arange(up_size), high), weight)
    return matrix


def upsample_masks(grid, shifts, size: int):
    """All masks of a batch at once: bilinear upsampling of the cell grids and a shifted crop of each.

    Each mask is ``R[dy:dy+size] @ grid @ R[dx:dx+size].T`` with ``R`` from :func:`interpolation_matrix` for
    ``cell_size * (cells + 1)`` pixels: two batched matrix products, no per-mask work.

    Args:
        grid: float32 (batch, cells, cells) of 0/1.
        shifts: int32 (batch, 2), each mask's (row, column) offset in [0, cell_size).
        size: the side of the masks, in pixels.

    Returns:
        A float32 tensor (batch, size, size) in [0, 1].
    """
    import tensorflow as tf

    cells = int(grid.shape[1])
    cell_size = math.ceil(size / cells)
    matrix = tf.constant(interpolation_matrix(cells, cell_size * (cells + 1)))
    offsets = tf.range(size, dtype=tf.int32)[None, :]
    rows = tf.gather(matrix, shifts[:, 0:1] + offsets)  # (batch, size, cells)
    cols = tf.gather(matrix, shifts[:, 1:2] + offsets)
    return tf.matmul(tf.matmul(rows, grid), cols, transpose_b=True)


def _rise_step(model):
    """The compiled step ``(x, grid, shifts, weights, class_index) -> (masks weighted by score, summed)``."""
    step = _STEPS.get(model)
    if step is not None:
        return step
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(x, grid, shifts, weights, class_index):
        masks = upsample_masks(grid, shifts, x.shape[1])
        probabilities = model(x * masks[..., None], training=False)
        scores = tf.gather(probabilities, class_index, axis=1) * weights
        return tf.tensordot(scores, masks, axes=1)

    _STEPS[model] = step
    return step


def generate_mask_batch(rng: np.random.Generator, batch: int, size: int, mask_cells: int,
                        keep_probability: float) -> tuple[np.ndarray, np.ndarray]:
    """Random cell grids and shifts for ``batch`` RISE masks of ``size`` pixels.

    Returns:
        ``grid`` float32 (batch, mask_cells, mask_cells) of 0/1 and ``shifts`` int32 (batch, 2) in
        [0, cell_size), the (row, column) offset of each mask's crop.
    """
    cell_size = math.ceil(size / mask_cells)
    grid = (rng.random((batch, mask_cells, mask_cells)) < keep_probability).astype(np.float32)
    shifts = rng.integers(0, cell_size, size=(batch, 2)).astype(np.int32)
    return grid, shifts


def _check_params(num_masks, mask_cells, keep_probability, batch_size, size) -> None:
    from timl.errors import ConfigError

    checks = (("num_masks", num_masks, "an integer of at least 1", 1, None),
              ("mask_cells", mask_cells, f"an integer from 1 to the model input size {size}", 1, size),
              ("batch_size", batch_size, "an integer of at least 1", 1, None))
    for name, value, expected, low, high in checks:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (
                high is not None and value > high):
            raise ConfigError(f"Invalid RISE parameter {name}: expected {expected}. Received: {name}={value!r}")
    if not isinstance(keep_probability, (int, float)) or not 0.0 < keep_probability <= 1.0:
        raise ConfigError("Invalid RISE parameter keep_probability: expected a number in (0, 1]. "
                          f"Received: keep_probability={keep_probability!r}")


def rise(model, x: np.ndarray, class_index: int, layer: None = None, seed: int | None = None, *,
         num_masks: int = 2000, mask_cells: int = 8, keep_probability: float = 0.5,
         batch_size: int = 100) -> np.ndarray:
    """RISE: the average of random masks, each weighted by the class probability of the masked image.

    Args:
        model: a Keras model.
        x: the model input, float32 (1, S, S, 3).
        class_index: the class to explain.
        layer: unused (the input is explained).
        seed: seed of the masks, for reproducible maps; ``None`` draws fresh masks.
        num_masks: how many masks (the paper's N). Defaults to 2000.
        mask_cells: cells per side of a mask's grid before upsampling (the paper's s). Defaults to 8.
        keep_probability: probability that a cell is kept (the paper's p1). Defaults to 0.5.
        batch_size: masked images per prediction batch. Defaults to 100.

    Returns:
        float32 (S, S) in [0, 1]: ``sum_i score_i * mask_i / (N * p1)``, min-max scaled.

    References:
        Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models",
        BMVC 2018.
    """
    from timl.xai.gradcam import unit_range

    size = int(x.shape[1])
    _check_params(num_masks, mask_cells, keep_probability, batch_size, size)
    num_masks, batch_size, mask_cells = int(num_masks), int(batch_size), int(mask_cells)
    batch = max(1, min(batch_size, num_masks))
    rng = np.random.default_rng(seed)
    step = _rise_step(model)
    total = np.zeros((size, size), dtype=np.float64)
    for start in range(0, num_masks, batch):
        grid, shifts = generate_mask_batch(rng, batch, size, mask_cells, keep_probability)
        weights = (np.arange(batch) < num_masks - start).astype(np.float32)  # padding of the last batch
        total += step(x, grid, shifts, weights, np.int32(class_index)).numpy()
    return unit_range(total / (num_masks * keep_probability))
