"""Scale-out on real components: a two-node Ray cluster, PostgreSQL and an mlflow server, in a network namespace.

The scenario (tests/cluster/scenario.py) runs inside ``unshare --net --pid``: only loopback exists there, so Ray,
PostgreSQL and the tracking server bind to 127.0.0.1 and nothing leaves the machine; every process it starts
ends with the namespace. It reports what it saw; the tests here assert on the report. Select them with
``pytest -m cluster``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import REPO, small_cnn_row, write_table

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.component("network namespaces", "postgresql")]


@pytest.fixture(scope="module")
def report(tmp_path_factory, mini_digits):
    work = tmp_path_factory.mktemp("cluster")
    command = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child", sys.executable,
               str(REPO / "tests" / "cluster" / "scenario.py"), str(work), str(mini_digits)]
    with (work / "scenario.log").open("w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=960, cwd=REPO)
    assert (work / "report.json").is_file(), (work / "scenario.log").read_text()[-3000:]
    found = json.loads((work / "report.json").read_text())
    found["work"] = str(work)
    return found


def _by_row(rows: list[dict]) -> dict:
    return {int(row["row"]): row for row in rows}


def test_no_step_broke(report):
    assert not report.get("errors"), report.get("errors")


def test_a_table_on_the_cluster_is_complete_in_postgres_and_on_the_driver(report):
    assert report["main_rc"] == 0 and report["main_parent"]["status"] == "FINISHED"
    rows = _by_row(report["main_rows"])
    assert sorted(rows) == [0, 1, 2, 3] and {row["status"] for row in rows.values()} == {"FINISHED"}
    for row in rows.values():
        assert row["loss_steps"] == list(range(row["epochs"])), "every epoch logged once, in the store"
        assert report["loadable"][row["run_id"]] == ["D0", "D1", "D2"], "runs:/ID/model loads through the server"
    files = set(report["main_files"])
    assert "automation_result.csv" in files
    for number in range(4):
        assert f"{number}-automation_result.csv" in files and f"{number}-history.csv" in files
        assert any(name.startswith(f"{number}-keras_model-") and name.endswith(".h5") for name in files)
        assert f"{number}-plot-loss.png" in files and f"{number}-test-per_image_results.csv" in files


def test_the_gpu_row_ran_on_the_node_that_has_the_gpu(report):
    gpu_nodes = [node["id"] for node in report["nodes"] if node["resources"].get("GPU")]
    assert len(report["nodes"]) == 2 and len(gpu_nodes) == 1
    assert _by_row(report["main_rows"])[1]["node"] == gpu_nodes[0]


def test_a_killed_worker_is_retried_from_the_rows_checkpoint(report):
    killed = report["killed"]
    row = next(row for row in report["main_rows"] if row["run_id"] == killed["run_id"])
    assert row["status"] == "FINISHED" and row["worker"].rsplit(":", 1)[1] != str(killed["pid"])
    assert int(row["resumed_at"]) >= 1, "the retry continued after the last checkpointed epoch"


def test_the_retried_row_trains_as_if_its_worker_had_not_died(report):
    """The killed row, continued from its checkpoint on another worker, has the per-epoch losses of the same row
    trained on the cluster without a kill (each epoch's batches depend only on the seed and the epoch)."""
    import numpy as np

    assert report["replay_rc"] == 0
    killed, reference = report["replay"]["killed"], report["replay"]["reference"]
    assert len(killed) == len(reference) == 30
    np.testing.assert_allclose(killed, reference, rtol=1e-4, atol=1e-5)


def test_the_tracking_clients_retry_settings_reach_the_ray_workers(report):
    """TIML's retries (6, backoff 2), the user's request timeout and the driver's image cache folder, in the
    environment the workers of the table's rows were started with (the killed row's worker and another)."""
    expected = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "TIML_IMAGE_CACHE": report["image_cache"]["folder"]}
    assert report["worker_http_settings"] == [expected, expected]
    assert report["image_cache"]["files"], "the rows decoded no shared image cache file"


