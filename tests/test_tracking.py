"""Every MLflow call of TIML: stores, table and row runs and their end states, logging, command runs, models."""

from __future__ import annotations

import math
import os
import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from timl import tracking
from timl.errors import ConfigError, ModelError


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def test_configure_takes_the_argument_then_the_environment_then_sqlite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.configure() == "sqlite:///mlflow.db" == tracking.tracking_uri()
    assert (tmp_path / "mlflow.db").is_file()
    with sqlite3.connect(tmp_path / "mlflow.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")
    assert tracking.configure().endswith("env.db")
    assert tracking.configure(f"sqlite:///{tmp_path / 'arg.db'}").endswith("arg.db")
    assert (tmp_path / "arg.db").is_file() and not list(tmp_path.glob("*.creating"))


def test_experiment_id_creates_once(tracking_uri):
    first = tracking.experiment_id("e")
    assert tracking.experiment_id("e") == first
    assert tracking.experiment_name(first) == "e"


def test_table_run_tags_artifact_and_end_state(tracking_uri, tmp_path):
    table = tmp_path / "runs.csv"
    table.write_text("method\n")
    run_id = tracking.start_table_run("tables", str(table), tmp_path / "out")
    run = tracking.get_run(run_id)
    assert run.info.status == "RUNNING" and re.fullmatch(r"runs \d{4}-\d\d-\d\d \d\d:\d\d", run.info.run_name)
    assert [item.dataset.name for item in run.inputs.dataset_inputs] == ["runs"], "the table as a dataset"
    assert run.data.tags[tracking.TAG_KIND] == "table" and run.data.tags[tracking.TAG_TABLE] == str(table.resolve())
    assert run.data.tags[tracking.TAG_PID] == str(__import__("os").getpid())
    assert [item.path for item in _client().list_artifacts(run_id)] == ["runs.csv"]
    assert [found.info.run_id for found in tracking.table_runs("tables")] == [run_id]
    assert tracking.table_runs("no such experiment") == []
    tracking.end_run(run_id, "KILLED")
    ended = tracking.get_run(run_id)
    assert ended.info.status == "KILLED" and ended.data.tags[tracking.TAG_STATUS] == "KILLED"
    assert tracking.start_table_run("tables", str(table), tmp_path / "out", resume_run_id=run_id) == run_id
    assert tracking.get_run(run_id).info.status == "RUNNING"


@pytest.mark.parametrize("raised,status", [(None, "FINISHED"), (ValueError("bad cell"), "FAILED"),
                                           (KeyboardInterrupt(), "KILLED")])
def test_a_row_run_never_ends_running(tracking_uri, raised, status):
    parent = _client().create_run(tracking.experiment_id("rows")).info.run_id
    row_run = tracking.RowRun(parent, "3-SmallCNN", 3, "key3")
    try:
        with row_run:
            tracking.log_params({"method": "SmallCNN", "notes": "x" * 7000})
            if raised is not None:
                raise raised
    except (ValueError, KeyboardInterrupt):
        pass
    run = tracking.get_run(row_run.run_id)
    assert run.info.status == status == row_run.status
    assert run.data.tags[tracking.TAG_PARENT] == parent and run.data.tags[tracking.TAG_ROW] == "3"
    assert run.data.tags[tracking.TAG_ROW_KEY] == "key3" and len(run.data.params["notes"]) == 6000
    assert (run.data.tags.get(tracking.TAG_EXCEPTION) == "ValueError: bad cell") == (status == "FAILED")
    assert [child.info.run_id for child in tracking.child_runs(parent)] == [row_run.run_id]


def test_runs_of_a_dead_process_are_closed_killed(tracking_uri):
    client = _client()
    experiment = tracking.experiment_id("dead")
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()
    here = socket.gethostname()
    dead = client.create_run(experiment, tags={tracking.TAG_PID: dead_pid, tracking.TAG_HOST: here}).info.run_id
    elsewhere = client.create_run(experiment, tags={tracking.TAG_PID: dead_pid,
                                                    tracking.TAG_HOST: "another-machine"}).info.run_id
    runs = [client.get_run(dead), client.get_run(elsewhere)]
    assert tracking.close_dead_runs(runs) == 1
    assert client.get_run(dead).info.status == "KILLED"
    assert client.get_run(elsewhere).info.status == "RUNNING", "another machine's run is left to its owner"


def test_a_reused_pid_does_not_keep_a_dead_run_running(tracking_uri):
    """A run whose pid is now another live process (a reused pid: the process start time differs) is closed KILLED;
    one of this live process with its own start time, or of another host, is left RUNNING."""
    client = _client()
    experiment = tracking.experiment_id("reused")
    here, live_pid = socket.gethostname(), str(os.getppid())  # the parent: alive, and not this process
    started = f"{psutil.Process(int(live_pid)).create_time():.2f}"
    reused = client.create_run(experiment, tags={tracking.TAG_PID: live_pid, tracking.TAG_HOST: here,
                                                 tracking.TAG_PROCESS_START: "1000000000.00"}).info.run_id
    owner = client.create_run(experiment, tags={tracking.TAG_PID: live_pid, tracking.TAG_HOST: here,
                                                tracking.TAG_PROCESS_START: started}).info.run_id
    elsewhere = client.create_run(experiment, tags={tracking.TAG_PID: live_pid, tracking.TAG_HOST: "another-machine",
                                                    tracking.TAG_PROCESS_START: "1000000000.00"}).info.run_id
    assert tracking.close_dead_runs([client.get_run(run) for run in (reused, owner, elsewhere)]) == 1
    assert client.get_run(reused).info.status == "KILLED"
    assert client.get_run(owner).info.status == client.get_run(elsewhere).info.status == "RUNNING"
    assert tracking.process_tags()[tracking.TAG_PROCESS_START] == f"{psutil.Process().create_time():.2f}"


