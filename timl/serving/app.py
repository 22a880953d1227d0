"""The TIML REST server: a Flask app factory with the original TIML REST API and the web pages.

The original routes under the REST prefix: ``ping``, ``echo/<text>``, ``info``, ``classify`` and
``explain/<method>/<layer>``, and ``model_card`` (a registered version's card, JSON or ``?format=md``); the pages under the static prefix learn the REST prefix from ``timl-config.js``.

``create_app(config)`` builds one app; its model is loaded once, after the fork: under ``timl.serve`` at the
worker's start (the warm-up, :meth:`~timl.serving.model.ModelHolder.start_warm_up`), elsewhere at the first request
that needs it. ``/metrics`` is :mod:`timl.serving.metrics`'. Every error is JSON: exception classes map to status codes in
:func:`_register_error_handlers` and nowhere else.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from pathlib import Path

from flask import Blueprint, Flask, Response, g, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException, NotFound, RequestEntityTooLarge

from timl import __version__
from timl.errors import ConfigError, ImageError, MissingFileError, ModelError, TimlError
from timl.review_store import AnswerError
from timl.serving import guard
from timl.serving.config import ServerConfig, load_config
from timl.serving.explaining import IMAGE_KINDS, ExplanationFailed, ExplanationTimeout, QueueFull
from timl.serving.memory import return_freed_images
from timl.serving.metrics import ServerMetrics, unavailable_reason
from timl.serving.model import ModelHolder, ModelUnavailable, NoModelCard
from timl.serving.model_process import ModelRestarting
from timl.serving.openapi import EXPLAIN_QUERY, openapi_document
from timl.serving.reviews import NotConfigured, png_response, reviews_blueprint
from timl.serving.uploads import UploadRequest

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
FAVICON = "favicon.svg"

#: The script the pages load before timl.js: it tells them the configured REST prefix (``window.TIML_REST``).
PAGES_CONFIG_SCRIPT = "timl-config.js"


class BadRequest(TimlError, ValueError):
    """A request the API cannot serve: a missing field, a bad query parameter."""


class UnknownChoice(ModelError):
    """An unknown explanation method or layer in the URL (404, with the valid ones)."""


#: What a client is told when the model or a file the server needs cannot be loaded; the detail, which names
#: server paths, goes to the server log only.
NOT_LOADED = "The model could not be loaded; see the server log for the details."
#: The model URIs that name a model in the tracking store, not a file of the server: shown as they are.
STORE_URIS = ("models:/", "runs:/")


def public_model_name(model: str) -> str:
    """The configured model as a client may see it: a ``models:/`` or ``runs:/`` URI as it is, else the file's
    name without its folders (``/srv/models/skin.h5`` -> ``skin.h5``): never a server path."""
    if model.startswith(STORE_URIS):
        return model
    return model.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def _uploaded_image(holder: ModelHolder, prepare=None):
    """The decoded image of the multipart field ``file``; the file name is only echoed, never used as a path.

    Decoded in one of the worker's decoding slots (DECODE_CONCURRENCY), under MAX_IMAGE_PIXELS.

    Args:
        holder: the worker's model holder (its configuration and decoding slots).
        prepare: when given, ``prepare(image)`` is returned instead of the image, computed in the same slot (the
            model input of a classification: the full-size image is freed before the slot is).

    Returns:
        The file name and the image (or what ``prepare`` made of it).
    """
    from timl.images import decode_image

    upload = request.files.get("file")
    if upload is None:
        raise BadRequest("The request needs a multipart form field 'file' with the image. "
                         f"Received fields: {sorted(request.files) + sorted(request.form)}")
    filename = Path(upload.filename or "upload").name[:200]
    data = upload.read()
    with holder.decoding():
        image = decode_image(data, max_pixels=holder.config.max_image_pixels, name=f"the uploaded file {filename!r}")
        return filename, (prepare(image) if prepare is not None else image)


def _query_number(name: str, kind, low, high):
    text = request.args.get(name)
    if text is None or text == "":
        return None
    try:
        value = kind(text)
    except ValueError:
        raise BadRequest(f"Query parameter {name!r} must be a {kind.__name__} between {low} and {high}. "
                         f"Received: {name}={text!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"Query parameter {name!r} must be between {low} and {high}. Received: {name}={text!r}")
    return value


def _explain_params(explainer) -> dict:
    """The explainer's parameters given in the query string (masks, cells, keep for RISE)."""
    params = {}
    for query, (name, kind, low, high) in EXPLAIN_QUERY.items():
        value = _query_number(query, kind, low, high) if name in explainer.defaults else None
        if value is not None:
            params[name] = value
    return params


