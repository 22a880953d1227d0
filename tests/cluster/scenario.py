"""The scale-out scenario, run inside a network namespace with loopback only by tests/test_cluster.py.

``unshare --net --pid --fork --mount-proc --kill-child python tests/cluster/scenario.py WORK DATA`` starts a real
PostgreSQL, an mlflow server on it and a two-node Ray cluster (the head advertises one GPU), then trains tables
with ``python -m timl.train --executor ray``: one while a Ray worker process is killed mid-row and the tracking
server, seen through a proxy, holds requests past the client's timeout, answers 503 and is down for 20 s, then
again with ``--resume``; one whose images a worker cannot find; one stopped with
SIGTERM; one whose worker dies with no retries left; one on a Ray instance TIML starts itself; a kfold=3 row;
one row with a ``groups`` cell; a search (``python -m timl.tune --parallel 2``, its study in PostgreSQL) killed
with SIGKILL after its first trial and resumed. ``scenario.py WORK DATA STEP...`` runs only the named steps
(after the cluster starts). It writes what it saw to WORK/report.json. Every process it starts lives in the
namespace and ends with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components import FaultyProxy, Postgres, RayCluster, TrackingServer  # noqa: E402
from helpers import REPO, small_cnn_row, write_table  # noqa: E402

PG_PORT, MLFLOW_PORT, PROXY_PORT, RAY_PORT = 55432, 55000, 55001, 56379
OUTAGE_SECONDS = 20  # the tracking server down, connection refused
HOLD_SECONDS = 7  # at least: requests held without an answer, then 503 answers
REQUEST_TIMEOUT = 5  # MLFLOW_HTTP_REQUEST_TIMEOUT of the main table: a held request times out in the window
#: The Optuna studies of the search step, in a database of their own on the same PostgreSQL.
STUDY_DATABASE = "studies"
STUDY_STORAGE = f"postgresql+psycopg2://postgres@127.0.0.1:{PG_PORT}/{STUDY_DATABASE}"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _train(cluster: RayCluster, uri: str, table: Path, out: Path, *extra: str, log: Path,
           env: dict | None = None, module: str = "timl.train") -> subprocess.Popen:
    command = [sys.executable, "-m", module, "--input-table", str(table), "--executor", "ray",
               "--ray-address", cluster.address, "--tracking-uri", uri, "--out-dir", str(out), "--experiment",
               "cluster", "--skip-roc", *extra]
    with log.open("a") as handle:
        return subprocess.Popen(command, cwd=table.parent, env=env or cluster.env, stdout=handle,
                                stderr=subprocess.STDOUT)


def _row_runs(client, out: Path) -> list:
    parent = (out / "parent_run_id.txt").read_text().strip() if (out / "parent_run_id.txt").is_file() else None
    if parent is None:
        return []
    experiment = client.get_run(parent).info.experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")


def _wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise TimeoutError(f"waited {timeout} s for {what}")


def _running_row_with_epochs(client, out: Path, epochs: int, exclude: tuple = ()):
    """A RUNNING row run with a worker tag and at least ``epochs`` logged epochs."""
    for run in _row_runs(client, out):
        if run.info.status == "RUNNING" and "timl.worker" in run.data.tags and run.info.run_id not in exclude:
            if len(client.get_metric_history(run.info.run_id, "loss")) >= epochs:
                return run
    return None


def _describe_rows(client, out: Path) -> list[dict]:
    rows = []
    for run in _row_runs(client, out):
        history = client.get_metric_history(run.info.run_id, "loss")
        steps = [metric.step for metric in history]
        rows.append({"run_id": run.info.run_id, "row": run.data.tags.get("timl.row"), "status": run.info.status,
                     "node": run.data.tags.get("timl.ray_node"), "worker": run.data.tags.get("timl.worker"),
                     "resumed_at": run.data.tags.get("timl.resumed_at_epoch"),
                     "exception": run.data.tags.get("timl.exception", ""), "loss_steps": steps,
                     "loss_times": sorted(metric.timestamp / 1000 for metric in history),
                     "epochs": int(run.data.params.get("epochs", "0") or 0),
                     "test_accuracy": run.data.metrics.get("test/accuracy")})
    return rows


def _loadable(uri: str, run_ids: list[str]) -> dict:
    from timl import tracking
    from timl.classifier import load_classifier

    tracking.configure(uri)
    loaded = {}
    for run_id in run_ids:
        try:
            loaded[run_id] = list(load_classifier(model_uri=f"runs:/{run_id}/model").class_names)
        except Exception as error:  # reported, the test says which
            loaded[run_id] = f"{type(error).__name__}: {error}"
    return loaded


def main_table(work: Path, data: Path, cluster: RayCluster, server: TrackingServer, report: dict) -> None:
    """4 rows (one asks for the GPU); a worker killed mid-row; then the tracking server, seen through a proxy,
    holds requests past the client's timeout, answers 503, and is down (connection refused) for 20 s."""
    rows = [small_cnn_row(str(data / "mini.csv"), epochs=30, seed=seed) for seed in range(4)]
    rows[1]["gpus"] = 1
    table = write_table(work / "main.csv", rows)
    out = work / "main-out"
    client = _client(server.uri)
    proxy = FaultyProxy(PROXY_PORT, MLFLOW_PORT)
    proxy.listen()
    env = dict(cluster.env, MLFLOW_HTTP_REQUEST_TIMEOUT=str(REQUEST_TIMEOUT),  # the user's, for the hold window
               TIML_IMAGE_CACHE=str(work / "image-cache"))  # the rows of a node map one decoded copy of their images
    try:
        driver = _train(cluster, proxy.uri, table, out, log=work / "main.log", env=env)
        victim = _wait_for(lambda: _running_row_with_epochs(client, out, 3), 240, "a row training its 4th epoch")
        pid = int(victim.data.tags["timl.worker"].rsplit(":", 1)[1])
        report["worker_http_settings"] = [_http_settings(pid)]
        os.kill(pid, signal.SIGKILL)
        report["killed"] = {"run_id": victim.info.run_id, "pid": pid,
                            "epochs_logged": len(client.get_metric_history(victim.info.run_id, "loss"))}
        other = _wait_for(lambda: _running_row_with_epochs(client, out, 1, exclude=(victim.info.run_id,)), 240,
                          "another row training")
        report["worker_http_settings"].append(_http_settings(int(other.data.tags["timl.worker"].rsplit(":", 1)[1])))
        report["outages"] = _outages(proxy, server, client, out)
        report["main_rc"] = driver.wait(timeout=420)
        rows = _describe_rows(client, out)
        report["main_rows"] = rows
        parent = client.get_run((out / "parent_run_id.txt").read_text().strip())
        report["main_parent"] = {"status": parent.info.status, "run_id": parent.info.run_id}
        report["main_files"] = sorted(path.name for path in out.iterdir())
        report["image_cache"] = {"folder": str(work / "image-cache"),
                                 "files": sorted(path.name for path in (work / "image-cache").glob("**/*.npy"))}
        report["loadable"] = _loadable(server.uri, [row["run_id"] for row in rows if row["status"] == "FINISHED"])
        report["resume"] = _resume(work, cluster, proxy.uri, table, out)
    finally:
        proxy.refuse()


