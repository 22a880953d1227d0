"""The results table (automation_result.csv), rebuilt from a tracking store alone, on hand-made runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from timl import results, tracking
from timl.errors import ConfigError


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _table_run(experiment: str, name: str = "table") -> str:
    return _client().create_run(tracking.experiment_id(experiment), run_name=name,
                                tags={tracking.TAG_KIND: "table"}).info.run_id


def _row_run(parent: str, row: int, *, status: str = "FINISHED", metrics: dict | None = None,
             params: dict | None = None, tags: dict | None = None) -> str:
    client = _client()
    experiment = client.get_run(parent).info.experiment_id
    run_id = client.create_run(experiment, tags={tracking.TAG_PARENT: parent, tracking.TAG_ROW: str(row),
                                                 tracking.TAG_KIND: "row", **(tags or {})}).info.run_id
    for key, value in (params or {}).items():
        client.log_param(run_id, key, value)
    for key, value in (metrics or {}).items():
        client.log_metric(run_id, key, value)
    client.set_terminated(run_id, status=status)
    return run_id


ROW_PARAMS = {"method": "SmallCNN", "dataset": "gt.csv", "split": "n=5", "epochs": "2", "class_names":
              json.dumps(["MEL", "NV", "a+b"]), "augmult": "8"}


def test_one_row_reads_back_every_column(tracking_uri):
    parent = _table_run("r")
    metrics = {"trainsize": 40, "valsize": 5, "testsize": 5, "trainacc": 0.87654, "train_time": 12.5,
               "valacc_MEL": 0.5, "valacc_NV": 1.0, "valacc_a_b": 0.25, "trainprop_MEL": 0.5,
               "testauc_NV": 0.75, "val_accuracy": 0.8, "test_balanced_accuracy": 0.71234}
    run_id = _row_run(parent, 0, metrics=metrics, params=ROW_PARAMS,
                      tags={tracking.TAG_TRAINSTART: "2026-01-02 03:04:05", tracking.TAG_TRAINMODEL: "0-m.h5"})
    frame = results.build_results_table(parent_run_id=parent)
    assert list(frame.columns) == list(results.RESULT_COLUMNS) + ["status"] and list(frame.index) == [0]
    row = frame.loc[0]
    assert (row["method"], row["dataset"], row["augmult"], row["run_id"]) == ("SmallCNN", "gt.csv", "8", run_id)
    assert (row["trainsize"], row["trainacc"], row["traintime"]) == ("40", "0.877", "0:00:12")
    assert row["valacc"] == "[0.500,1.000,0.250]", "per class, in class order, names sanitised as logged"
    assert row["malprop"] == "[0.500,nan,nan]" and row["testauc"] == "[nan,0.750,nan]"
    assert row["valspec"] == "", "no value for any class: empty, not a list of nan"
    assert (row["trainstart"], row["trainmodel"], row["status"]) == ("20260102-030405", "0-m.h5", "FINISHED")
    assert (row["val_accuracy"], row["test_balanced_accuracy"], row["val_auc"]) == ("0.8000", "0.7123", "")


def test_the_original_columns_come_first_in_the_original_order():
    """automation_result.csv keeps the original TIML's layout; TIML's columns come after it."""
    original = ["method", "dataset", "split", "epochs", "imgaug", "batchsize", "imgsize", "resizefilter",
                "colorspace", "classcolumns", "classweights", "trainsize", "augmult", "malprop", "trainstart",
                "traintime", "trainacc", "trainmodel", "valsize", "valmalprop", "valacc", "valspec", "valsens",
                "testsize", "testmalprop", "testacc", "testspec", "testsens", "testauc", "exceptions", "notes"]
    assert list(results.RESULT_COLUMNS[:len(original)]) == original
    assert set(results.RESULT_COLUMNS[len(original):]) >= {"weights", "lr", "seed", "run_id", "val_accuracy"}


@pytest.mark.parametrize("seconds,text", [(0, "0:00:00"), (65.4, "0:01:05"), (3600 * 26 + 1, "1 day, 2:00:01"),
                                          (None, "")])
def test_traintime_is_the_original_h_mm_ss(seconds, text):
    assert results.format_traintime(seconds) == text


def test_failed_rows_show_their_error_and_resumed_rows_appear_once(tracking_uri):
    parent = _table_run("r")
    _row_run(parent, 1, status="FAILED", params=ROW_PARAMS, tags={tracking.TAG_EXCEPTION: "DatasetError: bad"})
    _row_run(parent, 0, status="KILLED", params=ROW_PARAMS)
    finished = _row_run(parent, 0, params=ROW_PARAMS, metrics={"val_accuracy": 0.9})
    _row_run(parent, 0, status="KILLED", params=ROW_PARAMS)  # a later attempt does not hide the finished one
    frame = results.build_results_table(parent_run_id=parent)
    assert list(frame.index) == [0, 1]
    assert frame.loc[0, "run_id"] == finished and frame.loc[0, "status"] == "FINISHED"
    assert frame.loc[1, "exceptions"] == "DatasetError: bad" and frame.loc[1, "status"] == "FAILED"


def test_an_experiment_gathers_every_table_oldest_first(tracking_uri):
    first, second = _table_run("many", "a"), _table_run("many", "b")
    one = _row_run(first, 0, params=ROW_PARAMS)
    two = _row_run(second, 0, params=ROW_PARAMS)
    frame = results.build_results_table(experiment="many")
    assert list(frame["run_id"]) == [one, two]
    assert list(frame["table_run"]) == [first, second], "each line says which table run it came from"
    assert "table_run" not in results.build_results_table(parent_run_id=first).columns, "one table: no such column"


def test_scores_always_have_four_decimals_and_counts_are_integers(tracking_uri):
    parent = _table_run("formats")
    _row_run(parent, 0, params=ROW_PARAMS, metrics={"dev/auc": 1.0, "test/auc": 0.5, "dev/accuracy": 0.12345,
                                                   "test/balanced_accuracy": 0.0, "train/samples": 40.0,
                                                   "dev/samples": 5, "test/samples": 5})
    row = results.build_results_table(parent_run_id=parent, ci=False).loc[0]
    assert (row["val_auc"], row["test_auc"], row["val_accuracy"], row["test_balanced_accuracy"]) == (
        "1.0000", "0.5000", "0.1235", "0.0000"), "one format for every score column: a perfect 1 is 1.0000"
    assert (row["trainsize"], row["valsize"], row["testsize"]) == ("40", "5", "5"), "counts are integers"


@pytest.mark.parametrize("options,message", [({}, "exactly one of --experiment or --parent-run"),
                                             ({"experiment": "x", "parent_run_id": "y"}, "exactly one"),
                                             ({"experiment": "nothing"}, "No TIML table runs in experiment")])
def test_bad_requests(tracking_uri, options, message):
    with pytest.raises(ConfigError, match=message):
        results.build_results_table(**options)


def test_write_table_and_the_command(tracking_uri, tmp_path):
    parent = _table_run("cli")
    _row_run(parent, 0, params=ROW_PARAMS, metrics={"val_accuracy": 0.5})
    path = results.write_table(results.build_results_table(parent_run_id=parent), tmp_path / "r.csv")
    written = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(written.columns) == list(results.RESULT_COLUMNS) and not list(tmp_path.glob("*.tmp"))
    output = tmp_path / "cli.csv"
    result = CliRunner().invoke(results.cli, ["--experiment", "cli", "-o", str(output), "--tracking-uri", tracking_uri])
    assert result.exit_code == 0 and "Wrote 1 rows" in result.output
    from_experiment = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert list(from_experiment.columns) == list(results.RESULT_COLUMNS) + ["table_run"], "the table run comes last"
    assert from_experiment.drop(columns="table_run").equals(written) and list(from_experiment["table_run"]) == [parent]
    missing = CliRunner().invoke(results.cli, ["--experiment", "none", "--tracking-uri", tracking_uri])
    assert missing.exit_code == 2 and "No TIML table runs" in missing.output