def test_a_tracking_server_outage_loses_nothing(report):
    """The server held requests past the client's timeout, answered 503, then was down (connection refused) for
    20 s. In each window a row's logging call was made (an epoch's loss stamped inside it, or stamped the instant
    before it began and held through it: the row's next loss only after the window, where its epochs take a
    fraction of a second) and a row trained across it (its losses stamped before and after it); those rows
    FINISHED with every epoch logged once."""
    windows = {window["kind"]: window for window in report["outages"]}
    assert list(windows) == ["hold", "503", "refused"]
    assert windows["hold"]["requests"]["hold"] >= 1 and windows["hold"]["requests"]["timed_out"] >= 1
    assert windows["503"]["requests"]["503"] >= 1
    assert windows["refused"]["ended"] - windows["refused"]["started"] >= 20
    for window in windows.values():
        started, ended = window["started"], window["ended"]
        inside = [row for row in report["main_rows"] if any(started < moment < ended for moment in row["loss_times"])
                  or any(0 <= started - before < 1 and after > ended
                         for before, after in zip(row["loss_times"], row["loss_times"][1:]))]
        across = [row for row in report["main_rows"] if row["loss_times"][0] < started < ended < row["loss_times"][-1]]
        assert inside and across, f"no row logged during and across the {window['kind']} window: {window}"
        for row in inside + across:
            assert row["status"] == "FINISHED" and row["loss_steps"] == list(range(row["epochs"])), row
    assert report["main_rc"] == 0


def test_resume_skips_finished_rows(report):
    assert report["resume"]["rc"] == 0 and report["resume"]["skipped"] == 4


def test_a_worker_without_the_images_names_its_host_and_the_path(report):
    [row] = report["missing_rows"]
    assert report["missing_rc"] == 1 and row["status"] == "FAILED"
    assert "on Ray worker " in row["exception"] and "elsewhere/images" in row["exception"]


def test_sigterm_cancels_the_rows_and_ends_them_killed(report):
    assert report["terminated_rc"] == 130 and report["terminated_parent"] == "KILLED"
    assert [row["status"] for row in report["terminated_rows"]] == ["KILLED", "KILLED"]
    assert report["terminated_workers_alive"] == [], "the cancelled tasks' worker processes are gone"


def test_a_row_whose_retries_are_spent_fails_with_the_workers_death(report):
    rows = {row["run_id"]: row for row in report["fragile_rows"]}
    victim = rows.pop(report["fragile_victim"])
    assert victim["status"] == "FAILED" and "Ray worker died" in victim["exception"]
    assert [row["status"] for row in rows.values()] == ["FINISHED"] and report["fragile_rc"] == 1


def test_without_an_address_timl_starts_its_own_ray_instance(report):
    assert report["alone_rc"] == 0 and [row["status"] for row in report["alone_rows"]] == ["FINISHED"]


def test_a_grouped_row_trains_on_the_cluster_and_records_its_groups(report):
    """Issue 23: a ``groups FILE.csv:COLUMN`` row on Ray keeps its lesions whole (30 lesions of 3 images)."""
    assert report["grouped_rc"] == 0 and len(report["grouped_rows"]) == 1
    row = report["grouped_rows"][0]
    assert row["status"] == "FINISHED" and row["node"], row
    assert row["tag"] == "lesions.csv:lesion_id" and row["params"]["groups"] == "lesions.csv:lesion_id"
    assert sum(int(row["params"][f"num_groups_{split}"]) for split in ("train", "dev", "test")) == 30
    assert row["params"]["num_ungrouped_images"] == "0"
    assert report["grouped_results"] == ["lesions.csv:lesion_id"]


def test_the_folds_of_a_cross_validation_train_in_parallel_on_the_cluster(report):
    cv = report["cv"]
    assert report["cv_rc"] == 0 and cv["status"] == "FINISHED" and cv["kind"] == "cv"
    assert cv["samples"] == 90 and cv["has_interval"], "the driver pooled the folds' out-of-fold predictions"
    folds = cv["folds"]
    assert len(folds) == 3 and {fold["status"] for fold in folds} == {"FINISHED"}
    overlapping = [a for a in folds for b in folds if a is not b and a["start"] < b["end"] and b["start"] < a["end"]]
    assert overlapping, "the folds ran at the same time"
    assert cv["splits"] == ["kfold=3:0", "kfold=3:1", "kfold=3:2", "kfold=3"]
    assert "0-cv-test-per_image_results.csv" in cv["files"] and "0-fold1-test-per_image_results.csv" in cv["files"]


