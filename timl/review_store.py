"""The review store: the experts' answers on the evaluate page, kept in one SQLite file.

The schema and its migrations (an older store gains the columns added since, when first opened), the rules an
answer must follow, its upsert (a reviewer's later answer on an image replaces the earlier one), the current
answers and their CSV. The server's blueprint (:mod:`timl.serving.reviews`) writes and lists answers through it,
and ``python -m timl.review export`` (:mod:`timl.review`) reads them through it, with no web layer imported.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import fcntl
import io
import json
import sqlite3
import threading
from pathlib import Path

from timl.errors import DatasetError, MissingFileError, TimlError

#: The store when the server configuration names none (its EVALUATION_DB), in the folder the server runs in.
DEFAULT_DATABASE = "timl_evaluations.db"

ANSWER_FIELDS = ("image", "evaluator", "agree", "label", "predicted", "comment", "skipped", "confidence", "method")
CSV_COLUMNS = ("id", "created", "image", "evaluator", "agree", "label", "predicted", "comment", "user", "reviewer",
               "skipped", "confidence", "method", "model", "classes", "updated")
MAX_TEXT = 2000
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell as a formula
SCHEMA = """CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL, image TEXT NOT NULL, evaluator TEXT NOT NULL,
    agree INTEGER NOT NULL, label TEXT NOT NULL, predicted TEXT NOT NULL, comment TEXT NOT NULL,
    user TEXT NOT NULL DEFAULT '', reviewer TEXT NOT NULL DEFAULT '', skipped INTEGER NOT NULL DEFAULT 0,
    confidence REAL, method TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '',
    classes TEXT NOT NULL DEFAULT '', updated TEXT NOT NULL DEFAULT '')"""
#: Columns added since the first store, with their definitions: an older store gains them when first opened.
ADDED_COLUMNS = {"user": "TEXT NOT NULL DEFAULT ''", "reviewer": "TEXT NOT NULL DEFAULT ''",
                 "skipped": "INTEGER NOT NULL DEFAULT 0", "confidence": "REAL", "method": "TEXT NOT NULL DEFAULT ''",
                 "model": "TEXT NOT NULL DEFAULT ''", "classes": "TEXT NOT NULL DEFAULT ''",
                 "updated": "TEXT NOT NULL DEFAULT ''"}


class AnswerError(TimlError, ValueError):
    """An answer that cannot be stored (a missing or malformed field)."""


# ---------------------------------------------------------------------------------------------------------------
# The file


_PREPARED: set[str] = set()
_PREPARING = threading.Lock()


def _migrate(connection: sqlite3.Connection) -> None:
    """The answers table in WAL mode, with every column of :data:`ADDED_COLUMNS` and their values filled in."""
    connection.execute("PRAGMA journal_mode=WAL")  # kept by the file from then on
    connection.execute(SCHEMA)
    columns = {row[1] for row in connection.execute("PRAGMA table_info(answers)")}
    for column, definition in ADDED_COLUMNS.items():  # an older store
        if column not in columns:
            connection.execute(f"ALTER TABLE answers ADD COLUMN {column} {definition}")
    # answers stored before reviewers were known: the reviewer is the name typed
    connection.execute("UPDATE answers SET reviewer = evaluator WHERE reviewer = ''")
    connection.execute("UPDATE answers SET updated = created WHERE updated = ''")
    connection.commit()


def _prepare(path: str) -> None:
    """Creates the store once (WAL mode, the answers table) under a file lock: switching a new file to WAL needs
    it alone, and concurrent first requests (threads or gunicorn workers) would otherwise fail as "locked"."""
    with _PREPARING:
        if path in _PREPARED and Path(path).is_file():
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(f"{path}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with contextlib.closing(sqlite3.connect(path, timeout=30)) as connection:
                    _migrate(connection)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        _PREPARED.add(path)


@contextlib.contextmanager
def _database(path: str):
    """One connection to the prepared store (see :func:`_prepare`), committed and closed on exit."""
    _prepare(path)
    connection = sqlite3.connect(path, timeout=30)
    try:
        yield connection
        connection.commit()
    finally:
        connection.close()


def check_store(database: Path) -> None:
    """Checks, read-only, that ``database`` is the evaluate page's SQLite store (an ``answers`` table).

    Raises:
        MissingFileError: no such file.
        DatasetError: not an SQLite database, or one without the answers table.
    """
    if not database.is_file():
        raise MissingFileError(f"Review database not found; give the server's EVALUATION_DB (default "
                               f"{DEFAULT_DATABASE} in the folder the server ran in). Received: db={str(database)!r}")
    try:
        with contextlib.closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)) as connection:
            found = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'answers'")
            found = found.fetchone()
    except sqlite3.Error as error:
        raise DatasetError(f"{database}: not an SQLite database of expert answers ({error}). "
                           f"Received: db={str(database)!r}") from error
    if not found:
        raise DatasetError(f"{database}: no 'answers' table, so not the store of the evaluate page (the server's "
                           f"EVALUATION_DB). Received: db={str(database)!r}")


# ---------------------------------------------------------------------------------------------------------------
# Answers


def validate_answer(payload) -> dict:
    """Validates one answer: the image, the reviewer's name, agree (or skipped), text fields of sensible length.

    ``skipped`` answers need no ``agree``; ``confidence`` is the probability shown for the predicted class,
    ``method`` the explanation shown.

    Args:
        payload: the answer as a client sent it (a request's JSON object).

    Returns:
        The answer's fields, texts stripped: ``agree``, ``skipped``, ``image``, ``evaluator``, ``label``,
        ``predicted``, ``comment``, ``method`` and ``confidence`` (None when not given).

    Raises:
        AnswerError: a missing or malformed field, or a disagreement without the correct class.
    """
    if not isinstance(payload, dict):
        raise AnswerError(f"The answer must be a JSON object with the fields {', '.join(ANSWER_FIELDS)}. "
                          f"Received: {type(payload).__name__}")
    skipped = payload.get("skipped", False)
    if not isinstance(skipped, bool):
        raise AnswerError(f"'skipped' must be true or false. Received: skipped={skipped!r}")
    required = ("image", "evaluator") if skipped else ("image", "evaluator", "agree")
    missing = [field for field in required if payload.get(field) in (None, "")]
    if missing:
        names = {"evaluator": "your name", "agree": "whether you agree with the model", "image": "the image"}
        raise AnswerError(f"Please give {' and '.join(names[field] for field in missing)}. "
                          f"(Missing field(s): {', '.join(missing)})")
    agree = payload.get("agree", False) if not skipped else False
    if not isinstance(agree, bool):
        raise AnswerError(f"'agree' must be true or false. Received: agree={payload['agree']!r}")
    answer = {"agree": agree, "skipped": skipped}
    for field in ("image", "evaluator", "label", "predicted", "comment", "method"):
        value = payload.get(field, "")
        if value is None:
            value = ""
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise AnswerError(f"{field!r} must be a text of at most {MAX_TEXT} characters. "
                              f"Received: {field}={value!r:.60}")
        answer[field] = value.strip()
    confidence = payload.get("confidence")
    if confidence is not None and (isinstance(confidence, bool) or not isinstance(confidence, (int, float))
                                   or not 0 <= confidence <= 1):
        raise AnswerError(f"'confidence' must be a probability between 0 and 1. Received: confidence={confidence!r}")
    answer["confidence"] = None if confidence is None else float(confidence)
    if not skipped and not answer["agree"] and not answer["label"]:
        raise AnswerError("You disagree with the model: please choose the correct class.")
    return answer


def check_label(answer: dict, classes) -> None:
    """The class an expert chose must be one of the model's (the export turns it into a dataset label).

    Raises:
        AnswerError: a label that is not one of ``classes``.
    """
    if answer["label"] and classes and answer["label"] not in classes:
        raise AnswerError(f"Unknown class in 'label'. Expected one of: {', '.join(classes)}. "
                          f"Received: label={answer['label']!r:.80}")


def store_answer(database: str, answer: dict, user: str, model: dict) -> dict:
    """Stores a reviewer's answer on an image: a later answer of the same reviewer on the same image replaces the
    earlier one (going back to change it). The reviewer is the token's user, else the name typed.

    Args:
        database: the SQLite store (created on first use).
        answer: a valid answer (:func:`validate_answer`).
        user: the token's user; "" without tokens.
        model: the served model's ``model`` (its name and version, or run) and ``classes``.

    Returns:
        ``id``, ``created`` (the first answer's time), ``updated``, ``user`` and ``reviewer``.
    """
    now = datetime.datetime.now().isoformat(timespec="seconds")
    reviewer = user or answer["evaluator"]
    values = {"image": answer["image"], "evaluator": answer["evaluator"], "agree": int(answer["agree"]),
              "label": answer["label"], "predicted": answer["predicted"], "comment": answer["comment"], "user": user,
              "reviewer": reviewer, "skipped": int(answer["skipped"]), "confidence": answer["confidence"],
              "method": answer["method"], "model": model.get("model", ""),
              "classes": json.dumps(list(model.get("classes", ()))), "updated": now}
    with _database(database) as connection:
        earlier = connection.execute("SELECT id, created FROM answers WHERE reviewer = ? AND image = ? "
                                     "ORDER BY id DESC LIMIT 1", (reviewer, answer["image"])).fetchone()
        if earlier:
            assignments = ", ".join(f"{column} = ?" for column in values)
            connection.execute(f"UPDATE answers SET {assignments} WHERE id = ?", (*values.values(), earlier[0]))
            row_id, created = earlier
        else:
            columns = ("created", *values)
            cursor = connection.execute(f"INSERT INTO answers ({', '.join(columns)}) "
                                        f"VALUES ({', '.join('?' for _ in columns)})", (now, *values.values()))
            row_id, created = cursor.lastrowid, now
    return {"id": row_id, "created": created, "updated": now, "user": user, "reviewer": reviewer}


def current_answers(database: str, reviewer: str | None = None) -> list[dict]:
    """Each reviewer's current answer per image (the latest, for stores that kept earlier ones), oldest first.

    Args:
        database: the SQLite store.
        reviewer: only this reviewer's answers; None for everyone's.
    """
    where, arguments = ("WHERE reviewer = ?", (reviewer,)) if reviewer else ("", ())
    with _database(database) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute(
            f"SELECT * FROM answers WHERE id IN (SELECT MAX(id) FROM answers {where} GROUP BY reviewer, image) "
            "ORDER BY id", arguments).fetchall()
    return [dict(row) for row in rows]


def stored_answers(database: Path) -> list[dict]:
    """The current answers of an existing store (:func:`check_store`), everyone's, oldest first.

    Raises:
        MissingFileError: no such file.
        DatasetError: not the evaluate page's store, or its answers cannot be read.
    """
    check_store(database)
    try:
        return current_answers(str(database))
    except (sqlite3.Error, OSError) as error:
        raise DatasetError(f"{database}: the answers cannot be read ({error}). Received: db={str(database)!r}") \
            from error


# ---------------------------------------------------------------------------------------------------------------
# The CSV


def _csv_cell(value):
    """A text cell a spreadsheet shows as text: a leading ``'`` before ``=``, ``+``, ``-``, ``@``."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def current_answers_csv(database: str) -> str:
    """Every reviewer's current answer per image as CSV text (:data:`CSV_COLUMNS`), cells a spreadsheet shows as
    text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    writer.writerows([_csv_cell(row[column]) for column in CSV_COLUMNS] for row in current_answers(database))
    return buffer.getvalue()
