"""Cross-validation as one result: a row with split ``kfold=K`` trains its K folds as child runs of one
``N-METHOD-cv`` run, which holds the folds' mean scores, their spread, the pooled out-of-fold intervals, one
per-image file and the folds' ROC; the results table has a line per fold and one for the cross-validation;
``--resume`` continues fold by fold."""

from __future__ import annotations

import json
import numpy as np
import pandas as pd
import pytest

from helpers import small_cnn_row, write_table
from timl import folds
from timl import metric_names as names
from timl.config import RunConfig
from timl.datasets import parse_split
from timl.errors import DatasetError

# ------------------------------------------------------------------------------------------------ the cell


def test_kfold_without_a_fold_is_a_cross_validation():
    spec = parse_split("kfold=5")
    assert spec.cross_validation and spec.folds == 5 and spec.fold is None
    assert not parse_split("kfold=5:2").cross_validation
    with pytest.raises(DatasetError, match=r"kfold=K \(all K folds"):
        parse_split("kfold=1")
    with pytest.raises(DatasetError, match="kfold needs K"):
        parse_split("kfold=x")


def test_a_cross_validation_row_becomes_its_folds():
    row = RunConfig.from_row(small_cnn_row("d.csv", split="kfold=3"), 4)
    assert row.cross_validation and row.cv_run_name == "4-SmallCNN-cv"
    fold_rows = row.fold_configs()
    assert [fold.split for fold in fold_rows] == ["kfold=3:0", "kfold=3:1", "kfold=3:2"]
    assert [fold.run_name for fold in fold_rows] == ["4-SmallCNN-fold0", "4-SmallCNN-fold1", "4-SmallCNN-fold2"]
    assert [fold.file_stem for fold in fold_rows] == ["4-fold0", "4-fold1", "4-fold2"]
    plain = RunConfig.from_row(small_cnn_row("d.csv", split="kfold=3:1"), 4)
    assert plain.run_name == "4-SmallCNN" and plain.file_stem == "4" and not plain.cross_validation
    assert plain.key("v") != fold_rows[1].key("v"), "a fold of a cross-validation is never a plain kfold=K:i row"
    assert len({fold.key("v") for fold in fold_rows} | {row.key("v")}) == 4


def test_one_fold_of_a_cross_validation_is_loaded_at_a_time(mini_digits):
    from timl import datasets

    with pytest.raises(DatasetError, match=r"is a cross-validation.*kfold=3:i"):
        datasets.load_dataset(mini_digits / "mini.csv", "kfold=3")


# ------------------------------------------------------------------------------------------------ the numbers


def test_fold_statistics_are_means_and_sample_deviations():
    fold_metrics = [{"test/accuracy": 0.8, "test/accuracy_ci_low": 0.7, "test/samples": 10, "loss": 1.0,
                     "test_class/sens_A": 0.5},
                    {"test/accuracy": 0.6, "test/accuracy_ci_low": 0.5, "test/samples": 12, "loss": 2.0,
                     "test_class/sens_A": 0.7},
                    {"test/accuracy": 0.7, "test/samples": 11, "test_class/sens_A": 0.6}]
    result = folds.fold_statistics(fold_metrics)
    assert result["test/accuracy"] == pytest.approx(0.7)
    assert result["test/accuracy_std"] == pytest.approx(np.std([0.8, 0.6, 0.7], ddof=1))
    assert result["test_class/sens_A_std"] == pytest.approx(0.1)
    assert result["test/samples"] == 11 and "test/samples_std" not in result
    assert "loss" not in result, "epoch series are not summarised"
    assert not any(names.is_interval(name) for name in result), "the folds' own intervals are not averaged"


def test_per_image_results_read_back_as_written(tmp_path):
    from timl import reports

    y_true = np.eye(3)[[0, 1, 2, 1]]
    y_prob = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.25, 0.25]])
    reports.per_image_results(list("abcd"), y_true, y_prob, ["A", "B", "C"]).to_csv(tmp_path / "p.csv", index=False)
    back = folds.read_per_image_results(tmp_path / "p.csv", 3, fold=2)
    assert back.image_names == list("abcd") and (back.folds == 2).all()
    np.testing.assert_array_equal(back.y_true, y_true)
    np.testing.assert_allclose(back.y_prob, y_prob, atol=5e-4)
    with pytest.raises(DatasetError, match="3 values per image; the classes are 2"):
        folds.read_per_image_results(tmp_path / "p.csv", 2, fold=0)


# ------------------------------------------------------------------------------------------------ end to end


def _runs(parent_id):
    from timl import tracking

    return tracking.child_runs(parent_id)


