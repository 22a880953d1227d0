"""Tests of timl.intervals: coverage by simulation, the vectorised scores against timl.evaluation (on the full
sample and resample by resample), group resampling, and the intervals in the summary files, the metrics, the
results table, inspect and a trained row."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from timl import evaluation, intervals, reports
from timl import metric_names as names
from timl.intervals import Bootstrap

CLASSES = ["MEL", "NV", "BCC", "a+b"]


def single_label_case(seed=0, samples=120, classes=4, rounded=2, absent=None):
    """Labels, and probabilities rounded so that scores tie (the AUC's ties count one half)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, samples)
    if absent is not None:
        labels[labels == absent] = (absent + 1) % classes
    y_true = np.eye(classes, dtype=int)[labels]
    y_prob = np.round(rng.dirichlet(np.ones(classes), samples) + 0.4 * y_true, rounded)
    return y_true, y_prob / y_prob.sum(axis=1, keepdims=True)


def multi_label_case(seed=0, samples=120, classes=4):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, (samples, classes))
    return y_true, np.round(np.clip(0.5 * y_true + rng.random((samples, classes)) * 0.7, 0, 1), 2)


CASES = {"single": (single_label_case(), False), "ties": (single_label_case(1, rounded=1), False),
         "absent": (single_label_case(2, absent=3), False), "multi": (multi_label_case(), True)}


def _vectorised(y_true, y_prob, multi_label, counts):
    y_pred = evaluation.predict_labels(y_prob, multi_label=multi_label)
    return intervals.ResampledScores(y_true, y_pred, y_prob).scores(counts)


