"""Tests of timl.inspect: the report, the MLflow runs, the CLIs and the user errors."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from timl import inspect as timl_inspect
from timl.errors import ConfigError, DatasetError, MissingFileError

CLASSES = ["MEL", "NV", "BCC"]
REPO_ROOT = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = {"samples", "classes", "class_prop", "accuracy", "specificity", "sensitivity", "precision", "f1",
                "auc", "average_precision", "global_accuracy", "balanced_accuracy", "mean_accuracy",
                "weighted_mean_accuracy", "mean_specificity", "weighted_mean_specificity", "mean_sensitivity",
                "weighted_mean_sensitivity", "mean_f1", "weighted_mean_f1", "mean_auc"}
REPORT_FILES = {"summary.csv", "summary.json", "per_image_results.csv", "ROC-0000-MEL.png", "ROC-0001-NV.png",
                "ROC-0002-BCC.png", "ROC-all.png", "confusion_matrix.csv", "confusion_matrix.png",
                "precision_recall.png", "reliability.png"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One temporary tracking store for the module (creating a sqlite store takes seconds)."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.create_experiment("timl-inspect", artifact_location=str(root / "inspect-artifacts"))
    models = client.create_experiment("models", artifact_location=str(root / "model-artifacts"))
    return SimpleNamespace(uri=uri, client=client, models=models)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_case(folder, *, samples=12, multi_label=False, sidecar=None, seed=0, names=None):
    """Writes gt.csv and pred.csv (rows shuffled, extra columns as timl.predict writes) and an optional sidecar."""
    rng = np.random.default_rng(seed)
    names = names or [f"{index:04d}" for index in range(samples)]  # leading zeros: image_name must stay text
    if multi_label:
        y_true = rng.integers(0, 2, (samples, len(CLASSES)))
        y_prob = rng.random((samples, len(CLASSES)))
    else:
        y_true = np.eye(len(CLASSES), dtype=int)[np.arange(samples) % len(CLASSES)]
        y_prob = rng.dirichlet(np.ones(len(CLASSES)), samples)
    truth = pd.DataFrame(y_true, columns=CLASSES)
    truth.insert(0, "image_name", names)
    truth.to_csv(folder / "gt.csv", index=False)
    predictions = pd.DataFrame(y_prob, columns=CLASSES)
    predictions.insert(0, "image_name", names)
    predictions["inferred_class"] = [CLASSES[index] for index in y_prob.argmax(axis=1)]
    predictions["inferred_index"] = y_prob.argmax(axis=1)
    if multi_label:
        for index, name in enumerate(CLASSES):
            predictions[f"{name}_pred"] = (y_prob[:, index] >= 0.5).astype(int)
    predictions.sample(frac=1.0, random_state=seed).to_csv(folder / "pred.csv", index=False)
    if sidecar is not None:
        (folder / "pred.csv.json").write_text(json.dumps(sidecar))
    return folder / "gt.csv", folder / "pred.csv"


def sidecar_for(run_id, multi_label=False):
    return {"model_uri": f"runs:/{run_id}/model" if run_id else None, "keras_model": None, "run_id": run_id,
            "class_names": CLASSES, "multi_label": multi_label, "preprocessing": {"imgsize": 32},
            "created": "2026-01-01T00:00:00"}


def test_end_to_end_with_model_run(workdir, store):
    model_run = store.client.create_run(store.models).info.run_id
    store.client.set_terminated(model_run)
    test_csv, predictions_csv = write_case(workdir, sidecar=sidecar_for(model_run))
    result = timl_inspect.inspect(test_csv, predictions_csv, tracking_uri=store.uri)

    assert result.out_dir == Path("inspect_gt-pred")
    assert {path.name for path in (workdir / result.out_dir).iterdir()} == REPORT_FILES
    saved = json.loads((workdir / result.out_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(saved) and saved["samples"] == 12 and saved["classes"] == ";".join(CLASSES)
    assert saved["auc"].startswith("[") and isinstance(saved["mean_auc"], float)
    summary_row = pd.read_csv(workdir / result.out_dir / "summary.csv", dtype=str, keep_default_na=False)
    assert len(summary_row) == 1 and list(summary_row.columns) == list(saved)
    per_image = pd.read_csv(workdir / result.out_dir / "per_image_results.csv", dtype=str)
    assert list(per_image["image"]) == [f"{index:04d}" for index in range(12)]
    assert list(per_image["groundtruth"][:3]) == ["[1,0,0]", "[0,1,0]", "[0,0,1]"]
    assert list(per_image["class_groundtruth"][:3]) == ["0", "1", "2"]
    assert list(per_image["name_groundtruth"][:3]) == CLASSES

    run = store.client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert store.client.get_experiment(run.info.experiment_id).name == "timl-inspect"
    assert run.data.tags["timl.model_run_id"] == model_run
    assert run.data.metrics["test/balanced_accuracy"] == pytest.approx(result.summary["balanced_accuracy"])
    assert run.data.metrics["test/auc"] == pytest.approx(result.summary["mean_auc"])
    assert "test_class/auc_MEL" in run.data.metrics and "test_class/sens_BCC" in run.data.metrics
    assert run.data.params["multi_label"] == "False" and run.info.run_name == "inspect gt-pred"
    assert {item.path for item in store.client.list_artifacts(result.run_id)} == REPORT_FILES

    model_metrics = store.client.get_run(model_run).data.metrics
    assert model_metrics["inspect_gt/balanced_accuracy"] == pytest.approx(result.summary["balanced_accuracy"])
    assert model_metrics["inspect_gt/accuracy"] == pytest.approx(result.summary["global_accuracy"])
    assert "inspect_gt_class/auc_NV" in model_metrics


def test_multi_label_from_sidecar_and_from_ground_truth(workdir, store):
    test_csv, predictions_csv = write_case(workdir, multi_label=True, sidecar=sidecar_for(None, multi_label=True))
    result = timl_inspect.inspect(test_csv, predictions_csv, out_dir="ml", threshold=0.4,
                                  experiment="timl-inspect", tracking_uri=store.uri)
    summary = result.summary
    assert summary["multi_label"] is True and summary["threshold"] == 0.4
    assert 0 <= summary["exact_match"] <= 1 and 0 <= summary["hamming_loss"] <= 1
    run = store.client.get_run(result.run_id)
    assert "test/hamming_loss" in run.data.metrics and "timl.model_run_id" not in run.data.tags

    os.remove(f"{predictions_csv}.json")  # without a sidecar, the ground truth tells
    again = timl_inspect.inspect(test_csv, predictions_csv, out_dir="ml2", threshold=0.4, tracking_uri=store.uri)
    assert again.summary["multi_label"] is True
    assert again.summary["hamming_loss"] == pytest.approx(summary["hamming_loss"])


def test_unknown_model_run_only_warns(workdir, store, caplog):
    test_csv, predictions_csv = write_case(workdir, sidecar=sidecar_for("0" * 32))
    result = timl_inspect.inspect(test_csv, predictions_csv, out_dir="out", tracking_uri=store.uri)
    assert store.client.get_run(result.run_id).info.status == "FINISHED"
    assert "model's run" in caplog.text


def test_overwrite_replaces_only_the_report(workdir, store):
    test_csv, predictions_csv = write_case(workdir)
    out = workdir / "report"
    out.mkdir()
    (out / "ROC-0007-OLD.png").write_bytes(b"stale")
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="--overwrite"):
        timl_inspect.inspect(test_csv, predictions_csv, out_dir=out, tracking_uri=store.uri)
    timl_inspect.inspect(test_csv, predictions_csv, out_dir=out, overwrite=True, tracking_uri=store.uri)
    assert {path.name for path in out.iterdir()} == REPORT_FILES | {"notes.txt"}


def _drop_class(folder):
    pd.read_csv(folder / "pred.csv", dtype=str).drop(columns=["BCC"]).to_csv(folder / "pred.csv", index=False)


def _rename_images(folder):
    frame = pd.read_csv(folder / "pred.csv", dtype=str)
    frame.loc[frame["image_name"] == "0003", "image_name"] = "extra_1"
    frame.to_csv(folder / "pred.csv", index=False)


def _bad_truth_value(folder):
    frame = pd.read_csv(folder / "gt.csv", dtype=str)
    frame.loc[4, "NV"] = "2"
    frame.to_csv(folder / "gt.csv", index=False)


def _duplicate_image(folder):
    frame = pd.read_csv(folder / "gt.csv", dtype=str)
    pd.concat([frame, frame.iloc[[0]]]).to_csv(folder / "gt.csv", index=False)


def _text_probability(folder):
    frame = pd.read_csv(folder / "pred.csv", dtype=str)
    frame.loc[2, "MEL"] = "high"
    frame.to_csv(folder / "pred.csv", index=False)


@pytest.mark.parametrize("spoil, error, fragments", [
    (_drop_class, DatasetError, ["class columns differ", "only in the ground truth: ['BCC']"]),
    (_rename_images, DatasetError, ["1 only in the ground truth: ['0003']", "1 only in the predictions: "
                                    "['extra_1']"]),
    (_bad_truth_value, DatasetError, ["gt.csv, line 6, column 'NV'", "Received: NV=2"]),
    (_duplicate_image, DatasetError, ["duplicated image names: ['0000']"]),
    (_text_probability, DatasetError, ["pred.csv", "column 'MEL'", "Received: MEL='high'"]),
    (lambda folder: os.remove(folder / "gt.csv"), MissingFileError, ["test CSV does not exist"]),
])
def test_user_errors(workdir, spoil, error, fragments):
    test_csv, predictions_csv = write_case(workdir)
    spoil(workdir)
    with pytest.raises(error) as raised:
        timl_inspect.inspect(test_csv, predictions_csv, tracking_uri="sqlite:///unused.db")
    for fragment in fragments:
        assert fragment in str(raised.value)
    assert not (workdir / "inspect_gt-pred").exists()


def test_cli_success_and_error(workdir, store):
    test_csv, predictions_csv = write_case(workdir)
    runner = CliRunner()
    arguments = ["--test-csv", str(test_csv), "--predictions-csv", str(predictions_csv), "--tracking-uri", store.uri]
    result = runner.invoke(timl_inspect.cli, arguments)
    assert result.exit_code == 0, result.output
    assert "balanced accuracy:" in result.stdout and "mean AUC:" in result.stdout
    assert "files: inspect_gt-pred" in result.stdout and "MLflow run: " in result.stdout

    again = runner.invoke(timl_inspect.cli, arguments)
    assert again.exit_code == 2
    assert again.stderr.startswith("error: ") and "--overwrite" in again.stderr
    assert "Traceback" not in again.output

    missing = runner.invoke(timl_inspect.cli, ["--test-csv", "nope.csv", "--predictions-csv", str(predictions_csv)])
    assert missing.exit_code == 2 and "error: The test CSV does not exist" in missing.stderr

    help_text = runner.invoke(timl_inspect.cli, ["--help"]).output
    assert "Example:" in help_text and "--threshold" in help_text and "--tracking-uri" in help_text


@pytest.mark.slow  # a fresh interpreter importing MLflow, scikit-learn and matplotlib: 10-25 s on 2 cores
def test_original_module_name_runs_as_a_subprocess(workdir, store):
    test_csv, predictions_csv = write_case(workdir)
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run(
        [sys.executable, "-m", "timl.classification.inspect", "--test-csv", "gt.csv", "--predictions-csv",
         "pred.csv", "--out-dir", "sub", "--tracking-uri", store.uri],
        cwd=workdir, env=environment, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "balanced accuracy:" in completed.stdout
    assert (workdir / "sub" / "summary.json").is_file()
