"""The one reader of every table a user hands TIML: training tables, ground-truth, metadata, prediction and test
CSVs, split lists, and the config table beside a Keras 2 model.

It takes what Excel, LibreOffice and Numbers write:

- delimited text: cells separated by ``,``, ``;`` or tabs (sniffed: the delimiter that splits the header line
  into the most cells; on a tie, the one that splits the next lines alike; see :func:`sniff_delimiter`), quoted
  cells (holding the delimiter, doubled quotes, line breaks), CRLF, LF or CR line ends; UTF-8 with or without
  a byte-order mark, UTF-16 with one (Excel's "Unicode Text"), else Windows-1252 (Excel's "CSV" on Windows; the
  fallback is logged);
- ``.xlsx``/``.xlsm`` workbooks (openpyxl) and ``.ods`` spreadsheets (odfpy through pandas): the first sheet,
  or the one named after ``#`` (``runs.xlsx#Sheet2``); cached formula results are read, a whole number reads
  as ``1`` (not ``1.0``), a number formatted with leading zeros (``0000``) keeps them in ``.xlsx``, and a text
  cell (an image name ``0001``) stays text;
- empty rows (``,,,``) and columns with no header and no values (Excel's trailing ``,,,``) are dropped; a
  column with values but no header is named ``Unnamed: N`` (N counts from 0), as pandas names it.

Decimal commas: a file whose cells are separated by ``;`` or tabs comes from a locale that writes ``0,001``
for 0.001. In such files, and only in the columns the caller names as numeric (never an image name, a path or
a note), a cell that is a number with a decimal comma (``0,001``, ``-1,5``, ``1,5E-03``) reads with a point.
Nothing else is converted: a thousands separator (``1.234,5``) stays as written and the caller's number check
names it. Every cell comes back as stripped text; the callers convert.
"""

from __future__ import annotations

import codecs
import csv
import datetime
import io
import logging
import re
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from timl.errors import DatasetError, MissingFileError

logger = logging.getLogger(__name__)

#: What the reader accepts, for messages.
ACCEPTED = ("Accepted: text with cells separated by commas, semicolons or tabs (UTF-8 with or without a BOM, or "
            "Windows-1252, as Excel's 'CSV UTF-8' and 'CSV' write it), an .xlsx or .ods workbook (its first "
            "sheet, or FILE.xlsx#Sheet).")

#: The delimiters sniffed, in the order that breaks a tie.
DELIMITERS = {",": "commas", ";": "semicolons", "\t": "tabs"}

#: Workbook suffixes, read by openpyxl (.xlsx, .xlsm) and odfpy through pandas (.ods).
WORKBOOK_SUFFIXES = (".xlsx", ".xlsm", ".ods")

#: Spreadsheet formats that are not read, and what to do instead.
REFUSED_SUFFIXES = {
    ".xls": "an Excel 97-2003 workbook (.xls) is not read: save it as .xlsx (Excel Workbook) or as CSV",
    ".xlsb": "an Excel binary workbook (.xlsb) is not read: save it as .xlsx (Excel Workbook) or as CSV",
    ".numbers": "a Numbers document is not read: export it (File > Export To) as Excel or CSV",
}

#: How many lines of a text file :func:`sniff_delimiter` looks at.
SNIFFED_LINES = 50

#: A number written with a decimal comma (read with a point in numeric columns of ``;``/tab files).
DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+(?:[eE][+-]?\d+)?")

_MAX_QUOTED = 120
_ZIP_MAGIC = b"PK\x03\x04"


class _Lines(tuple):
    """Each row's line, kept in ``frame.attrs``: immutable, so pandas' copy of the attrs on every operation is
    the same object, not a copy of thousands of numbers."""

    def __deepcopy__(self, memo):
        return self


def split_sheet(path: str | Path) -> tuple[Path, str | None]:
    """The file and the sheet of ``FILE.xlsx#Sheet`` (``FILE.ods#Sheet``); ``(path, None)`` for any other path,
    and for a file whose own name holds a ``#``."""
    text = str(path)
    file, hash_sign, sheet = text.rpartition("#")
    if hash_sign and Path(file).suffix.lower() in WORKBOOK_SUFFIXES and not Path(text).is_file():
        return Path(file), sheet
    return Path(text), None