def _http_settings(pid: int) -> dict:
    """The MLflow HTTP client settings and the image cache folder in the environment a Ray worker process was
    started with."""
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(entry.split("=", 1) for entry in entries
                if entry.startswith(("MLFLOW_HTTP_REQUEST_", "TIML_IMAGE_CACHE=")))


def _outages(proxy: FaultyProxy, server: TrackingServer, client, out: Path) -> list[dict]:
    """Three windows in which the rows' logging calls meet a failing tracking server, each begun once a row
    logged two epochs after the previous one ended: requests held past the client's timeout (until a client gave
    up), 503 answers (until one was given), and the server stopped with nothing listening (connection refused).
    Each window's times and the requests the proxy met in it."""
    windows = []
    for kind, seconds in (("hold", HOLD_SECONDS), ("503", HOLD_SECONDS), ("refused", OUTAGE_SECONDS)):
        evidence = "timed_out" if kind == "hold" else kind  # what the proxy counts when a client met the window
        if windows:
            _wait_for(lambda: _logged_after(client, out, windows[-1]["ended"]), 120,
                      f"a row logging again after the {windows[-1]['kind']} window")
        before = dict(proxy.counts)
        window = {"kind": kind, "started": time.time()}
        if kind == "refused":
            proxy.refuse()
            window["started"] = time.time()
            server.stop()
            time.sleep(max(0.0, window["started"] + seconds - time.time()))  # the outage's length, not a wait
            server.start()
            proxy.listen()
        else:
            proxy.mode = kind
            time.sleep(seconds)  # the window's shortest length, not a wait
            with contextlib.suppress(TimeoutError):  # on a slow machine: until a client met it (the test says)
                _wait_for(lambda: proxy.counts[evidence] > before[evidence], 60, f"a client in the {kind} window")
            proxy.mode = "pass"
        window["ended"] = time.time()
        window["requests"] = {key: proxy.counts[key] - before[key] for key in before}
        windows.append(window)
    return windows


