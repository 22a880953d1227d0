"""Tests of timl.xai: every explanation method on tiny models, rendering, errors, nested backbones."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from timl.errors import ConfigError, ModelError

SMALL_PARAMS = {"rise": {"num_masks": 64, "batch_size": 32}, "scorecam": {"max_channels": 4},
                "smoothgrad": {"smooth_samples": 3}}


def quadrant_model():
    """A 32 px softmax model whose output depends only on the top-left 16x16 quadrant of its input.

    Cropping2D keeps the quadrant, ZeroPadding2D puts it back in place, and a bias-free ReLU convolution keeps
    the feature maps zero elsewhere; fixed weights make the class-0 score rise with the quadrant's brightness.
    """
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Cropping2D(((0, 16), (0, 16)))(inputs)
    x = keras.layers.ZeroPadding2D(((0, 16), (0, 16)))(x)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", use_bias=False, name="conv",
                            kernel_initializer=keras.initializers.Constant(1 / 27))(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="scores",
                                 kernel_initializer=keras.initializers.Constant(np.array([[8.0, -8.0]] * 4)),
                                 bias_initializer=keras.initializers.Constant([-2.0, 2.0]))(x)
    return keras.Model(inputs, outputs)


def nested_model(multi_label: bool = False, size: int = 16):
    """A VGG-like backbone nested as one layer (like ``VGG16(include_top=False)`` used as a layer)."""
    import keras

    keras.utils.set_random_seed(1)
    backbone_input = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="block1_conv1")(backbone_input)
    x = keras.layers.MaxPooling2D(name="block1_pool")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="block2_conv1")(x)
    backbone = keras.Model(backbone_input, x, name="backbone")
    inputs = keras.Input((size, size, 3))
    y = keras.layers.Flatten()(backbone(inputs))
    y = keras.layers.Dense(8, activation="relu")(y)
    outputs = keras.layers.Dense(3, activation="sigmoid" if multi_label else "softmax", name="scores")(y)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def quadrant():
    return quadrant_model()


@pytest.fixture(scope="module")
def nested():
    return nested_model()


@pytest.fixture(scope="module")
def nested_ml():
    return nested_model(multi_label=True)


@pytest.fixture
def image() -> Image.Image:
    """A non-square 40x24 RGB image."""
    pixels = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _random_input(size: int = 32, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((size, size, 3)).astype(np.float32)


def _quadrant_masses(saliency: np.ndarray) -> list[float]:
    half = saliency.shape[0] // 2
    total = float(saliency.sum())
    return [float(saliency[rows, cols].sum()) / total
            for rows in (slice(0, half), slice(half, None)) for cols in (slice(0, half), slice(half, None))]


@pytest.mark.parametrize("method,params", [("gradcam", {}), ("rise", {"num_masks": 1000})])
def test_saliency_lies_where_the_model_looks(quadrant, method, params):
    from timl.xai import explain_array

    result = explain_array(quadrant, _random_input(), method, class_index=0, seed=0, **params)
    masses = _quadrant_masses(result.saliency)
    assert masses[0] == max(masses)
    assert masses[0] > 0.35  # a uniform map gives 0.25
    if method == "gradcam":
        assert masses[0] > 0.9


def test_explanation_has_the_original_size(quadrant, image):
    from timl.xai import explain

    explanation = explain(quadrant, image, "gradcam")
    assert explanation.saliency.shape == (24, 40)
    assert explanation.saliency.dtype == np.float32
    assert 0.0 <= explanation.saliency.min() and explanation.saliency.max() <= 1.0
    assert explanation.grey.mode == "L" and explanation.heatmap.mode == "RGB"
    assert explanation.composite.mode == "RGB"
    assert explanation.grey.size == explanation.heatmap.size == explanation.composite.size == (40, 24)
    assert explanation.method == "gradcam" and explanation.layer == "conv"
    assert explanation.class_index in (0, 1) and 0.0 <= explanation.score <= 1.0
    assert explanation.seconds > 0.0


@pytest.mark.parametrize("multi_label", [False, True], ids=["softmax", "sigmoid"])
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam", "smoothgrad", "rise"])
def test_every_method_runs(method, multi_label, nested, nested_ml):
    from timl.xai import EXPLAINERS, explain_array

    model = nested_ml if multi_label else nested
    result = explain_array(model, _random_input(16), method, class_index=2, seed=0, **SMALL_PARAMS.get(method, {}))
    assert set(EXPLAINERS) >= {method}
    assert result.saliency.shape == (16, 16) and result.saliency.dtype == np.float32
    assert 0.0 <= result.saliency.min() and result.saliency.max() <= 1.0
    assert result.class_index == 2
    expected_layer = "block2_conv1" if EXPLAINERS[method].uses_layer else None
    assert result.layer == expected_layer
    probabilities = np.asarray(model(_random_input(16)[None], training=False))[0]
    assert result.score == pytest.approx(float(probabilities[2]), rel=1e-5)


def test_registry_lists_every_method():
    from timl.xai import list_explainers

    assert list_explainers() == ["gradcam", "gradcam++", "scorecam", "smoothgrad", "rise"]


def test_default_class_is_the_predicted_one(nested):
    from timl.xai import explain_array

    x = _random_input(16)
    predicted = int(np.argmax(np.asarray(nested(x[None], training=False))[0]))
    assert explain_array(nested, x, "gradcam").class_index == predicted


@pytest.mark.parametrize("method,params", [("rise", {"num_masks": 50}), ("smoothgrad", {"smooth_samples": 2})])
def test_random_methods_are_reproducible_with_a_seed(nested, method, params):
    from timl.xai import explain_array

    x = _random_input(16)
    first = explain_array(nested, x, method, class_index=1, seed=7, **params).saliency
    second = explain_array(nested, x, method, class_index=1, seed=7, **params).saliency
    other = explain_array(nested, x, method, class_index=1, seed=8, **params).saliency
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_layer_is_found_inside_a_nested_backbone(nested):
    from timl.xai import conv_layer_names, explain_array, last_conv_layer

    assert conv_layer_names(nested) == ["block1_conv1", "block1_pool", "block2_conv1"]
    assert last_conv_layer(nested) == "block2_conv1"
    result = explain_array(nested, _random_input(16), "gradcam", layer="block1_conv1", class_index=0)
    assert result.layer == "block1_conv1" and result.saliency.max() > 0.0


def test_the_callers_model_is_not_modified(nested):
    from timl.xai import explain_array

    x = _random_input(16)[None]
    before = np.asarray(nested(x, training=False))
    weights = [w.copy() for w in nested.get_weights()]
    layers = [layer.name for layer in nested.layers]
    for method in ("gradcam", "scorecam", "smoothgrad"):
        explain_array(nested, x[0], method, class_index=0, **SMALL_PARAMS.get(method, {}))
    np.testing.assert_array_equal(np.asarray(nested(x, training=False)), before)
    assert [layer.name for layer in nested.layers] == layers
    assert nested.get_layer("scores").activation.__name__ == "softmax"
    for old, new in zip(weights, nested.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_explanations_follow_later_weight_changes():
    from timl.xai import clear_cache, explain_array

    model = nested_model()
    x = _random_input(16)
    explain_array(model, x, "gradcam", class_index=0)  # caches the prepared model
    scores = model.get_layer("scores")
    kernel, bias = scores.get_weights()
    scores.set_weights([-kernel, bias])
    conv = model.get_layer("backbone").get_layer("block2_conv1")
    conv.set_weights([w * 0.5 for w in conv.get_weights()])
    cached = explain_array(model, x, "gradcam", class_index=0).saliency
    clear_cache()
    fresh = explain_array(model, x, "gradcam", class_index=0).saliency
    np.testing.assert_allclose(cached, fresh, atol=1e-6)


def test_image_sources_give_the_same_explanation(quadrant, image, tmp_path):
    from timl.xai import explain

    path = tmp_path / "image.png"
    image.save(path)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    maps = [explain(quadrant, source, "gradcam", class_index=0).saliency
            for source in (image, path, str(path), buffer.getvalue())]
    for saliency in maps[1:]:
        np.testing.assert_array_equal(saliency, maps[0])


def test_preprocessing_can_be_given(quadrant, image):
    from timl.images import Preprocessing
    from timl.xai import explain

    explanation = explain(quadrant, image, "gradcam", preprocessing=Preprocessing(32, "nearest", "RGB"))
    assert explanation.composite.size == (40, 24)


def test_colormap_and_alpha(quadrant, image):
    from timl.xai import explain

    grey_map = explain(quadrant, image, "gradcam", class_index=0, colormap="gray", alpha=1.0)
    heat = np.asarray(grey_map.heatmap, dtype=int)
    assert np.abs(heat[..., 0] - heat[..., 2]).max() <= 1  # a grey colormap gives grey pixels
    np.testing.assert_array_equal(np.asarray(grey_map.composite), np.asarray(grey_map.heatmap))
    plain = explain(quadrant, image, "gradcam", class_index=0, alpha=0.0)
    np.testing.assert_array_equal(np.asarray(plain.composite), np.asarray(image))
    jet = np.asarray(plain.heatmap, dtype=int)
    assert np.abs(jet[..., 0] - jet[..., 2]).max() > 100


def test_render_resizes_the_map(image):
    from timl.xai import render

    saliency = np.zeros((8, 8), dtype=np.float32)
    saliency[:4, :4] = 1.0
    grey, heatmap, composite = render(image, saliency)
    assert grey.size == heatmap.size == composite.size == image.size
    grey_pixels = np.asarray(grey)
    assert grey_pixels[0, 0] == 255 and grey_pixels[-1, -1] == 0


@pytest.mark.parametrize("kwargs,error,match", [
    ({"method": "lime"}, ModelError, r"Expected one of: gradcam, gradcam\+\+, scorecam, smoothgrad, rise\. "
                                     r"Received: method='lime'"),
    ({"method": "gradcam", "layer": "block9_conv9"}, ModelError,
     r"Expected one of: block1_conv1, block1_pool, block2_conv1\. Received: layer='block9_conv9'"),
    ({"method": "gradcam", "layer": "scores"}, ModelError, r"Unknown layer"),
    ({"method": "gradcam", "class_index": 3}, ModelError, r"3 classes.*Received: class_index=3"),
    ({"method": "rise", "class_index": -1}, ModelError, r"3 classes.*Received: class_index=-1"),
    ({"method": "gradcam", "class_index": "1"}, ModelError, r"Received: class_index='1'"),
    ({"method": "rise", "masks": 10}, ModelError, r"Expected: num_masks, mask_cells, keep_probability, batch_size"),
    ({"method": "gradcam", "num_masks": 10}, ModelError, r"Expected: none"),
    ({"method": "rise", "num_masks": 0}, ConfigError, r"num_masks=0"),
    ({"method": "rise", "keep_probability": 1.5}, ConfigError, r"keep_probability=1.5"),
    ({"method": "rise", "mask_cells": 17}, ConfigError, r"mask_cells=17"),
])
def test_errors(nested, kwargs, error, match):
    from timl.xai import explain_array

    with pytest.raises(error, match=match):
        explain_array(nested, _random_input(16), **kwargs)


def test_input_and_render_errors(nested, image):
    from timl.xai import explain, explain_array

    with pytest.raises(ModelError, match=r"\(16, 16, 3\).*Received: shape=\(32, 32, 3\)"):
        explain_array(nested, _random_input(32), "gradcam")
    with pytest.raises(ConfigError, match="Received: colormap='nope'"):
        explain(nested, image, "gradcam", colormap="nope")
    with pytest.raises(ConfigError, match="Received: alpha=2"):
        explain(nested, image, "gradcam", alpha=2)


def test_layer_is_ignored_by_input_methods(nested):
    from timl.xai import explain_array

    result = explain_array(nested, _random_input(16), "rise", layer="block1_conv1", num_masks=20)
    assert result.layer is None


def test_a_model_without_convolutions_needs_a_layer():
    import keras

    from timl.xai import explain_array

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ModelError, match="no convolutional layer"):
        explain_array(model, _random_input(8), "gradcam")
    assert explain_array(model, _random_input(8), "rise", num_masks=10, mask_cells=4).saliency.shape == (8, 8)


def test_importing_timl_xai_is_cheap():
    import subprocess
    import sys

    code = ("import sys, timl.xai; heavy = [m for m in ('tensorflow', 'keras', 'tf_keras_vis', 'mlflow') "
            "if m in sys.modules]; print(heavy)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


@pytest.mark.slow
@pytest.mark.parametrize("method_name", ["VGG16", "VGG16-fc2k-ml"])
def test_training_registry_models(method_name, image):
    from timl.models import create_model
    from timl.xai import explain

    model = create_model(method_name, 3, 32, weights="none", seed=0)
    for method, params in (("gradcam", {}), ("rise", {"num_masks": 20})):
        explanation = explain(model, image, method, class_index=1, seed=0, **params)
        assert explanation.composite.size == (40, 24)
        assert explanation.layer == ("block5_conv3" if method == "gradcam" else None)
        assert np.isfinite(explanation.saliency).all()


@pytest.mark.parametrize("nesting", ["sequential", "sequential inside functional"])
def test_sequential_models(nesting):
    import keras

    from timl.xai import explain_array

    keras.utils.set_random_seed(2)
    body = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="seq_conv"),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    model = body
    if nesting != "sequential":
        inputs = keras.Input((16, 16, 3))
        model = keras.Model(inputs, body(inputs))
    for method in ("gradcam", "scorecam", "rise"):
        result = explain_array(model, _random_input(16), method, class_index=1, **SMALL_PARAMS.get(method, {}))
        assert result.saliency.shape == (16, 16)
    assert result.layer is None and body.layers[-1].activation.__name__ == "softmax"