def table_exists(path: str | Path) -> bool:
    """Whether ``path`` names a table file (``FILE.xlsx#Sheet`` when ``FILE.xlsx`` exists)."""
    return split_sheet(path)[0].is_file()


def line_of(frame: pd.DataFrame, position: int) -> int:
    """The line of the file (the row of the sheet) that row ``position`` of a :func:`read_cells` frame came
    from, for messages; ``position + 2`` for any other frame (a header line, no empty lines)."""
    lines = frame.attrs.get("lines")
    return lines[position] if lines is not None and position < len(lines) else position + 2


def read_cells(path: str | Path, *, what: str = "table", field: str = "table", not_found: str | None = None,
               error: type[Exception] = DatasetError,
               numeric_columns: Callable[[str], bool] | None = None) -> pd.DataFrame:
    """Reads a user's table: every cell as stripped text, under the header's (stripped) column names.

    Args:
        path: a delimited text file, an .xlsx/.xlsm/.ods workbook, or ``FILE.xlsx#Sheet``.
        what: the table's name in messages. Defaults to "table".
        field: the option or cell that named the file, for the not-found message. Defaults to "table".
        not_found: the start of the message when the file does not exist. Defaults to "<What> not found".
        error: the exception class raised for an unreadable table. Defaults to DatasetError.
        numeric_columns: which columns hold numbers (by name): their decimal-comma cells in a ``;`` or tab file
            read with a point. Defaults to None: no column is converted.

    Returns:
        A frame of strings (empty cells are ""), one row per non-empty row of the file; ``frame.attrs["lines"]``
        holds each row's line in the file (:func:`line_of`).

    Raises:
        MissingFileError: no such file.
        error: the file cannot be read as a table: the message names the file, says why (its encoding, its
            delimiter, the line, a missing sheet and the sheets there are) and what would be accepted.
    """
    file, sheet = split_sheet(path)
    if not file.is_file():
        raise MissingFileError(f"{not_found or what[0].upper() + what[1:] + ' not found'}. "
                               f"Received: {field}={str(path)!r}")
    suffix = file.suffix.lower()
    if suffix in REFUSED_SUFFIXES:
        raise error(f"{file}: {REFUSED_SUFFIXES[suffix]}. {ACCEPTED}")
    if suffix in WORKBOOK_SUFFIXES:
        rows, lines = _read_workbook(file, sheet, error)
        delimiter = None
    else:
        rows, lines, delimiter = _read_text(file, error)
    frame = _to_frame(rows, lines, str(path), error, delimiter)
    if delimiter in (";", "\t") and numeric_columns is not None:
        _read_decimal_commas(frame, numeric_columns)
    return frame


# Delimited text ------------------------------------------------------------------------------------------------