def test_a_search_killed_on_the_cluster_resumes_with_each_trial_once(report):
    """Issue 27: ``python -m timl.tune --executor ray --parallel 2 --study-storage postgresql+psycopg2://...``,
    its driver killed with SIGKILL after the first trial ended while others trained, then run with --resume."""
    search = report["search"]
    assert search["killed_rc"] == -9 and search["interrupted"], "the kill came while a trial trained"
    assert search["resume_rc"] == 0 and search["status"] == "FINISHED"
    trials = {trial["name"]: trial for trial in search["trials"]}
    finished = [trial for trial in trials.values() if trial["status"] == "FINISHED"]
    assert len(finished) == 4 and len({trial["trial"] for trial in search["trials"]}) == len(trials), "each once"
    assert {name for name, trial in trials.items() if trial["status"] != "FINISHED"} == set(search["interrupted"])
    assert {trials[name]["status"] for name in search["interrupted"]} == {"KILLED"}, "closed in MLflow"
    assert all(trial["node"] for trial in finished), "trained on the cluster"
    overlapping = [a for a in finished for b in finished
                   if a is not b and a["start"] < b["end"] and b["start"] < a["end"]]
    assert overlapping, "--parallel 2: trials trained at the same time"
    study = {trial["number"]: trial for trial in search["study"]}
    assert sorted(study) == sorted(int(trial["trial"]) for trial in search["trials"]), "the study in PostgreSQL"
    done = {number for number, trial in study.items() if trial["state"] in ("COMPLETE", "PRUNED")}
    assert {trial["run_id"] for number, trial in study.items() if number in done} == {
        trial["run_id"] for trial in finished}, "every finished run told to the study, once"
    assert {int(trials[name]["trial"]) for name in search["interrupted"]} == set(study) - done
    assert all(study[number]["state"] == "FAIL" and study[number]["interrupted"] for number in set(study) - done)
    metrics, states = search["metrics"], [trial["state"] for trial in study.values()]
    assert (metrics["trials/finished"], metrics["trials/pruned"], metrics["trials/failed"]) == (
        states.count("COMPLETE"), states.count("PRUNED"), 0)
    assert search["best_run_id"] in {trial["run_id"] for trial in finished}
    assert search["storage_param"].startswith("postgresql+psycopg2://postgres@127.0.0.1:")


# ---------------------------------------------------------------------------------------------------------
# Without a cluster


def test_without_ray_the_executor_says_how_to_install_it(tmp_path, mini_digits):
    table = write_table(tmp_path / "t.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=1)])
    code = ("import sys\nsys.modules['ray'] = None\nfrom timl.train import cli\n"
            f"cli(['--input-table', {str(table)!r}, '--executor', 'ray'])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --executor ray needs Ray")
    assert "pip install 'timl[ray]'" in result.stderr


def test_two_logical_devices_train_a_row_as_one_device_does(tmp_path, digits_dir):
    """MirroredStrategy over two logical CPU devices (TIML_LOGICAL_CPUS=2, a row with gpus=2) reaches the
    accuracy of the same row on one device."""
    row = small_cnn_row(str(digits_dir / "digits.csv"), epochs=4, split="n=300", batchsize=32, seed=1)
    scores = {}
    for name, extra, env in (("one", {}, {}), ("two", {"gpus": 2}, {"TIML_LOGICAL_CPUS": "2"})):
        table = write_table(tmp_path / f"{name}.csv", [dict(row, **extra)])
        code = ("import json, sys\nfrom timl.training import train_table\n"
                f"outcome = train_table({str(table)!r}, out_dir={str(tmp_path / name)!r}, experiment={name!r}, "
                f"tracking_uri='sqlite:///{tmp_path / 'mlflow.db'}', skip_roc=True)\n"
                "from mlflow.tracking import MlflowClient\n"
                "run = MlflowClient().get_run(outcome.rows[0].run_id)\n"
                "print(json.dumps({'status': outcome.rows[0].status, 'message': outcome.rows[0].message, "
                "'accuracy': run.data.metrics.get('test/accuracy'), 'replicas': run.data.params.get('replicas')}))\n")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                                timeout=600, env={**os.environ, **env})
        assert result.returncode == 0, result.stderr[-3000:]
        scores[name] = json.loads(result.stdout.strip().splitlines()[-1])
    assert scores["one"]["status"] == scores["two"]["status"] == "FINISHED", scores
    assert (scores["one"]["replicas"], scores["two"]["replicas"]) == ("1", "2")
    assert scores["one"]["accuracy"] > 0.8 and abs(scores["one"]["accuracy"] - scores["two"]["accuracy"]) < 0.08, scores
