"""The record in `mlflow ui`: a real `mlflow ui` process on a store written by a short table, read in headless
Chromium. Screenshots of each page go to the test's temporary folder (not committed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import CHROMIUM_FLAGS, chromium, free_port, small_cnn_row, train_in_own_store, wait_for_http, wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.component("chromium")]

#: The browser reaches 127.0.0.1 only: every other host goes to a proxy port where nothing listens.
LOOPBACK_ONLY = ("--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1;localhost",
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")


@pytest.fixture(scope="module")
def ui(tmp_path_factory, mini_digits):
    """Two rows and a search (2 trials of 1 epoch) trained into their own store, and `mlflow ui` serving it
    (stopped by its pid)."""
    from timl.search.study import SearchOptions

    folder = tmp_path_factory.mktemp("ui")
    rows = [small_cnn_row(str(mini_digits / "mini.csv"), epochs=2, seed=seed) for seed in (0, 1)]
    rows.append(small_cnn_row(str(mini_digits / "mini.csv"), epochs=1, lr="loguniform(1e-3,1e-2)"))
    outcome, uri = train_in_own_store(folder, rows, "ui", skip_roc=False,
                                      search=SearchOptions(trials=2, pruner="none"))
    port = free_port()
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    server = subprocess.Popen([str(os.path.join(os.path.dirname(sys.executable), "mlflow")), "ui",
                               "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)],
                              cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    driver = None
    try:
        wait_for_http(f"{base}/health")
        driver = chromium(folder / "profile", CHROMIUM_FLAGS + LOOPBACK_ONLY)
        yield {"base": base, "outcome": outcome, "uri": uri, "driver": driver, "folder": folder}
    finally:
        if driver is not None:
            driver.quit()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _open(ui, fragment: str, expected: list[str], screenshot: str) -> str:
    """Opens a page of the UI, waits until its text shows every expected string, saves a screenshot."""
    driver = ui["driver"]
    driver.get(f"{ui['base']}/#{fragment}")
    text = wait_until(driver, lambda current: (lambda body: body if all(item in body for item in expected)
                                               else None)(current.find_element("tag name", "body").text), 90)
    time.sleep(1)  # charts finish drawing
    driver.save_screenshot(str(ui["folder"] / f"{screenshot}.png"))
    return text


def _runs(ui):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=ui["uri"])
    parent = client.get_run(ui["outcome"].parent_run_id)
    row = client.get_run(ui["outcome"].rows[0].run_id)
    return parent, row


def test_the_runs_list_shows_the_table_with_its_rows(ui):
    parent, row = _runs(ui)
    text = _open(ui, f"/experiments/{parent.info.experiment_id}/runs", [parent.info.run_name], "runs")
    assert parent.info.run_name.startswith("table ")
    assert "Dataset" in text  # the column, filled by the rows' dataset inputs


def test_a_rows_page_lists_its_datasets_and_params(ui):
    parent, row = _runs(ui)
    # the parent's name arrives after the page (the UI first shows its id): wait for it too
    text = _open(ui, f"/experiments/{parent.info.experiment_id}/runs/{row.info.run_id}",
                 ["0-SmallCNN", "Datasets", "mini-train", "method", parent.info.run_name], "run")
    assert "+2" in text, "the dev and test sets beside the train set"
    assert parent.info.run_name in text, "the parent run, by the table's name"


def test_the_metrics_are_grouped_and_the_loss_chart_renders(ui):
    """The summaries sit in their own sections; MLflow's UI lists prefixed sections first and the unprefixed
    per-epoch curves (Keras' names) in its "Model metrics" section last, out of view: searching shows the loss."""
    parent, row = _runs(ui)
    text = _open(ui, f"/experiments/{parent.info.experiment_id}/runs/{row.info.run_id}/model-metrics",
                 ["dev_class", "test_class", "Model metrics"], "metrics")
    lines = text.splitlines()
    for section in ("train", "dev", "test", "train_class", "dev_class", "test_class"):
        assert section in lines, section
    # the open dev section names its summaries, each with its interval beside it (the charts sort by name, so
    # accuracy, accuracy_ci_high, accuracy_ci_low, auc, ... come first)
    assert {"accuracy", "accuracy_ci_low", "accuracy_ci_high", "auc"} <= set(lines), "the open dev section"
    driver = ui["driver"]
    driver.find_element("css selector", "input[placeholder='Search metric charts']").send_keys("loss")
    wait_until(driver, lambda current: "val_loss" in current.find_element("tag name", "body").text.splitlines(), 60)
    # the charts render: waited for (not a fixed sleep), and the test fails if none appears within 60 s
    charts = wait_until(driver, lambda current: current.find_elements("css selector",
                                                                      "canvas, svg.main-svg, .js-plotly-plot"), 60)
    driver.save_screenshot(str(ui["folder"] / "metrics-loss.png"))
    lines = driver.find_element("tag name", "body").text.splitlines()
    assert {"loss", "val_loss"} <= set(lines)
    assert charts, "the charts render"


def test_the_artifacts_tab_lists_the_roc_images_and_the_model(ui):
    parent, row = _runs(ui)
    text = _open(ui, f"/experiments/{parent.info.experiment_id}/runs/{row.info.run_id}/artifacts",
                 ["0-test-ROC-all.png"], "artifacts")
    assert "0-dev-ROC-0000-D0.png" in text and "0-keras_model-" in text and "0-plot-loss.png" in text


def test_the_search_shows_with_its_trials_grouped_under_it(ui):
    """Issue 27: the table's run holds the search's run, which holds its trials. Collapsed, the list shows the
    table alone; its expander shows the rows and the search, the search's expander its trials, right under it and
    indented one level further."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=ui["uri"])
    parent = client.get_run(ui["outcome"].parent_run_id)
    [search] = client.search_runs([parent.info.experiment_id], "tags.`timl.kind` = 'search'")
    trials = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{search.info.run_id}'")
    names = sorted(run.info.run_name for run in trials)
    assert search.info.run_name == "2-search-SmallCNN" and names == ["2.0-SmallCNN", "2.1-SmallCNN"]
    text = _open(ui, f"/experiments/{parent.info.experiment_id}/runs", [parent.info.run_name], "search-collapsed")
    assert not {search.info.run_name, *names} & set(text.splitlines()), "grouped under the table, out of view"
    driver = ui["driver"]
    for run, shown in ((parent, [search.info.run_name, "0-SmallCNN", "1-SmallCNN"]), (search, names)):
        driver.find_element("xpath", f"//a[.//span[text()='{run.info.run_name}']]/ancestor::div[@role='gridcell']"
                                     "//button").click()  # the run's expander, beside its name
        wait_until(driver, lambda current: set(shown) <= set(current.find_element("tag name", "body").text
                                                             .splitlines()), 60)
    driver.save_screenshot(str(ui["folder"] / "search-expanded.png"))
    where = {name: driver.find_element("link text", name).location
             for name in (parent.info.run_name, search.info.run_name, "0-SmallCNN", "1-SmallCNN", *names)}
    assert where[parent.info.run_name]["x"] < where[search.info.run_name]["x"] == where["0-SmallCNN"]["x"]
    for name in names:
        assert where[name]["x"] > where[search.info.run_name]["x"], "each trial one level under the search"
        below = [row for row in ("0-SmallCNN", "1-SmallCNN")
                 if where[search.info.run_name]["y"] < where[row]["y"] < where[name]["y"]]
        assert where[name]["y"] > where[search.info.run_name]["y"] and not below, "right under its search"
