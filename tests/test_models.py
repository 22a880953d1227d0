"""Tests of timl.models: the method registry, every method's model, custom objects, weights and saving."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from require_all import require
from timl import models
from timl.errors import MissingFileError, ModelError

ORIGINAL_TIML_METHODS = (
    "VGG16", "VGG16-fc2k-ml", "VGG16-fc4k-ml", "VGG16-fc8k-ml", "VGG16-fc2k-do75-ml", "VGG16-fc4k-do75-ml",
    "VGG16-1Xfc2k-do75-ml", "VGG16-3Xfc4k-ml", "VGG16-fc4k-ml-lossf1", "RESNET50", "RESNET50-fc4k-ml",
    "DenseNet169-fc2k-ml", "DenseNet169-fc4k-ml",
)
MODERN_METHODS = ("MobileNetV2", "EfficientNetB0", "EfficientNetV2S", "ConvNeXtTiny", "SmallCNN")


def _tiny_pretrained_spec() -> models.MethodSpec:
    """A small multi-label method with a preprocessing layer, the original's mean F1 and (1 - F1) x BCE loss
    (MobileNetV2, ~2 M params)."""
    return dataclasses.replace(models.get_method("MobileNetV2"), name="tiny-ml-lossf1", multi_label=True,
                               loss="f1_bce", optimizer="nadam", quality_metric="val_mean_f1", head=(16,),
                               metrics=("argmax_accuracy", "binary_accuracy", "mean_f1"))


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)


# --- Registry ---

def test_registry_has_every_method_and_valid_entries():
    names = [spec.name for spec in models.list_methods()]
    assert set(ORIGINAL_TIML_METHODS + MODERN_METHODS) <= set(names)
    assert names == sorted(names, key=str.lower) and len(names) == len(set(names))
    for spec in models.list_methods():
        assert spec.backbone in models.BACKBONES
        assert spec.loss in models.LOSSES and spec.optimizer in models.OPTIMIZERS
        assert set(spec.metrics) <= set(models.METRICS) and set(spec.callbacks) <= set(models.CALLBACKS)
        assert spec.pooling in models.POOLINGS and spec.quality_mode == "max"
        assert spec.quality_metric == ("val_mean_f1" if spec.multi_label else "val_accuracy")
        assert spec.multi_label == ("-ml" in spec.name)
        assert spec.default_weights == ("none" if spec.backbone == "smallcnn" else "imagenet")
        assert spec.description and "\n" not in spec.description


@pytest.mark.parametrize("name, head, dropout, loss, optimizer, lr", [
    ("VGG16", (2048, 2048), 0.5, "categorical_crossentropy", "sgd_nesterov_decay", 1e-5),
    ("VGG16-fc4k-ml", (4096, 4096), 0.5, "f1_bce", "nadam", 1e-5),
    ("VGG16-fc8k-ml", (8192, 8192), 0.5, "f1_bce", "nadam", 1e-5),
    ("VGG16-1Xfc2k-do75-ml", (2048,), 0.75, "f1_bce", "nadam", 1e-5),
    ("VGG16-3Xfc4k-ml", (4096, 4096, 4096), 0.5, "f1_bce", "nadam", 1e-5),
    ("VGG16-fc4k-ml-lossf1", (4096, 4096), 0.5, "f1_bce", "nadam", 1e-5),
    ("RESNET50", (2048, 2048), 0.5, "categorical_crossentropy", "sgd_nesterov_decay", 1e-5),
    ("RESNET50-fc4k-ml", (4096, 4096), 0.5, "binary_crossentropy", "nadam", 1e-5),
    ("DenseNet169-fc2k-ml", (2048, 2048), 0.5, "binary_crossentropy", "nadam", 1e-5),
    ("EfficientNetB0", (), 0.0, "categorical_crossentropy", "adam", 1e-4),
    ("SmallCNN", (128,), 0.0, "categorical_crossentropy", "adam", 1e-3),
])
def test_method_hyper_parameters(name, head, dropout, loss, optimizer, lr):
    spec = models.get_method(name)
    assert (spec.head, spec.dropout, spec.loss, spec.optimizer, spec.lr) == (head, dropout, loss, optimizer, lr)


def test_alias_resolves_to_the_same_method():
    assert models.get_method("VGG16flat") is models.get_method("VGG16")
    assert "VGG16flat" in models.METHODS
    assert "VGG16flat" not in [spec.name for spec in models.list_methods()]


@pytest.mark.parametrize("name", ["VGG17", "vgg16-fc4k-ml", "", None])
def test_unknown_method_lists_the_names(name):
    with pytest.raises(ModelError, match=r"Unknown method\. Expected one of: .*Received: method=") as info:
        models.get_method(name)
    message = str(info.value)
    assert all(method in message for method in models.METHODS)


def test_unknown_method_suggests_a_close_name():
    with pytest.raises(ModelError, match="Did you mean 'VGG16-fc4k-ml'"):
        models.get_method("VGG16-fc4k-mll")


def test_import_does_not_import_tensorflow():
    result = _run_python("""
        import sys, timl.models
        assert timl.models.get_method('SmallCNN').lr == 1e-3
        print(sorted(name for name in ('tensorflow', 'keras') if name in sys.modules))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- Every method builds, predicts and trains one step ---

