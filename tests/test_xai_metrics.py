"""Tests of timl.xai.metrics: the deletion and insertion metrics of the RISE paper."""

from __future__ import annotations

import numpy as np
import pytest

from timl.errors import ConfigError


def brightness_model(size: int = 16):
    """A softmax model whose class-0 score rises with the brightness of the top-left quadrant only."""
    import keras

    half = size // 2
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Cropping2D(((0, size - half), (0, size - half)))(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax",
                                 kernel_initializer=keras.initializers.Constant(np.array([[4.0, -4.0]] * 3)),
                                 bias_initializer=keras.initializers.Constant([-3.0, 3.0]))(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def model():
    return brightness_model()


@pytest.fixture
def bright() -> np.ndarray:
    return np.full((16, 16, 3), 0.9, dtype=np.float32)


def _top_left(size: int = 16) -> np.ndarray:
    saliency = np.zeros((size, size), dtype=np.float32)
    saliency[: size // 2, : size // 2] = 1.0
    return saliency


def test_auc_of_simple_curves():
    from timl.xai.metrics import auc

    assert auc([0.3, 0.3, 0.3]) == pytest.approx(0.3)
    assert auc(np.linspace(1.0, 0.0, 11)) == pytest.approx(0.5)
    assert auc([1.0, 0.0, 0.0, 0.0, 0.0]) == pytest.approx(0.125)
    assert auc([0.7]) == pytest.approx(0.7)


def test_a_faithful_map_scores_better_than_its_opposite(model, bright):
    from timl.xai.metrics import deletion_auc, insertion_auc

    good, bad = _top_left(), 1.0 - _top_left()
    assert deletion_auc(model, bright, good, 0) < deletion_auc(model, bright, bad, 0) - 0.2
    # a blurred constant image is the image itself: insert into black instead
    assert insertion_auc(model, bright, good, 0, substrate="zeros") > insertion_auc(
        model, bright, bad, 0, substrate="zeros") + 0.2


def test_deletion_curve_ends(model, bright):
    from timl.xai.metrics import deletion_curve, score_curve

    curve = deletion_curve(model, bright, _top_left(), 0, steps=8)
    assert curve.shape == (9,)
    first, last = score_curve(model, np.stack([bright, np.zeros_like(bright)]), 0)
    assert curve[0] == pytest.approx(first, rel=1e-5)
    assert curve[-1] == pytest.approx(last, rel=1e-5)
    assert curve[2] == pytest.approx(last, rel=1e-5)  # the quadrant (1/4 of the pixels) is gone after 2 of 8 steps


def test_insertion_starts_from_a_blurred_copy(model, bright):
    from timl.xai.metrics import SUBSTRATES, insertion_curve, score_curve

    x = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    blurred = SUBSTRATES["blur"](x)
    assert blurred.shape == x.shape and blurred.std() < x.std()
    curve = insertion_curve(model, x, _top_left(), 0, steps=4)
    first, last = score_curve(model, np.stack([blurred, x]), 0)
    assert curve[0] == pytest.approx(first, rel=1e-5) and curve[-1] == pytest.approx(last, rel=1e-5)


def test_steps_are_capped_at_the_number_of_pixels(model):
    from timl.xai.metrics import deletion_curve

    x = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    assert deletion_curve(model, x, _top_left(), 0, steps=10_000).shape == (257,)


def test_saliency_of_another_size_is_resized(model, bright):
    from timl.xai.metrics import deletion_auc

    assert deletion_auc(model, bright, _top_left(64), 0) == pytest.approx(
        deletion_auc(model, bright, _top_left(16), 0), abs=0.02)


def test_faithfulness_of_an_explanation(model, bright):
    from timl.xai import explain_array
    from timl.xai.metrics import faithfulness

    x = bright[None]
    saliency = explain_array(model, x[0], "rise", class_index=0, seed=0, num_masks=200, mask_cells=4).saliency
    result = faithfulness(model, x, saliency, 0, steps=16)
    assert set(result) == {"deletion_auc", "insertion_auc"}
    assert 0.0 <= result["deletion_auc"] <= 1.0 and 0.0 <= result["insertion_auc"] <= 1.0
    assert result["deletion_auc"] < result["insertion_auc"]


@pytest.mark.parametrize("kwargs,match", [
    ({"steps": 0}, "Received: steps=0"),
    ({"steps": 2.5}, "Received: steps=2.5"),
    ({"substrate": "noise"}, r"Expected one of: zeros, blur\. Received: substrate='noise'"),
])
def test_errors(model, bright, kwargs, match):
    from timl.xai.metrics import deletion_auc

    with pytest.raises(ConfigError, match=match):
        deletion_auc(model, bright, _top_left(), 0, **kwargs)


def test_image_shape_error(model):
    from timl.xai.metrics import insertion_auc

    with pytest.raises(ConfigError, match=r"Received: shape=\(16, 16\)"):
        insertion_auc(model, np.zeros((16, 16), dtype=np.float32), _top_left(), 0)
