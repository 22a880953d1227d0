"""The training table: its vocabulary, one RunConfig per row, every bad cell named, row selection."""

from __future__ import annotations

import dataclasses

import pytest

from helpers import small_cnn_row, write_table
from timl import config, datasets, images, models
from timl.config import RunConfig, parse_row_selection, read_table
from timl.errors import ConfigError, MissingFileError


def test_the_vocabulary_is_the_registries():
    assert config.CLASS_WEIGHT_MODES is datasets.CLASS_WEIGHT_MODES
    assert datasets.CLASS_WEIGHT_MODES == tuple(datasets.CLASS_WEIGHTS) == ("default", "compute")
    assert config.WEIGHTS_CHOICES is models.WEIGHTS_CHOICES
    assert config.INPUT_COLUMNS == ("method", "dataset", "split", "epochs", "imgaug", "batchsize", "imgsize",
                                    "resizefilter", "colorspace", "classcolumns", "classweights")


def test_a_row_with_defaults(tmp_path):
    row = RunConfig.from_row({"method": "SmallCNN", "dataset": "d.csv", "split": "n=5", "epochs": "3"}, 4,
                             str(tmp_path / "t.csv"))
    assert (row.row, row.method, row.epochs, row.imgaug, row.batchsize, row.imgsize) == (4, "SmallCNN", 3, "none",
                                                                                         32, 224)
    assert (row.resizefilter, row.colorspace, row.classweights, row.weights, row.lr, row.seed) == (
        "bilinear", "RGB", "default", "default", None, 0)
    assert row.run_name == "4-SmallCNN"
    assert row.input_cells()["lr"] == "" and row.input_cells()["epochs"] == "3"


def test_numbers_pandas_read_as_floats_are_integers():
    row = RunConfig.from_row({"method": "SmallCNN", "dataset": "d.csv", "split": "n=5", "epochs": 3.0,
                              "batchsize": "16.0", "lr": "1e-3"}, 0)
    assert row.epochs == 3 and row.batchsize == 16 and row.lr == pytest.approx(1e-3)


@pytest.mark.parametrize("cells,fragments", [
    ({"method": ""}, ["column 'method' is empty"]),
    ({"epochs": "0"}, ["column 'epochs' must be an integer >= 1", "Received: epochs=0"]),
    ({"batchsize": "many"}, ["column 'batchsize'", "Received: batchsize='many'"]),
    ({"imgsize": "4"}, ["column 'imgsize' must be an integer >= 8"]),
    ({"lr": "-1"}, ["column 'lr' must be a positive number"]),
    ({"method": "VGG17"}, ["column 'method'", "VGG16"]),
    ({"split": "frac=0.9"}, ["column 'split'"]),
    ({"imgaug": "flip"}, ["column 'imgaug'", "hflip"]),
    ({"resizefilter": "cubic"}, ["column 'resizefilter'", "bicubic"]),
    ({"colorspace": "CMYK"}, ["column 'colorspace'", "RGB"]),
    ({"classweights": "balanced"}, ["column 'classweights' must be one of: default, compute"]),
    ({"weights": "weights.pt"}, ["column 'weights' must be default, imagenet, none or a path"]),
])
def test_each_bad_cell_is_named_with_the_table_and_row(tmp_path, cells, fragments):
    cells = {**small_cnn_row("d.csv"), **cells}
    with pytest.raises(ConfigError) as error:
        RunConfig.from_row(cells, 7, str(tmp_path / "runs.csv"))
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'runs.csv'}, row 7: ")
    for fragment in fragments:
        assert fragment in message


def test_several_bad_cells_in_one_message():
    with pytest.raises(ConfigError) as error:
        RunConfig.from_row({**small_cnn_row("d.csv"), "epochs": "x", "batchsize": "0"}, 1)
    assert "'epochs'" in str(error.value) and "'batchsize'" in str(error.value)


