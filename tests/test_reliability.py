"""Hardening: tables survive crashes and signals, NaN ends a row, SQLite is shared, model files cannot run code."""

from __future__ import annotations

import os
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
    if not Path("mlflow.db").is_file():  # not created yet: the trainer creates it whole (aside, then renamed);
        return []                        # touching it before would race the trainer's schema creation
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


def _wait_for_epoch(out: Path, experiment: str, process, timeout: float = 240, epochs: int = 1,
                   checkpoint: bool = False) -> None:
    """Waits until the row run of the table has logged at least ``epochs`` epochs (and, with ``checkpoint``, its
    checkpoint folder out/.backup/0 holds a file)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            runs = _row_runs(experiment)
        except Exception:  # the store is being created
            runs = []
        logged = len(_client().get_metric_history(runs[0].info.run_id, "loss")) if runs else 0
        saved = not checkpoint or ((out / ".backup" / "0").is_dir() and any((out / ".backup" / "0").iterdir()))
        if logged >= epochs and saved:
            return
        time.sleep(0.1)
    raise AssertionError(f"{epochs} epoch(s) and a checkpoint were not logged in time")


@pytest.mark.slow
def test_resumed_row_continues_from_its_last_epoch(tracking_uri, mini_digits, tmp_path):
    table = write_table(tmp_path / "t.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=40)])
    out = tmp_path / "out"
    command = _train_command(table, out, "backup")
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_epoch(out, "backup", process, epochs=2, checkpoint=True)  # a checkpoint after epoch 0 at least
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
    # trainacc: the accuracy of the kept (best) epoch, read here from the history across the kill, 3 decimals
    result_row = pd.read_csv(out / "automation_result.csv", dtype=str).iloc[0]
    best_epoch = int(finished[0].data.metrics["train/best_epoch"])
    assert result_row["trainacc"] == "%.3f" % history.loc[history["epoch"] == best_epoch, "accuracy"].iloc[0]


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


def test_a_row_with_a_truncated_checkpoint_trains_afresh_and_says_so(tracking_uri, mini_digits, tmp_path, caplog):
    """A truncated ``last.npz`` and ``best.json`` (a disk that failed): the row warns, naming each file, and trains
    from its first epoch, rather than failing the row (and every later --resume) until the user deletes them."""
    from timl import training

    table = write_table(tmp_path / "t.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=2)])
    backup = tmp_path / "out" / ".backup" / "0"
    backup.mkdir(parents=True)
    (backup / "last.npz").write_bytes(b"PK\x03\x04 truncated")
    (backup / "best.json").write_text('{"value": 0.9')
    outcome = training.train_table(table, out_dir=tmp_path / "out", experiment="torn", skip_roc=True, resume=True)
    assert [row.status for row in outcome.rows] == ["FINISHED"], outcome.rows[0].message
    assert f"The checkpoint {backup / 'last.npz'} cannot be used" in caplog.text and "first epoch" in caplog.text
    assert f"The best-epoch record {backup / 'best.json'} cannot be used" in caplog.text
    run = _row_runs("torn")[0]
    assert "timl.resumed_at_epoch" not in run.data.tags
    assert [metric.step for metric in _client().get_metric_history(run.info.run_id, "loss")] == [0, 1]


def _row_states(experiment: str) -> list[dict]:
    """Each row run: its row, status, run id and the epochs it has logged (the steps of its loss series)."""
    client = _client()
    try:
        runs = _row_runs(experiment)
    except Exception:  # the experiment is being created
        return []
    states = []
    for found in runs:  # the epochs first, then the run: a resumed run's tag is set before it logs old epochs again
        epochs = len(client.get_metric_history(found.info.run_id, "loss"))
        run = client.get_run(found.info.run_id)
        states.append({"row": run.data.tags.get("timl.row"), "status": run.info.status, "run_id": run.info.run_id,
                       "parent": run.data.tags.get("mlflow.parentRunId"),
                       "resumed_at": int(run.data.tags.get("timl.resumed_at_epoch") or 0), "epochs": epochs})
    return states


def _training_anew(state: dict, epochs: int) -> bool:
    """A row run in its epoch >= 3 of ``epochs`` that has trained an epoch in this process: a resumed run logs its
    restored epochs again first, so a kill at "3 epochs logged" could land before any new training."""
    return 3 <= state["epochs"] < epochs and state["epochs"] > state["resumed_at"]


def _kill_when(process, condition, what: str, seed: int, experiment: str, timeout: float = 300) -> list[dict]:
    """SIGKILLs ``process`` as soon as ``condition()`` returns the running rows' states; returns those the kill
    interrupted."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, f"the table ended before the kill {what} (chaos seed {seed})"
        states = condition()
        if states is not None:
            process.kill()
            process.wait()
            # the runs the kill interrupted: those of the snapshot still RUNNING now that the process is dead (one
            # may have finished between the look and the kill)
            still = {state["run_id"] for state in _row_states(experiment) if state["status"] == "RUNNING"}
            return [state for state in states if state["run_id"] in still]
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"no moment {what} was seen in time (chaos seed {seed})")


