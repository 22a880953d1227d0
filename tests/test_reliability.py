"""Hardening: tables survive crashes and signals, NaN ends a row, SQLite is shared, model files cannot run code."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import REPO, small_cnn_row, write_table


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _row_runs(experiment: str) -> list:
    client = _client()
    found = client.get_experiment_by_name(experiment)
    return list(client.search_runs([found.experiment_id], filter_string="tags.`timl.kind` = 'row'"))


def _train_command(table: Path, out: Path, experiment: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "timl.train", "--input-table", str(table), "--out-dir", str(out),
            "--experiment", experiment, "--skip-roc", *extra]


def test_nan_loss_fails_the_row_and_the_table_goes_on(tracking_uri, mini_digits, tmp_path):
    from timl import training

    from timl import models

    poisoned = models.create_model("SmallCNN", 3, 16, weights="none")
    poisoned.set_weights([np.full_like(weight, np.nan) for weight in poisoned.get_weights()])
    poisoned.save(tmp_path / "nan.h5")
    good = small_cnn_row(str(mini_digits / "mini.csv"), epochs=1)
    table = write_table(tmp_path / "t.csv", [dict(good, weights=str(tmp_path / "nan.h5")), good])
    outcome = training.train_table(table, out_dir=tmp_path / "out", experiment="nan", skip_roc=True)
    assert [row.status for row in outcome.rows] == ["FAILED", "FINISHED"]
    assert "loss became" in outcome.rows[0].message and "lr" in outcome.rows[0].message
    statuses = {run.data.tags["timl.row"]: run.info.status for run in _row_runs("nan")}
    assert statuses == {"0": "FAILED", "1": "FINISHED"}


def test_sigterm_marks_the_row_killed(tracking_uri, mini_digits, tmp_path):
    table = write_table(tmp_path / "t.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=200)])
    out = tmp_path / "out"
    process = subprocess.Popen(_train_command(table, out, "term"), cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    _wait_for_epoch(out, "term", process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 130, output
    assert "--resume" in output
    runs = _row_runs("term")
    assert [run.info.status for run in runs] == ["KILLED"]
    assert _client().get_run(runs[0].data.tags["mlflow.parentRunId"]).info.status == "KILLED"
    frame = pd.read_csv(out / "automation_result.csv", dtype=str, keep_default_na=False)
    assert len(frame) == 1


def _wait_for_epoch(out: Path, experiment: str, process, timeout: float = 240) -> None:
    """Waits until the row run of the table has logged at least one epoch."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            runs = _row_runs(experiment)
        except Exception:  # the store is being created
            runs = []
        if runs and "loss" in runs[0].data.metrics:
            return
        time.sleep(0.5)
    raise AssertionError("no epoch was logged in time")


