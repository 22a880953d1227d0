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
import json
import sqlite3
import threading
from pathlib import Path
from typing import Callable, Mapping

from flask import Blueprint, Response, g, jsonify, request, send_file

from timl.errors import ConfigError, TimlError
from timl.images import IMAGE_SUFFIXES

ANSWER_FIELDS = ("image", "evaluator", "agree", "label", "predicted", "comment", "skipped", "confidence", "method")
CSV_COLUMNS = ("id", "created", "image", "evaluator", "agree", "label", "predicted", "comment", "user", "reviewer",
               "skipped", "confidence", "method", "model", "classes", "updated")
MAX_TEXT = 2000
#: The Cache-Control of every answer of the reviews (health data): no shared cache, no copy on disk.
NOT_KEPT = "private, no-store"
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
                    for column, definition in ADDED_COLUMNS.items():  # an older store
                        if column not in columns:
                            connection.execute(f"ALTER TABLE answers ADD COLUMN {column} {definition}")
                    # answers stored before reviewers were known: the reviewer is the name typed
                    connection.execute("UPDATE answers SET reviewer = evaluator WHERE reviewer = ''")
                    connection.execute("UPDATE answers SET updated = created WHERE updated = ''")
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
    """Validates one answer: the image, the reviewer's name, agree (or skipped), text fields of sensible length.

    ``skipped`` answers need no ``agree``; ``confidence`` is the probability shown for the predicted class,
    ``method`` the explanation shown.
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


def _store(database: str, answer: dict, user: str, model: dict) -> dict:
    """Stores a reviewer's answer on an image: a later answer of the same reviewer on the same image replaces the
    earlier one (going back to change it). The reviewer is the token's user, else the name typed.

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


