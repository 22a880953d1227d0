"""The model registry and the pyfunc wrapper: register the best row, load it in a fresh process, and serve it
with a real `mlflow models serve` process over HTTP."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import small_cnn_row, train_in_own_store, write_table


@pytest.fixture(scope="module")
def registered(tmp_path_factory, mini_digits):
    """A 2-row table trained with --register digits --select-by valacc, in its own tracking store."""
    folder = tmp_path_factory.mktemp("registry")
    rows = [small_cnn_row(str(mini_digits / "mini.csv"), epochs=1, seed=0),
            small_cnn_row(str(mini_digits / "mini.csv"), epochs=3, seed=1)]
    outcome, uri = train_in_own_store(folder, rows, "registry", register="digits", select_by="valacc")
    return {"uri": uri, "outcome": outcome, "folder": folder}


def test_train_registers_the_best_row(registered):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=registered["uri"])
    version = client.get_model_version_by_alias("digits", "champion")
    runs = [client.get_run(row.run_id) for row in registered["outcome"].rows]
    best = max(runs, key=lambda run: run.data.metrics["dev/accuracy"])
    assert version.run_id == best.info.run_id
    assert version.tags["dataset"].endswith("mini.csv") and version.tags["method"] == "SmallCNN"
    assert float(version.tags["dev/accuracy"]) == pytest.approx(best.data.metrics["dev/accuracy"], abs=1e-4)
    assert "SmallCNN" in version.description
    assert registered["outcome"].registered == f"models:/digits/{version.version}"


def test_register_command(registered):
    from click.testing import CliRunner

    from timl.register import cli

    run_id = registered["outcome"].rows[0].run_id
    result = CliRunner().invoke(cli, ["--run-id", run_id, "--name", "digits-first", "--alias", "staging",
                                      "--tracking-uri", registered["uri"]])
    assert result.exit_code == 0, result.output
    assert "models:/digits-first/1" in result.output
    result = CliRunner().invoke(cli, ["--run-id", "0" * 32, "--name", "x", "--tracking-uri", registered["uri"]])
    assert result.exit_code == 2 and "error:" in result.output


def test_train_moves_the_champion_only_when_its_gates_hold(registered, mini_digits, tmp_path):
    """A second table trained into the same store with --register and a gate its best row cannot pass: the row is
    registered without the alias, the champion stays, and the command says which gate failed with both values."""
    from click.testing import CliRunner
    from mlflow.tracking import MlflowClient

    from timl.train import cli

    client = MlflowClient(tracking_uri=registered["uri"])
    before = client.get_model_version_by_alias("digits", "champion")
    seed = client.get_run(before.run_id).data.params["seed"]  # the champion's split: the same test set
    table = write_table(tmp_path / "again.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=1, seed=seed)])
    result = CliRunner().invoke(cli, ["--input-table", str(table), "--out-dir", str(tmp_path / "out"), "--skip-roc",
                                      "--tracking-uri", registered["uri"], "--experiment", "registry",
                                      "--register", "digits", "--gate", "test/balanced_accuracy >= champion + 1"])
    assert result.exit_code == 1, result.output
    assert "without the alias 'champion': models:/digits@champion stays at version" in result.output
    assert "gate failed: test/balanced_accuracy >= champion + 1: candidate" in result.output
    assert client.get_model_version_by_alias("digits", "champion").version == before.version


def test_every_registered_version_has_a_model_card(registered):
    """The card of the registered digits model: use, classes, data with digests and counts, test scores with
    intervals, what was not evaluated, software and the pinned sha256; the same card as Markdown."""
    import json

    from mlflow.tracking import MlflowClient

    from timl import tracking

    client = MlflowClient(tracking_uri=registered["uri"])
    version = client.get_model_version_by_alias("digits", "champion")
    run = client.get_run(version.run_id)
    files = tracking.version_files(f"models:/digits/{version.version}", tracking.TAG_MODEL_CARD)
    card, markdown = json.loads(files["model_card.json"]), files["model_card.md"]
    assert card["model"] == {"name": "digits", "version": str(version.version), "run_id": run.info.run_id,
                             "method": "SmallCNN", "registered": card["model"]["registered"],
                             "model_sha256": version.tags[tracking.TAG_MODEL_SHA256]}
    assert "supports and does not make a diagnosis" in card["intended_use"]
    assert card["classes"] == json.loads(run.data.params["class_names"]) and not card["multi_label"]
    digests = {item.dataset.digest for item in run.inputs.dataset_inputs}
    assert {item["digest"] for item in card["training_data"]["datasets"]} == digests and len(digests) == 3
    assert {item["context"] for item in card["training_data"]["datasets"]} == {"training", "validation", "testing"}
    assert all("/" not in item["source"] for item in card["training_data"]["datasets"]), "no path of the trainer"
    test_counts = card["training_data"]["class_counts"]["test"]
    assert test_counts["images"] == run.data.metrics["test/samples"]
    assert sum(test_counts[name] for name in card["classes"]) == test_counts["images"]
    score = card["test_scores"]["balanced_accuracy"]
    assert score["value"] == run.data.metrics["test/balanced_accuracy"]
    assert score["ci_low"] <= score["value"] <= score["ci_high"]
    assert "ci_low" in card["test_scores_per_class"][f"sens_{card['classes'][0]}"]
    # every row measures its calibration since issue 24; no subgroups were asked for
    assert set(card["calibration"]) == {"ece", "mce", "brier", "nll"} and card["subgroups"] == {}
    assert card["calibration"]["nll"]["value"] == run.data.metrics["test/nll"] and "ci_low" in card["calibration"]["nll"]
    assert not any(item.startswith("calibration") for item in card["not_evaluated"])
    assert any(item.startswith("results by patient subgroup") for item in card["not_evaluated"])
    assert {"timl", "keras", "mlflow", "python"} <= set(card["software"])
    assert markdown.startswith(f"# Model card: digits v{version.version}")
    for section in ("## Intended use", "## Training data", "## Test scores", "## Not evaluated", "## Software"):
        assert section in markdown
    assert f"| balanced_accuracy | {score['value']:.4g} | {score['ci_low']:.3f} to {score['ci_high']:.3f} |" in markdown


def test_the_server_answers_the_model_card(registered):
    """GET <rest>/model_card of a server serving models:/digits@champion: the card as JSON and as Markdown."""
    from timl.serving import create_app

    client = create_app({"CLASSIFICATION_MODEL": "models:/digits@champion"}).test_client()
    card = client.get("/api/model_card").get_json()
    assert card["model"]["name"] == "digits" and "supports and does not make a diagnosis" in card["intended_use"]
    info = client.get("/api/info").get_json()["model_info"]
    assert card["model"]["version"] == info["version"]
    answer = client.get("/api/model_card?format=md")
    assert answer.status_code == 200 and answer.mimetype == "text/plain"
    assert answer.get_data(as_text=True).startswith(f"# Model card: digits v{info['version']}")


@pytest.mark.slow
@pytest.mark.component("chromium")
def test_the_pages_link_the_model_card(registered, tmp_path):
    """The classify page of a server serving the registered version: its model header links to the card."""
    import requests
    from selenium.webdriver.common.by import By

    from helpers import chromium, serving_in_thread, wait_until
    from timl.serving import create_app

    browser = chromium(tmp_path / "profile")
    try:
        with serving_in_thread(create_app({"CLASSIFICATION_MODEL": "models:/digits@champion"})) as url:
            browser.get(f"{url}/static/classify.html")
            link = wait_until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#model a[data-part=modelCard]"))[0]
            assert browser.find_element(By.ID, "model").text.startswith("Model: digits v")
            assert link.text == "model card" and link.get_attribute("href") == f"{url}/api/model_card?format=md"
            assert requests.get(link.get_attribute("href"), timeout=30).text.startswith("# Model card: digits v")
    finally:
        browser.quit()


def test_load_registered_model_in_a_fresh_process(registered, mini_digits):
    image = sorted((mini_digits / "images").glob("*.png"))[0]
    code = ("import base64, sys, mlflow, pandas as pd\n"
            f"mlflow.set_tracking_uri({registered['uri']!r})\n"
            "model = mlflow.pyfunc.load_model('models:/digits@champion')\n"
            f"data = base64.b64encode(open({str(image)!r}, 'rb').read()).decode()\n"
            "out = model.predict(pd.DataFrame({'image': [data]}), params={'explain': 'gradcam'})\n"
            "print(sorted(out.columns))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for column in ("'D0'", "'predicted_class'", "'confidence_D0'", "'grey'", "'heatmap'", "'comp'"):
        assert column in result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: The row cap the scoring server of these tests runs with (TIML_PYFUNC_MAX_ROWS).
SERVER_MAX_ROWS = 3


@pytest.fixture(scope="module")
def scoring_server(registered):
    """A real ``mlflow models serve`` of models:/digits@champion on loopback, at most 3 rows a request; its URL."""
    import requests

    port = free_port()
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    env = dict(os.environ, MLFLOW_TRACKING_URI=registered["uri"], TIML_PYFUNC_MAX_ROWS=str(SERVER_MAX_ROWS),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    server = subprocess.Popen([str(mlflow_cli), "models", "serve", "-m", "models:/digits@champion",
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                              cwd=registered["folder"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            assert server.poll() is None, server.stdout.read()[-3000:]
            try:
                if requests.get(f"{base}/ping", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(1)
        yield base
    finally:  # mlflow starts uvicorn as a child: end the whole process group
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def _images(mini_digits) -> list[Path]:
    return sorted((mini_digits / "images").glob("*.png"))


@pytest.mark.slow
def test_mlflow_models_serve(scoring_server, mini_digits):
    import requests

    base = scoring_server
    image = _images(mini_digits)[0]
    data = base64.b64encode(image.read_bytes()).decode()
    payload = {"dataframe_split": {"columns": ["image"], "data": [[data], [data]]}}
    answer = requests.post(f"{base}/invocations", json=payload, timeout=120)
    assert answer.status_code == 200, answer.text
    rows = answer.json()["predictions"]
    assert len(rows) == 2 and rows[0]["predicted_class"] in ("D0", "D1", "D2")
    assert -1 <= rows[0]["confidence_D0"] <= 1
    payload["params"] = {"explain": "rise", "rise_masks": 50}
    explained = requests.post(f"{base}/invocations", json=payload, timeout=300)
    assert explained.status_code == 200, explained.text
    assert base64.b64decode(explained.json()["predictions"][0]["heatmap"])[:4] == b"\x89PNG"
    assert requests.get(f"{base}/health", timeout=10).status_code == 200
    assert requests.get(f"{base}/version", timeout=10).status_code == 200
    # base64 of "not an image": TIML's ImageError inside predict, which MLflow's scoring server answers as
    # BAD_REQUEST (400) with its own message and the error in stack_trace, not as a 500
    bad = requests.post(f"{base}/invocations", json={"dataframe_split": {"columns": ["image"],
                                                                          "data": [["bm90IGFuIGltYWdl"]]}},
                        timeout=60)
    assert bad.status_code == 400, bad.text
    error = bad.json()
    assert error["error_code"] == "BAD_REQUEST", error
    assert "ImageError: Cannot decode image 0: it is not an image file" in error["stack_trace"], error
    assert requests.post(f"{base}/invocations", json=payload, timeout=120).status_code == 200  # still serving


def _score(base: str, cells: list, params: dict | None = None):
    import requests

    payload = {"dataframe_split": {"columns": ["image"], "data": [[cell] for cell in cells]}}
    return requests.post(f"{base}/invocations", json=dict(payload, **({"params": params} if params else {})),
                         timeout=120)


@pytest.mark.slow
def test_a_scoring_request_never_reads_a_file_on_the_server(scoring_server, mini_digits):
    """The absolute path of an image on the server and a path that names no file get the same 400 answer: no
    classification, no file content, nothing that tells them apart; base64 of the same image is classified."""
    import re

    existing = _images(mini_digits)[0].resolve()
    missing = existing.with_name("no-such-image.png")
    assert existing.is_file() and not missing.exists()
    answers = []
    for path in (existing, missing):
        answer = _score(scoring_server, [str(path)], {"explain": "gradcam"})
        assert answer.status_code == 400, answer.text
        body = answer.json()
        assert body["error_code"] == "INVALID_PARAMETER_VALUE" and "predictions" not in body, body
        assert "Column 'image', row 0: expected a base64-encoded image file" in body["message"], body
        # MLflow's message starts by echoing the request's frame (the client's own path): the rest must be equal
        answers.append(dict(body, message=re.sub(r"^Failed to predict data '.*?'\. ", "", body["message"], flags=re.S)))
    assert answers[0] == answers[1]
    assert answers[0]["message"].startswith("\nError: Column 'image', row 0"), answers[0]
    content = base64.b64encode(existing.read_bytes()).decode()
    assert content[:40] not in str(answers[0]) and not re.search("no such file|exist", str(answers[0]), re.I)
    classified = _score(scoring_server, [content])
    assert classified.status_code == 200 and classified.json()["predictions"][0]["predicted_class"].startswith("D")


@pytest.mark.slow
def test_a_scoring_request_is_bounded(scoring_server, mini_digits):
    """More rows than TIML_PYFUNC_MAX_ROWS, or rise_masks out of 1..10000: a 400 that names the cap."""
    cell = base64.b64encode(_images(mini_digits)[0].read_bytes()).decode()
    rows = _score(scoring_server, [cell] * (SERVER_MAX_ROWS + 1))
    assert rows.status_code == 400 and rows.json()["error_code"] == "INVALID_PARAMETER_VALUE", rows.text
    assert (f"A request holds at most {SERVER_MAX_ROWS} images (rows; TIML_PYFUNC_MAX_ROWS sets the cap). "
            f"Received: {SERVER_MAX_ROWS + 1} rows") in rows.json()["message"]
    masks = _score(scoring_server, [cell], {"explain": "rise", "rise_masks": 1_000_000})
    assert masks.status_code == 400, masks.text
    assert ("Param 'rise_masks' must be an integer from 1 to 10000 (masks, one model pass each). "
            "Received: rise_masks=1000000") in masks.json()["message"]
    assert _score(scoring_server, [cell] * SERVER_MAX_ROWS).status_code == 200