def _image_choices() -> tuple[int | None, tuple[str, ...]]:
    """``?size=`` (the answer's images fit in size x size pixels) and ``?images=`` (which of grey, heatmap, comp;
    all by default): a page asks only for what it shows, at the size it shows it."""
    size = _query_number("size", int, 16, 4096)
    text = request.args.get("images", "")
    kinds = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip())) or IMAGE_KINDS
    unknown = [kind for kind in kinds if kind not in IMAGE_KINDS]
    if unknown:
        raise BadRequest(f"Query parameter 'images' lists the images to return, from: {', '.join(IMAGE_KINDS)}. "
                         f"Received: images={text!r}")
    return size, kinds


def _explainer_choice(model, method: str, layer: str | None):
    """The explainer a request names and the layer it explains: None for methods of the input (the layer is then
    ignored) and for the default layer.

    Raises:
        UnknownChoice: an unknown method, or a layer the model lacks (404, with the valid ones).
    """
    from timl import xai

    if method not in xai.EXPLAINERS:
        raise UnknownChoice(f"Unknown explanation method. Expected one of: {', '.join(xai.EXPLAINERS)}. "
                            f"Received: method={method!r}")
    explainer = xai.get_explainer(method)
    if not explainer.uses_layer:
        return explainer, None
    layers = xai.conv_layer_names(model)
    if layer is not None and layer not in layers:
        raise UnknownChoice(f"Unknown layer for {method}. Expected one of: {', '.join(layers)}. "
                            f"Received: layer={layer!r}")
    return explainer, layer


def _analysis(holder: ModelHolder):
    """The evaluate page's one call per image: the classification and one explanation of an image the server
    already has (never uploaded), the explanation's images at the size the page shows."""
    from timl import xai
    from timl.classifier import confidence

    def analyse(path: Path) -> dict:
        classifier = holder.classifier
        method = request.args.get("method") or xai.DEFAULT_EXPLAINER
        explainer, layer = _explainer_choice(classifier.model, method, request.args.get("layer") or None)
        size, kinds = _image_choices()
        image = holder.decode_file(path)
        probabilities = holder.classify(image)
        explanation = holder.explain(image, method, layer, None, 0, _explain_params(explainer), size, kinds)
        return {"image": path.name, "classes": list(classifier.class_names),
                "prediction": [float(p) for p in probabilities],
                "confidence": [float(c) for c in confidence(probabilities)],
                "predicted_class": classifier.class_names[int(probabilities.argmax())],
                "explanation": {"method": method, "layer": explanation["layer"], "score": explanation["score"],
                                "class_name": classifier.class_names[explanation["class_index"]],
                                **{kind: explanation[kind] for kind in kinds}}}

    return analyse