def _csv_cell(value):
    """A text cell a spreadsheet shows as text: a leading ``'`` before ``=``, ``+``, ``-``, ``@``."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def _answers_csv(rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    writer.writerows([_csv_cell(value) for value in row] for row in rows)
    return buffer.getvalue()


def _check_label(answer: dict, classes) -> None:
    """The class an expert chose must be one of the model's (the export turns it into a dataset label).

    Raises:
        AnswerError: a label that is not one of ``classes``.
    """
    if answer["label"] and classes and answer["label"] not in classes:
        raise AnswerError(f"Unknown class in 'label'. Expected one of: {', '.join(classes)}. "
                          f"Received: label={answer['label']!r:.80}")


def _uncertainty_order(names: list[str], scores: list[float | None]) -> dict:
    """The listing in uncertainty order: the scored images first (most uncertain first, ties by name), then the
    images not scored yet in name order; ``scored`` of ``total`` says how far scoring has come."""
    ranked = sorted(((name, score) for name, score in zip(names, scores) if score is not None),
                    key=lambda pair: (-pair[1], pair[0]))
    waiting = [name for name, score in zip(names, scores) if score is None]
    return {"images": [name for name, _ in ranked] + waiting, "order": "uncertainty", "scored": len(ranked),
            "total": len(names), "uncertainty": {name: round(float(score), 6) for name, score in ranked}}


def reviews_blueprint(config: Mapping, model_facts: Callable[[], dict] | None = None,
                      uncertainty: Callable[[list[Path]], list[float]] | None = None,
                      analyse: Callable[[Path], dict] | None = None,
                      prediction: Callable[[Path], tuple[str, float]] | None = None) -> Blueprint:
    """The evaluation API over ``config["EVALUATION_IMAGES_DIR"]`` and ``config["EVALUATION_DB"]``.

    Args:
        config: the server configuration under its original keys (a plain dict is enough). An empty
            EVALUATION_IMAGES_DIR makes ``images`` answer 404 with a message naming the key; EVALUATION_DB
            defaults to ``timl_evaluations.db`` in the working directory; EVALUATION_ORDER ``name`` (default)
            or ``uncertainty`` orders the images.
        model_facts: returns the served model's ``model`` (its name and version, or run) and ``classes``, stored
            with every answer.
        uncertainty: the model's uncertainty of each image file (higher first), for EVALUATION_ORDER
            ``uncertainty``; None for an image not scored yet (listed after the scored ones, in name order). It
            must answer at once: the scoring happens elsewhere (:mod:`timl.serving.ranking`).
        analyse: the classification and explanation of one image file (``GET images/<name>/analysis``).
        prediction: the served model's predicted class of an image file and its probability: every answer
            records these, never the ``predicted`` and ``confidence`` a client sends (an agreement is a vote for
            the class the model predicted). Without it (a blueprint with no model) the client's are kept.

    Returns:
        A blueprint to mount at ``<rest>/evaluate``.
    """
    blueprint = Blueprint("reviews", __name__)
    folder = str(config.get("EVALUATION_IMAGES_DIR") or "")
    database = str(config.get("EVALUATION_DB") or "timl_evaluations.db")
    order = str(config.get("EVALUATION_ORDER") or "name")

    @blueprint.after_request
    def not_kept(response):
        """Patients' images, the model's analysis of them and the experts' answers: kept by no browser or proxy."""
        response.headers["Cache-Control"] = NOT_KEPT
        response.headers.pop("Expires", None)
        return response

    @blueprint.errorhandler(NotConfigured)
    def not_configured(error):
        return jsonify(error=str(error)), 404

    @blueprint.errorhandler(AnswerError)
    def bad_answer(error):
        return jsonify(error=str(error)), 400

    @blueprint.get("/images")
    def images():
        listed = _listing(folder)
        names = list(listed)
        if order == "uncertainty" and uncertainty is not None and names:
            return jsonify(_uncertainty_order(names, uncertainty([listed[name] for name in names])))
        return jsonify(images=names, order="name")

    @blueprint.get("/images/<name>")
    def image(name: str):
        listed = _listing(folder)
        if name not in listed:  # only names from the listing: user input never becomes a path
            return jsonify(error=f"No such evaluation image; expected one of the {len(listed)} names that "
                                 f"GET images lists. Received: {name!r:.80}"), 404
        return send_file(listed[name], max_age=None)  # conditional (ETag), never cached: see not_kept

    @blueprint.get("/images/<name>/analysis")
    def analysis(name: str):
        listed = _listing(folder)
        if name not in listed or analyse is None:
            return jsonify(error=f"No such evaluation image; expected one of the {len(listed)} names that "
                                 f"GET images lists. Received: {name!r:.80}"), 404
        return jsonify(analyse(listed[name]))

    @blueprint.post("/answers")
    def answers():
        answer = _answer(request.get_json(silent=True))
        listed = _listing(folder)
        if answer["image"] not in listed:
            raise AnswerError(f"Unknown image; expected one of the names that GET images lists. "
                              f"Received: image={answer['image']!r:.80}")
        facts = model_facts() if model_facts else {}
        _check_label(answer, facts.get("classes"))
        if prediction is not None:
            answer["predicted"], answer["confidence"] = prediction(listed[answer["image"]])
        return jsonify(**_store(database, answer, g.get("timl_user", ""), facts), **answer), 201

    @blueprint.get("/answers")
    def reviewer_answers():
        """The current answers of one reviewer (the token's user, else ``?reviewer=``): where to resume."""
        reviewer = g.get("timl_user", "") or request.args.get("reviewer", "").strip()
        if not reviewer:
            raise AnswerError("Say whose answers: ?reviewer=NAME (the name typed on the page).")
        fields = ("image", "agree", "label", "skipped", "comment", "predicted", "confidence", "method", "updated")
        rows = current_answers(database, reviewer)
        return jsonify(reviewer=reviewer, answers=[{field: row[field] for field in fields} for row in rows])

    @blueprint.get("/answers.csv")
    def answers_csv():
        rows = [[row[column] for column in CSV_COLUMNS] for row in current_answers(database)]
        return Response(_answers_csv(rows), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=timl_evaluations.csv"})

    return blueprint