def test_read_table_validates_every_row_and_keeps_the_bad_ones_as_errors(tmp_path):
    table = write_table(tmp_path / "t.csv", [small_cnn_row("d.csv"), small_cnn_row("d.csv", method="Nope"),
                                             small_cnn_row("d.csv", epochs=4)])
    rows = read_table(table)
    assert [type(row).__name__ for row in rows] == ["RunConfig", "ConfigError", "RunConfig"]
    assert rows[2].row == 2 and rows[2].epochs == 4 and rows[2].table_path == str(table)
    assert "row 1" in str(rows[1]) and "'Nope'" in str(rows[1])


def test_whole_table_errors(tmp_path):
    with pytest.raises(MissingFileError, match="Training table not found"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "typo.csv").write_text("method,datset,split,epochs\nSmallCNN,d.csv,n=5,1\n")
    with pytest.raises(ConfigError, match=r"unknown column\(s\) 'datset'.*Known columns: method, dataset"):
        read_table(tmp_path / "typo.csv")
    (tmp_path / "short.csv").write_text("method,split\nSmallCNN,n=5\n")
    with pytest.raises(ConfigError, match="missing required column"):
        read_table(tmp_path / "short.csv")


def test_original_output_columns_may_be_present_and_empty(tmp_path):
    header = ",".join(config.INPUT_COLUMNS + config.OUTPUT_COLUMNS)
    cells = ["SmallCNN", "d.csv", "n=5", "2", "none", "16", "16", "bilinear", "RGB", "default", "default"]
    (tmp_path / "t.csv").write_text(header + "\n" + ",".join(cells + [""] * len(config.OUTPUT_COLUMNS)) + "\n")
    [row] = read_table(tmp_path / "t.csv")
    assert isinstance(row, RunConfig) and row.epochs == 2


def test_row_keys_change_with_the_cells_the_table_and_the_version(tmp_path):
    row = RunConfig.from_row(small_cnn_row("d.csv"), 0, str(tmp_path / "t.csv"))
    assert row.key("1") == RunConfig.from_row(small_cnn_row("d.csv"), 0, str(tmp_path / "t.csv")).key("1")
    assert row.key("1") != row.key("2")
    assert row.key("1") != RunConfig.from_row(small_cnn_row("d.csv", seed=1), 0, str(tmp_path / "t.csv")).key("1")


def test_paths_resolve_against_the_working_directory_then_the_table(tmp_path, monkeypatch):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "w.h5").write_bytes(b"")
    row = RunConfig.from_row(small_cnn_row("d.csv"), 0, str(tmp_path / "tables" / "t.csv"))
    monkeypatch.chdir(tmp_path)
    assert row.resolve_path("w.h5") == tmp_path / "tables" / "w.h5"
    (tmp_path / "w.h5").write_bytes(b"")
    assert row.resolve_path("w.h5").resolve() == tmp_path / "w.h5"


@pytest.mark.parametrize("text,count,expected", [(None, 4, [0, 1, 2, 3]), ("", 2, [0, 1]), ("0,2-3", 5, [0, 2, 3]),
                                                 ("3, 1", 4, [1, 3]), ("1-1", 2, [1])])
def test_row_selection(text, count, expected):
    assert parse_row_selection(text, count) == expected


@pytest.mark.parametrize("text,fragment", [("a", "--rows must be numbers"), ("0-x", "--rows must be numbers"),
                                           ("5", "outside the table (rows 0-2). Received: [5]")])
