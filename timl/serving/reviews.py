"""Expert reviews on the web: the images experts evaluate, and the routes that store and list their answers.

The blueprint behind the ``evaluate.html`` page (the original TIML's "evaluation"; not :mod:`timl.evaluation`,
which scores predictions), a thin layer over the review store (:mod:`timl.review_store`: the SQLite file, the
answer's rules, the CSV). Mounted by the server at ``<rest>/evaluate``: ``GET images`` (names in
EVALUATION_IMAGES_DIR), ``GET images/<name>`` (the file; only listed names are served, with or without their
suffix), ``GET images/<name>/analysis`` (the model's classification and explanation of it), ``POST answers`` (one
expert's verdict on one image), ``GET answers?reviewer=NAME`` (that reviewer's current answers; ``agree`` and
``skipped`` as true/false, as posted), ``GET answers.csv`` (every answer, for download). ``evaluate.html`` drives it.
The app's one status table (:data:`timl.serving.app.STATUS`) answers :class:`NotConfigured` with 404 and
:class:`timl.review_store.AnswerError` with 400.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Callable, Mapping

from flask import Blueprint, Response, g, jsonify, request, send_file

from timl.errors import ConfigError
from timl.images import IMAGE_SUFFIXES, SERVING_MAX_PIXELS, decode_image
from timl.images.dicom import is_dicom
from timl.review_store import (DEFAULT_DATABASE, AnswerError, check_label, current_answers,
                               current_answers_csv, store_answer, validate_answer)

#: The Cache-Control of every answer of the reviews (health data): no shared cache, no copy on disk.
NOT_KEPT = "private, no-store"

logger = logging.getLogger(__name__)


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
    if not root.is_dir():  # the path goes to the server's log, never to a client
        logger.error("EVALUATION_IMAGES_DIR %s is not a folder; set it to the folder of images the experts should "
                     "review.", folder)
        raise NotConfigured("EVALUATION_IMAGES_DIR (in the server configuration) is not a folder; the server's "
                            "administrator should set it to the folder of images the experts should review "
                            "(the server log names it).")
    return {path.name: path for path in sorted(root.iterdir())
            if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES}


def _listed_image(listed: dict[str, Path], name: str) -> Path | None:
    """The listed image called ``name``, or whose name without its suffix is ``name`` when one alone is
    (``0007`` for ``0007.png``); None otherwise."""
    if name in listed:
        return listed[name]
    stems = [path for listed_name, path in listed.items() if Path(listed_name).stem == name]
    return stems[0] if len(stems) == 1 else None


def png_response(image) -> Response:
    """A decoded image (PIL) as a PNG answer: its pixels alone (no metadata of the file it came from)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return Response(buffer.getvalue(), mimetype="image/png")


def _as_png(path: Path, max_pixels: int) -> Response:
    """A DICOM review image as the PNG of its decoded pixels (an unreadable one: ImageError, answered 400)."""
    return png_response(decode_image(path, max_pixels=max_pixels, name=path.name))


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
            defaults to :data:`timl.review_store.DEFAULT_DATABASE` in the working directory; EVALUATION_ORDER
            ``name`` (default) or ``uncertainty`` orders the images.
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
    database = str(config.get("EVALUATION_DB") or DEFAULT_DATABASE)
    order = str(config.get("EVALUATION_ORDER") or "name")

    @blueprint.after_request
    def not_kept(response):
        """Patients' images, the model's analysis of them and the experts' answers: kept by no browser or proxy."""
        response.headers["Cache-Control"] = NOT_KEPT
        response.headers.pop("Expires", None)
        return response

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
        path = _listed_image(listed, name)  # only names from the listing: user input never becomes a path
        if path is None:
            return jsonify(error=f"No such evaluation image; expected one of the {len(listed)} names that "
                                 f"GET images lists. Received: {name!r:.80}"), 404
        if is_dicom(path):  # no browser shows DICOM: its pixels as a PNG (no DICOM element travels with them)
            return _as_png(path, int(config.get("MAX_IMAGE_PIXELS") or SERVING_MAX_PIXELS))
        return send_file(path, max_age=None)  # conditional (ETag), never cached: see not_kept

    @blueprint.get("/images/<name>/analysis")
    def analysis(name: str):
        listed = _listing(folder)
        path = _listed_image(listed, name)
        if path is None or analyse is None:
            return jsonify(error=f"No such evaluation image; expected one of the {len(listed)} names that "
                                 f"GET images lists (with or without the file's suffix). Received: {name!r:.80}"), 404
        return jsonify(analyse(path))

    @blueprint.post("/answers")
    def answers():
        answer = validate_answer(request.get_json(silent=True))
        listed = _listing(folder)
        if answer["image"] not in listed:
            raise AnswerError(f"Unknown image; expected one of the names that GET images lists. "
                              f"Received: image={answer['image']!r:.80}")
        facts = model_facts() if model_facts else {}
        check_label(answer, facts.get("classes"))
        if prediction is not None:
            answer["predicted"], answer["confidence"] = prediction(listed[answer["image"]])
        return jsonify(**store_answer(database, answer, g.get("timl_user", ""), facts), **answer), 201

    @blueprint.get("/answers")
    def reviewer_answers():
        """The current answers of one reviewer (the token's user, else ``?reviewer=``): where to resume."""
        reviewer = g.get("timl_user", "") or request.args.get("reviewer", "").strip()
        if not reviewer:
            raise AnswerError("Say whose answers: ?reviewer=NAME (the name typed on the page).")
        fields = ("image", "agree", "label", "skipped", "comment", "predicted", "confidence", "method", "updated")
        rows = current_answers(database, reviewer)
        flags = ("agree", "skipped")  # stored as 1/0: answered as the true/false a POST sends
        return jsonify(reviewer=reviewer, answers=[{field: bool(row[field]) if field in flags else row[field]
                                                    for field in fields} for row in rows])

    @blueprint.get("/answers.csv")
    def answers_csv():
        return Response(current_answers_csv(database), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=timl_evaluations.csv"})

    return blueprint
