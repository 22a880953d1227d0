"""Ground truth, class columns, split strategies, class weights and image lookup (timl.datasets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from timl import datasets
from timl.datasets import (SPLIT_STRATEGIES, compute_class_weights, find_images, load_dataset, parse_split,
                           read_ground_truth)
from timl.errors import DatasetError, MissingFileError

ISIC_ROOT = "ISIC_2019_Training_GroundTruth_meta"


def _write_images(folder: Path, names, suffix: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / f"{name}{suffix}")


def _write_csv(path: Path, rows: list[list], columns=("image_name", "A", "B", "C")) -> Path:
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def _balanced(tmp_path: Path, count: int = 30, name: str = "gt.csv") -> Path:
    """A 3-class one-hot dataset of ``count`` rows with its images in tmp_path/images."""
    names = [f"{index:04d}" for index in range(count)]
    rows = [[n] + list(np.eye(3, dtype=int)[index % 3]) for index, n in enumerate(names)]
    _write_images(tmp_path / "images", names)
    return _write_csv(tmp_path / name, rows)


def _all_names(dataset) -> list[str]:
    frames = [dataset.train, dataset.dev] + ([dataset.test] if dataset.test is not None else [])
    return [name for frame in frames for name in frame["image_name"]]


# ------------------------------------------------------------------------------------------------ parse_split


@pytest.mark.parametrize("text, strategy, field, value", [
    ("pre", "pre", None, None),
    ("list", "list", None, None),
    ("frac=0.2", "frac", "fraction", 0.2),
    (" n=5 ", "n", "count", 5),
    ("kfold=5:0", "kfold", "folds", 5),
    ("kfold=5:4", "kfold", "fold", 4),
])
def test_parse_split_accepts(text, strategy, field, value):
    spec = parse_split(text)
    assert spec.strategy == strategy and spec.strategy in SPLIT_STRATEGIES
    if field:
        assert getattr(spec, field) == value


@pytest.mark.parametrize("text", ["", "random", "frac", "frac=0.5", "frac=0", "frac=abc", "n=0", "n=-3", "n=1.5",
                                  "kfold=1", "kfold=1:0", "kfold=5:5", "kfold=a:b", "pre=1"])
def test_parse_split_rejects(text):
    with pytest.raises(DatasetError) as error:
        parse_split(text)
    message = str(error.value)
    assert "pre, frac=F (0<F<0.5), n=N, list, kfold=K:i" in message
    assert message.endswith(f"Received: split={text!r}")


# ------------------------------------------------------------------------------------------------ ISIC sample


def test_pre_on_isic(isic_dir):
    dataset = load_dataset(str(isic_dir / ISIC_ROOT), "pre")
    assert dataset.sizes() == {"train": 11, "dev": 4, "test": 4}
    assert dataset.class_names == ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
    assert dataset.img_dir == isic_dir / "images"
    assert all(Path(path).is_file() for path in dataset.paths("train") + dataset.paths("test"))
    assert dataset.labels("dev").dtype == np.float32 and dataset.labels("dev").shape == (4, 8)
    assert "meta-train.csv" in dataset.source and "meta-test.csv" in dataset.source


def test_pre_accepts_train_file_name(isic_dir):
    dataset = load_dataset(f"{ISIC_ROOT}-train.csv", "pre", base_dir=isic_dir)
    assert dataset.sizes()["train"] == 11


def test_list_on_isic(isic_dir):
    files = ";".join(str(isic_dir / f"{ISIC_ROOT}-{split}.csv") for split in ("train", "dev"))
    dataset = load_dataset(files, "list")
    assert dataset.sizes() == {"train": 11, "dev": 4, "test": 0}
    assert dataset.test is None
    with pytest.raises(DatasetError, match="no test set"):
        dataset.labels("test")


@pytest.mark.parametrize("split, sizes", [("frac=0.2", (7, 2, 2)), ("n=3", (5, 3, 3)), ("kfold=4:1", None)])
def test_random_splits_on_single_class_isic(isic_dir, split, sizes):
    dataset = load_dataset(f"{ISIC_ROOT}-train.csv", split, base_dir=isic_dir, img_dir=isic_dir / "images")
    names = _all_names(dataset)
    assert sorted(names) == sorted(dataset.train["image_name"].tolist() + dataset.dev["image_name"].tolist()
                                   + dataset.test["image_name"].tolist())
    assert len(names) == len(set(names)) == 11
    if sizes:
        assert tuple(dataset.sizes().values()) == sizes


def test_classcolumns_subset_and_weights(isic_dir):
    dataset = load_dataset(str(isic_dir / ISIC_ROOT), "pre", classcolumns="MEL;NV", multi_label=True)
    assert dataset.class_names == ("MEL", "NV")
    assert dataset.class_weights("default") == {0: 1.0, 1: 1.0}
    assert dataset.class_weights("compute") == {0: 1.0, 1: 1.0}  # NV absent from train: left at 1.0


# ------------------------------------------------------------------------------------------------ digits


def test_pre_on_digits(digits_dir):
    dataset = load_dataset("digits", "pre", base_dir=digits_dir)
    assert sum(dataset.sizes().values()) == 1797
    assert dataset.class_names == tuple(f"D{d}" for d in range(10))
    assert dataset.train["image_name"].map(type).eq(str).all()
    assert set(_all_names(dataset)) == {f"{i:04d}" for i in range(1797)}


@pytest.mark.parametrize("split", ["frac=0.1", "n=150", "kfold=5:0", "kfold=5:4"])
def test_random_splits_on_digits_are_stratified(digits_dir, split):
    dataset = load_dataset(str(digits_dir / "digits.csv"), split, seed=3)
    names = _all_names(dataset)
    assert len(names) == len(set(names)) == 1797
    share = dataset.labels("test").mean(axis=0)
    overall = np.concatenate([dataset.labels(s) for s in ("train", "dev", "test")]).mean(axis=0)
    assert np.abs(share - overall).max() < 0.015
    assert np.abs(dataset.labels("dev").mean(axis=0) - overall).max() < 0.03


def test_list_on_digits_with_test(digits_dir):
    files = ";".join(f"digits-{split}.csv" for split in ("train", "dev", "test"))
    dataset = load_dataset(files, "list", base_dir=digits_dir)
    assert dataset.sizes() == {"train": 1257, "dev": 270, "test": 270}


def test_kfold_folds_partition_the_data(digits_dir):
    tests = [set(load_dataset(str(digits_dir / "digits.csv"), f"kfold=4:{i}").test["image_name"]) for i in range(4)]
    assert sum(len(fold) for fold in tests) == 1797
    assert len(set().union(*tests)) == 1797


def test_splits_are_reproducible(tmp_path):
    path = _balanced(tmp_path, 60)
    first = load_dataset(str(path), "frac=0.2", seed=7)
    again = load_dataset(str(path), "frac=0.2", seed=7)
    other = load_dataset(str(path), "frac=0.2", seed=8)
    assert first.dev["image_name"].tolist() == again.dev["image_name"].tolist()
    assert first.dev["image_name"].tolist() != other.dev["image_name"].tolist()
    assert first.labels("dev").sum(axis=0).tolist() == [4, 4, 4]


# ------------------------------------------------------------------------------------------------ class weights


def test_compute_class_weights():
    labels = np.array([[1, 0, 0]] * 6 + [[0, 1, 0]] * 3 + [[0, 0, 1]] * 2)
    assert compute_class_weights(labels, "default") == {0: 1.0, 1: 1.0, 2: 1.0}
    assert compute_class_weights(labels, "compute") == {0: 1.0, 1: 2.0, 2: 3.0}
    with pytest.raises(DatasetError, match=r"default, compute\. Received: classweights='balanced'"):
        compute_class_weights(labels, "balanced")


# ------------------------------------------------------------------------------------------------ errors


def test_missing_image_name_column(tmp_path):
    path = _write_csv(tmp_path / "gt.csv", [["x", 1, 0, 0]], columns=("name", "A", "B", "C"))
    with pytest.raises(DatasetError, match="gt.csv: missing the 'image_name' column"):
        read_ground_truth(path)


def test_unknown_class_column(tmp_path):
    path = _write_csv(tmp_path / "gt.csv", [["x", 1, 0, 0]])
    with pytest.raises(DatasetError, match=r"unknown class column\(s\) 'MEL'.*Available columns: A, B, C"):
        read_ground_truth(path, classcolumns="A;MEL")


def test_all_problems_in_one_message(tmp_path):
    rows = [["a", 1, 0, 0], ["b", 2, 0, 0], ["c", 1, 1, 0], ["a", 0, 0, 1], ["d", "yes", 0, 0]]
    path = _write_csv(tmp_path / "gt.csv", rows)
    with pytest.raises(DatasetError) as error:
        read_ground_truth(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ")
    assert "values must be 0 or 1" in message and "line 3 ('b') column(s) A: '2'" in message
    assert "line 6 ('d') column(s) A: 'yes'" in message
    assert "duplicate image names: a" in message
    assert "must be one-hot" in message and "line 4 ('c') has 2 ones" in message


def test_multi_label_allows_several_ones(tmp_path):
    path = _write_csv(tmp_path / "gt.csv", [["a", 1, 1, 0], ["b", 0, 0, 0], ["c", "1.0", "0.0", 0]])
    frame, names = read_ground_truth(path, multi_label=True)
    assert names == ("A", "B", "C")
    assert frame[["A", "B", "C"]].to_numpy().tolist() == [[1, 1, 0], [0, 0, 0], [1, 0, 0]]


def test_image_names_stay_strings(tmp_path):
    path = _write_csv(tmp_path / "gt.csv", [["0001", 1, 0, 0], ["0010", 0, 1, 0], ["1e3", 0, 0, 1]])
    frame, _ = read_ground_truth(path)
    assert frame["image_name"].tolist() == ["0001", "0010", "1e3"]


def test_image_in_two_splits(tmp_path):
    _write_images(tmp_path / "images", ["a", "b", "c"])
    _write_csv(tmp_path / "r-train.csv", [["a", 1, 0, 0], ["b", 0, 1, 0]])
    _write_csv(tmp_path / "r-dev.csv", [["b", 0, 1, 0], ["c", 0, 0, 1]])
    with pytest.raises(DatasetError, match=r"images in two splits: 'b' \(train and dev\)"):
        load_dataset("r", "pre", base_dir=tmp_path)


def test_problems_of_several_files_in_one_message(tmp_path):
    _write_csv(tmp_path / "r-train.csv", [["a", 1, 0, 0], ["a", 0, 1, 0]])
    _write_csv(tmp_path / "r-dev.csv", [["c", 3, 0, 0]])
    with pytest.raises(DatasetError) as error:
        load_dataset("r", "pre", base_dir=tmp_path)
    assert "r-train.csv: duplicate image names: a" in str(error.value)
    assert "r-dev.csv: class values must be 0 or 1" in str(error.value)


def test_missing_images_lists_first_20_and_count(tmp_path):
    names = [f"m{index:02d}" for index in range(25)]
    _write_images(tmp_path / "images", ["present"])
    _write_csv(tmp_path / "gt.csv", [[n, 1, 0, 0] for n in ["present"] + names])
    with pytest.raises(MissingFileError) as error:
        load_dataset("gt.csv", "n=2", base_dir=tmp_path)
    message = str(error.value)
    assert "25 image(s) not found" in message and "gt.csv" in message
    assert "m19" in message and "m20" not in message and "(25 in all)" in message


def test_image_names_leading_out_of_the_image_folder_are_refused(tmp_path):
    """An image_name is a file inside the image folder: absolute names and '..' never reach a file outside it
    (issue 21, finding 10), even when the file exists; a sub-folder name still works."""
    secret = tmp_path / "outside"
    _write_images(secret, ["secret"])
    _write_images(tmp_path / "data" / "images" / "sub", ["nested"])
    _write_images(tmp_path / "data" / "images", [f"{index:02d}" for index in range(9)])
    good = [[f"{index:02d}", *np.eye(3, dtype=int)[index % 3]] for index in range(9)]
    bad = ["../../outside/secret", str(secret / "secret"), "sub/../../../outside/secret"]
    _write_csv(tmp_path / "data" / "gt.csv", good + [[name, 1, 0, 0] for name in bad])
    with pytest.raises(DatasetError) as error:
        load_dataset("gt.csv", "n=2", base_dir=tmp_path / "data")
    message = str(error.value)
    assert "gt.csv" in message and "3 image name(s) lead out of the image folder" in message
    assert all(repr(name) in message or name in message for name in bad)
    _write_csv(tmp_path / "data" / "gt.csv", good + [["sub/nested", 1, 0, 0]])
    assert "sub/nested" in _all_names(load_dataset("gt.csv", "n=2", base_dir=tmp_path / "data"))


@pytest.mark.parametrize("split", ["frac=0.2", "n=3", "kfold=3:0"])
def test_one_file_splits_accept_a_root_name_as_the_original(tmp_path, split):
    """The original TIML read ``<dataset>.csv`` for frac=F and n=N: a root name works, and so does the file name."""
    sub = tmp_path / "data"
    sub.mkdir()
    _balanced(sub, 30, name="isic.csv")
    by_root = load_dataset("data/isic", split, base_dir=tmp_path, seed=3)
    by_file = load_dataset("data/isic.csv", split, base_dir=tmp_path, seed=3)
    assert by_root.source == by_file.source == str(sub / "isic.csv")
    assert by_root.dev["image_name"].tolist() == by_file.dev["image_name"].tolist()
    assert by_root.img_dir == sub / "images"


def test_a_file_named_as_given_wins_over_the_root_name(tmp_path):
    _balanced(tmp_path, 30, name="gt")  # a CSV without a suffix
    _write_csv(tmp_path / "gt.csv", [["x", 1, 0, 0]])
    assert load_dataset("gt", "n=3", base_dir=tmp_path).source == str(tmp_path / "gt")


def test_missing_files(tmp_path):
    with pytest.raises(MissingFileError, match="Ground-truth CSV not found"):
        load_dataset("nope.csv", "frac=0.1", base_dir=tmp_path)
    with pytest.raises(MissingFileError, match=r"named as a file or as its root name \(<root>.csv\); found neither "
                                               r".*nope' nor .*nope.csv'. Received: dataset='nope'"):
        load_dataset("nope", "n=2", base_dir=tmp_path)
    with pytest.raises(MissingFileError, match=r"not found: .*nope-train.csv"):
        load_dataset("nope", "pre", base_dir=tmp_path)
    path = _balanced(tmp_path)
    with pytest.raises(MissingFileError, match="image folder not found"):
        load_dataset(str(path), "n=2", img_dir=tmp_path / "elsewhere")


@pytest.mark.parametrize("rows, split, dataset, pattern", [
    (30, "n=15", "gt.csv", "leaving no train rows"),
    (30, "frac=0.01", "gt.csv", "leaves the dev and test set"),
    (2, "kfold=2:0", "gt.csv", "leaves the dev set"),
    (30, "list", "gt.csv", "needs 'train.csv;dev.csv'"),
    (30, "frac=0.1", "gt.csv;gt.csv", "needs split=list"),
])
def test_bad_split_for_the_data(tmp_path, rows, split, dataset, pattern):
    _balanced(tmp_path, rows)
    with pytest.raises(DatasetError, match=pattern):
        load_dataset(dataset, split, base_dir=tmp_path)


def test_unknown_split_name_in_dataset(tmp_path):
    dataset = load_dataset(str(_balanced(tmp_path)), "n=3")
    with pytest.raises(DatasetError, match="Expected one of: train, dev, test"):
        dataset.paths("validation")


# ------------------------------------------------------------------------------------------------ find_images


def test_find_images_any_suffix_case(tmp_path):
    folder = tmp_path / "images"
    _write_images(folder, ["a"], ".JPG")
    _write_images(folder, ["B"], ".png")
    _write_images(folder, ["c"], ".TiFf")
    (folder / "d.txt").write_text("not an image")
    paths, missing = find_images(["a", "b", "c", "d", "e"], folder)
    assert [Path(p).name if p else None for p in paths] == ["a.JPG", "B.png", "c.TiFf", None, None]
    assert missing == ["d", "e"]


def test_find_images_prefers_exact_stem(tmp_path):
    folder = tmp_path / "images"
    _write_images(folder, ["X1"], ".png")
    _write_images(folder, ["x1"], ".jpg")
    paths, _ = find_images(["x1", "X1"], folder)
    assert [Path(p).name for p in paths] == ["x1.jpg", "X1.png"]


def test_default_img_dir_is_beside_the_csv(tmp_path):
    sub = tmp_path / "data"
    sub.mkdir()
    _balanced(sub, 12)
    dataset = load_dataset("data/gt.csv", "n=2", base_dir=tmp_path)
    assert dataset.img_dir == sub / "images"
    assert datasets.IMAGE_COLUMN in dataset.train.columns and "path" in dataset.train.columns
