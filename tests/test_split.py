"""The split command: train/dev/test files and N folds that ``split=pre`` and ``split=list`` read, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from timl.datasets import load_dataset
from timl.errors import ConfigError, DatasetError, MissingFileError
from timl.split import split_dataset, split_folds

CLASSES = ["A", "B", "C"]


@pytest.fixture
def dataset(tmp_path) -> Path:
    """90 one-hot rows (45 A, 30 B, 15 C) with an extra ``age`` column, and an (empty) image file per row."""
    counts = {"A": 45, "B": 30, "C": 15}
    labels = [name for name, count in counts.items() for _ in range(count)]
    names = [f"img{index:03d}" for index in range(len(labels))]
    frame = pd.DataFrame({"image_name": names, **{c: [int(label == c) for label in labels] for c in CLASSES},
                          "age": [f"0.{index % 10}" for index in range(len(labels))]})
    frame.to_csv(tmp_path / "lesions.csv", index=False)
    (tmp_path / "images").mkdir()
    for name in names:
        (tmp_path / "images" / f"{name}.png").touch()
    return tmp_path / "lesions.csv"


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"image_name": str, "age": str})


def _counts(path: Path) -> dict:
    return _read(path)[CLASSES].sum().to_dict()


def test_train_dev_test_files_are_stratified_and_read_by_pre_and_list(dataset):
    files = split_dataset(dataset, 0.2, 0.1, classcolumns="A;B;C")
    assert [path.name for path in files] == ["lesions-train.csv", "lesions-dev.csv", "lesions-test.csv"]
    assert _counts(files[1]) == {"A": 9, "B": 6, "C": 3}  # 18 rows, each class in its share
    assert sum(_counts(files[2]).values()) == 9 and _counts(files[2])["C"] >= 1
    original = _read(dataset)
    together = pd.concat([_read(path) for path in files]).sort_values("image_name").reset_index(drop=True)
    pd.testing.assert_frame_equal(together, original)  # every row once, every column kept
    for name, split in ((str(dataset.with_suffix("")), "pre"), (dataset.name, "pre"),
                        (";".join(path.name for path in files), "list")):
        loaded = load_dataset(name, split, classcolumns="A;B;C", base_dir=dataset.parent)
        assert (len(loaded.train), len(loaded.dev), len(loaded.test)) == (63, 18, 9)
        assert list(loaded.dev["image_name"]) == list(_read(files[1])["image_name"])


def test_no_test_file_when_test_fraction_is_zero(dataset, tmp_path):
    files = split_dataset(dataset, 0.2, 0, classcolumns="A;B;C", out_dir=tmp_path / "out")
    assert [path.name for path in files] == ["lesions-train.csv", "lesions-dev.csv"]
    loaded = load_dataset(str(tmp_path / "out" / "lesions"), "pre", classcolumns="A;B;C",
                          img_dir=dataset.parent / "images")
    assert loaded.test is None and (len(loaded.train), len(loaded.dev)) == (72, 18)


def test_splits_are_reproducible_from_the_seed(dataset, tmp_path):
    first = split_dataset(dataset, classcolumns="A;B;C", out_dir=tmp_path / "a", seed=3)
    again = split_dataset(dataset, classcolumns="A;B;C", out_dir=tmp_path / "b", seed=3)
    other = split_dataset(dataset, classcolumns="A;B;C", out_dir=tmp_path / "c", seed=4)
    assert all(a.read_text() == b.read_text() for a, b in zip(first, again))
    assert first[1].read_text() != other[1].read_text()


def test_folds_partition_the_rows_and_are_read_by_pre_and_list(dataset, tmp_path):
    files = split_folds(dataset, 3, classcolumns="A;B;C", out_dir=tmp_path / "folds")
    assert len(files) == 9 and files[0].name == "lesions-fold00-train.csv" and files[8].name == "lesions-fold02-test.csv"
    tests = [_read(tmp_path / "folds" / f"lesions-fold{fold:02d}-test.csv") for fold in range(3)]
    names = sorted(name for frame in tests for name in frame["image_name"])
    assert names == sorted(_read(dataset)["image_name"])  # each row in exactly one test fold
    for fold in range(3):
        root = tmp_path / "folds" / f"lesions-fold{fold:02d}"
        parts = {split: set(_read(Path(f"{root}-{split}.csv"))["image_name"]) for split in ("train", "dev", "test")}
        assert len(parts["test"]) == 30 and len(parts["dev"]) == 30 and len(parts["train"]) == 30  # dev = test size
        assert not (parts["train"] & parts["dev"]) and not (parts["train"] & parts["test"])
        assert _counts(Path(f"{root}-test.csv")) == {"A": 15, "B": 10, "C": 5}
        for name, split in ((str(root), "pre"), (";".join(f"{root}-{s}.csv" for s in ("train", "dev", "test")), "list")):
            loaded = load_dataset(name, split, classcolumns="A;B;C", img_dir=dataset.parent / "images")
            assert set(loaded.test["image_name"]) == parts["test"]


def test_folds_with_a_dev_fraction(dataset, tmp_path):
    split_folds(dataset, 5, 0.25, classcolumns="A;B;C", out_dir=tmp_path)
    assert len(_read(tmp_path / "lesions-fold04-dev.csv")) == 18  # a quarter of the other 72 rows


def test_cli_splits_and_folds(dataset, tmp_path):
    from timl.split import cli

    result = CliRunner().invoke(cli, [str(dataset), "--dev-fraction", "0.2", "--classcolumns", "A;B;C"])
    assert result.exit_code == 0, result.output
    assert "Wrote 3 files" in result.output and (dataset.parent / "lesions-test.csv").is_file()
    again = CliRunner().invoke(cli, [str(dataset), "--classcolumns", "A;B;C"])
    assert again.exit_code == 2 and "already exist" in again.output and "--overwrite" in again.output
    assert CliRunner().invoke(cli, [str(dataset), "--classcolumns", "A;B;C", "--overwrite"]).exit_code == 0
    folds = CliRunner().invoke(cli, [str(dataset), "--folds", "4", "--classcolumns", "A;B;C",
                                     "--out-dir", str(tmp_path / "f")])
    assert folds.exit_code == 0 and len(list((tmp_path / "f").glob("lesions-fold0[0-3]-*.csv"))) == 12
    help_text = CliRunner().invoke(cli, ["--help"]).output
    assert "Example" in help_text and "split=pre" in help_text


BAD_CALLS = [
    ("no file", lambda d: split_dataset(d.parent / "nope.csv"), MissingFileError, "nope.csv"),
    ("extra column", lambda d: split_dataset(d), DatasetError, "--classcolumns"),
    ("unknown class", lambda d: split_dataset(d, classcolumns="A;Z"), DatasetError, "'Z'"),
    ("dev fraction 0", lambda d: split_dataset(d, 0, classcolumns="A;B;C"), ConfigError, "dev_fraction=0"),
    ("fractions sum to 1", lambda d: split_dataset(d, 0.5, 0.5, classcolumns="A;B;C"), ConfigError, "below 1"),
    ("negative test", lambda d: split_dataset(d, 0.1, -0.1, classcolumns="A;B;C"), ConfigError, "[0, 1)"),
    ("empty dev", lambda d: split_dataset(d, 0.001, classcolumns="A;B;C"), DatasetError, "dev set(s) empty"),
    ("one fold", lambda d: split_folds(d, 1, classcolumns="A;B;C"), ConfigError, "folds=1"),
    ("too many folds", lambda d: split_folds(d, 91, classcolumns="A;B;C"), DatasetError, "test set(s) empty"),
    ("fold dev fraction", lambda d: split_folds(d, 3, 1.5, classcolumns="A;B;C"), ConfigError, "(0, 1)"),
]


@pytest.mark.parametrize("name,call,error,fragment", BAD_CALLS, ids=[case[0] for case in BAD_CALLS])
def test_bad_input_names_the_problem(dataset, name, call, error, fragment):
    with pytest.raises(error) as raised:
        call(dataset)
    assert fragment in str(raised.value) and "Received" in str(raised.value)
    assert not list(dataset.parent.glob("lesions-*.csv"))  # nothing half written


def test_not_one_hot_rows_are_refused_unless_multi_label(tmp_path):
    rows = [[f"i{index}", 1, int(index % 2 == 0), 0] for index in range(20)]
    path = tmp_path / "multi.csv"
    pd.DataFrame(rows, columns=["image_name", *CLASSES]).to_csv(path, index=False)
    with pytest.raises(DatasetError, match="one-hot"):
        split_dataset(path, 0.2, 0.2)
    files = split_dataset(path, 0.2, 0.2, multi_label=True)
    assert sum(len(_read(file)) for file in files) == 20
    assert np.isin(_read(files[1])["B"], [0, 1]).all()
