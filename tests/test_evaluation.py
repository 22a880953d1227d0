"""Tests of timl.evaluation: hand-computed cases, scikit-learn cross-checks, edge cases and the report files."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from timl import evaluation, reports
from timl.errors import DatasetError

CLASSES = ["MEL", "NV", "BCC"]

# Six images, two per class; predicted (argmax) classes 0, 1, 1, 1, 2, 0.
HAND_TRUE = np.eye(3, dtype=int)[[0, 0, 1, 1, 2, 2]]
HAND_PROB = np.array([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.1, 0.8, 0.1],
                      [0.2, 0.6, 0.2], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])


def random_case(seed, samples=60, classes=4, absent=None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, samples)
    if absent is not None:
        labels[labels == absent] = (absent + 1) % classes
    y_true = np.eye(classes, dtype=int)[labels]
    y_prob = rng.dirichlet(np.ones(classes), samples)
    return y_true, y_prob, [f"c{i}" for i in range(classes)]


def test_hand_computed_single_label():
    summary = evaluation.evaluate(HAND_TRUE, HAND_PROB, CLASSES)
    assert summary["samples"] == 6
    assert summary["classes"] == CLASSES
    assert summary["class_prop"] == pytest.approx([1 / 3] * 3)
    assert summary["accuracy"] == pytest.approx([4 / 6, 5 / 6, 5 / 6])
    assert summary["specificity"] == pytest.approx([3 / 4, 3 / 4, 1.0])
    assert summary["sensitivity"] == pytest.approx([1 / 2, 1.0, 1 / 2])
    assert summary["precision"] == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert summary["f1"] == pytest.approx([1 / 2, 4 / 5, 2 / 3])
    assert summary["auc"] == pytest.approx([7 / 8, 1.0, 1.0])
    assert summary["average_precision"][0] == pytest.approx(1 / 2 + 1 / 2 * 2 / 3)
    assert summary["global_accuracy"] == pytest.approx(4 / 6)
    assert summary["balanced_accuracy"] == pytest.approx(2 / 3)
    assert summary["mean_accuracy"] == pytest.approx(7 / 9)
    assert summary["weighted_mean_accuracy"] == pytest.approx(7 / 9)
    assert summary["mean_specificity"] == pytest.approx(5 / 6)
    assert summary["mean_sensitivity"] == pytest.approx(2 / 3)
    assert summary["mean_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert summary["mean_auc"] == pytest.approx((7 / 8 + 2) / 3)
    assert summary["multi_label"] is False
    assert "exact_match" not in summary and "hamming_loss" not in summary


def test_weighted_means_use_class_prevalence():
    y_true = np.eye(2, dtype=int)[[0, 0, 0, 1]]
    y_prob = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    summary = evaluation.evaluate(y_true, y_prob, ["a", "b"])
    assert summary["sensitivity"] == pytest.approx([2 / 3, 1.0])
    assert summary["weighted_mean_sensitivity"] == pytest.approx(0.75 * 2 / 3 + 0.25 * 1.0)
    assert summary["weighted_mean_sensitivity"] == pytest.approx(summary["global_accuracy"])
    assert summary["weighted_mean_specificity"] == pytest.approx(0.75 * 1.0 + 0.25 * 2 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scikit_learn_on_random_predictions(seed):
    y_true, y_prob, names = random_case(seed)
    summary = evaluation.evaluate(y_true, y_prob, names)
    true_labels, predicted_labels = y_true.argmax(axis=1), y_prob.argmax(axis=1)
    for index in range(len(names)):
        assert summary["auc"][index] == pytest.approx(skm.roc_auc_score(y_true[:, index], y_prob[:, index]))
        assert summary["average_precision"][index] == pytest.approx(
            skm.average_precision_score(y_true[:, index], y_prob[:, index]))
    assert summary["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(true_labels, predicted_labels))
    assert summary["global_accuracy"] == pytest.approx(skm.accuracy_score(true_labels, predicted_labels))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(true_labels, predicted_labels,
                                                                   labels=range(len(names)), zero_division=0)
    assert summary["precision"] == pytest.approx(precision)
    assert summary["sensitivity"] == pytest.approx(recall)
    assert summary["f1"] == pytest.approx(f1)
    table = reports.confusion_table(y_true, y_prob, names)
    expected = skm.confusion_matrix(true_labels, predicted_labels, labels=range(len(names)))
    np.testing.assert_array_equal(table.to_numpy(), expected)
    assert list(table.index) == names and list(table.columns) == names


def test_class_absent_from_ground_truth_is_undefined_not_a_crash():
    y_true, y_prob, names = random_case(3, absent=2)
    summary = evaluation.evaluate(y_true, y_prob, names)
    assert summary["class_prop"][2] == 0
    assert summary["auc"][2] is None and summary["average_precision"][2] is None
    assert summary["sensitivity"][2] is None
    defined = [summary["auc"][index] for index in (0, 1, 3)]
    assert summary["mean_auc"] == pytest.approx(np.mean(defined))
    with pytest.warns(UserWarning):  # sklearn warns about the class only predicted
        expected = skm.balanced_accuracy_score(y_true.argmax(axis=1), y_prob.argmax(axis=1))
    assert summary["balanced_accuracy"] == pytest.approx(expected)
    metrics = evaluation.summary_metrics(summary, "test_")
    assert "test_auc_c2" not in metrics and "test_sens_c2" not in metrics
    assert "test_acc_c2" in metrics


def test_ties_take_the_first_class_and_count_half_in_auc():
    y_true = np.array([[1, 0], [0, 1]])
    y_prob = np.array([[0.5, 0.5], [0.5, 0.5]])
    summary = evaluation.evaluate(y_true, y_prob, ["a", "b"])
    assert summary["global_accuracy"] == 0.5
    assert summary["sensitivity"] == [1.0, 0.0]
    assert summary["auc"] == [0.5, 0.5]
    results = reports.per_image_results(["x", "y"], y_true, y_prob, ["a", "b"])
    assert list(results["inference"]) == ["[1,0]", "[1,0]"] and list(results["class_inference"]) == [0, 0]


def test_one_sample():
    summary = evaluation.evaluate([[0, 1, 0]], [[0.2, 0.7, 0.1]], CLASSES)
    assert summary["samples"] == 1
    assert summary["global_accuracy"] == 1.0 and summary["balanced_accuracy"] == 1.0
    assert summary["auc"] == [None, None, None] and summary["mean_auc"] is None
    assert summary["average_precision"] == [None, 1.0, None]
    assert summary["specificity"] == [1.0, None, 1.0]
    assert summary["precision"] == [None, 1.0, None]
    assert "test_auc" not in evaluation.summary_metrics(summary, "test_")


def test_multi_label_exact_match_and_hamming_loss():
    y_true = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    y_prob = np.array([[0.9, 0.2, 0.6], [0.1, 0.7, 0.6], [0.8, 0.4, 0.1], [0.3, 0.2, 0.1]])
    summary = evaluation.evaluate(y_true, y_prob, CLASSES, multi_label=True)
    assert summary["exact_match"] == pytest.approx(2 / 4)  # rows 0 and 3
    assert summary["global_accuracy"] == summary["exact_match"]
    assert summary["hamming_loss"] == pytest.approx(2 / 12)  # row 1 col 2, row 2 col 1
    assert summary["sensitivity"] == pytest.approx([1.0, 1 / 2, 1.0])
    assert summary["specificity"] == pytest.approx([1.0, 1.0, 2 / 3])
    assert summary["class_prop"] == pytest.approx([2 / 4, 2 / 4, 1 / 4])
    strict = evaluation.evaluate(y_true, y_prob, CLASSES, multi_label=True, threshold=0.65)
    assert strict["sensitivity"] == pytest.approx([1.0, 1 / 2, 0.0])
    assert strict["threshold"] == 0.65


def test_multi_label_matches_scikit_learn():
    rng = np.random.default_rng(7)
    y_true = rng.integers(0, 2, (40, 5))
    y_prob = rng.random((40, 5))
    summary = evaluation.evaluate(y_true, y_prob, list("abcde"), multi_label=True, threshold=0.4)
    y_pred = (y_prob >= 0.4).astype(int)
    assert summary["exact_match"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert summary["hamming_loss"] == pytest.approx(skm.hamming_loss(y_true, y_pred))
    assert summary["auc"] == pytest.approx(list(skm.roc_auc_score(y_true, y_prob, average=None)))
    table = reports.confusion_table(y_true, y_prob, list("abcde"), multi_label=True, threshold=0.4)
    expected = skm.multilabel_confusion_matrix(y_true, y_pred).reshape(5, 4)  # tn, fp, fn, tp
    np.testing.assert_array_equal(table[["TN", "FP", "FN", "TP"]].to_numpy(), expected)


@pytest.mark.parametrize("y_true, y_prob, names, multi_label, fragment", [
    ([[1, 0]], [[0.5, 0.5, 0.0]], ["a", "b"], False, "shape of y_true"),
    ([[1, 0]], [[0.5, 0.5]], ["a"], False, "class_names"),
    ([[2, 0]], [[0.5, 0.5]], ["a", "b"], False, "only 0 and 1"),
    ([[1, 0]], [[np.nan, 0.5]], ["a", "b"], False, "finite"),
    ([[1, 1]], [[0.5, 0.5]], ["a", "b"], False, "exactly one 1"),
    (np.zeros((0, 2)), np.zeros((0, 2)), ["a", "b"], False, "non-empty"),
])
def test_bad_inputs_raise_clear_errors(y_true, y_prob, names, multi_label, fragment):
    with pytest.raises(DatasetError, match=fragment) as raised:
        evaluation.evaluate(y_true, y_prob, names, multi_label=multi_label)
    assert "Received" in str(raised.value)


def test_summary_metrics_names_and_sanitising():
    summary = evaluation.evaluate(HAND_TRUE, HAND_PROB, ["MEL", "a+b (x)", "C c/d"])
    metrics = evaluation.summary_metrics(summary, "test_isic_")
    assert metrics["test_isic_accuracy"] == pytest.approx(summary["global_accuracy"])
    assert metrics["test_isic_auc"] == pytest.approx(summary["mean_auc"])
    assert metrics["test_isic_balanced_accuracy"] == pytest.approx(2 / 3)
    assert metrics["test_isic_mean_f1"] == pytest.approx(summary["mean_f1"])
    for short in ("acc", "spec", "sens", "prec", "f1", "auc", "ap"):
        assert f"test_isic_{short}_MEL" in metrics
    assert "test_isic_auc_a_b _x_" in metrics and "test_isic_sens_C c/d" in metrics
    assert all(isinstance(value, float) for value in metrics.values())


def test_per_image_results_keep_the_original_columns_and_contents():
    """The original TIML's per_image_results.csv: one-hot ground truth and inference, class indices, the
    probabilities as a 3-decimal array; TIML's class names follow in new columns."""
    results = reports.per_image_results([f"img{i}" for i in range(6)], HAND_TRUE, HAND_PROB, CLASSES)
    assert list(results.columns) == list(reports.PER_IMAGE_COLUMNS + reports.PER_IMAGE_EXTRA_COLUMNS)
    assert reports.PER_IMAGE_COLUMNS == ("image", "groundtruth", "class_groundtruth", "pdist", "inference",
                                            "class_inference", "correct")
    second = results.iloc[1]
    assert (second["image"], second["groundtruth"], second["class_groundtruth"]) == ("img1", "[1,0,0]", 0)
    assert (second["pdist"], second["inference"], second["class_inference"]) == ("[0.400,0.500,0.100]", "[0,1,0]", 1)
    assert (second["name_groundtruth"], second["name_inference"]) == ("MEL", "NV")
    assert list(results["correct"]) == [True, False, True, True, True, False]
    multi = reports.per_image_results(["a", "b"], [[1, 0, 1], [0, 0, 0]], [[0.9, 0.1, 0.6], [0.1, 0.2, 0.3]],
                                         CLASSES, multi_label=True)
    assert list(multi["groundtruth"]) == ["[1,0,1]", "[0,0,0]"] and list(multi["inference"]) == ["[1,0,1]", "[0,0,0]"]
    assert list(multi["class_groundtruth"]) == ["0;2", ""] and list(multi["name_inference"]) == ["MEL;BCC", ""]
    assert list(multi["correct"]) == [True, True]