def test_log_metrics_skips_missing_and_non_finite_values(tracking_uri):
    import mlflow

    with mlflow.start_run() as run:
        tracking.log_metrics({"a": 1, "b": None, "c": math.nan, "d": math.inf, "e": "text", "f": 0.5}, step=2)
        tracking.set_tags({"n": 3})
        assert tracking.active_run_id() == run.info.run_id
    data = tracking.get_run(run.info.run_id).data
    assert data.metrics == {"a": 1.0, "f": 0.5} and data.tags["n"] == "3"
    assert [metric.step for metric in _client().get_metric_history(run.info.run_id, "a")] == [2]


def test_runs_logging_the_same_new_dataset_at_once_all_get_it(tracking_uri):
    """Parallel trials and rows start together and log the same datasets: MLflow looks a dataset up, then inserts
    it, so without a retry one run in two met another's insert and failed its row (UNIQUE constraint failed:
    datasets...). Six runs at once, three rounds of a dataset none of them logged before, on the suite's SQLite."""
    import threading

    import pandas as pd

    client = _client()
    experiment = tracking.experiment_id("datasets-at-once")
    errors, logged = [], []
    for round_number in range(3):
        frame = pd.DataFrame({"image": [f"r{round_number}-{index}" for index in range(10)], "MEL": [0.0, 1.0] * 5})
        runs = [client.create_run(experiment).info.run_id for _ in range(6)]
        together = threading.Barrier(len(runs))

        def log(run_id: str):
            inputs = [tracking.dataset_input(frame, source="/data/gt.csv", name="gt", context="training")]
            together.wait()
            try:
                tracking.log_datasets(inputs, run_id=run_id)
            except Exception as error:  # noqa: BLE001 - collected for the assertion
                errors.append(str(error)[:200])

        threads = [threading.Thread(target=log, args=(run_id,)) for run_id in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        logged += [[item.dataset.name for item in client.get_run(run_id).inputs.dataset_inputs] for run_id in runs]
    assert errors == []
    assert logged == [["gt"]] * 18


def test_command_run_ends_finished_or_failed(tracking_uri, tmp_path):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "summary.csv").write_text("x\n")
    with tracking.command_run("inspections", "one", {tracking.TAG_COMMAND: "inspect"}, tracking_uri) as run_id:
        tracking.log_metrics({f"m{index}": float(index) for index in range(1500)}, run_id=run_id,
                             tracking_uri=tracking_uri)
        tracking.log_params({"threshold": 0.5}, run_id=run_id, tracking_uri=tracking_uri)
        tracking.log_folder(tmp_path / "report", run_id=run_id, tracking_uri=tracking_uri)
    run = tracking.get_run(run_id)
    assert run.info.status == "FINISHED" and len(run.data.metrics) == 1500 and run.data.params["threshold"] == "0.5"
    assert [item.path for item in _client().list_artifacts(run_id)] == ["summary.csv"]
    with pytest.raises(RuntimeError):
        with tracking.command_run("inspections", "two", {}, tracking_uri) as failed_id:
            raise RuntimeError("disk full")
    assert tracking.get_run(failed_id).info.status == "FAILED"


def test_a_deleted_experiment_is_named(tracking_uri):
    client = _client()
    client.delete_experiment(tracking.experiment_id("gone"))
    with pytest.raises(ConfigError, match="The MLflow experiment 'gone' is deleted"):
        with tracking.command_run("gone", "x", {}, tracking_uri):
            pass


def test_missing_runs_and_models_are_user_errors(tracking_uri):
    with pytest.raises(ConfigError, match="No such run in this tracking store"):
        tracking.get_run("0" * 32)
    with pytest.raises(ModelError, match="Cannot load MLflow model"):
        tracking.download_model_files("models:/nothing@champion", Path("downloaded"))
    run_id = _client().create_run(tracking.experiment_id("empty")).info.run_id
    with pytest.raises(ConfigError, match="has no logged model 'model' to register"):
        tracking.register_model(run_id, "m", description="", tags={}, alias=None)


def test_a_row_out_of_memory_is_told_what_to_try():
    from timl import tracking

    class ResourceExhaustedError(Exception):  # TensorFlow's, by name (TIML's commands never import TensorFlow here)
        pass

    for error in (MemoryError("cannot allocate"), ResourceExhaustedError("OOM when allocating tensor")):
        text = tracking.error_text(error)
        assert text.startswith(tracking.MEMORY_HINT) and text.endswith(f"{type(error).__name__}: {error}")
    assert tracking.error_text(ValueError("bad cell")) == "ValueError: bad cell"