def _logged_after(client, out: Path, moment: float) -> bool:
    """Whether a row run of ``out`` logged two epochs after ``moment`` (seconds since the epoch): it trains
    freely again, so its next epoch falls in the next window."""
    runs = [run for run in _row_runs(client, out) if run.info.status == "RUNNING"]
    return any(sum(metric.timestamp > moment * 1000 for metric in client.get_metric_history(run.info.run_id, "loss"))
               >= 2 for run in runs)


def replay(work: Path, data: Path, cluster: RayCluster, server: TrackingServer, report: dict) -> None:
    """The row whose worker was killed, trained again on the cluster without a kill: its per-epoch losses, and
    those of the killed-and-retried run, for the test to compare."""
    client = _client(server.uri)
    killed = client.get_run(report["killed"]["run_id"])
    row = [small_cnn_row(str(data / "mini.csv"), epochs=30, seed=seed) for seed in range(4)][int(killed.data.tags["timl.row"])]
    if int(killed.data.tags["timl.row"]) == 1:
        row["gpus"] = 1
    table = write_table(work / "replay.csv", [row])
    out = work / "replay-out"
    driver = _train(cluster, server.uri, table, out, log=work / "replay.log")
    report["replay_rc"] = driver.wait(timeout=300)
    reference = _row_runs(client, out)[0].info.run_id

    def losses(run_id: str) -> list[float]:
        return [metric.value for metric in sorted(client.get_metric_history(run_id, "loss"), key=lambda m: m.step)]

    report["replay"] = {"killed": losses(killed.info.run_id), "reference": losses(reference)}


def _resume(work: Path, cluster: RayCluster, uri: str, table: Path, out: Path) -> dict:
    """The same table again with --resume: every row FINISHED is skipped."""
    started = time.time()
    driver = _train(cluster, uri, table, out, "--resume", log=work / "resume.log")
    rc = driver.wait(timeout=180)
    log = (work / "resume.log").read_text()
    return {"rc": rc, "skipped": log.count("skipped: already FINISHED"), "seconds": time.time() - started}


def missing_images(work: Path, data: Path, cluster: RayCluster, server: TrackingServer, report: dict) -> None:
    """A row whose images the worker cannot find fails with the worker's host and the path in its message."""
    (work / "elsewhere" / "images").mkdir(parents=True)
    (work / "elsewhere" / "gt.csv").write_text((data / "mini.csv").read_text())
    table = write_table(work / "missing.csv", [small_cnn_row(str(work / "elsewhere" / "gt.csv"), epochs=1)])
    driver = _train(cluster, server.uri, table, work / "missing-out", log=work / "missing.log")
    report["missing_rc"] = driver.wait(timeout=180)
    report["missing_rows"] = _describe_rows(_client(server.uri), work / "missing-out")


