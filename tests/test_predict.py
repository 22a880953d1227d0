"""Prediction from a trained table, then inspection: the original options, the MLflow options, the files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from helpers import small_cnn_row, train_in_own_store


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mini_digits):
    """One SmallCNN row trained on the mini digits set, in its own tracking store."""
    folder = tmp_path_factory.mktemp("predict")
    outcome, uri = train_in_own_store(folder, [small_cnn_row(str(mini_digits / "mini.csv"), epochs=2)], "predict")
    assert not outcome.failed
    table = folder / "table.csv"
    h5 = next((folder / "out").glob("0-keras_model-*.h5"))
    return {"uri": uri, "folder": folder, "table": table, "h5": h5, "run_id": outcome.rows[0].run_id,
            "test_csv": mini_digits / "mini.csv", "images": mini_digits / "images"}


def _run(trained, tmp_path, *options):
    from timl.predict import cli

    output = tmp_path / "p.csv"
    result = CliRunner().invoke(cli, ["--test-dataframe", str(trained["test_csv"]), "--output-csv", str(output),
                                      "--tracking-uri", trained["uri"], *options])
    return result, output


def test_predict_with_keras_model_and_config_table(trained, tmp_path):
    result, output = _run(trained, tmp_path, "--keras-model", str(trained["h5"]), "--config-table",
                          str(trained["table"]), "--generate-numpy")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(output, dtype={"image_name": str})
    assert list(frame.columns) == ["image_name", "D0", "D1", "D2", "inferred_class", "inferred_index"]
    assert len(frame) == 90 and frame["image_name"].str.len().eq(4).all()  # "0001" stays a string
    np.testing.assert_allclose(frame[["D0", "D1", "D2"]].sum(axis=1), 1, atol=1e-5)
    assert (frame["inferred_class"] == [f"D{i}" for i in frame["inferred_index"]]).all()
    matrix = np.load(tmp_path / "p.npy")
    assert matrix.shape == (90, 3)
    first = frame["image_name"][0]
    np.testing.assert_allclose(np.load(tmp_path / "p" / f"{first}-0000000000.npy"), matrix[0], atol=1e-6)
    sidecar = json.loads((tmp_path / "p.csv.json").read_text())
    assert sidecar["keras_model"].endswith(".h5") and sidecar["run_id"] == trained["run_id"]
    assert sidecar["class_names"] == ["D0", "D1", "D2"] and sidecar["preprocessing"]["imgsize"] == 16


def test_predict_with_model_uri_matches_the_h5(trained, tmp_path):
    result, output = _run(trained, tmp_path, "--model-uri", f"runs:/{trained['run_id']}/model")
    assert result.exit_code == 0, result.output
    by_uri = pd.read_csv(output)
    sidecar = json.loads((tmp_path / "p.csv.json").read_text())
    assert sidecar["model_uri"] == f"runs:/{trained['run_id']}/model" and sidecar["run_id"] == trained["run_id"]
    result, output = _run(trained, tmp_path, "--keras-model", str(trained["h5"]))  # the sidecar gives the settings
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(pd.read_csv(output)[["D0", "D1", "D2"]], by_uri[["D0", "D1", "D2"]], atol=1e-5)


def test_layer_activations(trained, tmp_path):
    from timl import xai
    from timl.classifier import load_keras_model

    layer = xai.conv_layer_names(load_keras_model(trained["h5"]))[-1]  # a 4-D feature map
    result, _ = _run(trained, tmp_path, "--keras-model", str(trained["h5"]), "--layer", layer)
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "p").glob("*-0000000000.npy"))
    assert len(files) == 90 and np.load(files[0]).ndim == 3
    result, _ = _run(trained, tmp_path, "--keras-model", str(trained["h5"]), "--layer", "nope")
    assert result.exit_code == 2 and "Unknown layer" in result.output and layer in result.output


def test_predict_then_inspect_links_the_runs(trained, tmp_path):
    from mlflow.tracking import MlflowClient

    from timl.inspect import dataset_name, inspect

    result, output = _run(trained, tmp_path, "--model-uri", f"runs:/{trained['run_id']}/model")
    assert result.exit_code == 0
    report = inspect(trained["test_csv"], output, out_dir=tmp_path / "inspect", tracking_uri=trained["uri"])
    for name in ("summary.csv", "summary.json", "per_image_results.csv", "confusion_matrix.csv",
                 "confusion_matrix.png", "precision_recall.png", "ROC-all.png"):
        assert (tmp_path / "inspect" / name).is_file(), name
    client = MlflowClient(tracking_uri=trained["uri"])
    run = client.get_run(report.run_id)
    assert run.data.tags["timl.model_run_id"] == trained["run_id"]
    assert "test/balanced_accuracy" in run.data.metrics  # the inspection's scores are the test/ group
    model_run = client.get_run(trained["run_id"])
    group = f"inspect_{dataset_name(trained['test_csv'])}/"
    assert f"{group}balanced_accuracy" in model_run.data.metrics, sorted(model_run.data.metrics)


def test_bad_inputs(trained, tmp_path):
    folder = tmp_path / "case"
    (folder / "images").mkdir(parents=True)
    names = sorted(path.stem for path in trained["images"].glob("*.png"))[:3]
    for name in names:
        (folder / "images" / f"{name}.png").write_bytes((trained["images"] / f"{name}.png").read_bytes())
    frame = pd.DataFrame({"image_name": names + [f"missing{i}" for i in range(25)]})
    frame.to_csv(folder / "t.csv", index=False)
    from timl.predict import cli

    def run(*options):
        return CliRunner().invoke(cli, ["--output-csv", str(folder / "p.csv"), "--tracking-uri", trained["uri"],
                                        *options])

    result = run("--test-dataframe", str(folder / "t.csv"), "--keras-model", str(trained["h5"]))
    assert result.exit_code == 2 and "25 image(s) not found" in result.output and "missing0" in result.output
    assert not (folder / "p.csv").exists()

    (folder / "images" / "broken.png").write_bytes(b"not a png at all")
    pd.DataFrame({"image_name": names + ["broken"]}).to_csv(folder / "t.csv", index=False)
    result = run("--test-dataframe", str(folder / "t.csv"), "--keras-model", str(trained["h5"]))
    assert result.exit_code == 2 and "broken" in result.output

    pd.DataFrame({"name": names}).to_csv(folder / "t.csv", index=False)
    result = run("--test-dataframe", str(folder / "t.csv"), "--keras-model", str(trained["h5"]))
    assert result.exit_code == 2 and "image_name" in result.output

    pd.DataFrame({"image_name": names}).to_csv(folder / "t.csv", index=False)
    result = run("--test-dataframe", str(folder / "t.csv"), "--model-uri", "runs:/00000000000000000000000000000000/model")
    assert result.exit_code == 2 and "Cannot load MLflow model" in result.output

    table = pd.read_csv(trained["table"])
    table["classcolumns"] = "D0;D1"
    table.to_csv(folder / "two.csv", index=False)
    result = run("--test-dataframe", str(folder / "t.csv"), "--keras-model", str(trained["h5"]), "--config-table",
                 str(folder / "two.csv"))
    assert result.exit_code == 2 and "3 outputs but 2 class names" in result.output


def test_multi_label_threshold(tmp_path):
    import keras

    from timl.classifier import Classifier, write_metadata
    from timl.images import Preprocessing
    from timl.predict import predict

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2, activation="sigmoid")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    path = tmp_path / "ml.h5"
    model.save(path)
    write_metadata(path, Classifier(model, Preprocessing(8), ("x", "y"), True).metadata())
    from helpers import random_images

    names = random_images(tmp_path / "images", 4)
    pd.DataFrame({"image_name": names}).to_csv(tmp_path / "t.csv", index=False)
    result = predict(tmp_path / "t.csv", tmp_path / "p.csv", keras_model=path, threshold=0.3)
    frame = pd.read_csv(tmp_path / "p.csv")
    assert {"x_pred", "y_pred"} <= set(frame.columns)
    assert (frame["x_pred"] == (result.probabilities[:, 0] >= 0.3)).all()


@pytest.mark.slow
def test_original_command(trained, tmp_path):
    output = tmp_path / "orig.csv"
    result = subprocess.run([sys.executable, "-m", "timl.classification.predict", "--keras-model", str(trained["h5"]),
                             "--config-table", str(trained["table"]), "--test-dataframe", str(trained["test_csv"]),
                             "--img-dir", str(trained["images"]), "--output-csv", str(output)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(pd.read_csv(output)) == 90 and "img/s" in result.stderr