def _decode(data: bytes, file: Path, error: type[Exception]) -> str:
    """The text of a table file: UTF-8 (BOM or not), UTF-16 with a BOM, else Windows-1252 (logged)."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as failure:
            raise error(f"{file}: starts as UTF-16 text but is not ({failure.reason} at byte {failure.start}). "
                        f"{ACCEPTED}") from None
    if data.startswith(_ZIP_MAGIC):
        raise error(f"{file}: a zip archive (an .xlsx or .ods workbook under another name?), not a text table: "
                    f"give the workbook its own suffix (.xlsx, .ods) or export the sheet as CSV. {ACCEPTED}")
    if b"\x00" in data:
        line = data[:data.index(b"\x00")].count(b"\n") + 1
        raise error(f"{file}: binary data (a NUL byte on line {line}), not a text table. {ACCEPTED} "
                    f"Received: a file starting with {data[:8]!r}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as failure:
        utf8_line = data[:failure.start].count(b"\n") + 1
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError as failure:
        line = data[:failure.start].count(b"\n") + 1
        raise error(f"{file}, line {line}: neither UTF-8 nor Windows-1252 text (byte 0x{data[failure.start]:02x}). "
                    f"Save it as 'CSV UTF-8'. {ACCEPTED}") from None
    logger.info("%s is not UTF-8 (line %d): read as Windows-1252, the encoding of Excel's 'CSV' on Windows",
                file, utf8_line)
    return text


def sniff_delimiter(sample: str) -> str:
    """The delimiter of a table from its first lines: the one that splits the header line into the most cells;
    on a tie (a one-column header), the one under which the most of the next lines have as many cells as the
    header; then ``,``, ``;``, tab in that order. Quoted cells are one cell, whatever they hold."""
    lines = [line for line in sample.splitlines()[:SNIFFED_LINES] if line.strip()]
    scores = {}
    for order, delimiter in enumerate(DELIMITERS):
        try:
            rows = [row for row in csv.reader(lines, delimiter=delimiter) if row]
        except csv.Error:  # the full read names the line
            rows = []
        width = len(rows[0]) if rows else 0
        scores[delimiter] = (width, sum(len(row) == width for row in rows[1:]), -order)
    return max(DELIMITERS, key=scores.__getitem__)


def _read_text(file: Path, error: type[Exception]) -> tuple[list[list[str]], list[int], str]:
    """Rows of cells, their lines, and the delimiter of a delimited text file."""
    try:
        data = file.read_bytes()
    except OSError as failure:
        raise error(f"{file}: cannot be read ({failure.strerror}).") from None
    text = _decode(data, file, error)
    delimiter = sniff_delimiter(text[:SNIFFED_LINES * 1000])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True, strict=True)
    rows, lines, start = [], [], 1
    try:
        for row in reader:
            rows.append([cell.strip() for cell in row])
            lines.append(start)
            start = reader.line_num + 1
    except csv.Error as failure:
        raise error(f"{file}, line {start}: cannot split the line into cells ({failure}; cells separated by "
                    f"{DELIMITERS[delimiter]}, sniffed from the first lines). A quoted cell ends with a quote "
                    f"followed by the delimiter or the line's end. {ACCEPTED}") from None
    _check_row_lengths(rows, lines, file, error, delimiter)
    return rows, lines, delimiter


def _check_row_lengths(rows: list[list[str]], lines: list[int], file: Path, error: type[Exception],
                       delimiter: str) -> None:
    """A text row with more cells than the header (beyond empty trailing ones) is an error naming its line."""
    header = next((row for row in rows if any(row)), [])
    for row, line in zip(rows, lines):
        extra = row[len(header):]
        if any(extra):
            shown = delimiter.join(row)
            shown = shown if len(shown) <= _MAX_QUOTED else shown[:_MAX_QUOTED] + "..."
            raise error(f"{file}, line {line}: {len(row)} cells, but the header has {len(header)} (cells separated "
                        f"by {DELIMITERS[delimiter]}, sniffed from the first lines). A cell that holds "
                        f"{delimiter!r} must be quoted (\"a{delimiter}b\"), as spreadsheets write it. "
                        f"{ACCEPTED} Received: {shown!r}")


def _read_decimal_commas(frame: pd.DataFrame, numeric_columns: Callable[[str], bool]) -> None:
    for column in frame.columns:
        if numeric_columns(column):
            frame[column] = [cell.replace(",", ".") if DECIMAL_COMMA.fullmatch(cell) else cell
                             for cell in frame[column]]


# Workbooks -----------------------------------------------------------------------------------------------------

def cell_text(value: object, number_format: str = "General") -> str:
    """A spreadsheet cell's value as the text a user sees: ``1`` for a whole number (``0001`` when formatted
    ``0000``), ``0.001``, ``TRUE``, ``2024-05-01`` (``2024-05-01 13:30:00`` with a time), "" for an empty cell."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    if isinstance(value, int):
        zeros = number_format or ""
        return str(value).zfill(len(zeros)) if zeros and set(zeros) == {"0"} and value >= 0 else str(value)
    if isinstance(value, float):
        return format(value, ".15g")  # the digits Excel shows, not float noise
    if isinstance(value, datetime.datetime):
        return value.date().isoformat() if value.time() == datetime.time() else value.isoformat(sep=" ")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value).strip()