def test_bad_row_selection(text, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        parse_row_selection(text, 3)


def test_the_checks_use_the_registries():
    assert set(images.AUGMENTATIONS) >= {"none", "hflip"}
    for method in models.METHODS:
        RunConfig.from_row({**small_cnn_row("d.csv"), "method": method}, 0)
    for mode in datasets.CLASS_WEIGHT_MODES:
        RunConfig.from_row({**small_cnn_row("d.csv"), "classweights": mode}, 0)


def test_resource_columns_say_where_a_row_trains_not_what(tmp_path):
    plain = RunConfig.from_row(small_cnn_row("d.csv"), 0, str(tmp_path / "t.csv"))
    placed = RunConfig.from_row({**small_cnn_row("d.csv"), "cpus": "2", "gpus": "0.5"}, 0, str(tmp_path / "t.csv"))
    assert (plain.cpus, plain.gpus, placed.cpus, placed.gpus) == (None, None, 2, 0.5)
    assert placed.key("1") == plain.key("1"), "--resume finds a row whose resources changed"
    assert "cpus" not in placed.input_cells() and "gpus" not in placed.input_cells()
    for cells, fragment in (({"cpus": "0"}, "column 'cpus' must be a number > 0"),
                            ({"gpus": "-1"}, "column 'gpus' must be a number >= 0"),
                            ({"cpus": "many"}, "Received: cpus='many'")):
        with pytest.raises(ConfigError, match=fragment):
            RunConfig.from_row({**small_cnn_row("d.csv"), **cells}, 0)
    header = ",".join(config.INPUT_COLUMNS + config.RESOURCE_COLUMNS)
    (tmp_path / "r.csv").write_text(header + "\nSmallCNN,d.csv,n=5,2,none,16,16,bilinear,RGB,default,default,1,2\n")
    [row] = read_table(tmp_path / "r.csv")
    assert (row.cpus, row.gpus) == (1, 2)


@pytest.mark.parametrize("cells,fragment", [
    ({"freeze": "all"}, "column 'freeze' must be one of: none, backbone"),
    ({"activations": "auto", "imgaug": "random"}, "needs an augmentation whose views can be cached (none, hflip"),
    ({"activations": "acts/", "imgaug": "hflip"}, "use imgaug none, or activations=auto"),
    ({"metadata": "meta.csv"}, "column 'metadata' joins per-image numbers to a head trained on cached activations"),
])
def test_head_only_cells_are_checked(cells, fragment):
    with pytest.raises(ConfigError, match=re_escape(fragment)):
        RunConfig.from_row({**small_cnn_row("d.csv"), **cells}, 0)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_head_only_cells_keep_earlier_row_keys():
    row = RunConfig.from_row(small_cnn_row("d.csv"), 0)
    assert row.head_only is False and row.input_cells()["freeze"] == "none"
    frozen = RunConfig.from_row({**small_cnn_row("d.csv"), "freeze": "backbone"}, 0)
    assert frozen.head_only and frozen.key("1") != row.key("1")
    assert RunConfig.from_row({**small_cnn_row("d.csv"), "freeze": "none"}, 0).key("1") == row.key("1")


@pytest.mark.parametrize("cell,files,members,root", [
    ("isic.csv", ["isic.csv"], [("isic.csv",)], "isic"),
    ("data/isic-train.csv", ["data/isic-train.csv"], [("data/isic-train.csv",)], "data/isic"),
    ("a.csv+b.csv;dev.csv;test.csv", ["a.csv+b.csv", "dev.csv", "test.csv"],
     [("a.csv", "b.csv"), ("dev.csv",), ("test.csv",)], "a.csv+b.csv;dev.csv;test"),
    ("book.xlsx#Sheet 2 ; dev.csv", ["book.xlsx#Sheet 2", "dev.csv"], [("book.xlsx#Sheet 2",), ("dev.csv",)],
     "book.xlsx#Sheet 2 ; dev"),
    ("a.csv+", ["a.csv+"], [("a.csv", "")], "a.csv+"),
])
def test_the_dataset_cell_is_parsed_once_into_files_and_union_members(cell, files, members, root):
    row = RunConfig.from_row({**small_cnn_row(cell)}, 0)
    assert isinstance(row.dataset, datasets.DatasetCell)
    assert [entry.text for entry in row.dataset.files] == files
    assert [entry.members for entry in row.dataset.files] == members
    assert row.dataset.root == root
    assert str(row.dataset) == cell and row.input_cells()["dataset"] == cell, "params show the cell as written"
    assert RunConfig(**{**dataclasses.asdict(row), "dataset": cell}) == row, "a string is parsed alike"
