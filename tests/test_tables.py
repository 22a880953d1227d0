"""The one table reader (timl.tables): the tables Excel, LibreOffice and Numbers write, each read as the comma CSV
of the same cells is; files written by the spreadsheet libraries themselves (openpyxl, odfpy through pandas,
pandas and the csv module in Excel's dialects), not hand-typed strings only."""

from __future__ import annotations

import csv
import dataclasses
import datetime
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import small_cnn_row
from timl import config, datasets
from timl.errors import ConfigError, DatasetError

# ------------------------------------------------------------------------------------------------ writers


def _write_comma_csv(path: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(path, index=False)


def _write_excel_csv(path: Path, frame: pd.DataFrame) -> None:
    """Excel's 'CSV UTF-8' in a decimal-comma locale: ';', a BOM, CRLF, decimal commas."""
    frame.to_csv(path, index=False, sep=";", encoding="utf-8-sig", lineterminator="\r\n", decimal=",")


def _write_windows_csv(path: Path, frame: pd.DataFrame) -> None:
    """Excel's 'CSV' on a German Windows: ';', Windows-1252, CRLF, decimal commas, cells quoted when needed."""
    with path.open("w", encoding="cp1252", newline="") as handle:
        writer = csv.writer(handle, delimiter=";", lineterminator="\r\n")
        writer.writerow(frame.columns)
        for row in frame.itertuples(index=False):
            writer.writerow([str(cell).replace(".", ",") if isinstance(cell, float) else cell for cell in row])


def _write_unicode_text(path: Path, frame: pd.DataFrame) -> None:
    """Excel's 'Unicode Text': tabs, UTF-16 with a BOM."""
    frame.to_csv(path, index=False, sep="\t", encoding="utf-16")


def _write_libreoffice_csv(path: Path, frame: pd.DataFrame) -> None:
    """A sheet saved as CSV after cells beyond the table were formatted: every text cell quoted, empty trailing
    columns (``,,``) and empty rows."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(list(frame.columns) + ["", ""])
        for row in frame.itertuples(index=False):
            writer.writerow(list(row) + ["", ""])
        writer.writerows([[""] * (len(frame.columns) + 2)] * 2)


def _write_xlsx(path: Path, frame: pd.DataFrame, sheet: str = "Sheet1", before: tuple[str, ...] = ()) -> None:
    """A workbook written by openpyxl: text cells as text (an image name 0001 stays text), numbers as numbers."""
    workbook = openpyxl.Workbook()
    workbook.active.title = before[0] if before else sheet
    for name in before[1:] + ((sheet,) if before else ()):
        workbook.create_sheet(name)
    worksheet = workbook[sheet]
    worksheet.append(list(frame.columns))
    for row in frame.itertuples(index=False):
        worksheet.append([cell.item() if isinstance(cell, np.generic) else cell for cell in row])
    workbook.save(path)


def _write_ods(path: Path, frame: pd.DataFrame) -> None:
    with pd.ExcelWriter(path, engine="odf") as writer:
        frame.to_excel(writer, index=False, sheet_name="Truth")


WRITERS = {"excel.csv": _write_excel_csv, "windows.csv": _write_windows_csv, "unicode.txt": _write_unicode_text,
           "libreoffice.csv": _write_libreoffice_csv, "book.xlsx": _write_xlsx, "sheet.ods": _write_ods}


def _ground_truth(count: int = 30) -> pd.DataFrame:
    names = [f"{index:04d}" for index in range(count)]
    onehot = np.eye(3, dtype=int)[np.arange(count) % 3]
    return pd.DataFrame({"image_name": names, "A": onehot[:, 0], "B": onehot[:, 1], "C": onehot[:, 2]})


def _training_table() -> pd.DataFrame:
    rows = [small_cnn_row("gt.csv", classcolumns="A;B;C", lr=0.001, seed=3, notes="first, 1,5 px; wider"),
            small_cnn_row("gt.csv", epochs=3, lr=0.0005, seed=4, notes="1,5")]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ same data


@pytest.mark.parametrize("name", WRITERS)
def test_a_ground_truth_in_any_format_loads_the_same_dataset(tmp_path, name):
    truth = _ground_truth()
    (tmp_path / "images").mkdir()
    for image in truth["image_name"]:
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "images" / f"{image}.png")
    _write_comma_csv(tmp_path / "gt.csv", truth)
    WRITERS[name](tmp_path / name, truth)
    expected = datasets.load_dataset(str(tmp_path / "gt.csv"), "n=5", seed=1)
    dataset = datasets.load_dataset(str(tmp_path / name), "n=5", seed=1)
    assert dataset.class_names == expected.class_names == ("A", "B", "C")
    for split in ("train", "dev", "test"):
        assert getattr(dataset, split).equals(getattr(expected, split)), split
    assert dataset.img_dir == expected.img_dir


@pytest.mark.parametrize("name", WRITERS)
def test_a_training_table_in_any_format_gives_the_same_run_configs(tmp_path, name):
    table = _training_table()
    _write_comma_csv(tmp_path / "runs.csv", table)
    WRITERS[name](tmp_path / name, table)
    expected = config.read_table(tmp_path / "runs.csv")
    rows = config.read_table(tmp_path / name)
    assert [dataclasses.replace(row, table_path="") for row in rows] == [
        dataclasses.replace(row, table_path="") for row in expected]
    assert (rows[0].lr, rows[1].lr, rows[0].classcolumns) == (0.001, 0.0005, "A;B;C")
    assert (rows[0].notes, rows[1].notes) == ("first, 1,5 px; wider", "1,5"), "text is never converted"


def test_a_semicolon_table_with_a_decimal_comma_trains(tmp_path):
    """Excel in a decimal-comma locale writes ';' and 0,001: the table had failed with "unknown column
    'method;dataset;...'"."""
    path = tmp_path / "runs.csv"
    _write_excel_csv(path, _training_table())
    assert path.read_bytes().startswith(b"\xef\xbb\xbfmethod;dataset;split;") and b";0,001;" in path.read_bytes()
    first, second = config.read_table(path)
    assert (first.method, first.epochs, first.batchsize, first.lr, first.seed) == ("SmallCNN", 2, 16, 0.001, 3)
    assert (second.epochs, second.lr, second.notes) == (3, 0.0005, "1,5")


def test_a_sheet_is_chosen_after_a_hash(tmp_path):
    path = tmp_path / "book.xlsx"
    _write_xlsx(path, _training_table(), sheet="Runs", before=("Notes", "Old"))
    rows = config.read_table(f"{path}#Runs")
    assert [row.epochs for row in rows] == [2, 3] and rows[0].table_path == f"{path}#Runs"
    with pytest.raises(ConfigError, match="table is empty"):
        config.read_table(path)  # the first sheet, "Notes", is empty


def test_metadata_with_decimal_commas_reads_as_numbers(tmp_path):
    frame = pd.DataFrame({"image_name": ["0001", "0002"], "age": [45.5, 60.0], "sex": [1, 0]})
    _write_excel_csv(tmp_path / "meta.csv", frame)
    assert b"0001;45,5;1" in (tmp_path / "meta.csv").read_bytes()
    values = datasets.read_metadata(tmp_path / "meta.csv", ["0002", "0001"])
    np.testing.assert_array_equal(values, np.array([[60.0, 0], [45.5, 1]], np.float32))


# ------------------------------------------------------------------------------------------------ cells


def test_decimal_commas_are_read_only_in_numeric_columns_of_semicolon_files(tmp_path):
    from timl import tables

    (tmp_path / "t.csv").write_text("image_name;p;note\n1,5;0,25;0,25\n2;1.234,5;-1,5E-03\n", encoding="utf-8")
    numeric = {"p"}.__contains__
    frame = tables.read_cells(tmp_path / "t.csv", numeric_columns=numeric)
    assert frame.to_dict("list") == {"image_name": ["1,5", "2"], "p": ["0.25", "1.234,5"],
                                     "note": ["0,25", "-1,5E-03"]}
    (tmp_path / "c.csv").write_text('image_name,p\n1,"0,25"\n', encoding="utf-8")
    assert tables.read_cells(tmp_path / "c.csv", numeric_columns=numeric)["p"].tolist() == ["0,25"]


def test_workbook_cells_read_as_a_user_sees_them(tmp_path):
    from timl import tables

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["image_name", "count", "lr", "when", "ok", "text"])
    sheet.append([5, 2.0, 0.1 + 0.2, datetime.datetime(2024, 5, 1), True, " 0001 "])
    sheet["A2"].number_format = "0000"
    sheet.append([None] * 6)
    workbook.save(tmp_path / "cells.xlsx")
    frame = tables.read_cells(tmp_path / "cells.xlsx")
    assert frame.to_dict("records") == [{"image_name": "0005", "count": "2", "lr": "0.3", "when": "2024-05-01",
                                         "ok": "TRUE", "text": "0001"}]
    assert tables.cell_text(datetime.datetime(2024, 5, 1, 13, 30)) == "2024-05-01 13:30:00"
    assert tables.cell_text(1e-5) == "1e-05" and tables.cell_text(float("nan")) == ""


