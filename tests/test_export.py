"""python -m timl.export (issue 28, item 3): a SavedModel for TF Serving, an ONNX file for ONNX Runtime and a Triton
model repository folder, each giving the Keras model's probabilities on raw resized pixels; clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import encoded, logged_tiny_model, tiny_classifier


def calibrated_model(folder: Path) -> Path:
    """A tiny model with TIML's custom layers (ImageNet preprocessing first, temperature scaling last), saved as
    .h5 with its sidecar, as training writes a calibrated model."""
    import keras

    from timl.classifier import write_metadata
    from timl.models.layers import ensure_registered
    from timl.training.calibrate import with_temperatures

    tiny = tiny_classifier()
    inputs = keras.Input((16, 16, 3), name="image")
    preprocessed = ensure_registered()["ImagenetPreprocessing"]("caffe")(inputs)
    scaled = keras.layers.Rescaling(1 / 255.0)(preprocessed)
    model = with_temperatures(keras.Model(inputs, tiny.model(scaled)), [1.7], multi_label=False)
    path = folder / "calibrated.h5"
    model.save(path)
    write_metadata(path, tiny.metadata())
    return path


def export(*arguments: str):
    from timl.export import cli

    return CliRunner().invoke(cli, list(arguments))


def resized_pixels(classifier, count: int = 3) -> np.ndarray:
    """Real images decoded and resized as TIML does: what a user of the export feeds it."""
    return np.stack([classifier.preprocessing(encoded(size=(30 + index, 20))) for index in range(count)])


def parse_pbtxt(text: str) -> dict:
    """A small parser of Protocol Buffers' text format (what config.pbtxt holds): ``key: value``, ``key { ... }``,
    ``key [ {...}, ... ]``, ``key: [ 1, 2 ]``; repeated keys become lists. Quoted strings are unquoted."""
    tokens, index = [], 0
    while index < len(text):
        char = text[index]
        if char.isspace() or char == ",":
            index += 1
        elif char in "{}[]:":
            tokens.append(char)
            index += 1
        elif char == '"':
            end = text.index('"', index + 1)
            tokens.append(("string", text[index + 1:end]))
            index = end + 1
        else:
            end = index
            while end < len(text) and not (text[end].isspace() or text[end] in '{}[]:,"'):
                end += 1
            tokens.append(text[index:end])
            index = end
    position = 0

    def value():
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "{":
            return message("}")
        if token == "[":
            items = []
            while tokens[position] != "]":
                items.append(value())
            position += 1
            return items
        return token[1] if isinstance(token, tuple) else (int(token) if token.lstrip("-").isdigit() else token)

    def message(closing):
        nonlocal position
        fields: dict = {}
        while position < len(tokens) and tokens[position] != closing:
            key = tokens[position]
            position += 1 + (tokens[position + 1] == ":")
            fields.setdefault(key, []).append(value())
        position += 1
        return {key: items[0] if len(items) == 1 else items for key, items in fields.items()}

    return message(None)


def test_savedmodel_of_a_calibrated_model_serves_its_probabilities(tmp_path):
    import tensorflow as tf

    from timl.classifier import load_classifier

    path = calibrated_model(tmp_path)
    result = export("--keras-model", str(path), "--format", "savedmodel", "--out", str(tmp_path / "served"))
    assert result.exit_code == 0, result.output
    assert "within" in result.output and "6 sample images" in result.output
    classifier = load_classifier(keras_model=path)
    pixels = resized_pixels(classifier)
    signature = tf.saved_model.load(str(tmp_path / "served")).signatures["serving_default"]
    assert list(signature.structured_outputs) == ["probabilities"]
    served = signature(image=tf.constant(pixels))["probabilities"].numpy()
    np.testing.assert_allclose(served, classifier.predict_arrays(pixels), atol=1e-4)
    assert not (tmp_path / "served.partial").exists()


def test_onnx_export_of_a_logged_model_runs_in_onnx_runtime_and_is_logged_on_its_run(tracking_uri, tmp_path):
    import mlflow
    import onnxruntime

    from timl.classifier import load_classifier

    run_id = logged_tiny_model(tmp_path)
    out = tmp_path / "onnx"
    out.mkdir()  # an empty folder is fine
    result = export("--model-uri", f"runs:/{run_id}/model", "--format", "onnx", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"logged as runs:/{run_id}/exports/onnx" in result.output
    classifier = load_classifier(model_uri=f"runs:/{run_id}/model")
    pixels = resized_pixels(classifier)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [item.name for item in session.get_inputs()] == ["image"]
    probabilities = session.run(["probabilities"], {"image": pixels})[0]
    np.testing.assert_allclose(probabilities, classifier.predict_arrays(pixels), atol=1e-4)
    logged = [item.path for item in mlflow.MlflowClient().list_artifacts(run_id, "exports/onnx")]
    assert logged == ["exports/onnx/model.onnx"]


@pytest.mark.parametrize("platform", ["onnx", "savedmodel"])
def test_triton_folder_holds_a_config_its_model_and_the_labels(tmp_path, platform):
    from timl.classifier import load_classifier
    from timl.exporting import onnx_predictor, savedmodel_predictor

    path = calibrated_model(tmp_path)
    out = tmp_path / "repository"
    result = export("--keras-model", str(path), "--format", "triton", "--out", str(out), "--triton-platform",
                    platform, "--max-batch-size", "8")
    assert result.exit_code == 0, result.output
    config = parse_pbtxt((out / "calibrated" / "config.pbtxt").read_text())
    platform_name, file_name = {"onnx": ("onnxruntime_onnx", "model.onnx"),
                                "savedmodel": ("tensorflow_savedmodel", "model.savedmodel")}[platform]
    assert config["name"] == "calibrated" and config["platform"] == platform_name
    assert config["max_batch_size"] == 8 and "dynamic_batching" in config
    assert config["input"] == [{"name": "image", "data_type": "TYPE_FP32", "dims": [16, 16, 3]}]
    [output] = config["output"]
    assert output["name"] == "probabilities" and output["dims"] == [3]
    labels = (out / "calibrated" / output["label_filename"]).read_text().splitlines()
    assert labels == ["A", "B", "C"]
    classifier = load_classifier(keras_model=path)
    pixels = resized_pixels(classifier)
    model_file = out / "calibrated" / "1" / file_name
    predictor = onnx_predictor(model_file) if platform == "onnx" else savedmodel_predictor(model_file)
    np.testing.assert_allclose(predictor(pixels), classifier.predict_arrays(pixels), atol=1e-4)


def test_the_pbtxt_parser_reads_what_it_is_given():
    parsed = parse_pbtxt('name: "m"\ninput [ { name: "a" dims: [ 1, 2 ] }, { name: "b" } ]\nx { y: -3 }')
    assert parsed == {"name": "m", "input": [{"name": "a", "dims": [1, 2]}, {"name": "b"}], "x": {"y": -3}}


def test_bad_exports_are_refused_with_clear_messages(tmp_path):
    path = calibrated_model(tmp_path)
    missing = export("--keras-model", str(tmp_path / "nope.h5"), "--format", "onnx", "--out", str(tmp_path / "a"))
    assert missing.exit_code == 2 and "nope.h5" in missing.output
    unknown = export("--keras-model", str(path), "--format", "tflite", "--out", str(tmp_path / "b"))
    assert unknown.exit_code == 2 and "'tflite' is not one of 'savedmodel', 'onnx', 'triton'" in unknown.output
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    refused = export("--keras-model", str(path), "--format", "onnx", "--out", str(full))
    assert refused.exit_code == 2 and f"--out {full} exists and is not an empty folder" in refused.output
    assert [item.name for item in full.iterdir()] == ["keep.txt"]
    neither = export("--format", "onnx", "--out", str(tmp_path / "c"))
    assert neither.exit_code == 2 and "Give exactly one of --model-uri or --keras-model" in neither.output


def test_an_export_that_differs_from_the_keras_model_fails_and_leaves_nothing(tmp_path, monkeypatch):
    from timl import exporting

    path = calibrated_model(tmp_path)
    real = exporting.onnx_predictor
    monkeypatch.setattr(exporting, "onnx_predictor", lambda file: (lambda images: real(file)(images) + 1e-3))
    result = export("--keras-model", str(path), "--format", "onnx", "--out", str(tmp_path / "off"))
    assert result.exit_code == 2, result.output
    assert "does not give the Keras model's probabilities" in result.output and "differ by up to 0.001" in result.output
    assert not (tmp_path / "off").exists() and not (tmp_path / "off.partial").exists()


def test_the_server_classifies_with_onnx_runtime_as_with_keras_and_explains_with_keras(tmp_path, monkeypatch):
    """INFERENCE_BACKEND onnxruntime (issue 28, item 4): the same answers within 1e-4, the model calls run by ONNX
    Runtime, explanations still computed on the Keras model."""
    import io

    from timl.classifier import load_classifier
    from timl.onnx_runtime import OnnxModel
    from timl.serving import create_app

    batches = []
    run = OnnxModel.predict_on_batch
    monkeypatch.setattr(OnnxModel, "predict_on_batch", lambda self, images: batches.append(len(images)) or run(
        self, images))

    classifier = load_classifier(keras_model=calibrated_model(tmp_path))
    answers = {}
    for backend in ("keras", "onnxruntime"):
        app = create_app({"CLASSIFICATION_MODEL": "calibrated.h5", "INFERENCE_BACKEND": backend},
                         classifier=classifier)
        client = app.test_client()
        answers[backend] = [client.post("/api/classify", data={"file": (io.BytesIO(encoded(size=(30 + index, 20))),
                                                                        "x.png")},
                                        content_type="multipart/form-data").get_json()["prediction"]
                            for index in range(3)]
        inference = app.extensions["timl_model"].inference
        assert isinstance(inference.model, OnnxModel) == (backend == "onnxruntime")
    np.testing.assert_allclose(answers["onnxruntime"], answers["keras"], atol=1e-4)
    assert batches.count(1) == 3, f"the requests' model calls did not run on ONNX Runtime: {batches}"
    explained = client.post("/api/explain/rise/-?masks=40&cells=4&keep=0.5&seed=3",
                            data={"file": (io.BytesIO(encoded()), "x.png")}, content_type="multipart/form-data")
    assert explained.status_code == 200, explained.get_json()
    assert app.extensions["timl_model"].classifier.model is classifier.model


def test_an_unknown_inference_backend_is_refused():
    from timl.errors import ConfigError
    from timl.serving.config import ServerConfig

    with pytest.raises(ConfigError, match="INFERENCE_BACKEND must be one of keras, onnxruntime. Received: "
                                          "INFERENCE_BACKEND='tensorrt'"):
        ServerConfig.from_mapping({"CLASSIFICATION_MODEL": "m.h5", "INFERENCE_BACKEND": "tensorrt"})