@pytest.mark.slow
def test_kills_at_observed_moments_lose_nothing(tracking_uri, mini_digits, tmp_path):
    """SIGKILL on observed progress, in an order drawn from a seed printed with every failure (set
    TIML_CHAOS_SEED to replay one): a row in its epoch >= 3 that has trained an epoch since it started or resumed (not
    its last), a row evaluating after its last epoch, the table between two rows (one more FINISHED, none RUNNING),
    and a checkpoint written aside but not yet renamed. The rows draw random views (``imgaug random``), so the
    equality below also holds random views to the seed and the epoch across a resume. Each kill interrupts something (a run left
    RUNNING, closed as KILLED by the next start), the resumed rows continue from their checkpoints, every row ends
    FINISHED once with every epoch logged once, and the row killed mid-training ends with the same weights and
    metrics as the same row trained without interruption."""
    from timl import classifier as classifiers

    seed = int(os.environ.get("TIML_CHAOS_SEED") or random.SystemRandom().randrange(1_000_000))
    print(f"chaos seed {seed}")
    chance = random.Random(seed)
    epochs = 8
    # random views: each epoch's views depend only on the seed and the epoch, so a resumed row sees the same ones
    rows = [small_cnn_row(str(mini_digits / "mini.csv"), epochs=epochs, seed=chance.randrange(1000), imgaug="random")
            for _ in range(4)]
    table = write_table(tmp_path / "t.csv", rows)
    out = tmp_path / "out"
    marker = tmp_path / "writing-checkpoint"
    command = [sys.executable, str(REPO / "tests" / "chaos_hooks.py"), "--input-table", str(table), "--out-dir",
               str(out), "--experiment", "chaos"]  # with ROC plots: a row's evaluation takes long enough to hit
    moments = ["at epoch >= 2", "during evaluation", "between rows", "while a checkpoint is written"]
    chance.shuffle(moments)
    interrupted = []  # (moment, the row runs RUNNING at the kill)
    for attempt, moment in enumerate(moments):
        finished_before = sum(state["status"] == "FINISHED" for state in _row_states("chaos"))
        environment = dict(os.environ, PYTHONPATH=str(REPO))
        if moment == "while a checkpoint is written":
            marker.unlink(missing_ok=True)
            environment["TIML_CHAOS_SLOW_CHECKPOINT"] = str(marker)
        process = subprocess.Popen(command + (["--resume"] if attempt else []), cwd=tmp_path, env=environment,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def observed():
            everything = _row_states("chaos")  # one look: the condition and the states from the same moment
            states = [state for state in everything if state["status"] == "RUNNING"]
            if moment == "at epoch >= 2":
                hit = any(_training_anew(state, epochs) for state in states)  # a new epoch trained, not the last
            elif moment == "during evaluation":
                hit = any(state["epochs"] == epochs for state in states)  # every epoch logged, not yet FINISHED
            elif moment == "between rows":  # a row more has FINISHED and the next has not started
                hit = sum(state["status"] == "FINISHED" for state in everything) > finished_before and not states
            else:
                hit = marker.is_file()
            return states if hit else None

        interrupted.append((moment, _kill_when(process, observed, moment, seed, "chaos")))
        if moment == "while a checkpoint is written":
            partials = list((out / ".backup").glob("*/last-partial.npz"))
            assert partials, f"the kill did not land mid-write (chaos seed {seed})"
            for partial in partials:  # the checkpoint in place is the previous one, whole
                last = partial.with_name("last.npz")
                logged = [state["epochs"] for state in interrupted[-1][1] if state["row"] == partial.parent.name]
                if last.is_file():
                    with np.load(last) as saved:
                        assert int(saved["epochs"]) in logged, (logged, int(saved["epochs"]), seed)
                else:
                    assert logged in ([], [0]), (logged, seed)
    result = subprocess.run(command + ["--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, f"chaos seed {seed}\n" + result.stdout + result.stderr

    runs = {state["run_id"]: state for state in _row_states("chaos")}
    assert not [run for run in runs.values() if run["status"] == "RUNNING"], f"chaos seed {seed}"
    finished = [run for run in runs.values() if run["status"] == "FINISHED"]
    assert sorted(run["row"] for run in finished) == ["0", "1", "2", "3"], f"chaos seed {seed}"
    client = _client()
    for moment, states in interrupted:
        if moment != "between rows":
            assert states, f"the kill {moment} interrupted no row (chaos seed {seed})"
        else:
            assert states == [], f"the kill between rows found a row running: {states} (chaos seed {seed})"
        for state in states:  # every run the kill interrupted is closed as KILLED, none left RUNNING
            assert client.get_run(state["run_id"]).info.status == "KILLED", (moment, seed)
    experiment = client.get_experiment_by_name("chaos").experiment_id
    tables = client.search_runs([experiment], filter_string="tags.`timl.kind` = 'table'")
    assert tables and all(run.info.status != "RUNNING" for run in tables), f"chaos seed {seed}"
    for run in finished:
        steps = sorted(metric.step for metric in client.get_metric_history(run["run_id"], "loss"))
        assert steps == list(range(epochs)), f"row {run['row']}: every epoch once (chaos seed {seed})"
    resumed = {run["row"]: int(client.get_run(run["run_id"]).data.tags.get("timl.resumed_at_epoch") or 0)
               for run in finished}
    mid_training = next(states for moment, states in interrupted if moment == "at epoch >= 2")
    killed_row = next(state for state in mid_training if _training_anew(state, epochs))
    assert resumed[killed_row["row"]] >= 3, f"the row killed at epoch >= 3 resumed from its checkpoint ({resumed})"
    evaluating = next(states for moment, states in interrupted if moment == "during evaluation")
    for state in evaluating:  # killed while evaluating: resumed after its last epoch, not trained again
        if state["epochs"] == epochs:
            assert resumed[state["row"]] == epochs, (resumed, evaluating, seed)
    with sqlite3.connect(tmp_path / "mlflow.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    frame = pd.read_csv(out / "automation_result.csv", dtype=str, keep_default_na=False)
    assert len(frame) == 4 and set(frame["run_id"]) == {run["run_id"] for run in finished}

    # the row killed mid-training, trained again without interruption: the same epochs, weights and scores
    row = int(killed_row["row"])
    reference_table = write_table(tmp_path / "reference.csv", [rows[row]])
    from timl import training

    reference = training.train_table(reference_table, out_dir=tmp_path / "reference", experiment="reference")
    assert reference.rows[0].status == "FINISHED"
    resumed_run = next(run for run in finished if run["row"] == str(row))
    reference_run = _row_runs("reference")[0].info.run_id
    for key in ("loss", "val_loss"):
        a = [metric.value for metric in sorted(client.get_metric_history(resumed_run["run_id"], key), key=lambda m: m.step)]
        b = [metric.value for metric in sorted(client.get_metric_history(reference_run, key), key=lambda m: m.step)]
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"{key} (chaos seed {seed})")
    killed_model = classifiers.load_classifier(model_uri=f"runs:/{resumed_run['run_id']}/model").model
    reference_model = classifiers.load_classifier(model_uri=f"runs:/{reference_run}/model").model
    for a, b in zip(killed_model.get_weights(), reference_model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"weights (chaos seed {seed})")


#: Runs ``python -m timl.train ARGS`` with a barrier in front of the store's set-up (schema creation under the
#: lock): each process marks its arrival in the folder argv[1], and waits (deadline 120 s) until argv[2]
#: processes have arrived, so they all reach the schema of the new store at the same moment.
BARRIER_TRAIN = """
import os, sys, time
from pathlib import Path

import timl.tracking.store as store
from timl.train import cli

barrier, parties = Path(sys.argv[1]), int(sys.argv[2])
set_up = store._tune_sqlite

def synchronised(uri):
    (barrier / str(os.getpid())).touch()
    deadline = time.time() + 120
    while len(list(barrier.iterdir())) < parties:
        if time.time() > deadline:
            raise SystemExit("the other process never reached the store's set-up")
        time.sleep(0.002)
    set_up(uri)

store._tune_sqlite = synchronised
cli.main(sys.argv[3:], prog_name="timl.train")
"""


@pytest.mark.slow
def test_two_tables_share_one_new_sqlite_store(tmp_path, mini_digits):
    """Two table processes started on one new SQLite store reach its creation at the same moment (a barrier in
    each, just before the store's set-up): both finish, neither sees "database is locked" nor a table that
    "already exists", and the store holds both experiments with their run."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    processes = []
    for name in ("a", "b"):
        table = write_table(tmp_path / f"{name}.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=1)])
        command = _train_command(table, tmp_path / f"out-{name}", f"shared-{name}", "--tracking-uri", uri)
        processes.append(subprocess.Popen(
            [sys.executable, "-c", BARRIER_TRAIN, str(barrier), "2", *command[3:]],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for process in processes:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output
        assert "database is locked" not in output and "already exists" not in output
    assert len(list(barrier.iterdir())) == 2
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    for name in ("a", "b"):
        experiment = client.get_experiment_by_name(f"shared-{name}")
        assert experiment is not None, name
        assert client.search_runs([experiment.experiment_id]), name


def _lambda_model():
    import keras

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Lambda(lambda x: x * 2)(inputs)))
    return keras.Model(inputs, outputs)


def test_model_files_with_lambda_layers_are_refused_by_every_loader(tracking_uri, tmp_path, caplog):
    """A model with a Lambda layer (arbitrary code) is refused as a file (.h5 and .keras, by load_classifier),
    as a logged model (runs:/ID/model, whose metadata and sha256 are in order), by the pyfunc of
    ``mlflow models serve`` and by the REST server (503, the reason in its log)."""
    import io

    import mlflow

    from helpers import encoded
    from timl import classifier as classifiers
    from timl import pyfunc
    from timl.errors import ModelError
    from timl.images import Preprocessing
    from timl.serving import create_app

    model = _lambda_model()
    model.save(tmp_path / "lambda.h5")
    model.save(tmp_path / "lambda.keras")
    metadata = classifiers.write_metadata(tmp_path / "lambda.h5",
                                          classifiers.Classifier(model, Preprocessing(8), ("a", "b")).metadata())
    with pytest.raises(ModelError, match="Lambda"):
        classifiers.load_classifier(keras_model=tmp_path / "lambda.h5")
    with pytest.raises(ModelError, match="(?i)lambda|safe"):
        classifiers.load_classifier(keras_model=tmp_path / "lambda.keras")
    with mlflow.start_run() as run:
        pyfunc.log_model(tmp_path / "lambda.h5", metadata,
                         classifiers.Classifier(model, Preprocessing(8), ("a", "b")))
    with pytest.raises(ModelError, match="Lambda"):
        classifiers.load_classifier(model_uri=f"runs:/{run.info.run_id}/model")
    with pytest.raises(Exception, match="Lambda"):
        mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    client = create_app({"CLASSIFICATION_MODEL": str(tmp_path / "lambda.h5")}).test_client()
    answer = client.post("/api/classify", data={"file": (io.BytesIO(encoded()), "a.png")},
                         content_type="multipart/form-data")
    assert answer.status_code == 503 and "Lambda" in caplog.text


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


@pytest.mark.slow  # about 30 s on 2 cores
def test_a_second_resume_refuses_the_busy_folder_and_ctrl_c_kills_the_row(tracking_uri, mini_digits, tmp_path):
    """Two ``--resume`` processes on one table and folder: the second refuses at once (exit 2), naming the folder
    and the process that holds it, and trains nothing; Ctrl-C (SIGINT) then ends the first's row KILLED, exit 130,
    and the folder is free again."""
    table = write_table(tmp_path / "t.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=200)])
    out = tmp_path / "out"
    first = subprocess.Popen(_train_command(table, out, "twice", "--resume"), cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_epoch(out, "twice", first)
        second = subprocess.run(_train_command(table, out, "twice", "--resume"), cwd=tmp_path, capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"The output folder {out} is in use by pid {first.pid} on host" in second.stderr
        assert "Traceback" not in second.stderr
        assert [run.info.status for run in _row_runs("twice")] == ["RUNNING"], "the second process trained nothing"
        first.send_signal(signal.SIGINT)
        output, _ = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 130, output
    assert "--resume" in output
    runs = _row_runs("twice")
    assert [run.info.status for run in runs] == ["KILLED"]
    assert _client().get_run(runs[0].data.tags["mlflow.parentRunId"]).info.status == "KILLED"
    from timl.training.lock import output_folder_lock

    with output_folder_lock(out):  # the lock went with the process
        pass
