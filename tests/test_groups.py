"""Grouped splits (issue 23, item 1): a ``groups`` cell keeps every image of a lesion or patient on one side.

Property tests (hypothesis) over random groupings for frac, n and kfold; the cell's forms and bad cells; pre and
list files that share groups refused; ``python -m timl.split --groups``; and an ISIC-sample table trained end to
end with ``groups FILE.csv:lesion_id``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import SHARED_ISIC, small_cnn_row, write_table
from timl.config import RunConfig
from timl.datasets import grouped_assignment, load_dataset, parse_groups, stratified_folds, stratified_order
from timl.errors import DatasetError, MissingFileError

CLASSES = ("A", "B", "C")


@st.composite
def groupings(draw, pure: bool = True):
    """A labelled ground truth with random groups of 1..5 images (each group one class when ``pure``, as a
    lesion has one diagnosis), some images without a group value, and a seed."""
    sizes = draw(st.lists(st.integers(1, 5), min_size=12, max_size=40))
    rows = []
    for group, size in enumerate(sizes):
        label = draw(st.integers(0, len(CLASSES) - 1))
        for member in range(size):
            label = label if pure else draw(st.integers(0, len(CLASSES) - 1))
            value = "" if size == 1 and draw(st.booleans()) else f"L{group}"
            rows.append({"image_name": f"img{len(rows):03d}", "lesion": value,
                         **{name: int(index == label) for index, name in enumerate(CLASSES)}})
    return pd.DataFrame(rows), draw(st.integers(0, 2**16))


def _write(folder, frame):
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for name in frame["image_name"]:
        (images / f"{name}.png").touch()
    path = folder / "truth.csv"
    frame.to_csv(path, index=False)
    return path


def _sides(dataset, frame) -> dict[str, set]:
    group_of = {name: value or f"own:{name}" for name, value in zip(frame["image_name"], frame["lesion"])}
    return {split: {group_of[name] for name in dataset.frame(split)["image_name"]}
            for split in ("train", "dev", "test")}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(groupings(), st.sampled_from(["frac=0.2", "n=4", "kfold=3:0", "kfold=4:3"]))
def test_a_group_never_lands_on_two_sides(tmp_path_factory, case, split):
    frame, seed = case
    path = _write(tmp_path_factory.mktemp("g"), frame)
    try:
        dataset = load_dataset(path, split, seed=seed, groups="lesion")
    except DatasetError as error:  # too few groups for a side: refused as an empty split, never a leak
        assert "empty" in str(error) or "leaving no train rows" in str(error)
        return
    sides = _sides(dataset, frame)
    assert not sides["train"] & sides["dev"] and not sides["train"] & sides["test"] and not sides["dev"] & sides["test"]
    assert sum(dataset.sizes().values()) == len(frame)
    assert dataset.group_counts() == {split: len(groups) for split, groups in sides.items()}
    again = load_dataset(path, split, seed=seed, groups="lesion")
    assert all(again.frame(split)["image_name"].tolist() == dataset.frame(split)["image_name"].tolist()
               for split in ("train", "dev", "test")), "same seed, same split"


@settings(max_examples=150, deadline=None)
@given(groupings(), st.lists(st.floats(0.05, 1.0), min_size=2, max_size=5))
def test_stratification_is_within_one_group_per_class(case, weights):
    frame, seed = case
    shares = np.array(weights) / sum(weights)
    labels = frame[list(CLASSES)].to_numpy()
    groups = np.array([value or f"own:{name}" for name, value in zip(frame["image_name"], frame["lesion"])],
                      dtype=object)
    part = grouped_assignment(labels, groups, shares, seed)
    largest = pd.Series(groups).value_counts().max()
    for index, share in enumerate(shares):
        for column in range(len(CLASSES)):
            got = labels[part == index, column].sum()
            assert abs(got - share * labels[:, column].sum()) <= largest + 1e-9
    for group in set(groups):
        assert len(set(part[groups == group])) == 1
    assert (grouped_assignment(labels, groups, shares, seed) == part).all()


@settings(max_examples=40, deadline=None)
@given(groupings(pure=False), st.integers(2, 5))
def test_mixed_groups_stay_whole_too(case, folds):
    frame, seed = case
    groups = frame["lesion"].where(frame["lesion"] != "", frame["image_name"]).to_numpy(dtype=object)
    part = grouped_assignment(frame[list(CLASSES)].to_numpy(), groups, np.full(folds, 1 / folds), seed)
    assert all(len(set(part[groups == group])) == 1 for group in set(groups))


@pytest.mark.parametrize("split", ["frac=0.2", "n=5", "kfold=3:1"])
def test_rows_without_groups_split_as_before(tmp_path, split):
    """No groups cell: the ungrouped strategies, row for row (main's split: stratified order and folds)."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"image_name": [f"img{i:03d}" for i in range(40)],
                          **{name: 0 for name in CLASSES}})
    for row, label in enumerate(rng.integers(0, 3, 40)):
        frame.loc[row, CLASSES[label]] = 1
    path = _write(tmp_path, frame)
    dataset = load_dataset(path, split, seed=7)
    labels = frame[list(CLASSES)].to_numpy()
    names = frame["image_name"].to_numpy()
    if split.startswith("kfold"):
        in_test = stratified_folds(labels, 3, 7) == 1
        assert sorted(dataset.test["image_name"]) == sorted(names[in_test])
    else:
        count = 8 if split == "frac=0.2" else 5
        order = stratified_order(labels, 7)
        assert sorted(dataset.dev["image_name"]) == sorted(names[order[:count]])
        assert sorted(dataset.test["image_name"]) == sorted(names[order[count:2 * count]])
    assert not dataset.grouped and dataset.group_counts() == {} and dataset.groups == {}