def api_blueprint(config: ServerConfig, holder: ModelHolder) -> Blueprint:
    """The REST API: info, model_card, classify, explain, openapi.json."""
    from timl import xai
    from timl.classifier import confidence

    api = Blueprint("api", __name__)

    @api.get("/ping")
    def ping():
        return Response("pong", mimetype="text/plain")

    @api.get("/echo/<text>")
    def echo(text: str):
        return Response(f"You told me {text}", mimetype="text/plain")  # plain text: nothing echoed runs as HTML

    @api.get("/info")
    def info():
        classifier = holder.classifier
        layers = xai.conv_layer_names(classifier.model)
        model = public_model_name(config.model)  # the keys the original clients read, without the folders
        return jsonify(classification={"model_file": model}, model=model,
                       model_info=holder.describe(), max_upload_mb=config.max_upload_mb,
                       classes=list(classifier.class_names),
                       input_size=classifier.preprocessing.imgsize, preprocessing=classifier.preprocessing.to_dict(),
                       multi_label=classifier.multi_label, explain_methods=xai.list_explainers(),
                       explainers={name: {"uses_layer": spec.uses_layer, "params": spec.defaults, "title": spec.title}
                                   for name, spec in xai.EXPLAINERS.items()}, default_method=xai.DEFAULT_EXPLAINER,
                       layers=layers,
                       default_layer=xai.last_conv_layer(classifier.model) if layers else None, version=__version__)

    @api.get("/model_card")
    def model_card():
        if request.args.get("format", "json") not in ("json", "md"):
            raise BadRequest(f"format is json or md. Received: format={request.args.get('format')!r}")
        card = holder.model_card()
        if request.args.get("format") == "md":  # plain text: a browser shows it, nothing in it runs as HTML
            return Response(card["markdown"], mimetype="text/plain")
        return jsonify(card["json"])

    @api.post("/classify")
    def classify():
        classifier = holder.classifier
        with holder.batcher.expect() as announcement:  # a batch being formed waits while this image decodes
            filename, array = _uploaded_image(holder, classifier.preprocessing)
            probabilities, spread = holder.submit(array, announcement)
        extra = {} if spread is None else {"tta": config.tta, "tta_std": [float(s) for s in spread]}
        predicted_class = classifier.class_names[int(probabilities.argmax())]
        holder.metrics.predicted(predicted_class)
        return jsonify(filename=filename, prediction=[float(p) for p in probabilities],
                       confidence=[float(c) for c in confidence(probabilities)],
                       classes=list(classifier.class_names), predicted_class=predicted_class, **extra)

    @api.post("/preview")
    def preview():
        """The upload as a PNG any browser draws (a DICOM or TIFF file has no picture in most browsers), at most
        ``size`` pixels on its longer side; never cached (health data)."""
        longest = _query_number("size", int, 32, 2048) or 1024

        def fitted(image):
            image.thumbnail((longest, longest))
            return image

        _, image = _uploaded_image(holder, fitted)
        answer = png_response(image)
        answer.headers["Cache-Control"] = "private, no-store"
        return answer

    @api.post("/explain/<method>/<path:layer>")
    def explain(method: str, layer: str):
        classifier = holder.classifier
        explainer, explained_layer = _explainer_choice(classifier.model, method, layer)
        params = _explain_params(explainer)
        seed = _query_number("seed", int, 0, 2**31 - 1)
        class_index = classifier.class_index(request.args.get("class"))
        size, kinds = _image_choices()
        filename, image = _uploaded_image(holder)
        explanation = holder.explain(image, method, explained_layer, class_index, seed, params, size, kinds)
        return jsonify(filename=filename, method=method, layer=explanation["layer"] or layer,
                       args={"layer_name": explanation["layer"] or layer, **params},
                       class_index=explanation["class_index"],
                       class_name=classifier.class_names[explanation["class_index"]], score=explanation["score"],
                       **{kind: explanation[kind] for kind in kinds})

    @api.get("/openapi.json")
    def openapi():
        return jsonify(openapi_document(config.rest_prefix))

    return api


#: Exception class -> status code, the first class the error is an instance of: the API's and the reviews' errors.
STATUS = ((RequestEntityTooLarge, 413), (UnknownChoice, 404), (NoModelCard, 404), (BadRequest, 400),
          (ImageError, 400), (NotConfigured, 404), (AnswerError, 400),
          (QueueFull, 503), (ExplanationTimeout, 504), (ExplanationFailed, 503), (ModelRestarting, 503), (ModelUnavailable, 503),
          (MissingFileError, 503), (ConfigError, 503), (ModelError, 400))
#: Errors whose message names server files: the client gets NOT_LOADED, the server log the message. Matched by
#: the class STATUS found, so NotConfigured (a ConfigError for EVALUATION_IMAGES_DIR, 404) shows its message.
SERVER_SIDE = (ModelUnavailable, MissingFileError, ConfigError)