def test_text_dialects(tmp_path):
    """Quoted cells holding the delimiter, quotes and line breaks; CR line ends; a one-column list whose cells
    hold the other delimiter; a quoted header name holding another delimiter."""
    from timl import tables

    with (tmp_path / "q.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=";", lineterminator="\r")
        writer.writerows([["image_name", "notes"], ["a", 'two;parts "quoted"\nand a line']])
    assert tables.read_cells(tmp_path / "q.csv").to_dict("list") == {
        "image_name": ["a"], "notes": ['two;parts "quoted"\nand a line']}
    for name, delimiter in (("semicolons.csv", ";"), ("commas.csv", ",")):  # one column: the lines are cells
        (tmp_path / name).write_text(f"image_name\r\nx{delimiter}1\r\ny{delimiter}2\r\n", encoding="utf-8")
        assert tables.read_cells(tmp_path / name)["image_name"].tolist() == [f"x{delimiter}1", f"y{delimiter}2"]
    (tmp_path / "h.csv").write_text('"a;b",c\n1,2\n', encoding="utf-8")
    assert list(tables.read_cells(tmp_path / "h.csv").columns) == ["a;b", "c"]


def test_empty_rows_and_unnamed_columns(tmp_path):
    from timl import tables

    (tmp_path / "e.csv").write_text(",,,\r\nimage_name,A,,\r\n,,,\r\nx,1,,\r\n\r\ny,0,,\r\n,,,\r\n", encoding="utf-8")
    frame = tables.read_cells(tmp_path / "e.csv")
    assert frame.to_dict("list") == {"image_name": ["x", "y"], "A": ["1", "0"]}
    assert [tables.line_of(frame, position) for position in range(2)] == [4, 6]
    pd.DataFrame({"image_name": ["x"], "A": [1]}).to_csv(tmp_path / "indexed.csv")  # index=True, as pandas does
    assert list(tables.read_cells(tmp_path / "indexed.csv").columns) == ["Unnamed: 0", "image_name", "A"]


def test_an_error_after_an_empty_row_names_its_own_line(tmp_path):
    (tmp_path / "gt.csv").write_text("image_name;A;B\r\na;1;0\r\n;;\r\nb;2;0\r\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"line 4 \('b'\) column\(s\) A: '2'"):
        datasets.read_ground_truth(tmp_path / "gt.csv")


def test_existing_comma_csvs_read_as_pandas_read_them(tmp_path):
    from timl import tables

    paths = sorted(Path(__file__).resolve().parent.parent.glob("experiments/*.csv"))
    assert paths
    for path in paths:
        expected = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)  # the old reader
        expected.columns = [column.strip() for column in expected.columns]
        assert tables.read_cells(path).equals(expected.apply(lambda column: column.str.strip())), path


_NAMES = st.text(st.characters(whitelist_categories=("L", "Nd"), whitelist_characters="_ ."), min_size=1,
                 max_size=8).map(str.strip).filter(bool)
#: Cells with delimiters, quotes, spaces and line breaks ("|"; CRLF, which Python's csv writer quotes whatever its
#: line end, as spreadsheets quote every cell holding a line break).
_CELLS = st.text(st.characters(blacklist_categories=("Cs", "Cc"), whitelist_characters=',;\t"| '),
                 max_size=10).map(lambda text: text.replace("|", "\r\n").strip())


@settings(max_examples=150, deadline=None)
@given(header=st.lists(_NAMES, min_size=1, max_size=4, unique=True), data=st.data(),
       delimiter=st.sampled_from([",", ";", "\t"]), encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
       line_end=st.sampled_from(["\r\n", "\n", "\r"]), quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
def test_any_table_a_csv_writer_writes_reads_back_cell_for_cell(tmp_path_factory, header, data, delimiter, encoding,
                                                                line_end, quoting):
    """Whatever the cells hold (delimiters, quotes, line breaks, any script), in any of the dialects."""
    from timl import tables

    rows = data.draw(st.lists(st.lists(_CELLS, min_size=len(header), max_size=len(header)).filter(any),
                              max_size=6))
    path = tmp_path_factory.mktemp("dialect") / "t.csv"
    with path.open("w", encoding=encoding, newline="") as handle:
        csv.writer(handle, delimiter=delimiter, lineterminator=line_end, quoting=quoting).writerows([header] + rows)
    frame = tables.read_cells(path)
    assert list(frame.columns) == header and frame.values.tolist() == rows


# ------------------------------------------------------------------------------------------------ errors


def _png_named_csv(path: Path) -> Path:
    Image.new("RGB", (4, 4)).save(path, format="PNG")
    return path


def _xlsx_named_csv(path: Path) -> Path:
    _write_xlsx(path, _training_table())
    return path


def _semicolon_row_with_an_unquoted_semicolon(path: Path) -> Path:
    _write_excel_csv(path, _training_table())
    with path.open("a", encoding="utf-8", newline="") as handle:
        handle.write("SmallCNN;gt.csv;n=15;2;none;16;16;bilinear;RGB;A;B;default;0,001;3;notes\r\n")
    return path


def _neither_utf8_nor_cp1252(path: Path) -> Path:
    path.write_bytes("method,dataset,split,epochs\r\nSmallCNN,gt.csv,n=15,2\r\n".encode() + b"\x81\x8d,x,y,z\r\n")
    return path


def _old_excel(path: Path) -> Path:
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100))
    return path