# ------------------------------------------------------------------------------------------------ cells and files


@pytest.fixture
def lesions(tmp_path):
    """A ground truth of 30 images in 12 lesions (a ``lesion`` column) and a metadata table of the same lesions."""
    rows = []
    for index in range(30):
        label = (index // 3) % 3
        rows.append({"image_name": f"img{index:03d}", "lesion": f"L{index // 3}" if index < 27 else "",
                     **{name: int(position == label) for position, name in enumerate(CLASSES)}})
    frame = pd.DataFrame(rows)
    path = _write(tmp_path, frame)
    frame[["image_name", "lesion"]].rename(columns={"lesion": "lesion_id"}).to_csv(tmp_path / "meta.csv", index=False)
    frame.drop(columns=["lesion"]).to_csv(tmp_path / "plain.csv", index=False)
    return tmp_path, frame, path


def test_a_column_of_the_ground_truth_is_no_class(lesions):
    folder, frame, path = lesions
    dataset = load_dataset(path, "frac=0.2", groups="lesion")
    assert dataset.class_names == CLASSES and "lesion" not in dataset.train.columns
    assert dataset.grouped and dataset.ungrouped_images() == 3
    assert sum(dataset.group_counts().values()) == 9 + 3


def test_a_table_of_groups_beside_the_dataset(lesions):
    folder, frame, _ = lesions
    grouped = load_dataset("plain.csv", "kfold=3:2", groups="meta.csv:lesion_id", base_dir=folder, seed=2)
    by_column = load_dataset(folder / "truth.csv", "kfold=3:2", groups="lesion", seed=2)
    assert grouped.test["image_name"].tolist() == by_column.test["image_name"].tolist()
    frame[["image_name", "lesion"]].rename(columns={"lesion": "lesion_id"}).to_excel(folder / "meta.xlsx",
                                                                                    index=False)
    from_workbook = load_dataset(folder / "plain.csv", "kfold=3:2", groups="meta.xlsx:lesion_id", seed=2)
    assert from_workbook.test["image_name"].tolist() == by_column.test["image_name"].tolist()


@pytest.mark.parametrize("groups, error, expected", [
    ("lesion_id", DatasetError, ["'lesion_id'", "Available columns", "groups="]),
    ("meta.csv:nope", DatasetError, ["'nope'", "Available columns: image_name, lesion_id", "groups='meta.csv:nope'"]),
    ("missing.csv:lesion_id", MissingFileError, ["missing.csv", "groups='missing.csv:lesion_id'"]),
    ("plain.csv:A", DatasetError, ["in 2 whole groups", "empty"]),
    ("truth.csv:lesion", None, []),
])
def test_bad_group_cells_name_the_cell(lesions, groups, error, expected):
    folder, _, _ = lesions
    if error is None:
        load_dataset(folder / "plain.csv", "frac=0.2", groups=groups)
        return
    with pytest.raises(error) as raised:
        load_dataset(folder / "plain.csv", "frac=0.2", groups=groups)
    assert all(text in str(raised.value) for text in expected), str(raised.value)


def test_a_groups_table_needs_image_names(lesions):
    folder, _, _ = lesions
    pd.DataFrame({"name": ["img000"], "lesion_id": ["L0"]}).to_csv(folder / "noname.csv", index=False)
    with pytest.raises(DatasetError, match="image_name"):
        load_dataset(folder / "plain.csv", "frac=0.2", groups="noname.csv:lesion_id")


def test_pre_and_list_files_that_share_groups_are_refused(lesions):
    folder, frame, _ = lesions
    for split, rows in {"train": range(0, 21), "dev": range(21, 27), "test": range(27, 30)}.items():
        frame.iloc[list(rows)].to_csv(folder / f"D-{split}.csv", index=False)
    assert load_dataset(folder / "D", "pre", groups="lesion").group_counts() == {"train": 7, "dev": 2, "test": 3}
    frame.iloc[list(range(0, 22))].to_csv(folder / "D-train.csv", index=False)  # L7 in train and dev
    frame.iloc[list(range(22, 27))].to_csv(folder / "D-dev.csv", index=False)
    with pytest.raises(DatasetError) as raised:
        load_dataset(folder / "D", "pre", groups="lesion")
    assert "'L7' (train and dev)" in str(raised.value) and "share groups" in str(raised.value)
    assert "timl.split" in str(raised.value) and "groups='lesion'" in str(raised.value)
    with pytest.raises(DatasetError, match="'L7'"):
        load_dataset(f"{folder}/D-train.csv;{folder}/D-dev.csv", "list", groups="meta.csv:lesion_id",
                     base_dir=folder)
    load_dataset(folder / "D", "pre", classcolumns="A;B;C")  # without groups: as before


def test_the_groups_cell_of_a_row():
    row = {"method": "SmallCNN", "dataset": "d.csv", "split": "frac=0.1", "epochs": 1}
    plain, grouped = RunConfig.from_row(row, 0), RunConfig.from_row(dict(row, groups="meta.csv:lesion_id"), 0)
    assert "groups" not in plain.input_cells() and grouped.input_cells()["groups"] == "meta.csv:lesion_id"
    assert plain.key("1") == RunConfig.from_row(dict(row, groups=""), 0).key("1") != grouped.key("1")
    assert parse_groups("C:/data/meta.csv:lesion_id").file == "C:/data/meta.csv"
    with pytest.raises(Exception, match="groups"):
        RunConfig.from_row(dict(row, groups="meta.csv:"), 0)


# ------------------------------------------------------------------------------------------------ timl.split


def test_split_command_writes_files_that_share_no_group(lesions):
    from timl.split import cli

    folder, frame, _ = lesions
    result = CliRunner().invoke(cli, [str(folder / "plain.csv"), "--groups", "meta.csv:lesion_id", "--dev-fraction",
                                      "0.2", "--test-fraction", "0.2", "--out-dir", str(folder / "out")])
    assert result.exit_code == 0, result.output
    load_dataset(folder / "out" / "plain", "pre", groups=f"{folder}/meta.csv:lesion_id",
                 img_dir=folder / "images")  # refused if the files shared a group
    result = CliRunner().invoke(cli, [str(folder / "truth.csv"), "--groups", "lesion", "--folds", "3",
                                      "--classcolumns", "A;B;C", "--out-dir", str(folder / "folds")])
    assert result.exit_code == 0, result.output
    tests = []
    for fold in range(3):
        dataset = load_dataset(folder / "folds" / f"truth-fold{fold:02d}", "pre", groups="lesion",
                               classcolumns="A;B;C", img_dir=folder / "images")
        tests += list(dataset.test["image_name"])
    assert sorted(tests) == sorted(frame["image_name"])


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_an_isic_table_with_lesion_groups_trains(tracking_uri, tmp_path):
    """The ISIC sample relabelled into two classes, lesions of 2-3 images in a metadata table; a bad cell fails
    its row alone."""
    from timl import training

    names = sorted(name for split in ("train", "dev", "test") for name in pd.read_csv(
        SHARED_ISIC / f"ISIC_2019_Training_GroundTruth_meta-{split}.csv")["image_name"])
    lesion = [f"IL_{index // 3 if index < 12 else index // 2:04d}" for index in range(len(names))]
    labels = [int(value[-1]) % 2 for value in lesion]
    (tmp_path / "images").symlink_to(SHARED_ISIC / "images")
    pd.DataFrame({"image_name": names, "MEL": [1 - v for v in labels], "NV": labels}).to_csv(tmp_path / "isic.csv",
                                                                                             index=False)
    pd.DataFrame({"image_name": names, "lesion_id": lesion, "age_approx": 50}).to_csv(tmp_path / "meta.csv",
                                                                                       index=False)
    row = small_cnn_row(str(tmp_path / "isic.csv"), epochs=1, split="frac=0.2", imgsize=16)
    table = write_table(tmp_path / "table.csv", [dict(row, groups="meta.csv:lesion_id"),
                                                 dict(row, groups="meta.csv:patient_id"), row])
    outcome = training.train_table(table, out_dir=tmp_path / "out", experiment="groups")
    assert [row.status for row in outcome.rows] == ["FINISHED", "FAILED", "FINISHED"], [r.message for r in outcome.rows]
    assert "'patient_id'" in outcome.rows[1].message and "lesion_id" in outcome.rows[1].message
    from mlflow.tracking import MlflowClient

    run = MlflowClient().get_run(outcome.rows[0].run_id)
    assert run.data.params["groups"] == "meta.csv:lesion_id" and run.data.params["num_ungrouped_images"] == "0"
    assert sum(int(run.data.params[f"num_groups_{split}"]) for split in ("train", "dev", "test")) == len(set(lesion))
    assert run.data.tags["timl.split.grouped"] == "meta.csv:lesion_id"
    plain = MlflowClient().get_run(outcome.rows[2].run_id)
    assert "groups" not in plain.data.params and "timl.split.grouped" not in plain.data.tags
    results = pd.read_csv(tmp_path / "out" / "automation_result.csv", dtype=str, keep_default_na=False)
    assert list(results.columns).index("groups") > list(results.columns).index("metadata"), "after the others"
    assert results["groups"].tolist() == ["meta.csv:lesion_id", "meta.csv:patient_id", ""], "a failed row keeps its cells"


# ------------------------------------------------------------------------------------------------ inspect


def test_inspect_warns_when_test_images_share_groups_with_training(tracking_uri, tmp_path, caplog):
    from mlflow.tracking import MlflowClient

    from timl import inspect as timl_inspect

    names = [f"img{index}" for index in range(6)]
    truth = pd.DataFrame({"image_name": names, "A": [1, 0, 1, 0, 1, 0], "B": [0, 1, 0, 1, 0, 1],
                          "lesion": ["L0", "L1", "L2", "L2", "", "L9"]})
    truth.to_csv(tmp_path / "test.csv", index=False)
    pd.DataFrame({"image_name": names, "A": 0.7, "B": 0.3}).to_csv(tmp_path / "p.csv", index=False)
    pd.DataFrame({"image_name": ["t0", "t1", "t2"], "lesion": ["L2", "L0", "L5"]}).to_csv(tmp_path / "train.csv",
                                                                                          index=False)
    with caplog.at_level("WARNING"):
        result = timl_inspect.inspect(tmp_path / "test.csv", tmp_path / "p.csv", out_dir=tmp_path / "r",
                                      train_csv=tmp_path / "train.csv", groups="lesion")
    assert "3 of the 6 test images share a group" in caplog.text and "'L2'" in caplog.text
    assert result.summary["classes"] == ["A", "B"], "the group column is no class"
    tags = MlflowClient().get_run(result.run_id).data.tags
    assert tags["timl.inspect.shared_groups"] == "3"
    truth.drop(columns=["lesion"]).to_csv(tmp_path / "plain.csv", index=False)
    clean = timl_inspect.inspect(tmp_path / "plain.csv", tmp_path / "p.csv", out_dir=tmp_path / "r2",
                                 train_csv=tmp_path / "train.csv", groups="train.csv:lesion")
    assert "timl.inspect.shared_groups" not in MlflowClient().get_run(clean.run_id).data.tags
    with pytest.raises(Exception, match="both --train-csv and --groups"):
        timl_inspect.inspect(tmp_path / "plain.csv", tmp_path / "p.csv", out_dir=tmp_path / "r3", groups="lesion")
