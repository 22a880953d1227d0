"""Test-time augmentation (:mod:`timl.tta`): every registered preset's views, one model call per batch holding
every view, the averaged probabilities, and each entry point: ``predict --tta``, inspect on its output, the
pyfunc param ``tta``, the server setting ``TTA`` and the table column ``tta``."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from helpers import encoded, random_images, saved_model, small_cnn_row, tiny_classifier, write_table
from timl import tta
from timl.errors import ConfigError


class CountingModel:
    """A Keras model's stand-in that counts its calls and the arrays each held."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self.output_shape = model.output_shape

    def predict_on_batch(self, inputs):
        self.calls.append(len(inputs))
        return self.model.predict_on_batch(inputs)


@pytest.fixture(scope="module")
def classifier():
    return tiny_classifier()


def _images(count: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", sorted(tta.TTA_PRESETS))
def test_every_preset_views_are_the_imgaug_views_it_names(name):
    """A test-time view is, pixel for pixel, the enumerated augmentation view of the same number."""
    from timl.images import get_augmentation

    preset = tta.TTA_PRESETS[name]
    images = _images(2, 8)
    views = tta.stack_views(images, preset).reshape((preset.num_views,) + images.shape)
    view = get_augmentation("hflip_rot4").view
    assert preset.views[0] == 0 and len(set(preset.views)) == preset.num_views
    for position, dihedral in enumerate(preset.views):
        for index, image in enumerate(images):
            np.testing.assert_array_equal(views[position, index], np.asarray(view(image, dihedral, None)))


def test_averaged_probabilities_are_the_mean_of_views_predicted_one_by_one(classifier):
    preset = tta.get_tta("hflip_rot4")
    images = _images(5)
    result = classifier.predict_views(images, "hflip_rot4", batch_size=5)
    one_by_one = np.stack([
        np.stack([classifier.model.predict_on_batch(tta.view(images[index:index + 1], dihedral) / 255.0)[0]
                  for dihedral in preset.views]) for index in range(len(images))])
    np.testing.assert_allclose(result.mean, one_by_one.mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(result.std, one_by_one.std(axis=1), atol=1e-5)
    np.testing.assert_allclose(classifier.predict_arrays(images, 5, tta="hflip_rot4"), result.mean)
    assert result.mean.shape == result.std.shape == (5, 3)


def test_the_model_is_called_once_per_batch_with_every_view(classifier):
    from timl.classifier import Classifier

    counting = CountingModel(classifier.model)
    counted = Classifier(counting, classifier.preprocessing, classifier.class_names)
    counted.predict_views(_images(10), "hflip_rot4", batch_size=4)
    assert counting.calls == [32, 32, 16]  # 3 batches of images (4, 4, 2), each with its 8 views in one call
    counting.calls.clear()
    counted.predict_arrays(_images(10), 4)  # without tta: the calls are what they were
    assert counting.calls == [4, 4, 2]


@pytest.mark.parametrize("value", ["", None, "none"])
def test_none_and_empty_mean_no_tta(value):
    assert tta.get_tta(value) is None


def test_an_unknown_preset_lists_the_accepted_ones():
    with pytest.raises(ConfigError) as caught:
        tta.get_tta("hflip_rot24", field="--tta")
    assert str(caught.value) == ("Unknown test-time augmentation preset. Expected one of: none, hflip, vflip, rot4, "
                                 "hflip_rot4. Received: --tta='hflip_rot24'")


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tta-predict")
    names = random_images(folder / "images", 6, size=(20, 16))
    pd.DataFrame({"image_name": names}).to_csv(folder / "test.csv", index=False)
    return saved_model(folder), folder


def _predict(model_and_images, output, *options):
    from timl.predict import cli

    model, folder = model_and_images
    return CliRunner().invoke(cli, ["--keras-model", str(model), "--test-dataframe", str(folder / "test.csv"),
                                    "--output-csv", str(output), *options])


def test_predict_with_tta_writes_the_spread_after_the_columns_it_always_writes(model_and_images, tmp_path):
    plain = _predict(model_and_images, tmp_path / "plain.csv")
    assert plain.exit_code == 0, plain.output
    columns = ["image_name", "A", "B", "C", "inferred_class", "inferred_index"]
    assert list(pd.read_csv(tmp_path / "plain.csv").columns) == columns
    assert "tta" not in json.loads((tmp_path / "plain.csv.json").read_text())
    result = _predict(model_and_images, tmp_path / "p.csv", "--tta", "hflip_rot4")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "p.csv")
    assert list(frame.columns) == columns + ["tta_std_A", "tta_std_B", "tta_std_C"]
    np.testing.assert_allclose(frame[["A", "B", "C"]].sum(axis=1), 1, atol=1e-5)
    assert (frame[["tta_std_A", "tta_std_B", "tta_std_C"]] >= 0).all().all()
    assert json.loads((tmp_path / "p.csv.json").read_text())["tta"] == "hflip_rot4"
    bad = _predict(model_and_images, tmp_path / "q.csv", "--tta", "sideways")
    assert bad.exit_code == 2 and "hflip_rot4" in bad.output and "sideways" in bad.output


def test_inspect_scores_predictions_made_with_tta_with_or_without_their_sidecar(model_and_images, tmp_path,
                                                                                 tracking_uri):
    from timl.inspect import inspect

    result = _predict(model_and_images, tmp_path / "p.csv", "--tta", "hflip")
    assert result.exit_code == 0, result.output
    names = pd.read_csv(model_and_images[1] / "test.csv")["image_name"]
    truth = pd.DataFrame({"image_name": names, "A": [1, 0, 0] * 2, "B": [0, 1, 0] * 2, "C": [0, 0, 1] * 2})
    truth.to_csv(tmp_path / "truth.csv", index=False)
    with_sidecar = inspect(tmp_path / "truth.csv", tmp_path / "p.csv", out_dir=tmp_path / "a", bootstrap=0)
    (tmp_path / "p.csv.json").unlink()  # the tta_std_<class> columns are then told apart by their names
    without = inspect(tmp_path / "truth.csv", tmp_path / "p.csv", out_dir=tmp_path / "b", bootstrap=0)
    assert with_sidecar.summary == without.summary
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    assert client.get_run(with_sidecar.run_id).data.params["tta"] == "hflip"  # the sidecar says how they were made
    assert "tta" not in client.get_run(without.run_id).data.params


def test_predict_refuses_tta_with_layer(model_and_images, tmp_path):
    result = _predict(model_and_images, tmp_path / "p.csv", "--tta", "hflip", "--layer", "conv_a")
    assert result.exit_code == 2 and "--tta" in result.output and "--layer" in result.output


def test_pyfunc_param_tta(classifier):
    from timl import pyfunc

    wrapper = pyfunc.TimlModel()
    wrapper.classifier = classifier
    request = pd.DataFrame({"image": [encoded(), encoded(size=(16, 16))]})
    plain = wrapper.predict(None, request)
    frame = wrapper.predict(None, request, {"tta": "hflip_rot4"})
    assert list(frame.columns) == list(plain.columns) + ["tta_std_A", "tta_std_B", "tta_std_C"]
    arrays = np.stack([classifier.preprocessing(image) for image in request["image"]])
    np.testing.assert_allclose(frame[["A", "B", "C"]], classifier.predict_views(arrays, "hflip_rot4").mean,
                               atol=1e-6)
    with pytest.raises(pyfunc.RequestError) as caught:
        wrapper.predict(None, request, {"tta": "upside"})
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert str(caught.value).startswith("Param 'tta': Unknown test-time augmentation preset. Expected one of: none, "
                                        "hflip, vflip, rot4, hflip_rot4. Received: tta='upside'")


def test_server_setting_tta_batches_the_views_and_reports_their_spread(classifier):
    from timl.serving import create_app

    app = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "TTA": "hflip_rot4"}, classifier=classifier)
    client = app.test_client()
    answer = client.post("/api/classify", data={"file": (io.BytesIO(encoded()), "x.png")},
                         content_type="multipart/form-data")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    array = classifier.preprocessing(encoded())[None]
    np.testing.assert_allclose(body["prediction"], classifier.predict_views(array, "hflip_rot4").mean[0],
                               atol=1e-6)
    assert body["tta"] == "hflip_rot4" and len(body["tta_std"]) == 3
    schema = client.get("/api/openapi.json").get_json()["components"]["schemas"]["Classification"]["properties"]
    assert set(body) <= set(schema)  # every key of the answer is described
    health = client.get("/health").get_json()["batching"]
    assert health["model_calls"] == 1 and health["images"] == 1  # one image, its 8 views in one call
    plain = create_app({"CLASSIFICATION_MODEL": "tiny.h5"}, classifier=classifier).test_client()
    body = plain.post("/api/classify", data={"file": (io.BytesIO(encoded()), "x.png")},
                      content_type="multipart/form-data").get_json()
    assert "tta" not in body and "tta_std" not in body