@pytest.mark.slow
def test_a_cross_validation_row_trains_its_folds_as_one_result(tracking_uri, tmp_path, mini_digits):
    from mlflow.tracking import MlflowClient

    from timl import training

    names_in_order = pd.read_csv(mini_digits / "mini.csv", dtype=str)["image_name"]
    pd.DataFrame({"image_name": names_in_order, "lesion": [f"L{index // 2}" for index in range(len(names_in_order))]}
                 ).to_csv(tmp_path / "lesions.csv", index=False)
    table = write_table(tmp_path / "table.csv", [small_cnn_row(str(mini_digits / "mini.csv"), split="kfold=3",
                                                               epochs=1, groups=f"{tmp_path / 'lesions.csv'}:lesion"),
                                                 small_cnn_row(str(mini_digits / "mini.csv"), epochs=1)])
    seen = []
    outcome = training.train_table(table, out_dir=tmp_path / "out", experiment="cv", bootstrap=200,
                                   on_progress=lambda row, progress: seen.append((row.name, progress.total)))
    assert [(row.name, row.status) for row in outcome.rows] == [
        ("0-SmallCNN-fold0", "FINISHED"), ("0-SmallCNN-fold1", "FINISHED"), ("0-SmallCNN-fold2", "FINISHED"),
        ("0-SmallCNN-cv", "FINISHED"), ("1-SmallCNN", "FINISHED")], [row.message for row in outcome.rows]
    assert {total for _, total in seen} == {5}, "the progress counts the folds and the cross-validation"
    client = MlflowClient()
    cv_id = outcome.rows[3].run_id
    cv = client.get_run(cv_id)
    assert cv.info.run_name == "0-SmallCNN-cv" and cv.data.tags["timl.kind"] == "cv"
    assert cv.data.tags["mlflow.parentRunId"] == outcome.parent_run_id
    fold_runs = _runs(cv_id)
    assert sorted(run.data.tags["timl.fold"] for run in fold_runs) == ["0", "1", "2"]
    assert {run.data.params["split"] for run in fold_runs} == {"kfold=3:0", "kfold=3:1", "kfold=3:2"}
    assert cv.data.params["split"] == "kfold=3" and cv.data.params["folds"] == "3"
    assert json.loads(cv.data.params["class_names"]) == ["D0", "D1", "D2"]
    metrics = cv.data.metrics
    fold_scores = [run.data.metrics[names.TEST_BALANCED_ACCURACY] for run in fold_runs]
    assert metrics[names.TEST_BALANCED_ACCURACY] == pytest.approx(np.mean(fold_scores))
    assert metrics["test/balanced_accuracy_std"] == pytest.approx(np.std(fold_scores, ddof=1))
    for name in (names.TEST_BALANCED_ACCURACY, names.TEST_AUC, names.DEV_ACCURACY, "test_class/sens_D1"):
        assert metrics[f"{name}_ci_low"] <= metrics[f"{name}_ci_high"], name
    assert metrics["test/samples"] == 90, "every image's out-of-fold prediction once"
    artifacts = {item.path for item in client.list_artifacts(cv_id)}
    assert {"0-cv-test-per_image_results.csv", "0-cv-test-summary.csv", "0-cv-test-summary.json",
            "0-cv-folds.csv", "0-cv-test-ROC-0000-D0.png"} <= artifacts
    pooled = pd.read_csv(tmp_path / "out" / "0-cv-test-per_image_results.csv")
    assert len(pooled) == 90 and pooled["image"].is_unique and sorted(pooled["fold"].unique()) == [0, 1, 2]
    assert list(pooled.columns)[:7] == ["image", "groundtruth", "class_groundtruth", "pdist", "inference",
                                        "class_inference", "correct"], "the original layout, the fold after it"
    from timl import evaluation
    from timl.intervals import Bootstrap

    pooled_back = folds.read_per_image_results(tmp_path / "out" / "0-cv-test-per_image_results.csv", 3, fold=0)
    lesions = np.array([f"L{list(names_in_order).index(name) // 2}" for name in pooled_back.image_names], dtype=object)
    for groups, equal in ((lesions, True), (None, False)):
        again = evaluation.split_metrics(evaluation.evaluate(pooled_back.y_true, pooled_back.y_prob, ["D0", "D1", "D2"],
                                                             bootstrap=Bootstrap(200, groups=groups)), "test")
        same = all(again[name] == pytest.approx(metrics[name]) for name in again if names.is_interval(name))
        assert same == equal, "the pooled intervals resample whole lesions"
    assert cv.data.params["groups"].endswith("lesions.csv:lesion"), "the folds' shared params"
    summary = json.loads((tmp_path / "out" / "0-cv-test-summary.json").read_text())
    assert summary["samples"] == 90 and summary["bootstrap_resamples"] == 200
    fold_table = pd.read_csv(tmp_path / "out" / "0-cv-folds.csv", dtype={"fold": str})
    assert fold_table["fold"].tolist() == ["0", "1", "2", "mean", "std"]
    for fold in range(3):  # the folds' files stand side by side
        assert (tmp_path / "out" / f"0-fold{fold}-test-per_image_results.csv").is_file()
    results = pd.read_csv(tmp_path / "out" / "automation_result.csv", dtype=str, keep_default_na=False)
    assert results["split"].tolist() == ["kfold=3:0", "kfold=3:1", "kfold=3:2", "kfold=3", "n=15"]
    assert float(results["test_balanced_accuracy"][3]) == pytest.approx(metrics[names.TEST_BALANCED_ACCURACY],
                                                                        abs=1e-4)
    assert results["trainmodel"][3] == "" and results["trainmodel"][0].startswith("0-fold0-keras_model-")
    from timl import register

    assert register.best_run(outcome.parent_run_id) != cv_id, "a cross-validation has no model to register"


