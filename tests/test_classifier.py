"""The Classifier: the one class-choice rule, the TIML confidence, batched prediction, the loaders."""

from __future__ import annotations

import json
import pathlib
import pickle

import numpy as np
import pandas as pd
import pytest

from helpers import encoded, logged_model_folder, logged_tiny_model, tiny_classifier, write_table
from timl.classifier import (Classifier, classifier_from_keras_file, confidence, load_classifier, read_metadata,
                             run_batches, sha256_of, write_metadata)
from timl.errors import MissingFileError, ModelError
from timl.images import Preprocessing


@pytest.fixture(scope="module")
def classifier():
    return tiny_classifier()


@pytest.mark.parametrize("text,expected", [("A", 0), ("C", 2), (" B ", 1), ("0", 0), ("2", 2), (2, 2), ("", None),
                                           (None, None), ("  ", None)])
def test_class_index_takes_a_name_or_an_index(classifier, text, expected):
    assert classifier.class_index(text) == expected


@pytest.mark.parametrize("text", ["Z", "3", "-1", "1.0", "a", "\u00b2", "\u0663"])  # superscript 2, Arabic-Indic 3
def test_class_index_refuses_anything_else_and_lists_the_classes(classifier, text):
    with pytest.raises(ModelError) as error:
        classifier.class_index(text)
    assert "Expected one of: A, B, C or an index 0-2" in str(error.value)
    assert f"Received: class={text!r}" in str(error.value)


def test_a_class_named_like_an_index_is_the_name():
    named = Classifier(None, Preprocessing(8), ("1", "0"))
    assert named.class_index("0") == 1 and named.class_index("1") == 0


@pytest.mark.parametrize("probabilities, expected", [
    # b = 1/3: above b (p-b)/(1-b), (1/2 - 1/3) / (2/3) = 0.25; below b (p-b)/b, (1/4 - 1/3) / (1/3) = -0.25
    ([0.5, 0.25, 0.25], [0.25, -0.25, -0.25]),
    # b = 1/3: (0.6 - 1/3) / (2/3) = 0.4; (0.3 - 1/3) / (1/3) = -0.1; (0.1 - 1/3) / (1/3) = -0.7
    ([0.6, 0.3, 0.1], [0.4, -0.1, -0.7]),
    ([1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 0.0]),  # p = b: 0
    ([1.0, 0.0], [1.0, -1.0]),  # b = 1/2: p = 1 gives 1, p = 0 gives -1
    ([0.9, 0.1], [0.8, -0.8]),  # b = 1/2: (0.9 - 0.5) / 0.5 = 0.8; (0.1 - 0.5) / 0.5 = -0.8
    # b = 1/4: (0.7 - 0.25) / 0.75 = 0.6; (0.1 - 0.25) / 0.25 = -0.6
    ([0.7, 0.1, 0.1, 0.1], [0.6, -0.6, -0.6, -0.6]),
    ([0.0, 0.0, 0.0, 1.0], [-1.0, -1.0, -1.0, 1.0]),
    ([[1.0, 0.0], [0.5, 0.5]], [[1.0, -1.0], [0.0, 0.0]]),  # a batch: row by row
])
def test_the_original_timl_confidence(probabilities, expected):
    np.testing.assert_allclose(confidence(np.array(probabilities)), expected, atol=1e-12)


class _CountingModel:
    """A stand-in with the two things run_batches uses: it records each batch and returns its mean per image."""

    output_shape = (None, 1)

    def __init__(self):
        self.batches = []

    def predict_on_batch(self, batch):
        self.batches.append(batch)
        return batch.reshape(len(batch), -1).mean(axis=1, keepdims=True)


def test_run_batches_scales_uint8_batch_by_batch_and_reports_progress():
    images = np.full((5, 2, 2, 3), 255, np.uint8)
    model, calls = _CountingModel(), []
    out = run_batches(model, images, batch_size=2, progress=lambda done, total: calls.append((done, total)))
    assert [len(batch) for batch in model.batches] == [2, 2, 1]
    assert all(batch.dtype == np.float32 for batch in model.batches)
    np.testing.assert_allclose(out, np.ones((5, 1)))
    assert calls == [(2, 5), (4, 5), (5, 5)]
    assert run_batches(model, np.zeros((0, 2, 2, 3), np.uint8)).shape == (0, 1)


def test_predict_images_uses_the_preprocessing(classifier, tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(encoded(size=(40, 24)))
    from_file = classifier.predict_images([str(path)])
    from_array = classifier.predict_arrays(classifier.preprocessing(str(path))[None])
    np.testing.assert_allclose(from_file, from_array, rtol=1e-6)
    assert classifier.predicted(from_file) == [classifier.class_names[int(from_file.argmax())]]
    assert classifier.predict_images([]).shape == (0, 3)


def test_sidecar_round_trip(classifier, tmp_path):
    path = tmp_path / "m.h5"
    classifier.model.save(path)
    sidecar = write_metadata(path, classifier.metadata())
    assert sidecar == tmp_path / "m.h5.json"
    metadata = read_metadata(sidecar)
    assert metadata["sha256"] == sha256_of(path) and metadata["keras_model"] == "m.h5"
    loaded = classifier_from_keras_file(path)
    assert loaded.class_names == ("A", "B", "C") and loaded.preprocessing == classifier.preprocessing
    assert loaded.source["keras_model"] == str(path.resolve())
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict_arrays(x), classifier.predict_arrays(x), rtol=1e-5)