def _method_params():
    for spec in models.list_methods():
        marks = () if spec.backbone == "smallcnn" else (pytest.mark.slow,)
        yield pytest.param(spec.name, marks=marks, id=spec.name)


@pytest.mark.parametrize("name", list(_method_params()))
def test_every_method_builds_predicts_and_trains_one_step(name):
    spec = models.get_method(name)
    num_classes, imgsize = 3, 32
    model = models.create_model(name, num_classes, imgsize, weights="none", seed=1)
    assert isinstance(model, keras.Model) and not isinstance(model, keras.Sequential)
    _check_against_readme(model, spec)
    assert model.inputs[0].name == "image" and tuple(model.inputs[0].shape) == (None, imgsize, imgsize, 3)
    assert model.inputs[0].dtype == "float32"
    assert (models.BACKBONES[spec.backbone].preprocessing is None) == (
        "imagenet_preprocessing" not in [layer.name for layer in model.layers])
    conv_name = models.last_conv_layer_name(model)
    assert len(model.get_layer(conv_name).output.shape) == 4

    images = np.random.default_rng(0).random((2, imgsize, imgsize, 3), dtype=np.float32)
    # Before training: with random weights, BatchNormalization's initial statistics keep outputs finite.
    predictions = np.asarray(model(images, training=False))
    assert predictions.shape == (2, num_classes)
    if spec.multi_label:
        assert np.all((predictions >= 0) & (predictions <= 1))
    else:
        np.testing.assert_allclose(predictions.sum(axis=1), 1.0, rtol=1e-5)

    model.run_eagerly = True  # one step: tracing big backbones costs minutes on CPU, eager seconds
    labels = np.eye(num_classes, dtype=np.float32)[[0, 2]]
    logs = model.train_on_batch(images, labels, return_dict=True)
    assert np.isfinite(logs["loss"]) and "accuracy" in logs
    assert ("mean_f1" in logs) == spec.multi_label


def test_vgg16_is_built_flat_for_gradcam():
    model = models.create_model("VGG16", 2, 32, weights="none")
    names = [layer.name for layer in model.layers]
    assert "block5_conv3" in names and models.last_conv_layer_name(model) == "block5_conv3"
    assert names.index("imagenet_preprocessing") < names.index("block1_conv1")
    assert [layer.name for layer in model.layers if layer.name.startswith("head_fc")] == ["head_fc1", "head_fc2"]
    assert isinstance(model.get_layer("head_flatten"), keras.layers.Flatten)


