"""Errors that say what to do next (issue 25): each message names the next step a user would take."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from timl import tracking
from timl.errors import ConfigError, DatasetError, MissingFileError, ModelError


def _registered(name: str = "digits", alias: str = "champion") -> str:
    """A registered model ``name`` whose version 1 holds ``alias`` (a tiny pyfunc: resolution does not look inside)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(name="model", python_model=Echo())
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    MlflowClient().set_registered_model_alias(name, alias, version.version)
    return run.info.run_id


def test_an_unknown_alias_names_the_store_and_the_models_it_has(tracking_uri):
    from timl.classifier import load_classifier

    _registered()
    with pytest.raises(ModelError) as raised:
        load_classifier(model_uri="models:/x@champion")
    message = str(raised.value)
    assert tracking_uri in message and "models:/digits" in message and "@champion (v1)" in message
    assert "python -m timl.register" in message


def test_an_empty_store_says_to_register_first(tracking_uri):
    from timl.classifier import load_classifier

    tracking.configure(tracking_uri)
    with pytest.raises(ModelError, match="has no registered models: register it first: python -m timl.register"):
        load_classifier(model_uri="models:/digits@champion")


@pytest.mark.parametrize("command", ["predict", "explain"])
def test_a_read_only_command_creates_no_store(tmp_path, monkeypatch, command):
    """predict/explain given a model URI and the default store in a folder without one: no empty mlflow.db is
    left behind, and the message says there is no store yet and what to run."""
    import importlib

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "test.csv").write_text("image,A,B\nx,1,0\n")
    module = importlib.import_module(f"timl.{command}")
    arguments = {"predict": ["--test-dataframe", "test.csv", "--output-csv", "out.csv"],
                 "explain": ["--image", "x.png"]}[command]
    result = CliRunner().invoke(module.cli, ["--model-uri", "models:/digits@champion", *arguments])
    assert result.exit_code == 2, result.output
    assert "There is no tracking store yet at sqlite:///mlflow.db" in result.output
    assert "--tracking-uri" in result.output and "python -m timl.train" in result.output
    assert not (tmp_path / "mlflow.db").exists()


def test_a_keras_file_given_as_model_uri_suggests_keras_model(tmp_path):
    from timl.classifier import load_classifier

    with pytest.raises(ModelError, match="give it as --keras-model models/best.h5"):
        load_classifier(model_uri="models/best.h5")


def test_registering_a_table_run_lists_its_rows(tracking_uri):
    import mlflow
    from mlflow.tracking import MlflowClient

    from timl import register

    client = MlflowClient()
    parent = client.create_run(tracking.experiment_id("reg"), tags={tracking.TAG_KIND: "table"}).info.run_id
    with mlflow.start_run(experiment_id=client.get_run(parent).info.experiment_id, run_name="row-0",
                          tags={tracking.TAG_PARENT: parent}) as row:
        pass
    with pytest.raises(ConfigError) as raised:
        register.register_candidate(parent, "digits")
    message = str(raised.value)
    assert f"Run {parent} is a table run" in message and "Give --run-id of one of its rows' runs" in message
    assert f"row-0 {row.info.run_id}" in message
    result = CliRunner().invoke(register.cli, ["--run-id", parent, "--name", "digits"])
    assert result.exit_code == 2 and "is a table run" in result.output


