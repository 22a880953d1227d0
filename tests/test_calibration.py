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
def test_trained_rows_log_their_calibration_and_a_temperature_row_its_calibrated_model(tracking_uri, mini_digits,
                                                                                      tmp_path):
    """Row 0 (calibration none): dev/ and test/ calibration metrics, the reliability diagrams, the summary files
    and the results table's calibration columns after all earlier ones. Row 1 (temperature): the temperature
    and the scores before calibration logged, the dev NLL not raised, and the logged model's probabilities
    calibrated by its last layer without changing any predicted class."""
    from helpers import small_cnn_row, write_table
    from mlflow.tracking import MlflowClient

    from timl import results, training

    rows = [small_cnn_row(str(mini_digits / "mini.csv"), epochs=1, calibration=""),
            small_cnn_row(str(mini_digits / "mini.csv"), epochs=3, calibration="temperature")]
    outcome = training.train_table(write_table(tmp_path / "table.csv", rows), out_dir=tmp_path / "out",
                                   experiment="calibration")
    assert [row.status for row in outcome.rows] == ["FINISHED", "FINISHED"]
    client = MlflowClient()
    runs = {run.data.tags["timl.row"]: run for run in
            client.search_runs([client.get_experiment_by_name("calibration").experiment_id],
                               filter_string=f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'")}
    plain, calibrated = runs["0"], runs["1"]
    for split in ("dev", "test"):
        for name in ("ece", "mce", "brier", "nll"):
            assert f"{split}/{name}" in plain.data.metrics, (split, name)
        assert 0 <= plain.data.metrics[f"{split}/ece"] <= plain.data.metrics[f"{split}/mce"] <= 1
    assert not any(name.startswith("calibration/") or "uncalibrated" in name for name in plain.data.metrics)
    assert "calibration" not in plain.data.params
    artifacts = {item.path for item in client.list_artifacts(plain.info.run_id)}
    assert {"0-dev-reliability.png", "0-test-reliability.png"} <= artifacts
    summary = json.loads((tmp_path / "out" / "0-test-summary.json").read_text())
    assert summary["nll"] == pytest.approx(plain.data.metrics["test/nll"])
    frame = pd.read_csv(tmp_path / "out" / "automation_result.csv", keep_default_na=False)
    calibration_columns = ["val_ece", "val_mce", "val_brier", "val_nll",
                           "test_ece", "test_mce", "test_brier", "test_nll"]
    assert list(frame.columns) == list(results.RESULT_COLUMNS)
    assert list(frame.columns[-9:]) == ["calibration"] + calibration_columns
    assert list(frame["calibration"]) == ["", "temperature"]
    assert float(frame.loc[0, "test_nll"]) == pytest.approx(plain.data.metrics["test/nll"], abs=1e-4)

    metrics = calibrated.data.metrics
    assert calibrated.data.params["calibration"] == "temperature"
    temperature = metrics["calibration/temperature"]
    for split in ("dev", "test"):
        for name in ("ece", "nll", "brier"):
            assert f"{split}/{name}_uncalibrated" in metrics, (split, name)
    assert metrics["dev/nll"] <= metrics["dev/nll_uncalibrated"] + 1e-4
    _assert_the_logged_model_is_calibrated(calibrated.info.run_id, temperature, mini_digits)


def _assert_the_logged_model_is_calibrated(run_id: str, temperature: float, mini_digits):
    import keras

    from timl.classifier import load_classifier

    classifier = load_classifier(model_uri=f"runs:/{run_id}/model")
    layer = classifier.model.get_layer("temperature_scaling")
    assert layer.get_config()["temperatures"] == pytest.approx([temperature])
    paths = sorted((mini_digits / "images").glob("*.png"))
    probabilities = classifier.predict_images(paths)
    arrays = np.stack([classifier.preprocessing(path) for path in paths])
    raw = keras.Model(classifier.model.inputs, layer.input).predict(arrays, verbose=0)
    assert (probabilities.argmax(axis=1) == raw.argmax(axis=1)).all(), "calibration changed a predicted class"
    assert np.allclose(probabilities, calibration.apply_temperatures(raw, [temperature]), atol=1e-5)

def _overconfident(seed: int, samples: int, sharpen: float = 3.0):
    """Calibrated 3-class probabilities (labels drawn from them), then sharpened: logits times ``sharpen``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(samples, 3))
    calibrated = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in calibrated])
    sharp = np.exp(sharpen * logits)
    return np.eye(3, dtype=int)[labels], sharp / sharp.sum(axis=1, keepdims=True)


def test_temperature_scaling_recovers_the_sharpening_and_keeps_every_prediction():
    y_true, y_prob = _overconfident(0, 4000)
    (temperature,) = calibration.fit_temperatures(y_true, y_prob)
    assert temperature == pytest.approx(3.0, rel=0.1)
    calibrated = calibration.apply_temperatures(y_prob, [temperature])
    assert (calibrated.argmax(axis=1) == y_prob.argmax(axis=1)).all()
    before, after = (calibration.calibration_summary(y_true, probs) for probs in (y_prob, calibrated))
    assert after["nll"] <= before["nll"] and after["ece"] < before["ece"] / 2


def test_temperature_scaling_never_raises_the_fitted_nll_and_keeps_multi_label_decisions():
    y_true, y_prob = _overconfident(1, 300, sharpen=1.0)  # calibrated already: T about 1
    (temperature,) = calibration.fit_temperatures(y_true, y_prob)
    nll = calibration.negative_log_likelihood
    assert nll(y_true, calibration.apply_temperatures(y_prob, [temperature])) <= nll(y_true, y_prob) + 1e-12
    rng = np.random.default_rng(2)
    multi_prob = rng.uniform(0.01, 0.99, size=(200, 2)) ** [1, 3]
    multi_true = rng.uniform(size=(200, 2)) < multi_prob ** [1, 0.3]
    temperatures = calibration.fit_temperatures(multi_true, multi_prob, multi_label=True)
    assert len(temperatures) == 2 and temperatures[0] != temperatures[1]
    calibrated = calibration.apply_temperatures(multi_prob, temperatures, multi_label=True)
    assert ((calibrated >= 0.5) == (multi_prob >= 0.5)).all()
    assert nll(multi_true, calibrated, multi_label=True) <= nll(multi_true, multi_prob, multi_label=True)


@pytest.mark.parametrize("multi_label", [False, True])
def test_the_temperature_layer_matches_numpy_and_survives_an_h5_round_trip(tmp_path, multi_label):
    import keras

    from timl.models import layers
    from timl.training.calibrate import with_temperatures

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="sigmoid" if multi_label else "softmax",
                                                   name="predictions")(inputs))
    temperatures = [2.0, 0.5, 1.5] if multi_label else [2.5]
    calibrated = with_temperatures(model, temperatures, multi_label)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    expected = calibration.apply_temperatures(model.predict(x, verbose=0), temperatures, multi_label=multi_label)
    calibrated.save(tmp_path / "model.h5")
    layers.ensure_registered()
    loaded = keras.models.load_model(tmp_path / "model.h5", compile=False, safe_mode=True)
    assert np.allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)
    assert loaded.get_layer("temperature_scaling").get_config()["temperatures"] == temperatures
    from timl.xai.base import output_activation, prepared_model

    assert output_activation(loaded) == ("sigmoid" if multi_label else "softmax")
    logits = prepared_model(loaded).predict([x], verbose=0)
    assert np.allclose(logits, x @ model.get_layer("predictions").get_weights()[0]
                       + model.get_layer("predictions").get_weights()[1], atol=1e-4), "explanations score logits"


def test_the_calibration_cell_is_checked_and_keeps_old_row_keys():
    from timl.config import RunConfig
    from timl.errors import ConfigError

    row = {"method": "SmallCNN", "dataset": "d.csv", "split": "n=15", "epochs": "1"}
    plain = RunConfig.from_row(row, 0)
    assert plain.calibration == "none" and "calibration" not in plain.input_cells()
    assert RunConfig.from_row({**row, "calibration": "none"}, 0).key("1") == plain.key("1")
    calibrated = RunConfig.from_row({**row, "calibration": "temperature"}, 0)
    assert calibrated.input_cells()["calibration"] == "temperature" and calibrated.key("1") != plain.key("1")
    with pytest.raises(ConfigError, match=r"row 0: column 'calibration' must be one of: none, temperature. "
                                          r"Received: calibration='platt'"):
        RunConfig.from_row({**row, "calibration": "platt"}, 0)


def test_temperature_on_a_row_without_a_dev_set_or_probabilities_fails_with_the_cell_named():
    from types import SimpleNamespace

    import keras

    from timl.config import RunConfig
    from timl.errors import ConfigError
    from timl.training.calibrate import calibrate

    config = RunConfig.from_row({"method": "SmallCNN", "dataset": "d.csv", "split": "n=15", "epochs": "1",
                                 "calibration": "temperature"}, 3, "table.csv")
    plan = SimpleNamespace(config=config, spec=SimpleNamespace(multi_label=False))
    inputs = keras.Input((4,))
    softmax = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    linear = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    no_dev = SimpleNamespace(dataset=SimpleNamespace(sizes=lambda: {"train": 10, "dev": 0, "test": 5}))
    trained = SimpleNamespace(model=softmax)
    with pytest.raises(ConfigError, match=r"table.csv, row 3, column 'calibration': .* dev set .* "
                                          r"calibration=none"):
        calibrate(plan, no_dev, trained)
    trained.model = linear
    with pytest.raises(ConfigError, match=r"row 3, column 'calibration': .*softmax or sigmoid.*ends with linear"):
        calibrate(plan, no_dev, trained)


def test_the_bootstrap_gives_the_brier_score_and_the_nll_intervals_from_the_same_resamples():
    from timl.intervals import Bootstrap

    y_true, y_prob = _overconfident(3, 400)
    summary = evaluation.evaluate(y_true, y_prob, ["a", "b", "c"], bootstrap=Bootstrap(resamples=500))
    for key in ("brier", "nll"):
        assert summary[f"{key}_ci_low"] < summary[key] < summary[f"{key}_ci_high"]
    assert "ece_ci_low" not in summary, "no interval for the binned ECE (its resampled values are biased)"
    assert list(summary)[-2:] == ["bootstrap_resamples", "bootstrap_seed"]
    metrics = evaluation.split_metrics(summary, "test")
    assert metrics["test/nll_ci_low"] == summary["nll_ci_low"] and "test/brier_ci_high" in metrics
    multi = evaluation.evaluate(y_true, y_prob, ["a", "b", "c"], multi_label=True, bootstrap=Bootstrap(resamples=200))
    assert multi["brier_ci_low"] < multi["brier"] < multi["brier_ci_high"]