def test_multi_label_compiles_f1_loss_and_metrics():
    model = models.create_model("VGG16-fc4k-ml-lossf1", 4, 32, weights="none")
    assert model.loss is models.f1_bce_loss
    assert model.get_layer("predictions").activation.__name__ == "sigmoid"
    model.run_eagerly = True
    logs = model.evaluate(np.zeros((2, 32, 32, 3), "float32"), np.zeros((2, 4), "float32"), verbose=0,
                          return_dict=True)
    assert {"loss", "accuracy", "binary_accuracy", "mean_f1"} <= set(logs)


def test_sample_mean_f1_is_the_originals_per_image_f1():
    y_true = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=np.float32)
    y_prob = np.array([[0.9, 0.2, 0.4], [0.1, 0.7, 0.8], [0.6, 0.3, 0.1], [0.7, 0.1, 0.9], [0.2, 0.1, 0.3]],
                      dtype=np.float32)
    # per image, outputs rounded: F1 = 2/3, 1, 2/3, 2/3, and 0 for an image without labels or predictions
    metric = models.SampleMeanF1()
    metric.update_state(y_true[:2], y_prob[:2])
    metric.update_state(y_true[2:], y_prob[2:])
    assert metric.name == "mean_f1"
    assert float(metric.result()) == pytest.approx((2 / 3 + 1 + 2 / 3 + 2 / 3 + 0) / 5, rel=1e-5)


def test_f1_bce_loss_is_one_minus_soft_f1_times_bce():
    y_true = np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32)
    y_prob = np.array([[0.8, 0.3, 0.6], [0.4, 0.7, 0.2]], dtype=np.float32)
    tp = (y_true * y_prob).sum(axis=1)
    precision, recall = tp / y_prob.sum(axis=1), tp / y_true.sum(axis=1)
    soft_f1 = 2 * precision * recall / (precision + recall)
    bce = -(y_true * np.log(y_prob) + (1 - y_true) * np.log(1 - y_prob)).mean(axis=1)
    np.testing.assert_allclose(np.asarray(models.f1_bce_loss(y_true, y_prob)), (1 - soft_f1.mean()) * bce,
                               rtol=1e-4)


def test_the_originals_sgd_decays_its_learning_rate_as_keras_2_did():
    model = models.create_model("VGG16", 2, 32, weights="none")
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.nesterov and optimizer.momentum == 0.9
    rate = optimizer._learning_rate
    for step in (0, 1, 10000):
        assert float(rate(step)) == pytest.approx(1e-5 / (1 + 1e-4 * step), rel=1e-6)


def _readme_methods() -> dict[str, dict]:
    """The README's methods table: method -> its cells by column."""
    from helpers import REPO

    lines = (REPO / "README.md").read_text().split("\n## Methods")[1].split("\n## ")[0].splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| ---")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    table = {}
    for row in rows[1:]:
        cells = dict(zip(header, (cell.strip() for cell in row.strip("|").split("|"))))
        table[cells["method"].split(" (alias")[0]] = cells
    return table


def test_the_readme_lists_every_method():
    assert set(_readme_methods()) == {spec.name for spec in models.list_methods()}


def _check_against_readme(model, spec: models.MethodSpec) -> None:
    """The built model's head, output, optimizer, loss and callbacks are what the README's table says."""
    row = _readme_methods()[spec.name]
    pooling, *sizes = [part.strip() for part in row["head"].split(",")]
    pooled = [index for index, layer in enumerate(model.layers)
              if isinstance(layer, (keras.layers.Flatten, keras.layers.GlobalAveragePooling2D))][-1]
    head = model.layers[pooled + 1:]  # what follows the backbone's pooled feature map
    assert type(model.layers[pooled]).__name__ == {"flatten": "Flatten",
                                                   "average pooling": "GlobalAveragePooling2D"}[pooling]
    dense = [layer for layer in head if isinstance(layer, keras.layers.Dense)][:-1]
    assert [str(layer.units) for layer in dense] == sizes, spec.name
    rates = [layer.rate for layer in head if isinstance(layer, keras.layers.Dropout)]
    assert rates == [float(row["dropout"])] * len(sizes) if float(row["dropout"]) else rates == []
    assert model.get_layer("predictions").activation.__name__ == row["output"]
    optimizer = row["optimizer"].split(" lr ")[0]
    assert type(model.optimizer).__name__ == optimizer
    rate = model.optimizer._learning_rate
    initial = float(rate(0)) if callable(rate) else float(np.asarray(rate))
    assert initial == pytest.approx(float(row["optimizer"].split(" lr ")[1].split(",")[0]), rel=1e-6)
    loss = {"categorical cross-entropy": "categorical_crossentropy", "binary cross-entropy": "binary_crossentropy",
            "(1 - F1) x binary cross-entropy": getattr(models, "f1_bce_loss")}[row["loss"]]
    assert model.loss == loss
    callbacks = [type(callback).__name__ for callback in models.method_callbacks(spec)]
    assert (", ".join(callbacks) or "-") == row["callbacks"]