def test_a_replaced_model_file_or_unreadable_metadata_is_refused(classifier, tmp_path):
    path = tmp_path / "m.h5"
    classifier.model.save(path)
    write_metadata(path, classifier.metadata())
    tiny_classifier(classes=("X", "Y", "Z")).model.save(path)  # same shape, other weights
    with pytest.raises(ModelError, match="sha256 does not match"):
        classifier_from_keras_file(path)
    (tmp_path / "bad.h5.json").write_text("{not json")
    classifier.model.save(tmp_path / "bad.h5")
    with pytest.raises(ModelError, match="Cannot read model metadata"):
        classifier_from_keras_file(tmp_path / "bad.h5")


def test_without_metadata_the_classes_are_guessed(classifier, tmp_path, caplog):
    classifier.model.save(tmp_path / "bare.h5")
    loaded = classifier_from_keras_file(tmp_path / "bare.h5")
    assert loaded.class_names == ("C0", "C1", "C2") and loaded.preprocessing.imgsize == 16
    assert loaded.multi_label is False and "No class names known" in caplog.text


def test_an_original_config_table_gives_classes_and_preprocessing(classifier, tmp_path):
    classifier.model.save(tmp_path / "m.h5")
    pd.DataFrame({"image_name": ["a"], "MEL": [1], "NV": [0], "BCC": [0]}).to_csv(tmp_path / "gt.csv", index=False)
    row = {"method": "SmallCNN", "dataset": "gt.csv", "split": "n=1", "epochs": 1, "imgaug": "none", "batchsize": 8,
           "imgsize": 16, "resizefilter": "nearest", "colorspace": "HSV", "classcolumns": "default",
           "classweights": "default"}
    table = write_table(tmp_path / "config_table.csv", [row])
    loaded = classifier_from_keras_file(tmp_path / "m.h5", config_table=table)
    assert loaded.class_names == ("MEL", "NV", "BCC")
    assert (loaded.preprocessing.resizefilter, loaded.preprocessing.colorspace) == ("nearest", "HSV")
    explicit = write_table(tmp_path / "explicit.csv", [dict(row, classcolumns="NV;MEL")])
    with pytest.raises(ModelError, match="3 outputs but 2 class names"):
        classifier_from_keras_file(tmp_path / "m.h5", config_table=explicit)
    missing = write_table(tmp_path / "missing.csv", [dict(row, dataset="nope.csv")])
    with pytest.raises(MissingFileError, match="cannot read the class names"):
        classifier_from_keras_file(tmp_path / "m.h5", config_table=missing)


def test_load_classifier_needs_exactly_one_source(tmp_path):
    with pytest.raises(ModelError, match="exactly one of --model-uri or --keras-model"):
        load_classifier()
    with pytest.raises(ModelError, match="exactly one"):
        load_classifier(model_uri="runs:/x/model", keras_model="m.h5")
    with pytest.raises(MissingFileError, match="Keras model file not found"):
        load_classifier(keras_model=tmp_path / "none.h5")


def test_an_mlflow_model_that_is_not_timl_is_refused(tracking_uri):
    import mlflow

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(name="model", python_model=Echo())
    with pytest.raises(ModelError, match="is not a TIML model"):
        load_classifier(model_uri=f"runs:/{run.info.run_id}/model")
    with pytest.raises(ModelError, match="Cannot load MLflow model"):
        load_classifier(model_uri="runs:/0123456789abcdef0123456789abcdef/model")


class _TouchesWhenUnpickled:
    """What a poisoned ``python_model.pkl`` could be: unpickling it runs code (here: creates a file)."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_loading_a_logged_model_never_unpickles_its_python_model(tracking_uri, tmp_path):
    from timl import register

    run_id = logged_tiny_model(tmp_path)
    register.register_run(run_id, "tiny")
    proof, marker = tmp_path / "the-poison-works", tmp_path / "unpickled"
    pickle.loads(pickle.dumps(_TouchesWhenUnpickled(proof)))
    assert proof.is_file()
    poisoned = pickle.dumps(_TouchesWhenUnpickled(marker))
    (logged_model_folder(tmp_path, run_id) / "python_model.pkl").write_bytes(poisoned)
    expected = tiny_classifier().predict_images([encoded()])
    for uri in (f"runs:/{run_id}/model", "models:/tiny@champion", "models:/tiny/1"):
        loaded = load_classifier(model_uri=uri)
        assert loaded.class_names == ("A", "B", "C") and loaded.source == {"model_uri": uri, "run_id": run_id}
        np.testing.assert_allclose(loaded.predict_images([encoded()]), expected, rtol=1e-5)
    assert not marker.exists(), "a TIML loader unpickled python_model.pkl"


def test_metadata_names_what_the_pyfunc_needs(classifier):
    metadata = classifier.metadata()
    assert set(metadata) == {"preprocessing", "class_names", "multi_label", "timl_version"}
    assert json.loads(json.dumps(metadata))["class_names"] == ["A", "B", "C"]