def _choose_sheet(file: Path, sheets: list[str], sheet: str | None, error: type[Exception]) -> str:
    if not sheets:
        raise error(f"{file}: the workbook has no sheet. {ACCEPTED}")
    if sheet is None:
        return sheets[0]
    if sheet not in sheets:
        raise error(f"{file}: no sheet {sheet!r}. Sheets: {', '.join(map(repr, sheets))}; name one after '#' "
                    f"({file}#{sheets[0]}), or leave '#...' out to read the first. Received: sheet={sheet!r}")
    return sheet


def _read_workbook(file: Path, sheet: str | None, error: type[Exception]) -> tuple[list[list[str]], list[int]]:
    """Rows of cell texts and their row numbers of one sheet of an .xlsx/.xlsm (openpyxl) or .ods workbook."""
    reader = _read_ods if file.suffix.lower() == ".ods" else _read_xlsx
    try:
        rows = reader(file, sheet, error)
    except error:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError, EOFError) as failure:
        kind = file.suffix.lower()
        raise error(f"{file}: not a readable {kind} workbook ({type(failure).__name__}: {failure}). "
                    f"{ACCEPTED}") from None
    return rows, list(range(1, len(rows) + 1))


def _read_xlsx(file: Path, sheet: str | None, error: type[Exception]) -> list[list[str]]:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = openpyxl.load_workbook(file, read_only=True, data_only=True)
    except InvalidFileException as failure:
        raise ValueError(str(failure)) from None
    try:
        worksheet = workbook[_choose_sheet(file, workbook.sheetnames, sheet, error)]
        return [[cell_text(cell.value, getattr(cell, "number_format", "General")) for cell in row]
                for row in worksheet.iter_rows(min_row=1, min_col=1)]
    finally:
        workbook.close()


def _read_ods(file: Path, sheet: str | None, error: type[Exception]) -> list[list[str]]:
    with pd.ExcelFile(file, engine="odf") as workbook:
        name = _choose_sheet(file, [str(name) for name in workbook.sheet_names], sheet, error)
        frame = pd.read_excel(workbook, sheet_name=name, header=None, dtype=object, na_filter=False)
    return [[cell_text(value) for value in row] for row in frame.itertuples(index=False)]


# The frame -----------------------------------------------------------------------------------------------------

def _to_frame(rows: list[list[str]], lines: list[int], source: str, error: type[Exception],
              delimiter: str | None) -> pd.DataFrame:
    """The frame of a table's rows: the first non-empty row is the header; empty rows and unnamed empty columns
    are dropped."""
    kept = [(row, line) for row, line in zip(rows, lines) if any(row)]
    if not kept:
        raise error(f"{source}: the table is empty (no header row). {ACCEPTED}")
    (header, _), body = kept[0], kept[1:]
    width = max([len(header)] + [len(row) for row, _ in body])
    header = header + [""] * (width - len(header))
    data = [row + [""] * (width - len(row)) for row, _ in body]
    keep = [position for position, name in enumerate(header) if name or any(row[position] for row in data)]
    names = [header[position] or f"Unnamed: {position}" for position in keep]
    _check_unique(names, source, error)
    frame = pd.DataFrame([[row[position] for position in keep] for row in data], columns=names, dtype=str)
    frame.attrs["lines"] = _Lines(line for _, line in body)
    if delimiter:
        logger.debug("%s: cells separated by %s", source, DELIMITERS[delimiter])
    return frame


def _check_unique(names: Iterable[str], source: str, error: type[Exception]) -> None:
    names = list(names)
    repeated = list(dict.fromkeys(name for name in names if names.count(name) > 1))
    if repeated:
        raise error(f"{source}: column(s) {', '.join(map(repr, repeated))} named more than once in the header; "
                    f"each column needs its own name. Received columns: {', '.join(names)}")