def test_format_class_values_is_the_original_array_format():
    assert evaluation.format_class_values([0.5, None, 1 / 3]) == "[0.500,nan,0.333]"
    assert evaluation.format_class_values(np.array([1, 0, 0]), 0) == "[1,0,0]"
    assert evaluation.format_class_values([]) == "[]"


def test_write_report_files_with_prefix_and_absent_class(tmp_path):
    y_true, y_prob, names = random_case(5, samples=30, classes=3, absent=1)
    summary = reports.write_report(tmp_path / "report", [f"i{k}" for k in range(30)], y_true, y_prob, names,
                                      prefix="dev-")
    out = tmp_path / "report"
    expected = {"dev-summary.csv", "dev-summary.json", "dev-per_image_results.csv", "dev-ROC-0000-c0.png",
                "dev-ROC-0002-c2.png", "dev-ROC-all.png", "dev-confusion_matrix.csv", "dev-confusion_matrix.png",
                "dev-precision_recall.png", "dev-reliability.png"}
    assert {path.name for path in out.iterdir()} == expected
    table = pd.read_csv(out / "dev-summary.csv", dtype=str, keep_default_na=False)
    assert len(table) == 1, "one row, one column per key (the original's layout)"
    row = table.iloc[0]
    assert row["auc"].split(",")[1] == "nan" and row["classes"] == "c0;c1;c2"
    assert float(row["balanced_accuracy"]) == pytest.approx(summary["balanced_accuracy"])
    loaded = json.loads((out / "dev-summary.json").read_text())
    assert loaded["auc"].split(",")[1] == "nan" and loaded["samples"] == 30
    per_image = pd.read_csv(out / "dev-per_image_results.csv", dtype=str)
    assert len(per_image) == 30 and per_image["image"].iloc[0] == "i0"
    matrix = pd.read_csv(out / "dev-confusion_matrix.csv", index_col=0)
    assert matrix.to_numpy().sum() == 30