def test_server_refuses_an_unknown_tta_setting():
    from timl.serving.config import ServerConfig

    with pytest.raises(ConfigError) as caught:
        ServerConfig.from_mapping({"CLASSIFICATION_MODEL": "m.h5", "TTA": "spin"}, source="conf.json")
    assert "TTA must be one of none, hflip, vflip, rot4, hflip_rot4" in str(caught.value)
    assert "Received: TTA='spin'" in str(caught.value)


def test_tta_cell_keeps_old_keys_and_a_bad_cell_fails_its_row_alone(tmp_path):
    from timl.config import RunConfig, read_table

    path = str(tmp_path / "t.csv")
    plain = RunConfig.from_row(small_cnn_row("d.csv"), 0, path)
    assert plain.tta == "none" and "tta" not in plain.input_cells()
    assert RunConfig.from_row(small_cnn_row("d.csv", tta=""), 0, path).key("1") == plain.key("1")
    assert RunConfig.from_row(small_cnn_row("d.csv", tta="none"), 0, path).key("1") == plain.key("1")
    with_tta = RunConfig.from_row(small_cnn_row("d.csv", tta="hflip"), 0, path)
    assert with_tta.input_cells()["tta"] == "hflip" and with_tta.key("1") != plain.key("1")
    table = write_table(tmp_path / "t.csv", [small_cnn_row("d.csv", tta="hflip"), small_cnn_row("d.csv", tta="90deg")])
    rows = read_table(table)
    assert isinstance(rows[0], RunConfig) and rows[0].tta == "hflip"
    assert isinstance(rows[1], ConfigError)
    assert str(rows[1]) == (f"{table}, row 1: column 'tta': Unknown test-time augmentation preset. Expected one of: "
                            "none, hflip, vflip, rot4, hflip_rot4. Received: tta='90deg'")