@pytest.mark.slow
def test_resume_continues_a_cross_validation_fold_by_fold(tracking_uri, tmp_path, mini_digits):
    """Interrupted after its first fold, the cross-validation ends KILLED; --resume trains the two other folds
    and then summarises the three, in the same cross-validation run."""
    from mlflow.tracking import MlflowClient

    from timl import training

    table = write_table(tmp_path / "table.csv", [small_cnn_row(str(mini_digits / "mini.csv"), split="kfold=3",
                                                               epochs=1)])

    def interrupt(outcome):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train_table(table, out_dir=tmp_path / "out", experiment="cv", on_row=interrupt)
    client = MlflowClient()
    [cv] = [run for run in _runs(_table_run(client)) if run.data.tags["timl.kind"] == "cv"]
    assert cv.info.status == "KILLED"
    second = training.train_table(table, out_dir=tmp_path / "out", experiment="cv", resume=True)
    assert [(row.name, row.status, row.message.startswith("skipped")) for row in second.rows] == [
        ("0-SmallCNN-fold0", "FINISHED", True), ("0-SmallCNN-fold1", "FINISHED", False),
        ("0-SmallCNN-fold2", "FINISHED", False), ("0-SmallCNN-cv", "FINISHED", False)]
    assert second.rows[3].run_id == cv.info.run_id, "the same cross-validation run, reopened"
    assert client.get_run(cv.info.run_id).data.metrics["test/samples"] == 90
    assert len(_runs(cv.info.run_id)) == 3, "no fold trained twice"
    results = pd.read_csv(tmp_path / "out" / "automation_result.csv", dtype=str, keep_default_na=False)
    assert results["split"].tolist() == ["kfold=3:0", "kfold=3:1", "kfold=3:2", "kfold=3"]
    assert set(results["exceptions"]) == {""}
    third = training.train_table(table, out_dir=tmp_path / "out", experiment="cv", resume=True)
    assert [(row.name, row.message) for row in third.rows] == [("0-SmallCNN-cv", "skipped: already FINISHED")]


def _table_run(client) -> str:
    from timl import tracking

    return tracking.table_runs("cv")[0].info.run_id


def test_a_fold_that_failed_fails_its_cross_validation_naming_it(tracking_uri):
    from mlflow.tracking import MlflowClient

    from timl import tracking
    from timl.training.crossval import CrossValidation, finish
    from timl.training.executors import RowOutcome, TableContext

    with tracking.command_run("cv", "table", {}) as parent:
        config = RunConfig.from_row(small_cnn_row("d.csv", split="kfold=2"), 0)
        run_id = tracking.create_row_run(parent, config.cv_run_name, 0, "key", kind=tracking.KIND_CV)
        cross_validation = CrossValidation(config, run_id, TableContext(parent, tracking_uri),
                                           {"0-SmallCNN-fold0": 0, "0-SmallCNN-fold1": 1})
        cross_validation.outcomes = {0: RowOutcome(0, "0-SmallCNN-fold0", "FINISHED", "a"),
                                     1: RowOutcome(0, "0-SmallCNN-fold1", "FAILED", "b", "ImageError: bad.png")}
        outcome = finish(cross_validation)
    assert outcome.status == "FAILED" and outcome.name == "0-SmallCNN-cv"
    assert outcome.message == ("1 of 2 folds did not finish (--resume trains them again): fold 1 FAILED: "
                               "ImageError: bad.png")
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["timl.exception"] == outcome.message