def _not_a_workbook(path: Path) -> Path:
    path.write_text("method,dataset\n", encoding="utf-8")
    return path


def _repeated_column(path: Path) -> Path:
    path.write_text("method;dataset;split;epochs;epochs\nSmallCNN;gt.csv;n=15;2;3\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("name,write,fragments", [
    ("table.csv", _png_named_csv, ["binary data (a NUL byte on line", "not a text table", "b'\\x89PNG"]),
    ("table.csv", _xlsx_named_csv, ["a zip archive (an .xlsx or .ods workbook under another name?)"]),
    ("table.csv", _semicolon_row_with_an_unquoted_semicolon,
     ["line 4: 15 cells, but the header has 14 (cells separated by semicolons", "must be quoted (\"a;b\")",
      "Received: 'SmallCNN;gt.csv;"]),
    ("table.csv", _neither_utf8_nor_cp1252, ["line 3: neither UTF-8 nor Windows-1252 text (byte 0x81)",
                                              "Save it as 'CSV UTF-8'"]),
    ("table.xls", _old_excel, ["Excel 97-2003 workbook (.xls) is not read: save it as .xlsx"]),
    ("table.xlsx", _not_a_workbook, ["not a readable .xlsx workbook"]),
    ("table.csv", _repeated_column, ["column(s) 'epochs' named more than once in the header"]),
])
def test_an_unreadable_table_says_why_and_what_is_accepted(tmp_path, name, write, fragments):
    path = write(tmp_path / name)
    with pytest.raises(ConfigError) as error:
        config.read_table(path)
    message = str(error.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message
    if write is not _repeated_column:
        assert "Accepted: text with cells separated by commas, semicolons or tabs" in message and ".xlsx" in message


def test_a_missing_sheet_lists_the_sheets(tmp_path):
    path = tmp_path / "book.xlsx"
    _write_xlsx(path, _training_table(), sheet="Runs", before=("Notes",))
    with pytest.raises(ConfigError) as error:
        config.read_table(f"{path}#Rusn")
    assert str(error.value).startswith(f"{path}: no sheet 'Rusn'. Sheets: 'Notes', 'Runs'; name one after '#'")
    _write_ods(tmp_path / "sheet.ods", _ground_truth())
    with pytest.raises(DatasetError, match=r"sheet.ods: no sheet 'Sheet1'. Sheets: 'Truth'"):
        datasets.read_ground_truth(f"{tmp_path / 'sheet.ods'}#Sheet1")


def test_a_binary_ground_truth_names_the_file(tmp_path):
    path = _png_named_csv(tmp_path / "gt.csv")
    with pytest.raises(DatasetError, match=f"^{path}: binary data .*Accepted: "):
        datasets.load_dataset(str(path), "n=5")


# ------------------------------------------------------------------------------------------------ a table's run


def test_a_workbook_table_is_copied_as_csv_and_logged_as_its_file(tracking_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    from timl import tracking
    from timl.training.table import _copy_input_table

    path = tmp_path / "book.xlsx"
    _write_xlsx(path, _training_table(), sheet="Runs", before=("Notes",))
    copy = _copy_input_table(Path(f"{path}#Runs"), tmp_path)
    assert copy.name == "automation_input.csv"
    assert [dataclasses.replace(row, table_path="") for row in config.read_table(copy)] == [
        dataclasses.replace(row, table_path="") for row in config.read_table(f"{path}#Runs")]
    run_id = tracking.start_table_run("tables", f"{path}#Runs", tmp_path / "out")
    run = tracking.get_run(run_id)
    assert [item.path for item in MlflowClient().list_artifacts(run_id)] == ["book.xlsx"]
    assert [item.dataset.name for item in run.inputs.dataset_inputs] == ["book"], "the sheet as a dataset"
    assert run.data.tags[tracking.TAG_TABLE] == str(Path(f"{path}#Runs").resolve())
