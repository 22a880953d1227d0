"""Results by subgroup: the --subgroups option and the subgroups column parsed, each group scored alone with its
intervals, the gaps, the files and metrics of inspect and of a training row, and the bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from timl import evaluation, subgroups
from timl.errors import ConfigError, DatasetError, MissingFileError
from timl.intervals import Bootstrap

CLASSES = ["MEL", "NV", "BCC"]


# ------------------------------------------------------------------------------------------------ parsing


def test_columns_and_bands_parse():
    spec = subgroups.parse_subgroups("meta.csv:sex,anatom_site_general,age_approx:0,30,45,60,75")
    assert spec.file == "meta.csv"
    assert [(column.name, column.edges) for column in spec.columns] == [
        ("sex", ()), ("anatom_site_general", ()), ("age_approx", (0.0, 30.0, 45.0, 60.0, 75.0))]
    assert spec.columns[2].band_labels() == ["<0", "0-30", "30-45", "45-60", "60-75", "75+"]
    assert list(spec.columns[2].band_of(np.array([-1, 0, 29.9, 30, 74, 75, 90]))) == [
        "<0", "0-30", "0-30", "30-45", "60-75", "75+", "75+"]


def test_a_word_after_the_edges_is_the_next_column_and_the_file_part_ends_after_its_suffix():
    spec = subgroups.parse_subgroups(r"C:\data\meta v2.xlsx#Sheet 1:age:0.5,40,sex , site")
    assert spec.file == r"C:\data\meta v2.xlsx#Sheet 1"
    assert [(column.name, column.edges) for column in spec.columns] == [("age", (0.5, 40.0)), ("sex", ()),
                                                                         ("site", ())]
    assert [column.name for column in subgroups.parse_subgroups("a.csv:x,10").columns] == ["x", "10"]
    assert subgroups.parse_subgroups("  ") is None


@pytest.mark.parametrize("text, expected", [
    ("sex", "names a table and its columns"),
    ("meta.csv:", "names a table and its columns"),
    ("meta.csv:sex,,site", "empty column or edge"),
    ("meta.csv:age:0,30,20", "not ascending: 0, 30, 20"),
    ("meta.csv:age:0,30,30", "not ascending"),
    ("meta.csv:age:young", "not a number: 'young'"),
    ("meta.csv:sex,sex", "twice"),
    ("meta.csv:gap", "gap metrics"),
])
def test_a_malformed_spec_says_what_is_accepted(text, expected):
    with pytest.raises(ConfigError, match="--subgroups") as raised:
        subgroups.parse_subgroups(text)
    assert expected in str(raised.value) and "Accepted: FILE.csv:COLUMN" in str(raised.value)
    assert f"Received: subgroups={text!r}" in str(raised.value)


# ------------------------------------------------------------------------------------------------ labels


def _meta(folder: Path) -> Path:
    pd.DataFrame({"image_name": ["a", "b", "c", "d"], "sex": ["male", "", "female", "male"],
                  "age": ["10", "80", "", "45"]}).to_csv(folder / "meta.csv", index=False)
    return folder / "meta.csv"


def test_images_without_a_row_or_a_value_are_unknown(tmp_path):
    spec = subgroups.parse_subgroups("meta.csv:sex,age:30,60")
    labels = subgroups.read_subgroup_labels(spec, _meta(tmp_path), ["a", "b", "c", "d", "e"])
    assert list(labels["sex"]) == ["male", "unknown", "female", "male", "unknown"]
    assert list(labels["age"]) == ["<30", "60+", "unknown", "30-60", "unknown"]


def test_bad_tables_name_the_file_the_column_and_what_is_there(tmp_path):
    path = _meta(tmp_path)
    with pytest.raises(DatasetError, match=r"no column\(s\) \['site'\].*Available columns: sex, age"):
        subgroups.read_subgroup_labels(subgroups.parse_subgroups("meta.csv:sex,site"), path, ["a"])
    pd.DataFrame({"name": ["a"], "sex": ["m"]}).to_csv(tmp_path / "noname.csv", index=False)
    with pytest.raises(DatasetError, match="needs an 'image_name' column"):
        subgroups.read_subgroup_labels(subgroups.parse_subgroups("noname.csv:sex"), tmp_path / "noname.csv", ["a"])
    with pytest.raises(DatasetError, match=r"line 3, column 'sex': the bands <1, 1\+ need a number.*sex=''|"
                                           r"line 2, column 'sex'.*sex='male'"):
        subgroups.read_subgroup_labels(subgroups.parse_subgroups("meta.csv:sex:1"), path, ["a"])
    with pytest.raises(MissingFileError, match="subgroups table not found"):
        subgroups.subgroups_file(subgroups.parse_subgroups("nowhere.csv:sex"), tmp_path)


# ------------------------------------------------------------------------------------------------ scores


def _case(samples=200, seed=0):
    rng = np.random.default_rng(seed)
    y_true = np.eye(3, dtype=int)[rng.integers(0, 3, samples)]
    y_prob = rng.dirichlet(np.ones(3), samples) + 0.4 * y_true
    return y_true, y_prob / y_prob.sum(axis=1, keepdims=True)


def test_each_group_scores_as_the_evaluation_of_its_own_images():
    y_true, y_prob = _case()
    spec = subgroups.parse_subgroups("m.csv:site,age:50")
    site = np.array(["torso"] * 90 + ["head/neck"] * 80 + ["palms"] * 20 + ["unknown"] * 10, dtype=object)
    age = np.array(["<50", "50+"] * 100, dtype=object)
    results = subgroups.score_subgroups(spec, {"site": site, "age": age}, y_true, y_prob, CLASSES, min_size=30,
                                        bootstrap=Bootstrap(resamples=300, seed=3))
    assert [(group.column, group.value, group.size) for group in results.groups] == [
        ("site", "head/neck", 80), ("site", "palms", 20), ("site", "torso", 90), ("site", "unknown", 10),
        ("age", "<50", 100), ("age", "50+", 100)]
    torso = results.groups[2]
    expected = evaluation.evaluate(y_true[site == "torso"], y_prob[site == "torso"], CLASSES,
                                   bootstrap=Bootstrap(resamples=300, seed=3))
    assert torso.scores["balanced_accuracy"] == pytest.approx(
        (expected["balanced_accuracy"], expected["balanced_accuracy_ci_low"], expected["balanced_accuracy_ci_high"]))
    assert torso.scores["sens_NV"] == pytest.approx(
        (expected["sensitivity"][1], expected["sensitivity_ci_low"][1], expected["sensitivity_ci_high"][1]))
    assert torso.scores["auc_BCC"][0] == pytest.approx(expected["auc"][2])
    for group in results.groups:
        for value, low, high in (group.scores or {}).values():
            assert low <= value <= high
    assert results.groups[1].scores is None and results.groups[3].scores is None, "20 and 10 < 30: too small"
    scored = {group.value: group.scores for group in results.groups if group.scores and group.column == "site"}
    for score in results.score_names:
        values = [scores[score][0] for scores in scored.values()]
        assert results.gaps["site"][score] == pytest.approx(max(values) - min(values))
        assert results.overall_gaps()[score] == max(results.gaps["site"][score], results.gaps["age"][score])


def test_the_metrics_and_the_table_name_each_group(tmp_path):
    y_true, y_prob = _case(120)
    spec = subgroups.parse_subgroups("m.csv:site")
    site = np.array(["head/neck"] * 60 + ["torso"] * 50 + ["palms"] * 10, dtype=object)
    results = subgroups.score_subgroups(spec, {"site": site}, y_true, y_prob, CLASSES,
                                        bootstrap=Bootstrap(resamples=50))
    metrics = subgroups.subgroup_metrics(results, "test")
    assert metrics["test_group/site/head_neck/samples"] == 60 and metrics["test_group/site/palms/samples"] == 10
    assert "test_group/site/palms/sens_MEL" not in metrics, "too small: size only"
    assert metrics["test_group/site/torso/sens_MEL_ci_low"] <= metrics["test_group/site/torso/sens_MEL"]
    assert metrics["test_group/gap/sens_MEL"] == metrics["test_group/gap/site/sens_MEL"] == pytest.approx(
        abs(metrics["test_group/site/torso/sens_MEL"] - metrics["test_group/site/head_neck/sens_MEL"]))
    files = subgroups.write_subgroup_report(tmp_path, results, prefix="3-test-")
    assert {path.name for path in files} == {"3-test-subgroups.csv", *(f"3-test-subgroups-{score}.png" for score in
                                                                       results.score_names)}
    table = pd.read_csv(tmp_path / "3-test-subgroups.csv", keep_default_na=False)
    assert table[["value", "size", "status"]].values.tolist() == [
        ["head/neck", "60", "scored"], ["palms", "10", "too small"], ["torso", "50", "scored"], ["", "", "gap"]]


# ------------------------------------------------------------------------------------------------ inspect


@pytest.fixture
def case_dir(tmp_path, monkeypatch):
    """gt.csv, pred.csv (400 images) and meta.csv (sex, age; 20 images without a row, some empty cells)."""
    monkeypatch.chdir(tmp_path)
    y_true, y_prob = _case(400, seed=1)
    names = [f"{index:04d}" for index in range(400)]
    for values, file in ((y_true, "gt.csv"), (y_prob, "pred.csv")):
        frame = pd.DataFrame(values, columns=CLASSES)
        frame.insert(0, "image_name", names)
        frame.to_csv(tmp_path / file, index=False)
    rng = np.random.default_rng(2)
    pd.DataFrame({"image_name": names[:380], "sex": rng.choice(["male", "female", ""], 380, p=[.5, .46, .04]),
                  "age_approx": rng.choice(["20", "40", "70", ""], 380)}).to_csv(tmp_path / "meta.csv", index=False)
    return tmp_path


def test_inspect_scores_the_subgroups_into_files_and_the_run(case_dir):
    import mlflow

    from timl import inspect as timl_inspect

    uri = f"sqlite:///{case_dir / 'mlflow.db'}"
    result = CliRunner().invoke(timl_inspect.cli, [
        "--test-csv", "gt.csv", "--predictions-csv", "pred.csv", "--tracking-uri", uri, "--bootstrap", "200",
        "--subgroups", "meta.csv:sex,age_approx:30,60", "--subgroup-min-size", "100", "--out-dir", "report"])
    assert result.exit_code == 0, result.output
    assert "groups scored" in result.output and "have no sex value: group 'unknown'" in result.output
    table = pd.read_csv(case_dir / "report" / "subgroups.csv", keep_default_na=False)
    sex = table[table["column"] == "sex"]
    assert sex["value"].tolist() == ["female", "male", "unknown", ""] and sex["status"].tolist()[3] == "gap"
    assert sex["status"].tolist()[2] == "too small", "20 + the empty cells < 100"
    assert (case_dir / "report" / "subgroups-balanced_accuracy.png").stat().st_size > 1000
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(result.output.split("MLflow run: ")[1].split()[0])
    metrics = run.data.metrics
    assert metrics["test_group/sex/male/samples"] == int(table["size"][1])
    assert metrics["test_group/sex/male/balanced_accuracy"] == pytest.approx(float(table["balanced_accuracy"][1]))
    assert "test_group/age_approx/30-60/auc_MEL_ci_high" in metrics and "test_group/gap/balanced_accuracy" in metrics
    assert run.data.params["subgroups"] == "meta.csv:sex,age_approx:30,60"
    artifacts = {item.path for item in mlflow.MlflowClient(tracking_uri=uri).list_artifacts(run.info.run_id)}
    assert {"subgroups.csv", "subgroups-sens_MEL.png"} <= artifacts


@pytest.mark.parametrize("option, expected", [
    ("meta.csv:site", "no column(s) ['site'] for --subgroups (or the subgroups column). Available columns: sex, "
                      "age_approx"),
    ("meta.csv:age_approx:60,30", "band edges that are not ascending"),
    ("gt.csv:MEL:x", "not a number: 'x'"),
    ("pred.csv.json:sex", "names a table and its columns"),
])
def test_inspect_refuses_bad_subgroups_before_writing(case_dir, option, expected):
    from timl import inspect as timl_inspect

    result = CliRunner().invoke(timl_inspect.cli, ["--test-csv", "gt.csv", "--predictions-csv", "pred.csv",
                                                   "--subgroups", option, "--tracking-uri", "sqlite:///x.db"])
    assert result.exit_code == 2 and expected in result.output, result.output


def test_inspect_refuses_a_subgroups_table_without_image_name(case_dir):
    from timl import inspect as timl_inspect

    pd.DataFrame({"name": ["0001"], "sex": ["male"]}).to_csv(case_dir / "bad.csv", index=False)
    with pytest.raises(DatasetError, match="subgroups table needs an 'image_name' column"):
        timl_inspect.inspect("gt.csv", "pred.csv", subgroups="bad.csv:sex", bootstrap=0,
                             tracking_uri=f"sqlite:///{case_dir / 'x.db'}")


# ------------------------------------------------------------------------------------------------ table column


def test_the_subgroups_cell_keeps_other_rows_keys_and_a_bad_cell_fails_its_row_alone(tmp_path):
    from helpers import small_cnn_row, write_table

    from timl import config

    row = small_cnn_row("data.csv")
    without_column = config.read_table(write_table(tmp_path / "t.csv", [row]))[0]
    table = write_table(tmp_path / "t.csv", [row, dict(row, subgroups="meta.csv:sex"),
                                             dict(row, subgroups="meta.csv:age:9,3")])
    plain, with_cell, bad = config.read_table(table)
    assert plain.key("1") == without_column.key("1") and "subgroups" not in plain.input_cells()
    assert with_cell.subgroups == "meta.csv:sex" and with_cell.input_cells()["subgroups"] == "meta.csv:sex"
    assert isinstance(bad, ConfigError) and "column 'subgroups'" in str(bad) and "not ascending" in str(bad)


def test_a_training_row_scores_its_test_set_by_subgroup(tracking_uri, mini_digits, tmp_path):
    from mlflow.tracking import MlflowClient

    from helpers import small_cnn_row, write_table
    from timl.training import train_table

    names = pd.read_csv(mini_digits / "mini.csv", dtype=str)["image_name"]
    pd.DataFrame({"image_name": names, "hand": ["left", "right"] * (len(names) // 2)}).to_csv(
        tmp_path / "hands.csv", index=False)
    row = small_cnn_row(str(mini_digits / "mini.csv"), epochs=1, subgroups="hands.csv:hand")
    outcome = train_table(write_table(tmp_path / "t.csv", [row]), out_dir=tmp_path / "out", experiment="sub",
                          skip_roc=True, bootstrap=50)
    assert not outcome.failed, [row.message for row in outcome.failed]
    run = MlflowClient().get_run(outcome.rows[0].run_id)
    metrics = run.data.metrics
    assert metrics["test_group/hand/left/samples"] + metrics["test_group/hand/right/samples"] == metrics["test/samples"]
    assert run.data.params["subgroups"] == "hands.csv:hand", "found in the working directory"
    assert list((tmp_path / "out").glob("*-test-subgroups.csv")) and list((tmp_path / "out").glob(
        "*-test-subgroups-balanced_accuracy.png"))


def test_the_model_card_shows_the_subgroups_of_an_inspection_logged_on_the_model():
    """An inspection with --subgroups logs inspect_<dataset>_group/... on the model's run: the card shows it."""
    from types import SimpleNamespace

    from timl import model_card

    metrics = {"test/accuracy": 0.9, "inspect_isic_group/sex/female/balanced_accuracy": 0.8,
               "inspect_isic_group/sex/female/balanced_accuracy_ci_low": 0.7,
               "inspect_isic_group/sex/female/balanced_accuracy_ci_high": 0.88,
               "inspect_isic_group/gap/balanced_accuracy": 0.05, "inspect_isic/accuracy": 0.85}
    run = SimpleNamespace(data=SimpleNamespace(params={"class_names": '["A", "B"]', "method": "SmallCNN"},
                                               metrics=metrics, tags={}),
                          info=SimpleNamespace(run_id="r1"), inputs=None)
    card = model_card.model_card(run, name="m", version="1", sha256=None)
    assert card["subgroups"]["inspect_isic_group/sex/female/balanced_accuracy"] == {
        "value": 0.8, "ci_low": 0.7, "ci_high": 0.88}
    assert "inspect_isic_group/gap/balanced_accuracy" in card["subgroups"]
    assert not any("subgroup" in item for item in card["not_evaluated"])