def _register_error_handlers(app: Flask) -> None:
    """Exception class -> status code, in one place; every body is JSON ``{"error": ...}``."""

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        message = error.description if not isinstance(error, RequestEntityTooLarge) else (
            f"The upload is larger than the limit of {app.config['MAX_CONTENT_LENGTH'] // 1024} kB.")
        return jsonify(error=message), error.code

    @app.errorhandler(Exception)
    def any_error(error: Exception):
        for kind, status in STATUS:
            if isinstance(error, kind):
                unavailable_reason(kind)  # the reason label of /metrics' 503 and 504 counts
                headers = {"Retry-After": str(error.retry_after)} if hasattr(error, "retry_after") else {}
                if kind in SERVER_SIDE:
                    logger.error("Answered %d to %s %s: %s", status, request.method, request.path, error,
                                 exc_info=error)
                    return jsonify(error=NOT_LOADED), status, headers
                return jsonify(error=str(error)), status, headers
        logger.exception("internal error")
        return jsonify(error="internal error"), 500


def create_app(config: ServerConfig | dict | str | Path | None = None, classifier=None) -> Flask:
    """Builds the TIML server.

    Args:
        config: a ServerConfig, a mapping with the original keys, a configuration file path, or None to look
            for ``timl_server_config.json`` (see :func:`timl.serving.config.find_config`).
        classifier: a ready :class:`timl.classifier.Classifier` (tests); by default the configured model is loaded
            at the first request that needs it.

    Raises:
        ConfigError: no configuration file; its message prints a sample configuration.
    """
    if isinstance(config, dict):
        config = ServerConfig.from_mapping(config)
    elif not isinstance(config, ServerConfig):
        config = load_config(config)
    return_freed_images()  # decoded images leave the worker's memory once answered
    app = Flask(__name__, static_folder=None)
    app.request_class = UploadRequest  # uploads parsed by python-multipart
    app.config["MAX_CONTENT_LENGTH"] = int(config.max_upload_mb * 1024 * 1024)
    app.config["TIML"] = config
    metrics = ServerMetrics(config.metrics, lambda: holder.describe())  # the model's name once it is loaded
    holder = ModelHolder(config, classifier, metrics)
    metrics.install(app, config.metrics_tokens)  # first: every request is counted, a refused one too
    guard.install(app, config)  # exposure, Host and Origin checks before every route
    app.extensions["timl_model"] = holder
    app.register_blueprint(api_blueprint(config, holder), url_prefix=config.rest_prefix)
    app.register_blueprint(reviews_blueprint(config.as_mapping(), holder.review_facts, holder.uncertainty,
                                             _analysis(holder), holder.prediction),
                           url_prefix=f"{config.rest_prefix}/evaluate")
    static_dir = pages_dir(config)
    logger.info("REST API at %s/, web pages at %s/ (from %s)", config.rest_prefix, config.static_prefix, static_dir)

    @app.get(f"{config.static_prefix}/{PAGES_CONFIG_SCRIPT}")
    def pages_config():
        script = (f"window.TIML_REST = {json.dumps(config.rest_prefix)};\n"
                  f"window.TIML_TOKENS = {json.dumps(bool(config.api_tokens_file))};\n")
        return Response(script, mimetype="text/javascript", headers={"Cache-Control": "no-cache"})

    @app.get(f"{config.static_prefix}/<path:name>")
    def static_page(name: str):
        if name == FAVICON and not (static_dir / FAVICON).is_file():
            return send_from_directory(STATIC_DIR, FAVICON)  # an own pages folder without an icon
        return send_from_directory(static_dir, page_file(static_dir, name))

    @app.get("/favicon.ico")
    def favicon():  # browsers ask for it on every page
        return send_from_directory(STATIC_DIR, FAVICON, mimetype="image/svg+xml", max_age=86400)

    @app.get("/")
    def index():
        pages = sorted(path.name for path in static_dir.glob("*.html")) if static_dir.is_dir() else []
        return jsonify(service="TIML REST server", version=__version__, model=public_model_name(config.model),
                       api={name: f"{config.rest_prefix}/{name}" for name in ("ping", "info", "classify", "openapi.json")}
                       | {"explain": f"{config.rest_prefix}/explain/<method>/<layer>"},
                       pages=[f"{config.static_prefix}/{page}" for page in pages])

    problem = holder.problem()
    if problem:
        logger.error("The model cannot be loaded; /health answers 503 until it can: %s", problem)

    @app.get("/health")
    def health():
        warming = holder.warming  # with a model process: one question to it (and one for the batching counts)
        facts = dict(model_loaded=holder.loaded, pid=os.getpid(), batching=holder.batcher.stats(),
                     explanations=holder.explanations.stats(), ready=not warming)
        if warming and not holder.problem():
            unavailable_reason("warming_up")
            return jsonify(status="starting", error="The server is loading and warming the model and its "
                           "explanation process; ready in a moment.", **facts), 503
        if holder.problem():  # the reason names server paths: the log has it, not an unauthenticated client
            unavailable_reason(ModelUnavailable)
            return jsonify(status="error", error=f"The model {public_model_name(config.model)} cannot be loaded "
                           "(CLASSIFICATION_MODEL in the server configuration): the server log says why.",
                           **facts), 503
        return jsonify(status="ok", **facts)

    tokens = config.tokens()
    if tokens:
        _require_tokens(app, tokens)
    _register_error_handlers(app)
    return app