# --- Custom objects ---

@pytest.mark.parametrize("mode, expected", [
    ("caffe", [0.5 * 255 - 103.939, 0.25 * 255 - 116.779, 1.0 * 255 - 123.68]),  # BGR order
    ("torch", [(1.0 - 0.485) / 0.229, (0.25 - 0.456) / 0.224, (0.5 - 0.406) / 0.225]),
    ("tf", [1.0, -0.5, 0.0]),
    ("scale255", [255.0, 63.75, 127.5]),
])
def test_imagenet_preprocessing_modes(mode, expected):
    layer = models.ImagenetPreprocessing(mode=mode)
    pixel = np.array([[[[1.0, 0.25, 0.5]]]], dtype=np.float32)
    np.testing.assert_allclose(np.asarray(layer(pixel))[0, 0, 0], expected, rtol=1e-5)
    assert models.ImagenetPreprocessing.from_config(layer.get_config()).mode == mode


def test_imagenet_preprocessing_refuses_unknown_mode():
    with pytest.raises(ModelError, match=r"Expected one of: caffe, torch, tf, scale255\. Received: mode='bgr'"):
        models.ImagenetPreprocessing(mode="bgr")


def test_mean_f1_matches_sklearn_macro_f1():
    from sklearn.metrics import f1_score

    y_true = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=np.float32)
    y_prob = np.array([[0.9, 0.2, 0.4], [0.1, 0.7, 0.8], [0.6, 0.3, 0.1], [0.7, 0.1, 0.9]], dtype=np.float32)
    metric = models.MeanF1()
    metric.update_state(y_true[:2], y_prob[:2])
    metric.update_state(y_true[2:], y_prob[2:])  # accumulates over batches, like an epoch
    expected = f1_score(y_true, y_prob > 0.5, average="macro")
    assert metric.name == "mean_f1"
    assert float(metric.result()) == pytest.approx(expected, rel=1e-5)


def test_f1_loss_is_zero_when_perfect_and_one_when_all_wrong():
    y_true = np.array([[1, 0], [0, 1]], dtype=np.float32)
    assert float(np.mean(models.f1_loss(y_true, y_true))) == pytest.approx(0.0, abs=1e-6)
    assert float(np.mean(models.f1_loss(y_true, 1.0 - y_true))) == pytest.approx(1.0, abs=1e-6)
    assert np.asarray(models.f1_loss(y_true, y_true)).shape == (2,)