def test_summary_files_keep_the_original_keys_order_and_types(tmp_path):
    """summary.csv / summary.json as the original TIML's inspect wrote them: its keys first, in its order, per-class
    values as '[0.500,...]' strings, scalars as numbers; TIML's own keys after them."""
    summary = evaluation.evaluate(HAND_TRUE, HAND_PROB, CLASSES)
    reports.write_summary(summary, tmp_path / "summary.csv", tmp_path / "summary.json")
    loaded = json.loads((tmp_path / "summary.json").read_text())
    keys = list(loaded)
    assert keys[:len(reports.ORIGINAL_SUMMARY_KEYS)] == list(reports.ORIGINAL_SUMMARY_KEYS)
    assert {"precision", "average_precision", "balanced_accuracy", "mean_auc", "multi_label"} <= set(keys)
    assert loaded["samples"] == 6 and loaded["classes"] == "MEL;NV;BCC"
    assert loaded["accuracy"] == "[0.667,0.833,0.833]" and loaded["auc"] == "[0.875,1.000,1.000]"
    assert loaded["precision"] == "[0.500,0.667,1.000]"
    assert loaded["global_accuracy"] == pytest.approx(4 / 6) and isinstance(loaded["mean_f1"], float)
    assert loaded["multi_label"] is False
    frame = pd.read_csv(tmp_path / "summary.csv", dtype=str, keep_default_na=False)
    assert list(frame.columns) == keys and len(frame) == 1
    assert frame.iloc[0]["class_prop"] == "[0.333,0.333,0.333]" and frame.iloc[0]["samples"] == "6"
    assert float(frame.iloc[0]["weighted_mean_f1"]) == pytest.approx(summary["weighted_mean_f1"])
    undefined = evaluation.evaluate([[0, 1, 0]], [[0.2, 0.7, 0.1]], CLASSES)
    reports.write_summary(undefined, tmp_path / "u.csv", tmp_path / "u.json")
    assert json.loads((tmp_path / "u.json").read_text())["mean_auc"] is None
    assert pd.read_csv(tmp_path / "u.csv", dtype=str, keep_default_na=False).iloc[0]["mean_auc"] == ""