def _require_tokens(app: Flask, tokens: dict[str, str]) -> None:
    """Every REST route (the API and the expert reviews; not /health, the pages or their script) needs
    ``Authorization: Bearer TOKEN`` with a configured token; the token's user is kept in ``g.timl_user``."""
    secrets = [(token.encode(), user) for token, user in tokens.items()]

    @app.before_request
    def check_token():
        if request.blueprint not in ("api", "reviews"):
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        given = token.strip().encode()
        user = None
        for secret, name in secrets:  # every token compared, in constant time
            if hmac.compare_digest(given, secret) and scheme.lower() == "bearer":
                user = name
        if user is None:
            message = ("This server needs an API token: send 'Authorization: Bearer TOKEN' (ask its administrator "
                       "for a token). " + ("The token given is not valid." if token else "No token was given."))
            return jsonify(error=message), 401, {"WWW-Authenticate": 'Bearer realm="TIML"'}
        g.timl_user = user
        return None


def page_file(folder: Path, name: str) -> str:
    """The page ``name`` of the pages folder, as a path relative to it: a regular file inside the folder (a link
    may point elsewhere in it), no part of the name hidden (``.env``, ``.git/config``).

    Raises:
        NotFound: anything else (404 JSON, the same answer as for a missing page).
    """
    root = folder.resolve()
    hidden = any(part.startswith(".") or not part for part in name.replace("\\", "/").split("/"))
    try:
        path = None if hidden else (root / name).resolve()
        inside = path is not None and path.is_relative_to(root) and path.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        inside = False
    if not inside:
        raise NotFound(f"No such page; the pages are the files of the pages folder, none hidden. "
                       f"Received: {name!r:.100}")
    return path.relative_to(root).as_posix()


def pages_dir(config: ServerConfig) -> Path:
    """The folder the web pages are served from: STATIC_PAGES_DIR, or the pages shipped with TIML.

    A STATIC_PAGES_DIR that is not a folder (the original sample's ``html``, say) falls back to the shipped
    pages with a warning instead of stopping the server.
    """
    if not config.static_dir:
        return STATIC_DIR
    folder = Path(config.static_dir)
    if folder.is_dir():
        return folder
    logger.warning("STATIC_PAGES_DIR %s (in %s) is not a folder; serving the pages shipped with TIML from %s. "
                   "Set STATIC_PAGES_DIR to a folder of pages, or to \"\" for the shipped ones.",
                   folder, config.source or "the server configuration", STATIC_DIR)
    return STATIC_DIR


def app_from_environment() -> Flask:
    """The app for ``flask --app timl.serving run`` and WSGI servers: the configuration is looked up as usual."""
    return create_app()


__all__ = ["create_app", "NotFound"]
