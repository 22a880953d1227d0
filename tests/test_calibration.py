"""Tests of timl.calibration: hand-computed ECE, MCE, Brier and NLL, scikit-learn cross-checks, a perfectly
calibrated case, the summary and metric names, and the reliability diagram of a report."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from timl import calibration, evaluation, reports

# Five images, two classes. Top-label confidences 0.9, 0.85, 0.7, 0.55, 0.92 fall into the 15 bins 13, 12, 10,
# 8 and 13; right, wrong, right, wrong, wrong. Bin 13 holds two (mean confidence 0.91, accuracy 0.5: gap 0.41).
HAND_TRUE = np.eye(2, dtype=int)[[0, 1, 1, 0, 1]]
HAND_PROB = np.array([[0.9, 0.1], [0.85, 0.15], [0.3, 0.7], [0.45, 0.55], [0.92, 0.08]])
HAND_ECE = (2 * 0.41 + 0.85 + 0.3 + 0.55) / 5
HAND_BRIER = (0.02 + 2 * 0.85 ** 2 + 2 * 0.3 ** 2 + 2 * 0.55 ** 2 + 2 * 0.92 ** 2) / 5
HAND_NLL = -(math.log(0.9) + math.log(0.15) + math.log(0.7) + math.log(0.45) + math.log(0.08)) / 5


def test_hand_computed_single_label():
    scores = calibration.calibration_summary(HAND_TRUE, HAND_PROB)
    assert scores["ece"] == pytest.approx(HAND_ECE)
    assert scores["mce"] == pytest.approx(0.85)
    assert scores["brier"] == pytest.approx(HAND_BRIER)
    assert scores["nll"] == pytest.approx(HAND_NLL)
    bins = calibration.reliability_bins(HAND_TRUE, HAND_PROB)
    assert bins.counts.sum() == 5 and bins.counts[13] == 2 and len(bins.counts) == calibration.BINS == 15
    assert bins.confidence[13] == pytest.approx(0.91) and bins.accuracy[13] == pytest.approx(0.5)
    assert np.isnan(bins.accuracy[0]), "an empty bin has no accuracy"


def test_hand_computed_multi_label_averages_the_classes():
    """Class A: 0.9 present, 0.1 absent (ECE 0.1); class B: 0.7 twice, both absent (ECE 0.7)."""
    y_true, y_prob = [[1, 0], [0, 0]], [[0.9, 0.7], [0.1, 0.7]]
    scores = calibration.calibration_summary(y_true, y_prob, multi_label=True)
    assert scores["ece"] == pytest.approx(0.4) and scores["mce"] == pytest.approx(0.7)
    assert scores["brier"] == pytest.approx((0.01 + 0.01 + 0.49 + 0.49) / 4)
    assert scores["nll"] == pytest.approx(-(2 * math.log(0.9) + 2 * math.log(0.3)) / 4)


@pytest.mark.parametrize("seed", [0, 1])
def test_brier_and_nll_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 80)
    y_prob = rng.dirichlet(np.ones(4), 80)
    y_true = np.eye(4, dtype=int)[labels]
    assert calibration.brier_score(y_true, y_prob) == pytest.approx(
        skm.brier_score_loss(labels, y_prob, labels=range(4)))
    assert calibration.negative_log_likelihood(y_true, y_prob) == pytest.approx(
        skm.log_loss(labels, y_prob, labels=range(4)))
    multi_true = rng.integers(0, 2, (80, 3))
    multi_prob = rng.uniform(size=(80, 3))
    assert calibration.negative_log_likelihood(multi_true, multi_prob, multi_label=True) == pytest.approx(
        np.mean([skm.log_loss(multi_true[:, k], multi_prob[:, k], labels=[0, 1]) for k in range(3)]))


def test_a_perfectly_calibrated_model_has_an_ece_near_zero_and_an_overconfident_one_does_not():
    rng = np.random.default_rng(0)
    positive = rng.uniform(size=200_000)
    labels = (rng.uniform(size=positive.size) < positive).astype(int)
    y_true, y_prob = np.eye(2, dtype=int)[labels], np.stack([1 - positive, positive], axis=1)
    assert calibration.calibration_summary(y_true, y_prob)["ece"] < 0.005
    sharpened = np.where(positive > 0.5, 0.99, 0.01)
    overconfident = np.stack([1 - sharpened, sharpened], axis=1)
    assert calibration.calibration_summary(y_true, overconfident)["ece"] > 0.2
    assert calibration.calibration_summary(y_true[:, :1], y_prob[:, :1], multi_label=True)["ece"] < 0.005


def test_evaluate_and_the_metrics_carry_the_calibration_scores():
    summary = evaluation.evaluate(HAND_TRUE, HAND_PROB, ["a", "b"])
    assert summary["ece"] == pytest.approx(HAND_ECE) and summary["nll"] == pytest.approx(HAND_NLL)
    metrics = evaluation.split_metrics(summary, "test")
    assert metrics["test/ece"] == pytest.approx(HAND_ECE) and metrics["test/mce"] == pytest.approx(0.85)
    assert metrics["test/brier"] == pytest.approx(HAND_BRIER) and metrics["test/nll"] == pytest.approx(HAND_NLL)
    assert "inspect_isic/ece" in evaluation.split_metrics(summary, "inspect_isic")


def test_the_report_writes_the_reliability_diagram_and_the_scores_after_the_original_keys(tmp_path):
    summary = reports.write_report(tmp_path, [f"i{k}" for k in range(5)], HAND_TRUE, HAND_PROB, ["a", "b"],
                                   prefix="test-")
    assert (tmp_path / "test-reliability.png").stat().st_size > 1000
    keys = list(json.loads((tmp_path / "test-summary.json").read_text()))
    assert keys[:len(reports.ORIGINAL_SUMMARY_KEYS)] == list(reports.ORIGINAL_SUMMARY_KEYS)
    assert keys[-4:] == ["ece", "mce", "brier", "nll"]
    row = pd.read_csv(tmp_path / "test-summary.csv").iloc[0]
    assert row["ece"] == pytest.approx(summary["ece"]) and row["brier"] == pytest.approx(HAND_BRIER)


@pytest.mark.slow
def test_a_trained_row_logs_and_tabulates_its_calibration(tracking_uri, mini_digits, tmp_path):
    """A trained row: dev/ and test/ calibration metrics, the reliability diagrams, the summary files and the
    results table's calibration columns after all earlier ones."""
    from helpers import small_cnn_row, write_table
    from mlflow.tracking import MlflowClient

    from timl import results, training

    table = write_table(tmp_path / "table.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=1)])
    outcome = training.train_table(table, out_dir=tmp_path / "out", experiment="calibration")
    assert [row.status for row in outcome.rows] == ["FINISHED"]
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("calibration").experiment_id],
                                filter_string=f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'")
    for split in ("dev", "test"):
        for name in ("ece", "mce", "brier", "nll"):
            assert f"{split}/{name}" in run.data.metrics, (split, name)
        assert 0 <= run.data.metrics[f"{split}/ece"] <= run.data.metrics[f"{split}/mce"] <= 1
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"0-dev-reliability.png", "0-test-reliability.png"} <= artifacts
    summary = json.loads((tmp_path / "out" / "0-test-summary.json").read_text())
    assert summary["nll"] == pytest.approx(run.data.metrics["test/nll"])
    frame = pd.read_csv(tmp_path / "out" / "automation_result.csv")
    calibration_columns = ["val_ece", "val_mce", "val_brier", "val_nll",
                           "test_ece", "test_mce", "test_brier", "test_nll"]
    assert list(frame.columns) == list(results.RESULT_COLUMNS)
    assert list(frame.columns[-8:]) == calibration_columns
    assert frame.loc[0, "test_nll"] == pytest.approx(run.data.metrics["test/nll"], abs=1e-4)