def test_saved_models_reload_with_safe_mode_in_a_fresh_process(tmp_path):
    model = models.create_model(_tiny_pretrained_spec(), 3, 32, weights="none", seed=0)
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "expected.npy", np.asarray(model(images, training=False)))
    model.save(tmp_path / "model.keras")
    model.save(tmp_path / "model.h5")
    result = _run_python(f"""
        import json, numpy as np
        import timl.models
        timl.models.ensure_registered()
        import keras
        images, expected = np.load({str(tmp_path / "images.npy")!r}), np.load({str(tmp_path / "expected.npy")!r})
        out = {{}}
        for name in ("model.keras", "model.h5"):
            model = keras.models.load_model({str(tmp_path)!r} + "/" + name, safe_mode=True)
            got = np.asarray(model(images, training=False))
            out[name] = [float(np.max(np.abs(got - expected))), model.get_layer("imagenet_preprocessing").mode]
        print("RESULT" + json.dumps(out))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT")[-1])
    for name in ("model.keras", "model.h5"):
        assert out[name][0] < 1e-5 and out[name][1] == "tf"


def test_keras_safe_mode_refuses_a_lambda_layer(tmp_path):
    """Documents why TIML has no Lambda layers: safe mode refuses to load them."""
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="(?i)lambda"):
        keras.models.load_model(path, safe_mode=True)


# --- Weights ---

def _imagenet_error_checks(error: ModelError, cache_dir) -> None:
    message = str(error)
    assert message.startswith("Cannot load ImageNet weights for method VGG16: they are not in the Keras cache (")
    assert str(cache_dir) in message
    assert "could not be downloaded (offline?). Use weights=none, or a local .h5 file, or run once online" in message


def test_imagenet_weights_offline_raise_a_clear_error(tmp_path, monkeypatch):
    from keras.src.backend import config
    from keras.src.utils import file_utils

    def offline_get_file(fname, origin=None, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path))
    monkeypatch.setattr(file_utils, "get_file", offline_get_file)
    with pytest.raises(ModelError) as info:
        models.create_model("VGG16", 2, 32, weights="imagenet")
    _imagenet_error_checks(info.value, tmp_path / "models")


def test_imagenet_weights_real_download_fails_fast_offline(tmp_path, monkeypatch):
    require("offline")
    from keras.src.backend import config

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path))  # an empty cache
    with pytest.raises(ModelError) as info:
        models.create_model("VGG16", 2, 32)  # default weights of VGG16: imagenet
    _imagenet_error_checks(info.value, tmp_path / "models")


@pytest.mark.parametrize("weights, error, pattern", [
    ("imagenet", ModelError, r"SmallCNN has no ImageNet weights.*Received: weights='imagenet'"),
    ("random", ModelError, r"Expected one of: default, imagenet, none, or a path.*Received: weights='random'"),
    ("missing/model.h5", MissingFileError, r"not found.*Received: weights='missing/model.h5'"),
])
def test_bad_weights_are_refused(weights, error, pattern):
    with pytest.raises(error, match=pattern):
        models.create_model("SmallCNN", 2, 32, weights=weights)


@pytest.mark.parametrize("num_classes, imgsize, pattern", [
    (0, 32, r"num_classes .* >= 1\. Received: num_classes=0"),
    (2, 16, r"imgsize .* >= 32 .*Received: imgsize=16"),
])
def test_bad_sizes_are_refused(num_classes, imgsize, pattern):
    with pytest.raises(ModelError, match=pattern):
        models.create_model("VGG16", num_classes, imgsize, weights="none")


@pytest.mark.parametrize("filename", ["source.keras", "source.h5", "source.weights.h5"])
def test_weights_from_a_file(tmp_path, filename):
    source = models.create_model("SmallCNN", 3, 32, seed=0)
    path = tmp_path / filename
    source.save_weights(path) if filename.endswith(".weights.h5") else source.save(path)
    same = models.create_model("SmallCNN", 3, 32, weights=str(path), seed=1)
    for expected, got in zip(source.get_weights(), same.get_weights()):
        np.testing.assert_array_equal(expected, got)
    other_classes = models.create_model("SmallCNN", 5, 32, weights=str(path), seed=1)
    np.testing.assert_array_equal(other_classes.get_layer("block1_conv").get_weights()[0],
                                  source.get_layer("block1_conv").get_weights()[0])
    assert other_classes.output.shape[-1] == 5


def _model_with_a_marking_lambda(marker) -> "keras.Model":
    """A SmallCNN-sized model whose Lambda layer writes ``marker`` whenever its code runs (building included)."""
    path = str(marker)  # a closure cell: Keras serialises the lambda's code with it
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda x: (open(path, "w").write("ran"), x)[1])(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x))
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def test_a_weights_file_with_a_lambda_layer_fails_its_row_without_running_it(tracking_uri, mini_digits, tmp_path):
    """README: model files cannot run code (safe mode always on, a .h5 or .keras file with a Lambda layer is
    refused), here as a row's ``weights``: the row is FAILED with the refusal, the lambda never ran, the next
    row trains."""
    from mlflow.tracking import MlflowClient

    from helpers import small_cnn_row, write_table
    from timl import training

    marker = tmp_path / "lambda-ran"
    model = _model_with_a_marking_lambda(marker)
    model.save(tmp_path / "lambda.h5")
    model.save(tmp_path / "lambda.keras")
    assert marker.exists()  # building the model ran the lambda: the marker shows when its code runs
    marker.unlink()
    good = small_cnn_row(str(mini_digits / "mini.csv"), epochs=1, imgsize=32)
    table = write_table(tmp_path / "t.csv", [dict(good, weights=str(tmp_path / "lambda.h5")),
                                             dict(good, weights=str(tmp_path / "lambda.keras")), good])
    outcome = training.train_table(table, out_dir=tmp_path / "out", experiment="lambda-weights", skip_roc=True)
    assert [row.status for row in outcome.rows] == ["FAILED", "FAILED", "FINISHED"]
    assert not marker.exists(), "the Lambda layer's code ran while the weights file was read"
    client = MlflowClient()
    experiment = client.get_experiment_by_name("lambda-weights").experiment_id
    runs = {run.data.tags["timl.row"]: run for run in client.search_runs([experiment], "tags.`timl.kind` = 'row'")}
    for row, name in ((0, "lambda.h5"), (1, "lambda.keras")):
        message = outcome.rows[row].message
        assert message.startswith("ModelError: Cannot read the model file") and name in message, message
        assert "deserialization of a `Lambda` layer" in message and "disallowed" in message, message
        assert "safe_mode=False" in message, message  # Keras' refusal: safe mode is what stopped it
        assert runs[str(row)].info.status == "FAILED" and runs[str(row)].data.tags["timl.exception"] == message
    # Control: the same files loaded with safe mode off do run the lambda (TIML never does, see
    # tests/test_reliability.py::test_nothing_turns_safe_mode_off)
    for name in ("lambda.h5", "lambda.keras"):
        keras.models.load_model(tmp_path / name, safe_mode=False)
        assert marker.exists(), name
        marker.unlink()


def test_seed_and_lr():
    first = models.create_model("SmallCNN", 2, 32, seed=7, lr=0.01)
    second = models.create_model("SmallCNN", 2, 32, seed=7)
    np.testing.assert_array_equal(first.get_weights()[0], second.get_weights()[0])
    assert float(first.optimizer.learning_rate) == pytest.approx(0.01)
    assert float(second.optimizer.learning_rate) == pytest.approx(1e-3)
    with pytest.raises(ModelError, match="Received: lr=0"):
        models.create_model("SmallCNN", 2, 32, lr=0)


# --- Inspection ---

def test_describe_model_is_the_summary_text():
    text = models.describe_model(models.create_model("SmallCNN", 2, 32))
    assert "block3_conv" in text and "predictions" in text and "Total params" in text


def test_last_conv_layer_name_refuses_a_model_without_conv():
    inputs = keras.Input((8, 8, 3), name="image")
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)), name="dense_only")
    with pytest.raises(ModelError, match="no convolution layer.*Received: model='dense_only'"):
        models.last_conv_layer_name(model)


# --- SmallCNN learns ---

def test_small_cnn_learns_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.kron(digits.images, np.ones((4, 4)))[..., None].repeat(3, axis=-1).astype(np.float32) / 16.0
    labels = np.eye(10, dtype=np.float32)[digits.target]
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.2, random_state=0,
                                                        stratify=digits.target)
    model = models.create_model("SmallCNN", 10, 32, seed=0)
    assert 60_000 <= model.count_params() <= 200_000
    model.fit(x_train, y_train, epochs=3, batch_size=32, verbose=0)
    accuracy = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    assert accuracy >= 0.9