def test_tta_cell_with_cached_activations_is_refused():
    from timl.config import RunConfig

    with pytest.raises(ConfigError, match="column 'tta' predicts views"):
        RunConfig.from_row(small_cnn_row("d.csv", tta="hflip", activations="auto", freeze="backbone"), 0)


def test_a_row_with_tta_scores_dev_and_test_over_the_views(tmp_path, mini_digits):
    """The row logs its tta cell (param and results column) and its test scores are those of the averaged views;
    the row beside it, without the cell, logs no tta param."""
    from mlflow.tracking import MlflowClient

    from helpers import train_in_own_store
    from timl.classifier import classifier_from_keras_file
    from timl import datasets, images, results, tables

    rows = [small_cnn_row(str(mini_digits / "mini.csv"), epochs=1), small_cnn_row(str(mini_digits / "mini.csv"),
                                                                                  epochs=1, tta="hflip_rot4")]
    outcome, uri = train_in_own_store(tmp_path, rows, "tta")
    assert not outcome.failed
    client = MlflowClient(tracking_uri=uri)
    plain, augmented = (client.get_run(row.run_id) for row in outcome.rows)
    assert "tta" not in plain.data.params and augmented.data.params["tta"] == "hflip_rot4"
    assert [results.result_row(run)["tta"] for run in (plain, augmented)] == ["", "hflip_rot4"]
    classifier = classifier_from_keras_file(next((tmp_path / "out").glob("1-keras_model-*.h5")))
    test = tables.read_cells(next((tmp_path / "out").glob("1-test-per_image_results.csv")))
    names = list(test["image"])
    arrays = images.load_images(datasets.image_paths(names, mini_digits / "images", mini_digits / "mini.csv"),
                                classifier.preprocessing)
    written = np.array([json.loads(cell) for cell in test["pdist"]])  # three decimals
    np.testing.assert_allclose(written, classifier.predict_arrays(arrays, 16, tta="hflip_rot4"), atol=6e-4)
    assert not np.allclose(written, classifier.predict_arrays(arrays, 16), atol=6e-4)
