"""Expert reviews: the images experts evaluate, and their answers stored server-side in SQLite.

The store behind the ``evaluate.html`` page (the original TIML's "evaluation"; not :mod:`timl.evaluation`, which
scores predictions). Mounted by the server at ``<rest>/evaluate``: ``GET images`` (names in EVALUATION_IMAGES_DIR), ``GET
images/<name>`` (the file; only listed names are served), ``POST answers`` (one expert's verdict on one image),
``GET answers.csv`` (every answer, for download). ``evaluate.html`` drives it.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import fcntl
import io
import sqlite3
import threading
from pathlib import Path
from typing import Mapping

from flask import Blueprint, Response, g, jsonify, request, send_file

from timl.errors import ConfigError, TimlError
from timl.images import IMAGE_SUFFIXES

ANSWER_FIELDS = ("image", "evaluator", "agree", "label", "predicted", "comment")
CSV_COLUMNS = ("id", "created", "image", "evaluator", "agree", "label", "predicted", "comment", "user")
MAX_TEXT = 2000
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell as a formula
SCHEMA = """CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL, image TEXT NOT NULL, evaluator TEXT NOT NULL,
    agree INTEGER NOT NULL, label TEXT NOT NULL, predicted TEXT NOT NULL, comment TEXT NOT NULL,
    user TEXT NOT NULL DEFAULT '')"""


class AnswerError(TimlError, ValueError):
    """An answer that cannot be stored (a missing or malformed field)."""


class NotConfigured(ConfigError):
    """EVALUATION_IMAGES_DIR is not set."""


def _listing(folder: str) -> dict[str, Path]:
    """The reviewable images of ``folder`` by file name: supported suffixes, no hidden files, sorted.

    Raises:
        NotConfigured: ``folder`` is empty or not a folder.
    """
    if not folder:
        raise NotConfigured("No evaluation images: set EVALUATION_IMAGES_DIR in timl_server_config.json to the "
                            "folder of images the experts should review. Received: EVALUATION_IMAGES_DIR=''")
    root = Path(folder)
    if not root.is_dir():
        raise NotConfigured(f"EVALUATION_IMAGES_DIR is not a folder; set it to the folder of images the experts "
                            f"should review. Received: EVALUATION_IMAGES_DIR={folder!r}")
    return {path.name: path for path in sorted(root.iterdir())
            if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES}


_PREPARED: set[str] = set()
_PREPARING = threading.Lock()


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
                    connection.execute("PRAGMA journal_mode=WAL")  # kept by the file from then on
                    connection.execute(SCHEMA)
                    columns = {row[1] for row in connection.execute("PRAGMA table_info(answers)")}
                    if "user" not in columns:  # a store from before API tokens
                        connection.execute("ALTER TABLE answers ADD COLUMN user TEXT NOT NULL DEFAULT ''")
                    connection.commit()
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


def _answer(payload) -> dict:
    """Validates one answer: every field present, agree a boolean, text fields strings of sensible length."""
    if not isinstance(payload, dict):
        raise AnswerError(f"The answer must be a JSON object with the fields {', '.join(ANSWER_FIELDS)}. "
                          f"Received: {type(payload).__name__}")
    missing = [field for field in ("image", "evaluator", "agree") if payload.get(field) in (None, "")]
    if missing:
        raise AnswerError(f"The answer lacks the field(s) {', '.join(missing)}. Expected: {', '.join(ANSWER_FIELDS)}. "
                          f"Received: fields={sorted(payload)}")
    if not isinstance(payload["agree"], bool):
        raise AnswerError(f"'agree' must be true or false. Received: agree={payload['agree']!r}")
    answer = {"agree": payload["agree"]}
    for field in ("image", "evaluator", "label", "predicted", "comment"):
        value = payload.get(field, "")
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise AnswerError(f"{field!r} must be a text of at most {MAX_TEXT} characters. "
                              f"Received: {field}={value!r:.60}")
        answer[field] = value.strip()
    if not answer["agree"] and not answer["label"]:
        raise AnswerError("When you disagree with the model, give your own label ('label'). Received: label=''")
    return answer


def _store(database: str, answer: dict, user: str) -> dict:
    """Inserts one validated answer with the current local time and the token's user (empty without tokens);
    returns its ``id``, ``created`` and ``user``."""
    created = datetime.datetime.now().isoformat(timespec="seconds")
    with _database(database) as connection:
        cursor = connection.execute(
            "INSERT INTO answers (created, image, evaluator, agree, label, predicted, comment, user) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (created, answer["image"], answer["evaluator"],
                                                int(answer["agree"]), answer["label"], answer["predicted"],
                                                answer["comment"], user))
    return {"id": cursor.lastrowid, "created": created, "user": user}


def _csv_cell(value):
    """A text cell a spreadsheet shows as text: a leading ``'`` before ``=``, ``+``, ``-``, ``@``."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def _answers_csv(rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    writer.writerows([_csv_cell(value) for value in row] for row in rows)
    return buffer.getvalue()


def reviews_blueprint(config: Mapping) -> Blueprint:
    """The evaluation API over ``config["EVALUATION_IMAGES_DIR"]`` and ``config["EVALUATION_DB"]``.

    Args:
        config: the server configuration under its original keys (a plain dict is enough). An empty
            EVALUATION_IMAGES_DIR makes ``images`` answer 404 with a message naming the key; EVALUATION_DB
            defaults to ``timl_evaluations.db`` in the working directory.

    Returns:
        A blueprint to mount at ``<rest>/evaluate``.
    """
    blueprint = Blueprint("reviews", __name__)
    folder = str(config.get("EVALUATION_IMAGES_DIR") or "")
    database = str(config.get("EVALUATION_DB") or "timl_evaluations.db")

    @blueprint.errorhandler(NotConfigured)
    def not_configured(error):
        return jsonify(error=str(error)), 404

    @blueprint.errorhandler(AnswerError)
    def bad_answer(error):
        return jsonify(error=str(error)), 400

    @blueprint.get("/images")
    def images():
        return jsonify(images=list(_listing(folder)))

    @blueprint.get("/images/<name>")
    def image(name: str):
        listed = _listing(folder)
        if name not in listed:  # only names from the listing: user input never becomes a path
            return jsonify(error=f"No such evaluation image; expected one of the {len(listed)} names that "
                                 f"GET images lists. Received: {name!r:.80}"), 404
        return send_file(listed[name])

    @blueprint.post("/answers")
    def answers():
        answer = _answer(request.get_json(silent=True))
        if answer["image"] not in _listing(folder):
            raise AnswerError(f"Unknown image; expected one of the names that GET images lists. "
                              f"Received: image={answer['image']!r:.80}")
        return jsonify(**_store(database, answer, g.get("timl_user", "")), **answer), 201

    @blueprint.get("/answers.csv")
    def answers_csv():
        with _database(database) as connection:
            rows = connection.execute(f"SELECT {', '.join(CSV_COLUMNS)} FROM answers ORDER BY id").fetchall()
        return Response(_answers_csv(rows), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=timl_evaluations.csv"})

    return blueprint