@pytest.mark.slow
def test_resumed_row_continues_from_its_last_epoch(tracking_uri, mini_digits, tmp_path):
    table = write_table(tmp_path / "t.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=40)])
    out = tmp_path / "out"
    command = _train_command(table, out, "backup")
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_epoch(out, "backup", process)
    time.sleep(2)
    process.kill()
    process.wait()
    assert list((out / ".backup" / "0").iterdir()), "no checkpoint was written"
    result = subprocess.run(command + ["--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    finished = [run for run in _row_runs("backup") if run.info.status == "FINISHED"]
    assert len(finished) == 1
    steps = [metric.step for metric in _client().get_metric_history(finished[0].info.run_id, "loss")]
    assert sorted(steps) == list(range(40)), "every epoch once, those before the kill included"
    assert finished[0].data.tags["timl.resumed_at_epoch"] not in ("", "0")
    assert not (out / ".backup" / "0").exists(), "the checkpoint should be removed when the row finishes"
    history = pd.read_csv(out / "0-history.csv")
    assert list(history["epoch"]) == list(range(40)) and history["loss"].notna().all()
    result_row = pd.read_csv(out / "automation_result.csv").iloc[0]
    assert 0 <= float(result_row["trainacc"]) <= 1


def _tiny_compiled_model(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dropout(0.5),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    return model


def test_checkpoint_restores_model_and_optimizer_state(tmp_path):
    from timl.training.callbacks import EpochCheckpoint

    x = np.random.default_rng(0).random((32, 4)).astype("float32")
    y = np.eye(2, dtype="float32")[np.arange(32) % 2]
    trained = _tiny_compiled_model(0)
    trained.fit(x, y, epochs=3, verbose=0, callbacks=[EpochCheckpoint(tmp_path)])
    fresh = _tiny_compiled_model(1)
    assert EpochCheckpoint(tmp_path).restore(fresh) == 3
    for restored, original in zip(fresh.variables + fresh.optimizer.variables,
                                  trained.variables + trained.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(restored), np.asarray(original))
    assert int(np.asarray(fresh.optimizer.iterations)) == 3
    resumed = EpochCheckpoint(tmp_path)
    resumed.restore(fresh)
    assert [row["epoch"] for row in resumed.history] == [0, 1, 2] and "loss" in resumed.history[0]
    assert not list(tmp_path.glob("*partial*")), "the checkpoint is written aside, then renamed"


def test_unusable_checkpoint_trains_from_the_first_epoch(tmp_path, caplog):
    from timl.training.callbacks import EpochCheckpoint

    (tmp_path / "last.npz").write_bytes(b"half a file")
    assert EpochCheckpoint(tmp_path).restore(_tiny_compiled_model(0)) == 0
    assert "cannot be used" in caplog.text and "first epoch" in caplog.text


@pytest.mark.slow
def test_table_killed_three_times_ends_complete(tracking_uri, mini_digits, tmp_path):
    from timl import classifier as classifiers

    rows = [small_cnn_row(str(mini_digits / "mini.csv"), epochs=6, seed=index) for index in range(4)]
    table = write_table(tmp_path / "t.csv", rows)
    out = tmp_path / "out"
    command = _train_command(table, out, "chaos")
    chance = random.Random(7)
    for attempt in range(3):
        process = subprocess.Popen(command + (["--resume"] if attempt else []), cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(chance.uniform(8, 25))
        process.kill()
        process.wait()
    result = subprocess.run(command + ["--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr

    runs = _row_runs("chaos")
    assert not [run for run in runs if run.info.status == "RUNNING"]
    finished = [run for run in runs if run.info.status == "FINISHED"]
    assert sorted(run.data.tags["timl.row"] for run in finished) == ["0", "1", "2", "3"]
    for run in finished:
        classifier = classifiers.load_classifier(model_uri=f"runs:/{run.info.run_id}/model")
        assert classifier.class_names == ("D0", "D1", "D2")
    frame = pd.read_csv(out / "automation_result.csv", dtype=str, keep_default_na=False)
    assert len(frame) == 4 and set(frame["run_id"]) == {run.info.run_id for run in finished}
    with sqlite3.connect(tmp_path / "mlflow.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.slow
def test_two_tables_share_one_new_sqlite_store(tmp_path, mini_digits):
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    processes = []
    for name in ("a", "b"):
        table = write_table(tmp_path / f"{name}.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=1)])
        processes.append(subprocess.Popen(
            _train_command(table, tmp_path / f"out-{name}", f"shared-{name}", "--tracking-uri", uri),
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for process in processes:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output
        assert "database is locked" not in output and "already exists" not in output


def _lambda_model():
    import keras

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Lambda(lambda x: x * 2)(inputs)))
    return keras.Model(inputs, outputs)


def test_model_files_with_lambda_layers_are_refused(tmp_path):
    from timl import classifier as classifiers
    from timl.errors import ModelError

    model = _lambda_model()
    model.save(tmp_path / "lambda.h5")
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ModelError, match="Lambda"):
        classifiers.load_keras_model(tmp_path / "lambda.h5")
    with pytest.raises(ModelError, match="(?i)lambda|safe"):
        classifiers.load_keras_model(tmp_path / "lambda.keras")


def test_a_changed_model_file_is_refused(tmp_path):
    import keras

    from timl import classifier as classifiers
    from timl.errors import ModelError
    from timl.images import Preprocessing

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs)))
    path = tmp_path / "m.h5"
    model.save(path)
    classifier = classifiers.Classifier(model, Preprocessing(8), ("a", "b"))
    classifiers.write_metadata(path, classifier.metadata())
    assert classifiers.classifier_from_keras_file(path).class_names == ("a", "b")
    other = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs)))
    other.save(path)  # replaced after training: the recorded sha256 no longer matches
    with pytest.raises(ModelError, match="sha256"):
        classifiers.classifier_from_keras_file(path)


def test_nothing_turns_safe_mode_off():
    offenders = [str(path) for path in (REPO / "timl").rglob("*.py")
                 if "safe_mode=False" in path.read_text() or "enable_unsafe_deserialization" in path.read_text()]
    assert offenders == []


def test_minimum_versions_of_loading_libraries():
    import tomllib

    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {dep.split(">=")[0]: dep for dep in dependencies if ">=" in dep}
    for name in ("keras", "mlflow", "pillow"):
        assert name in pinned, f"{name} needs a minimum version"


def test_row_key_is_stable_and_specific(tmp_path):
    from timl.config import RunConfig

    row = small_cnn_row("x.csv")
    first = RunConfig.from_row(row, 0, str(tmp_path / "t.csv"))
    assert first.key("1") == RunConfig.from_row(dict(row), 0, str(tmp_path / "t.csv")).key("1")
    assert first.key("1") != RunConfig.from_row(dict(row, epochs=3), 0, str(tmp_path / "t.csv")).key("1")
    assert first.key("1") != first.key("2")
    assert first.key("1") != RunConfig.from_row(row, 0, str(tmp_path / "other.csv")).key("1")
    assert np.isscalar(first.key("1"))