def terminated(work: Path, data: Path, cluster: RayCluster, server: TrackingServer, report: dict) -> None:
    """SIGTERM to the driver while two rows train: both KILLED, their tasks cancelled, the table KILLED."""
    table = write_table(work / "long.csv", [small_cnn_row(str(data / "mini.csv"), epochs=400, seed=seed)
                                            for seed in (5, 6)])
    out = work / "long-out"
    client = _client(server.uri)
    driver = _train(cluster, server.uri, table, out, log=work / "long.log")
    _wait_for(lambda: [run for run in _row_runs(client, out) if run.info.status == "RUNNING"
                       and len(client.get_metric_history(run.info.run_id, "loss")) >= 1], 240, "rows training")
    driver.send_signal(signal.SIGTERM)
    report["terminated_rc"] = driver.wait(timeout=120)
    workers = [int(run.data.tags["timl.worker"].rsplit(":", 1)[1]) for run in _row_runs(client, out)
               if "timl.worker" in run.data.tags]
    with contextlib.suppress(TimeoutError):  # a task that was not cancelled goes on logging: the test says which
        _wait_for(lambda: not [pid for pid in workers if _alive(pid)], 30, "the cancelled rows' workers to end")
    rows = _describe_rows(client, out)
    report["terminated_rows"] = rows
    report["terminated_parent"] = client.get_run((out / "parent_run_id.txt").read_text().strip()).info.status
    alive = [row["worker"] for row in rows if row["worker"] and _alive(int(row["worker"].rsplit(":", 1)[1]))]
    report["terminated_workers_alive"] = alive


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def retries_spent(work: Path, data: Path, cluster: RayCluster, server: TrackingServer, report: dict) -> None:
    """With --row-retries 0, a row whose worker is killed ends FAILED with the worker's death; the other row goes
    on."""
    table = write_table(work / "fragile.csv", [small_cnn_row(str(data / "mini.csv"), epochs=60, seed=seed)
                                               for seed in (7, 8)])
    out = work / "fragile-out"
    client = _client(server.uri)
    driver = _train(cluster, server.uri, table, out, "--row-retries", "0", log=work / "fragile.log")
    victim = _wait_for(lambda: _running_row_with_epochs(client, out, 2), 240, "a row training its 3rd epoch")
    os.kill(int(victim.data.tags["timl.worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    report["fragile_rc"] = driver.wait(timeout=300)
    report["fragile_victim"] = victim.info.run_id
    report["fragile_rows"] = _describe_rows(client, out)


def local_instance(work: Path, data: Path, cluster: RayCluster, server: TrackingServer, report: dict) -> None:
    """Without --ray-address, TIML starts a Ray instance on this machine for the table and stops it after."""
    table = write_table(work / "alone.csv", [small_cnn_row(str(data / "mini.csv"), epochs=2)])
    command = [sys.executable, "-m", "timl.train", "--input-table", str(table), "--executor", "ray",
               "--tracking-uri", server.uri, "--out-dir", str(work / "alone-out"), "--skip-roc"]
    env = {key: value for key, value in cluster.env.items() if key != "RAY_ADDRESS"}
    with (work / "alone.log").open("w") as log:
        report["alone_rc"] = subprocess.run(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            timeout=300).returncode
    report["alone_rows"] = _describe_rows(_client(server.uri), work / "alone-out")


def grouped(work: Path, data: Path, cluster: RayCluster, server: TrackingServer, report: dict) -> None:
    """A row with a ``groups FILE.csv:COLUMN`` cell (lesions of 3 images in a table beside the ground truth)
    trains on the cluster: its run records the grouped split and the results table its cell."""
    import pandas as pd

    folder = work / "lesions"
    folder.mkdir()
    (folder / "images").symlink_to(data / "images")
    truth = pd.read_csv(data / "mini.csv", dtype={"image_name": str})
    truth.to_csv(folder / "mini.csv", index=False)
    pd.DataFrame({"image_name": truth["image_name"], "lesion_id": [f"L{index // 3}" for index in range(len(truth))]}
                 ).to_csv(folder / "lesions.csv", index=False)
    row = dict(small_cnn_row(str(folder / "mini.csv"), epochs=1, split="frac=0.2"), groups="lesions.csv:lesion_id")
    out = work / "grouped-out"
    driver = _train(cluster, server.uri, write_table(work / "grouped.csv", [row]), out, log=work / "grouped.log")
    report["grouped_rc"] = driver.wait(timeout=180)
    runs = _row_runs(_client(server.uri), out)
    report["grouped_rows"] = [{"status": run.info.status, "node": run.data.tags.get("timl.ray_node"),
                               "tag": run.data.tags.get("timl.split.grouped"),
                               "params": {key: value for key, value in run.data.params.items() if "group" in key}}
                              for run in runs]
    report["grouped_results"] = pd.read_csv(out / "automation_result.csv", dtype=str, keep_default_na=False
                                            )["groups"].tolist()


def cross_validation(work: Path, data: Path, cluster: RayCluster, server: TrackingServer, report: dict) -> None:
    """A kfold=3 row: its three folds train in parallel on the cluster, then the driver summarises them."""
    import pandas as pd

    table = write_table(work / "cv.csv", [small_cnn_row(str(data / "mini.csv"), split="kfold=3", epochs=6)])
    out = work / "cv-out"
    driver = _train(cluster, server.uri, table, out, log=work / "cv.log")
    report["cv_rc"] = driver.wait(timeout=300)
    client = _client(server.uri)
    [cv] = _row_runs(client, out)
    fold_runs = client.search_runs([cv.info.experiment_id], f"tags.mlflow.parentRunId = '{cv.info.run_id}'")
    report["cv"] = {"status": cv.info.status, "kind": cv.data.tags.get("timl.kind"),
                    "samples": cv.data.metrics.get("test/samples"),
                    "has_interval": "test/balanced_accuracy_ci_low" in cv.data.metrics,
                    "folds": [{"status": run.info.status, "start": run.info.start_time, "end": run.info.end_time,
                               "node": run.data.tags.get("timl.ray_node")} for run in fold_runs],
                    "splits": pd.read_csv(out / "automation_result.csv")["split"].tolist(),
                    "files": sorted(path.name for path in out.iterdir())}


def _search_trials(client, out: Path) -> tuple:
    """The search run of a table with one search row, and its trial runs (None, [] before it exists)."""
    searches = _row_runs(client, out)
    if not searches:
        return None, []
    search = searches[0]
    return search, client.search_runs([search.info.experiment_id],
                                      f"tags.mlflow.parentRunId = '{search.info.run_id}'")


def search(work: Path, data: Path, cluster: RayCluster, server: TrackingServer, report: dict) -> None:
    """A search row (4 trials x 2 epochs, --parallel 2, the study in PostgreSQL): its driver killed with SIGKILL
    once the first trial ended, while others train; then the same command with --resume."""
    import optuna

    table = write_table(work / "search.csv", [small_cnn_row(str(data / "mini.csv"), lr="loguniform(1e-3,3e-2)")])
    out = work / "search-out"
    client = _client(server.uri)
    extra = ("--trials", "4", "--parallel", "2", "--study-storage", STUDY_STORAGE)
    driver = _train(cluster, server.uri, table, out, *extra, log=work / "search.log", module="timl.tune")
    def one_ended_one_starting() -> bool:
        """A trial ended and a later one has started but logged no epoch yet: it has both its epochs and its
        evaluation ahead, seconds in which the kill surely lands (a trial seen RUNNING in its evaluation could end
        between this look and the kill, leaving nothing interrupted). Both first trials may end together: then
        the next ones are those starting."""
        trials = _search_trials(client, out)[1]
        return (any(run.info.status == "FINISHED" for run in trials)
                and any(run.info.status == "RUNNING" and "loss" not in run.data.metrics for run in trials))

    _wait_for(one_ended_one_starting, 240, "a trial to end while another starts")
    driver.send_signal(signal.SIGKILL)
    found = {"killed_rc": driver.wait(timeout=60)}
    _, trials = _search_trials(client, out)
    running = [run for run in trials if run.info.status == "RUNNING"]
    found["interrupted"] = [run.info.run_name for run in running]
    workers = [int(run.data.tags["timl.worker"].rsplit(":", 1)[1]) for run in running if "timl.worker" in run.data.tags]
    began = time.time()
    _wait_for(lambda: not any(_alive(pid) for pid in workers) or None, 60, "the killed driver's tasks to end")
    found["workers_gone_after"] = time.time() - began
    resumed = _train(cluster, server.uri, table, out, *extra, "--resume", log=work / "search.log", module="timl.tune")
    found["resume_rc"] = resumed.wait(timeout=300)
    search_run, trials = _search_trials(client, out)
    found["status"] = search_run.info.status
    found["metrics"] = {key: value for key, value in search_run.data.metrics.items() if key.startswith("trials/")}
    found["best_run_id"] = search_run.data.tags.get("timl.best_run_id")
    found["trials"] = [{"name": run.info.run_name, "status": run.info.status, "run_id": run.info.run_id,
                        "trial": run.data.tags.get("timl.trial"), "start": run.info.start_time,
                        "end": run.info.end_time, "node": run.data.tags.get("timl.ray_node"),
                        "pruned": run.data.tags.get("timl.pruned")} for run in trials]
    study = optuna.load_study(study_name=search_run.data.params["study"], storage=STUDY_STORAGE)
    found["study"] = [{"number": trial.number, "state": trial.state.name,
                       "interrupted": bool(trial.user_attrs.get("timl.interrupted")),
                       "run_id": trial.user_attrs.get("timl.run_id")} for trial in study.trials]
    found["storage_param"] = search_run.data.params.get("study_storage")
    report["search"] = found


def main() -> None:
    work, data, only = Path(sys.argv[1]), Path(sys.argv[2]), set(sys.argv[3:])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    report: dict = {"started": time.time()}
    ray_temp = Path(tempfile.mkdtemp(prefix="timl-ray-", dir="/tmp"))
    postgres = Postgres(PG_PORT)
    server = None
    try:
        backend = postgres.start()
        postgres.create_database(STUDY_DATABASE)
        server = TrackingServer(backend, work / "artifacts", MLFLOW_PORT, work / "mlflow-server.log")
        server.start()
        # Ray's sockets live under its temp folder and a unix socket path may not exceed 107 bytes: a short one
        cluster = RayCluster(RAY_PORT, ray_temp)
        cluster.start()
        report["nodes"] = cluster.nodes()
        report["ready"] = time.time() - report["started"]
        for step in (main_table, replay, missing_images, terminated, retries_spent, local_instance,
                     cross_validation, grouped, search):
            if only and step.__name__ not in only:
                continue
            began = time.time()
            try:
                step(work, data, cluster, server, report)
            except Exception as error:  # the report says which step broke; the test fails on it
                report.setdefault("errors", []).append(f"{step.__name__}: {type(error).__name__}: {error}")
            report[f"{step.__name__}_seconds"] = time.time() - began
    finally:
        report["seconds"] = time.time() - report["started"]
        (work / "report.json").write_text(json.dumps(report, indent=2, default=str))
        if server is not None:
            server.stop()
        postgres.stop()
        shutil.rmtree(ray_temp, ignore_errors=True)


if __name__ == "__main__":
    os.chdir(REPO)
    main()