def _assert_same(summary, scores, row):
    for key in names.INTERVAL_SCALARS + names.INTERVAL_PER_CLASS:
        expected = np.array(summary[key], dtype=float)  # None -> nan
        np.testing.assert_allclose(scores[key][row], expected, rtol=0, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("case", CASES)
def test_the_vectorised_scores_on_the_full_sample_are_evaluate_s(case):
    (y_true, y_prob), multi_label = CASES[case]
    summary = evaluation.evaluate(y_true, y_prob, CLASSES, multi_label=multi_label)
    _assert_same(summary, _vectorised(y_true, y_prob, multi_label, np.ones((1, len(y_true)))), 0)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("grouped", [False, True])
def test_the_vectorised_scores_equal_a_loop_over_resamples(case, grouped):
    (y_true, y_prob), multi_label = CASES[case]
    groups = np.arange(len(y_true)) // 3 if grouped else None
    counts = next(intervals.resample_counts(len(y_true), 6, seed=5, groups=groups))
    scores = _vectorised(y_true, y_prob, multi_label, counts)
    for row in range(len(counts)):
        drawn = np.repeat(np.arange(len(y_true)), counts[row].astype(int))
        summary = evaluation.evaluate(y_true[drawn], y_prob[drawn], CLASSES, multi_label=multi_label)
        _assert_same(summary, scores, row)


def test_group_resampling_draws_whole_groups():
    groups = ["L1", "L1", "L1", None, "L2", "L2", "", np.nan]  # missing values: groups of their own
    counts = np.concatenate(list(intervals.resample_counts(len(groups), 300, seed=1, groups=groups)))
    assert counts.shape == (300, 8)
    assert (counts[:, 0] == counts[:, 1]).all() and (counts[:, 1] == counts[:, 2]).all()
    assert (counts[:, 4] == counts[:, 5]).all()
    assert not (counts[:, 3] == counts[:, 6]).all(), "each missing label is its own group"
    groups_drawn = counts[:, [0, 3, 4, 6, 7]].sum(axis=1)  # one image of each of the 5 groups
    assert (groups_drawn == 5).all() and set(counts.sum(axis=1)) > {8.0}, "images per resample vary"
    with pytest.raises(ValueError, match="one group label per image"):
        next(intervals.resample_counts(3, 2, groups=["a", "b"]))


def test_intervals_are_seeded_and_bracket_the_score():
    y_true, y_prob = single_label_case(3, samples=300)
    first = evaluation.evaluate(y_true, y_prob, CLASSES, bootstrap=Bootstrap(resamples=300))
    again = evaluation.evaluate(y_true, y_prob, CLASSES, bootstrap=Bootstrap(resamples=300))
    other = evaluation.evaluate(y_true, y_prob, CLASSES, bootstrap=Bootstrap(resamples=300, seed=1))
    assert first == again and first != other
    for key in names.INTERVAL_SCALARS:
        assert first[f"{key}_ci_low"] <= first[key] <= first[f"{key}_ci_high"]
    assert first[names.BOOTSTRAP_RESAMPLES] == 300 and first[names.BOOTSTRAP_SEED] == 0
    plain = evaluation.evaluate(y_true, y_prob, CLASSES)
    assert {key: first[key] for key in plain} == plain, "point estimates unchanged"
    assert evaluation.evaluate(y_true, y_prob, CLASSES, bootstrap=Bootstrap(resamples=0)) == plain


def test_a_score_undefined_in_every_resample_has_no_interval():
    y_true, y_prob = single_label_case(2, absent=3)
    summary = evaluation.evaluate(y_true, y_prob, CLASSES, bootstrap=Bootstrap(resamples=50))
    assert summary["sensitivity_ci_low"][3] is None and summary["auc_ci_high"][3] is None
    assert summary["specificity_ci_low"][3] is not None
    metrics = evaluation.split_metrics(summary, names.TEST)
    assert names.interval_name("test_class/sens_a_b", "ci_low") not in metrics


def test_coverage_of_the_accuracy_interval_by_simulation():
    """500 test sets of 400 images from a classifier whose accuracy is 0.8: the 95% interval (500 resamples
    per set, fewer than the default 2000 to keep the test fast) covers 0.8 in 93-97% of them."""
    rng = np.random.default_rng(23)
    true_accuracy, samples, covered = 0.8, 400, 0
    for simulation in range(500):
        labels = rng.integers(0, 2, samples)
        predicted = np.where(rng.random(samples) < true_accuracy, labels, 1 - labels)
        y_true, y_pred = np.eye(2, dtype=bool)[labels], np.eye(2, dtype=bool)[predicted]
        low, high = intervals.bootstrap_intervals(y_true, y_pred, y_pred.astype(float), resamples=500,
                                                  seed=simulation)["global_accuracy"]
        covered += low <= true_accuracy <= high
    assert 0.93 <= covered / 500 <= 0.97, covered / 500


def test_interval_metrics_sit_beside_their_scores():
    y_true, y_prob = single_label_case()
    summary = evaluation.evaluate(y_true, y_prob, CLASSES, bootstrap=Bootstrap(resamples=100))
    metrics = evaluation.split_metrics(summary, names.TEST)
    plain = evaluation.split_metrics(evaluation.evaluate(y_true, y_prob, CLASSES), names.TEST)
    assert list(metrics)[:len(plain)] == list(plain)
    for name in (names.TEST_ACCURACY, names.TEST_BALANCED_ACCURACY, names.TEST_AUC,
                 names.split_metric(names.TEST, "mean_f1"), "test_class/sens_MEL", "test_class/spec_a_b",
                 "test_class/auc_NV"):
        for bound in names.INTERVAL_BOUNDS:
            assert names.interval_name(name, bound) in metrics, name
    assert metrics["test/balanced_accuracy_ci_low"] <= metrics["test/balanced_accuracy"]
    assert not names.is_best_score("test/balanced_accuracy_ci_low") and names.is_best_score("test/auc")


def test_summary_files_keep_the_original_keys_first(tmp_path):
    y_true, y_prob = single_label_case()
    reports.write_report(tmp_path, [str(index) for index in range(len(y_true))], y_true, y_prob, CLASSES,
                            bootstrap=Bootstrap(resamples=100))
    saved = json.loads((tmp_path / "summary.json").read_text())
    plain = reports.summary_file_values(evaluation.evaluate(y_true, y_prob, CLASSES))
    assert list(saved)[:len(plain)] == list(plain)
    added = list(saved)[len(plain):]
    assert "balanced_accuracy_ci_low" in added and added[-2:] == [names.BOOTSTRAP_RESAMPLES, names.BOOTSTRAP_SEED]
    assert saved["sensitivity_ci_high"].startswith("[") and saved["bootstrap_resamples"] == 100
    header = (tmp_path / "summary.csv").read_text().splitlines()[0].split(",")
    assert header == list(saved)


def test_the_roc_legend_shows_the_interval():
    from timl import plots

    y_true, y_prob = single_label_case()
    summary = evaluation.evaluate(y_true, y_prob, CLASSES, bootstrap=Bootstrap(resamples=100))
    roc = plots.roc_curves(y_true, y_prob, CLASSES, intervals.class_intervals(summary, "auc"))
    low, high = summary["auc_ci_low"][0], summary["auc_ci_high"][0]
    assert roc.curves[0].label("AUC") == f"MEL (AUC = {summary['auc'][0]:.4f}, 95% CI [{low:.4f}, {high:.4f}])"
    assert plots.roc_curves(y_true, y_prob, CLASSES).curves[0].label("AUC") == f"MEL (AUC = {summary['auc'][0]:.4f})"


def _inspect_case(folder):
    import pandas as pd

    y_true, y_prob = single_label_case(samples=60)
    image_names = [f"{index:04d}" for index in range(len(y_true))]
    for name, values in (("gt.csv", y_true), ("pred.csv", y_prob)):
        frame = pd.DataFrame(values, columns=CLASSES)
        frame.insert(0, "image_name", image_names)
        frame.to_csv(folder / name, index=False)
    return folder / "gt.csv", folder / "pred.csv"


def test_inspect_logs_the_intervals(tracking_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    from timl import inspect as timl_inspect

    gt, pred = _inspect_case(tmp_path)
    result = timl_inspect.inspect(gt, pred, out_dir=tmp_path / "report", bootstrap=200)
    metrics = MlflowClient().get_run(result.run_id).data.metrics
    assert {"test/balanced_accuracy_ci_low", "test/balanced_accuracy_ci_high", "test/auc_ci_low",
            "test/mean_f1_ci_high", "test/accuracy_ci_low", "test_class/sens_MEL_ci_low",
            "test_class/spec_a_b_ci_high", "test_class/auc_BCC_ci_low"} <= set(metrics)
    assert MlflowClient().get_run(result.run_id).data.params["bootstrap"] == "200"
    off = timl_inspect.inspect(gt, pred, out_dir=tmp_path / "off", bootstrap=0)
    assert not any(names.is_interval(name) for name in MlflowClient().get_run(off.run_id).data.metrics)
    runner = CliRunner().invoke(timl_inspect.cli, ["--test-csv", str(gt), "--predictions-csv", str(pred),
                                                   "--out-dir", str(tmp_path / "cli"), "--bootstrap", "50"])
    assert runner.exit_code == 0, runner.output
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["bootstrap_resamples"] == 50


def test_results_ci_adds_the_interval_columns_last(tracking_uri, tmp_path):
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from timl import results, tracking

    client = MlflowClient()
    experiment = tracking.experiment_id("ci")
    parent = client.create_run(experiment, tags={tracking.TAG_KIND: "table"}).info.run_id
    row = client.create_run(experiment, tags={tracking.TAG_PARENT: parent, tracking.TAG_ROW: "0",
                                              tracking.TAG_KIND: "row"}).info.run_id
    for name, value in {"test/balanced_accuracy": 0.7, "test/balanced_accuracy_ci_low": 0.61234,
                        "test/balanced_accuracy_ci_high": 0.8}.items():
        client.log_metric(row, name, value)
    client.set_terminated(row)
    plain_path, ci_path = tmp_path / "plain.csv", tmp_path / "ci.csv"
    results.write_table(results.build_results_table(parent_run_id=parent), plain_path)
    outcome = CliRunner().invoke(results.cli, ["--parent-run", parent, "--ci", "-o", str(ci_path)])
    assert outcome.exit_code == 0, outcome.output
    plain, with_ci = pd.read_csv(plain_path, dtype=str), pd.read_csv(ci_path, dtype=str, keep_default_na=False)
    assert list(with_ci.columns) == list(plain.columns) + list(names.INTERVAL_COLUMNS)
    assert with_ci.loc[0, "test_balanced_accuracy_ci_low"] == "0.6123"
    assert with_ci.loc[0, "val_auc_ci_high"] == ""
    again = tmp_path / "again.csv"
    assert CliRunner().invoke(results.cli, ["--parent-run", parent, "-o", str(again)]).exit_code == 0
    assert again.read_bytes() == plain_path.read_bytes(), "without --ci the table is unchanged"


@pytest.mark.slow
def test_a_trained_row_logs_the_intervals(tracking_uri, mini_digits, tmp_path):
    from mlflow.tracking import MlflowClient

    from helpers import small_cnn_row, write_table
    from timl import training

    table = write_table(tmp_path / "table.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=1)])
    outcome = training.train_table(table, out_dir=tmp_path / "out", experiment="ci", bootstrap=500)
    assert [row.status for row in outcome.rows] == ["FINISHED"]
    run = MlflowClient().get_run(outcome.rows[0].run_id)
    for split in (names.DEV, names.TEST):
        for bound in names.INTERVAL_BOUNDS:
            assert names.interval_name(names.split_metric(split, "balanced_accuracy"), bound) in run.data.metrics
            assert names.interval_name(f"{split}_class/sens_D0", bound) in run.data.metrics
    summary = json.loads(next((tmp_path / "out").glob("0-test-summary.json")).read_text())
    assert summary["bootstrap_resamples"] == 500
    parent = MlflowClient().get_run(outcome.parent_run_id).data.metrics
    assert not any(names.is_interval(name) for name in parent), "the table run copies the best row's scores only"