def _serve(tmp_path, config: dict, port: int):
    """``python -m timl.serve`` with ``config`` on 127.0.0.1:``port``, run to its end (it should refuse to start)."""
    import json
    import subprocess
    import sys

    path = tmp_path / "timl_server_config.json"
    path.write_text(json.dumps(config))
    return subprocess.run([sys.executable, "-m", "timl.serve", "--config", str(path), "--bind", f"127.0.0.1:{port}",
                           "--workers", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_serve_on_a_port_in_use_names_bind(tmp_path):
    import socket

    from helpers import saved_model

    model = saved_model(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve(tmp_path, {"CLASSIFICATION_MODEL": model.name}, port)
    assert result.returncode == 2, result.stderr
    assert f"Port {port} on 127.0.0.1 is in use" in result.stderr and f"--bind 127.0.0.1:{port + 1}" in result.stderr
    assert "Connection in use" not in result.stderr


@pytest.mark.parametrize("model", ["missing.h5", "models:/no-such-model@champion"])
def test_serve_refuses_a_model_it_cannot_load(tmp_path, monkeypatch, model):
    from helpers import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracking.configure()  # an empty store: the registered model is not there
    result = _serve(tmp_path, {"CLASSIFICATION_MODEL": model}, free_port())
    assert result.returncode == 2, result.stderr
    assert "Not starting the server: CLASSIFICATION_MODEL in" in result.stderr and model in result.stderr
    assert ("not a file" if model.endswith(".h5") else "register it first") in result.stderr


def test_health_is_not_ok_when_the_model_cannot_load(tmp_path, caplog):
    from timl.serving import create_app

    with caplog.at_level("ERROR", logger="timl.serving.app"):
        client = create_app({"CLASSIFICATION_MODEL": str(tmp_path / "gone.h5")}).test_client()
    assert f"{tmp_path / 'gone.h5'}, which is not a file" in caplog.text  # said in the log at start
    answer = client.get("/health")
    assert answer.status_code == 503
    body = answer.get_json()
    assert body["status"] == "error" and "gone.h5 cannot be loaded" in body["error"] and "server log" in body["error"]
    assert str(tmp_path) not in body["error"]  # no server path to an unauthenticated client


def test_health_turns_ok_once_the_model_is_there(tmp_path):
    from helpers import saved_model

    from timl.serving import create_app

    client = create_app({"CLASSIFICATION_MODEL": str(tmp_path / "tiny.h5")}).test_client()
    assert client.get("/health").status_code == 503
    saved_model(tmp_path)
    answer = client.get("/health")
    assert answer.status_code == 200 and answer.get_json()["status"] == "ok"


def test_an_unknown_column_gets_a_did_you_mean_and_notes_once(tmp_path):
    from timl.config import read_table

    table = tmp_path / "table.csv"
    table.write_text("method,datset,split,epochs,imgsze\nSmallCNN,gt.csv,n=5,1,16\n")
    with pytest.raises(ConfigError) as raised:
        read_table(table)
    message = str(raised.value)
    assert "unknown column(s) 'datset', 'imgsze'" in message
    assert "'datset': did you mean 'dataset'? 'imgsze': did you mean 'imgsize'?" in message
    assert message.count("notes") == 1 and "Known columns: method, dataset" in message


@pytest.mark.parametrize("cell, split", [("train.csv;dev.csv;test.csv", "list"), ("train.csv+dev.csv+test.csv", "n=5")])
def test_an_unknown_class_column_is_said_first_and_once(tmp_path, cell, split):
    """Three ground-truth files of 300 rows and a classcolumns cell naming a class they lack: the message says so
    once, with no line-by-line "has 0 ones" for the rows (which were one-hot over the columns they have)."""
    from timl.datasets import load_dataset

    for offset, name in enumerate(("train.csv", "dev.csv", "test.csv")):
        rows = "".join(f"img{offset}_{index},{index % 2},{1 - index % 2}\n" for index in range(300))
        (tmp_path / name).write_text("image_name,A,B\n" + rows)
    with pytest.raises(DatasetError) as raised:
        load_dataset(";".join(str(tmp_path / part) for part in cell.split(";")) if ";" in cell else
                     "+".join(str(tmp_path / part) for part in cell.split("+")), split, classcolumns="A;MEL")
    message = str(raised.value)
    assert message.count("unknown class column(s) 'MEL' in classcolumns") == 1, message
    assert "Available columns: A, B" in message and "ones" not in message and len(message) < 400


def test_a_missing_image_folder_names_img_dir(tmp_path):
    from timl.datasets import load_dataset

    rows = "".join(f"i{index},1,0\ni{index}b,0,1\n" for index in range(3))
    (tmp_path / "gt.csv").write_text("image_name,A,B\n" + rows)
    with pytest.raises(MissingFileError, match="Give the folder that holds the images with --img-dir"):
        load_dataset(str(tmp_path / "gt.csv"), "n=2", img_dir=tmp_path / "elsewhere")


@pytest.mark.parametrize("typo", ["--img-dir", "--input-table"])
def test_train_checks_its_paths_before_any_run(tracking_uri, tmp_path, typo):
    """A typo in --img-dir or --input-table: exit 2 naming the option, and no table run (no FAILED rows) in the
    store."""
    from mlflow.tracking import MlflowClient

    from helpers import small_cnn_row, write_table
    from timl import train

    table = write_table(tmp_path / "table.csv", [small_cnn_row("gt.csv")])
    arguments = {"--img-dir": ["--input-table", str(table), "--img-dir", str(tmp_path / "imgaes")],
                 "--input-table": ["--input-table", str(tmp_path / "tabel.csv")]}[typo]
    result = CliRunner().invoke(train.cli, arguments)
    assert result.exit_code == 2, result.output
    expected = (f"--img-dir {tmp_path / 'imgaes'}: no such folder" if typo == "--img-dir" else
                f"Training table not found")
    assert expected in result.output and ("tabel.csv" in result.output or typo == "--img-dir")
    runs = MlflowClient().search_runs([experiment.experiment_id for experiment in MlflowClient().search_experiments()])
    assert runs == []
