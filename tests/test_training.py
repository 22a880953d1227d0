"""Training from a table: runs in a real SQLite tracking store, the output folder, failures, resume."""

from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from helpers import REPO, small_cnn_row, write_table


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def test_two_row_table_end_to_end(tracking_uri, mini_digits, tmp_path):
    from timl import results, training

    table = write_table(tmp_path / "table.csv", [
        small_cnn_row(str(mini_digits / "mini.csv"), epochs=3, notes="first"),
        small_cnn_row(str(mini_digits / "mini.csv"), imgaug="hflip", classweights="compute", split="frac=0.2"),
    ])
    outcome = training.train_table(table, out_dir=tmp_path / "out", experiment="e2e")
    assert [row.status for row in outcome.rows] == ["FINISHED", "FINISHED"]

    client = _client()
    runs = {run.data.tags["timl.row"]: run for run in
            client.search_runs([client.get_experiment_by_name("e2e").experiment_id],
                               filter_string=f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'")}
    assert set(runs) == {"0", "1"}
    first = runs["0"]
    assert first.info.run_name == "0-SmallCNN" and first.info.status == "FINISHED"
    assert first.data.params["class_names"] == '["D0", "D1", "D2"]'
    assert first.data.params["augmult"] == "1" and runs["1"].data.params["augmult"] == "2"
    for key in ("loss", "val_loss", "accuracy", "val_accuracy", "test/accuracy", "test/balanced_accuracy",
                "test/auc", "dev/auc", "dev/accuracy", "test_class/acc_D0", "test_class/spec_D1",
                "test_class/sens_D2", "dev_class/auc_D0", "train/samples", "train/seconds", "train/best_epoch",
                "train_class/prop_D0"):
        assert key in first.data.metrics, key
    for series in ("loss", "val_accuracy"):  # the per-epoch series hold epochs only: the kept model's scores
        assert [m.step for m in client.get_metric_history(first.info.run_id, series)] == [0, 1, 2]
    groups = {name.split("/")[0] for name in first.data.metrics if "/" in name}
    assert groups <= {"train", "dev", "test", "train_class", "dev_class", "test_class", "system"}, groups
    inputs = {(item.dataset.name, tag.value) for item in first.inputs.dataset_inputs for tag in item.tags
              if tag.key == "mlflow.data.context"}
    assert inputs == {("mini-train", "training"), ("mini-dev", "validation"), ("mini-test", "testing")}
    parent = client.get_run(outcome.parent_run_id)
    assert re.fullmatch(r"table \d{4}-\d\d-\d\d \d\d:\d\d", parent.info.run_name)
    assert parent.data.metrics["rows/finished"] == 2 and parent.data.metrics["rows/failed"] == 0
    assert parent.data.tags["timl.best_run_id"] in {runs["0"].info.run_id, runs["1"].info.run_id}
    assert "best/test_accuracy" in parent.data.metrics
    assert [(item.dataset.name, item.tags[0].value) for item in parent.inputs.dataset_inputs] == [("table", "table")]
    artifacts = {item.path for item in client.list_artifacts(first.info.run_id)}
    assert any(path.endswith(".h5") and path.startswith("0-keras_model-") for path in artifacts)
    assert {"0-history.csv", "0-model_summary.txt", "0-test-confusion_matrix.png"} <= artifacts
    # the original TIML's file names
    assert {"0-plot-loss.png", "0-plot-accuracy.png", "0-dev-ROC-0000-D0.png", "0-test-ROC-0002-D2.png"} <= artifacts

    out = tmp_path / "out"
    table_csv = pd.read_csv(out / "automation_result.csv", dtype=str, keep_default_na=False)
    assert list(table_csv.columns[:11]) == ["method", "dataset", "split", "epochs", "imgaug", "batchsize",
                                            "imgsize", "resizefilter", "colorspace", "classcolumns",
                                            "classweights"]
    assert list(table_csv["run_id"]) == [runs["0"].info.run_id, runs["1"].info.run_id]
    assert list(table_csv.columns[11:31]) == ["trainsize", "augmult", "malprop", "trainstart", "traintime",
                                              "trainacc", "trainmodel", "valsize", "valmalprop", "valacc", "valspec",
                                              "valsens", "testsize", "testmalprop", "testacc", "testspec",
                                              "testsens", "testauc", "exceptions", "notes"]
    assert re.fullmatch(r"\[\d\.\d{3},\d\.\d{3},\d\.\d{3}\]", table_csv.loc[0, "testacc"])
    # the cells against the run's own metrics, formatted here by hand as the original TIML wrote them
    metrics = first.data.metrics
    assert (table_csv.loc[0, "trainsize"], table_csv.loc[0, "valsize"], table_csv.loc[0, "testsize"]) == \
        ("60", "15", "15")  # 90 images, n=15
    assert table_csv.loc[0, "testacc"] == "[%.3f,%.3f,%.3f]" % tuple(
        metrics[f"test_class/acc_{name}"] for name in ("D0", "D1", "D2"))
    assert table_csv.loc[0, "valsens"] == "[%.3f,%.3f,%.3f]" % tuple(
        metrics[f"dev_class/sens_{name}"] for name in ("D0", "D1", "D2"))
    assert table_csv.loc[0, "trainacc"] == "%.3f" % metrics["train/accuracy"]
    seconds = round(metrics["train/seconds"])
    assert table_csv.loc[0, "traintime"] == f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    assert re.fullmatch(r"\d+:\d\d:\d\d", table_csv.loc[0, "traintime"])
    assert re.fullmatch(r"\d{8}-\d{6}", table_csv.loc[0, "trainstart"])
    assert (out / "automation_input.csv").read_bytes() == table.read_bytes(), "the input table, copied as it was"
    assert table_csv.loc[0, "notes"] == "first"
    assert (out / "0-automation_result.csv").is_file() and (out / "1-automation_result.csv").is_file()

    rebuilt = tmp_path / "rebuilt.csv"
    result = CliRunner().invoke(results.cli, ["--parent-run", outcome.parent_run_id, "-o", str(rebuilt)])
    assert result.exit_code == 0, result.output
    assert rebuilt.read_text() == (out / "automation_result.csv").read_text()

    from timl.classifier import load_classifier

    classifier = load_classifier(model_uri=f"runs:/{first.info.run_id}/model")
    assert classifier.class_names == ("D0", "D1", "D2") and classifier.preprocessing.imgsize == 16


def test_bad_rows_fail_alone(tracking_uri, mini_digits, tmp_path):
    from timl import training

    good = small_cnn_row(str(mini_digits / "mini.csv"), epochs=1)
    table = write_table(tmp_path / "table.csv", [
        dict(good, method="NoSuchNet"),
        dict(good, split="thirds"),
        dict(good, dataset=str(tmp_path / "missing.csv")),
        dict(good, epochs=0),
        dict(good, batchsize="abc"),
        good,
    ])
    outcome = training.train_table(table, out_dir=tmp_path / "out", experiment="bad")
    statuses = [row.status for row in outcome.rows]
    assert statuses == ["FAILED"] * 5 + ["FINISHED"]
    messages = [row.message for row in outcome.rows]
    assert "method" in messages[0] and "SmallCNN" in messages[0] and "NoSuchNet" in messages[0]
    assert "split" in messages[1] and "kfold" in messages[1]
    assert "missing.csv" in messages[2]
    assert "epochs" in messages[3] and "row 3" in messages[3]
    assert "batchsize" in messages[4] and "'abc'" in messages[4]
    frame = pd.read_csv(tmp_path / "out" / "automation_result.csv", dtype=str, keep_default_na=False)
    assert len(frame) == 6
    assert all(frame.loc[index, "exceptions"] for index in range(5)) and not frame.loc[5, "exceptions"]
    assert not [run for run in _client().search_runs(
        [_client().get_experiment_by_name("bad").experiment_id]) if run.info.status == "RUNNING"]


def test_cli_exit_codes_and_messages(tracking_uri, mini_digits, tmp_path):
    from timl.train import cli

    table = write_table(tmp_path / "table.csv", [small_cnn_row(str(mini_digits / "mini.csv"), method="Nope",
                                                                epochs=1)])
    result = CliRunner().invoke(cli, ["--input-table", str(table), "--out-dir", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "Nope" in result.output

    bad_columns = tmp_path / "typo.csv"
    bad_columns.write_text("method,datset,split,epochs\nSmallCNN,x.csv,pre,1\n")
    result = CliRunner().invoke(cli, ["--input-table", str(bad_columns)])
    assert result.exit_code == 2
    assert "'datset'" in result.output and "dataset" in result.output

    result = CliRunner().invoke(cli, ["--list-methods"])
    assert result.exit_code == 0 and "SmallCNN" in result.output and "VGG16-fc4k-do75-ml" in result.output


@pytest.mark.slow
def test_memory_stays_flat_across_rows(tracking_uri, mini_digits, tmp_path):
    import psutil

    from timl import training

    table = write_table(tmp_path / "table.csv",
                        [small_cnn_row(str(mini_digits / "mini.csv"), epochs=1, seed=i) for i in range(5)])
    process = psutil.Process()
    samples = []
    outcome = training.train_table(table, out_dir=tmp_path / "out", experiment="mem", skip_roc=True,
                                   on_row=lambda row: samples.append(process.memory_info().rss))
    assert not outcome.failed and len(samples) == 5
    growth = (samples[-1] - samples[1]) / samples[1]  # after the first row has loaded TensorFlow's kernels
    assert growth < 0.10, [s // 2**20 for s in samples]


def test_same_seed_same_result(tracking_uri, mini_digits, tmp_path):
    from timl import training

    row = small_cnn_row(str(mini_digits / "mini.csv"), epochs=1, split="frac=0.2", seed=3)
    table = write_table(tmp_path / "table.csv", [row, row])
    outcome = training.train_table(table, out_dir=tmp_path / "out", experiment="seed", skip_roc=True)
    client = _client()
    first, second = (client.get_run(row.run_id).data for row in outcome.rows)
    assert first.metrics["loss"] == pytest.approx(second.metrics["loss"], rel=1e-5)
    assert first.metrics["train/samples"] == second.metrics["train/samples"]


def test_every_command_has_help_with_an_example():
    import importlib

    from timl.cli import COMMANDS, main

    modules = list(COMMANDS.values()) + ["timl.register", "timl.classification.train",
                                         "timl.classification.predict", "timl.classification.inspect"]
    for module in modules:
        result = CliRunner().invoke(importlib.import_module(module).cli, ["--help"])
        assert result.exit_code == 0 and "Example" in result.output, module
    assert all(name in CliRunner().invoke(main, ["--help"]).output for name in COMMANDS)
    for module in ("timl.train", "timl.classification.train"):  # as real entry points
        result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                                cwd=REPO, timeout=120)
        assert result.returncode == 0 and "Example" in result.stdout, module


def test_conda_yaml_matches_pyproject():
    import tomllib

    import yaml

    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip_section = next(item["pip"] for item in conda["dependencies"] if isinstance(item, dict))
    assert pip_section[-1] == ".[ray]", "the MLproject's environment can run --executor ray"
    assert pip_section[:-1] == dependencies


def test_the_table_hands_valid_rows_to_any_executor(tracking_uri, mini_digits, tmp_path):
    from timl.training import Executor, LocalExecutor, train_table

    class Recording(Executor):
        """An executor that trains through the local one and remembers what it was handed."""

        def __init__(self):
            self.inner, self.tasks = LocalExecutor(skip_roc=True), []

        def run(self, task):
            self.tasks.append(task)
            return self.inner.run(task)

        def close(self):
            self.inner.close()

    dataset = str(mini_digits / "mini.csv")
    table = write_table(tmp_path / "t.csv", [small_cnn_row(dataset, epochs=1), small_cnn_row(dataset, method="Nope"),
                                             small_cnn_row(dataset, epochs=1, seed=1)])
    seen = []
    with Recording() as executor:
        outcome = train_table(table, out_dir=tmp_path / "out", experiment="seam", executor=executor, on_row=seen.append)
        assert [task.config.row for task in executor.tasks] == [0, 2], "an invalid row never reaches the executor"
        assert executor.tasks[1].checkpoint_dir == (tmp_path / "out" / ".backup" / "2").resolve()
        assert [(row.row, row.status) for row in outcome.rows] == [(0, "FINISHED"), (1, "FAILED"), (2, "FINISHED")]
        assert seen == outcome.rows
        executor.tasks.clear()
        again = train_table(table, out_dir=tmp_path / "out", experiment="seam", executor=executor, resume=True)
        assert executor.tasks == [], "finished rows are skipped before the executor"
        assert [row.message for row in again.rows if row.status == "FINISHED"] == ["skipped: already FINISHED"] * 2
