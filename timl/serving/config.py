"""The TIML server configuration: ``timl_server_config.json``, with the original TIML keys, and the model it names.

Looked up as ``--config PATH``, else ``$TIML_SERVER_CONFIG``, else ``./timl_server_config.json``, else
``~/.timl/timl_server_config.json`` (where the original TIML looked first), else ``~/timl_server_config.json``.
Each key has a ``KEY_description`` companion, as in the original. Relative paths resolve against the
configuration file's folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

from timl.errors import ConfigError
from timl.images import SERVING_MAX_PIXELS
from timl.review_store import DEFAULT_DATABASE
from timl.tta import TTA_CHOICES

FILE_NAME = "timl_server_config.json"
MIN_TOKEN_LENGTH = 16

SAMPLE = {
    "CLASSIFICATION_MODEL": "models:/skin-lesions@champion",
    "CLASSIFICATION_MODEL_description": "An MLflow model URI (runs:/ID/model, models:/NAME@ALIAS, "
                                        "models:/NAME/VERSION) or a .h5 file (its .h5.json sidecar, or the "
                                        "training table beside it as config_table.csv).",
    "REST_API_URL_PREFIX": "/api",
    "REST_API_URL_PREFIX_description": "URL prefix of the REST API: /api/classify, /api/explain/...",
    "STATIC_PAGES_DIR": "",
    "STATIC_PAGES_DIR_description": "Folder of the web pages; empty for the pages shipped with TIML.",
    "STATIC_PAGES_URL_PREFIX": "/static",
    "STATIC_PAGES_URL_PREFIX_description": "URL prefix of the web pages: /static/classify.html.",
    "MAX_UPLOAD_MB": 10,
    "MAX_UPLOAD_MB_description": "Largest accepted upload in megabytes; larger requests get 413.",
    "MAX_IMAGE_PIXELS": SERVING_MAX_PIXELS,
    "MAX_IMAGE_PIXELS_description": "Largest accepted image in pixels (decompression bombs are refused); decoding "
                                    "one needs about 10 bytes per pixel.",
    "DECODE_CONCURRENCY": 4,
    "DECODE_CONCURRENCY_description": "Images decoded at once per worker (uploads and reviewed images); more wait "
                                      "their turn, so a worker's decoding memory stays under about "
                                      "DECODE_CONCURRENCY x MAX_IMAGE_PIXELS x 10 bytes.",
    "EVALUATION_IMAGES_DIR": "",
    "EVALUATION_IMAGES_DIR_description": "Folder of the images experts review on evaluate.html.",
    "EVALUATION_DB": DEFAULT_DATABASE,
    "EVALUATION_DB_description": "SQLite file where evaluate.html stores the experts' answers.",
    "EVALUATION_ORDER": "name",
    "EVALUATION_ORDER_description": "Order of the images to review: name, or uncertainty (the images the model "
                                    "is least sure of first: smallest margin between its two top classes; "
                                    "predicted in the background, 32 at a time: until done, the images scored "
                                    "so far come first).",
    "TRACKING_URI": "",
    "TRACKING_URI_description": "MLflow tracking URI for models:/ and runs:/ URIs (default: MLFLOW_TRACKING_URI "
                                "or sqlite:///mlflow.db).",
    "BATCH_MAX_SIZE": 8,
    "BATCH_MAX_SIZE_description": "Most /classify requests answered by one model call (of the model process, or of a worker "
                                  "without one; 1: no batching).",
    "BATCH_MAX_WAIT_MS": 30,
    "BATCH_MAX_WAIT_MS_description": "Longest a request waits for others to join its batch; it waits only while "
                                     "other requests are being decoded or, under load, until the batch holds as "
                                     "many as the previous one plus those that arrived during its model call, so "
                                     "a lone request never waits.",
    "TTA": "none",
    "TTA_description": "Test-time augmentation of /classify: none, or a preset (hflip: the image and its mirror; "
                       "hflip_rot4: and their quarter turns, 8 views; also vflip, rot4). The probabilities are "
                       "averaged over the views, all of them in the model call of their batch; the answer adds "
                       "tta_std (the views' spread per class).",
    "EXPLAIN_CONCURRENCY": 1,
    "EXPLAIN_CONCURRENCY_description": "Explanations computed at once per worker, each in its own process at the "
                                       "low CPU priority (nice 10: classification comes first).",
    "EXPLAIN_QUEUE": 4,
    "EXPLAIN_QUEUE_description": "Explanations that may wait per worker; more get 503 with Retry-After.",
    "EXPLAIN_TIMEOUT_S": 120,
    "EXPLAIN_TIMEOUT_S_description": "Longest an explanation may take (its process is stopped after it: 504).",
    "API_TOKENS_FILE": "",
    "API_TOKENS_FILE_description": "JSON file of {\"token\": \"user name\"}: when set, every REST route needs "
                                   "'Authorization: Bearer TOKEN' and expert answers record the user. Keep it "
                                   "out of the repository.",
    "TRUSTED_HOSTS": "",
    "TRUSTED_HOSTS_description": "Names this server is reached by besides localhost and IP addresses, comma-"
                                 "separated (or a list), e.g. \"timl.example.org\": the name a reverse proxy "
                                 "passes with 'proxy_set_header Host $host'. Requests naming another host get 400 "
                                 "and other sites' pages may not post (a guard against DNS rebinding; with "
                                 "API_TOKENS_FILE and no TRUSTED_HOSTS these checks are off).",
    "INFERENCE_BACKEND": "keras",
    "INFERENCE_BACKEND_description": "What runs /classify's model calls: keras, or onnxruntime (the model converted "
                                     "to ONNX when it loads, checked against the Keras model within 1e-4; needs "
                                     "pip install 'timl[export]'). Explanations always run the Keras model.",
    "MODEL_PROCESS": True,
    "MODEL_PROCESS_description": "With more than one worker (timl.serve --workers), one process runs the model for "
                                 "all of them: the workers decode the uploads and its batches join every "
                                 "worker's requests (two models would compete for the same cores). false: each "
                                 "worker calls its own model.",
    "METRICS": True,
    "METRICS_description": "Serve Prometheus metrics at /metrics (true or false).",
    "METRICS_TOKEN": "",
    "METRICS_TOKEN_description": "A token (16 characters or more) for /metrics alone, e.g. a Prometheus server's. "
                                 "With it or with API_TOKENS_FILE, /metrics needs 'Authorization: Bearer TOKEN' "
                                 "(this token or an API token).",
}

#: The INFERENCE_BACKEND choices.
INFERENCE_BACKENDS = ("keras", "onnxruntime")


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """The server's settings (see ``SAMPLE`` for what each means)."""

    model: str
    rest_prefix: str = "/api"
    static_dir: str = ""
    static_prefix: str = "/static"
    max_upload_mb: float = 10
    max_image_pixels: int = SERVING_MAX_PIXELS
    decode_concurrency: int = 4
    evaluation_images_dir: str = ""
    evaluation_db: str = DEFAULT_DATABASE
    evaluation_order: str = "name"
    tracking_uri: str = ""
    batch_max_size: int = 8
    batch_max_wait_ms: float = 30
    tta: str = "none"
    explain_concurrency: int = 1
    explain_queue: int = 4
    explain_timeout_s: float = 120
    api_tokens_file: str = ""
    trusted_hosts: tuple[str, ...] = ()
    inference_backend: str = "keras"
    model_process: bool = True
    metrics: bool = True
    metrics_token: str = ""
    source: str = ""

    def as_mapping(self) -> dict:
        """The configuration under its original keys (what the evaluation blueprint reads)."""
        return {"CLASSIFICATION_MODEL": self.model, "REST_API_URL_PREFIX": self.rest_prefix,
                "STATIC_PAGES_DIR": self.static_dir, "STATIC_PAGES_URL_PREFIX": self.static_prefix,
                "MAX_UPLOAD_MB": self.max_upload_mb, "MAX_IMAGE_PIXELS": self.max_image_pixels,
                "DECODE_CONCURRENCY": self.decode_concurrency,
                "EVALUATION_IMAGES_DIR": self.evaluation_images_dir, "EVALUATION_DB": self.evaluation_db,
                "EVALUATION_ORDER": self.evaluation_order,
                "TRACKING_URI": self.tracking_uri, "BATCH_MAX_SIZE": self.batch_max_size,
                "BATCH_MAX_WAIT_MS": self.batch_max_wait_ms, "TTA": self.tta, "EXPLAIN_CONCURRENCY": self.explain_concurrency,
                "EXPLAIN_QUEUE": self.explain_queue, "EXPLAIN_TIMEOUT_S": self.explain_timeout_s,
                "API_TOKENS_FILE": self.api_tokens_file, "TRUSTED_HOSTS": list(self.trusted_hosts),
                "INFERENCE_BACKEND": self.inference_backend, "MODEL_PROCESS": self.model_process,
                "METRICS": self.metrics}  # never the METRICS_TOKEN: the mapping is shown to routes

    def tokens(self) -> dict[str, str]:
        """The API tokens (token -> user name) of API_TOKENS_FILE; empty when none is configured.

        Raises:
            ConfigError: the file is missing, not a JSON object of non-empty strings, or has a short token.
        """
        if not self.api_tokens_file:
            return {}
        where = f"API_TOKENS_FILE {self.api_tokens_file} (in {self.source or 'the server configuration'})"
        try:
            tokens = json.loads(Path(self.api_tokens_file).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"{where}: not a readable JSON file ({error}). Expected: "
                              '{"a-long-random-token": "user name"}') from error
        if not isinstance(tokens, dict) or not tokens or not all(
                isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in tokens.items()):
            raise ConfigError(f"{where}: expected a JSON object of token -> user name, e.g. "
                              '{"a-long-random-token": "Dr. Example"}')
        short = [user for token, user in tokens.items() if len(token) < MIN_TOKEN_LENGTH]
        if short:
            raise ConfigError(f"{where}: the token(s) of {', '.join(short)} are shorter than {MIN_TOKEN_LENGTH} "
                              "characters; make them with: python -c 'import secrets; print(secrets.token_urlsafe())'")
        return tokens

    def metrics_tokens(self) -> list[str]:
        """The tokens /metrics accepts: METRICS_TOKEN and the API tokens; empty: /metrics is open."""
        return [token for token in (self.metrics_token, *self.tokens()) if token]

    @classmethod
    def from_mapping(cls, values: dict, base_dir: Path | None = None, source: str = "") -> "ServerConfig":
        """Builds a configuration from the original keys; relative paths resolve against ``base_dir``.

        Raises:
            ConfigError: no CLASSIFICATION_MODEL, or a value of the wrong type.
        """
        model = str(values.get("CLASSIFICATION_MODEL") or "").strip()
        if not model:
            raise ConfigError(f"{source or 'server configuration'}: CLASSIFICATION_MODEL is required.\n"
                              + sample_text())

        def path(value: str) -> str:
            if not value or "://" in value or ":/" in value[:10] or base_dir is None or Path(value).is_absolute():
                return value
            return str(base_dir / value)

        try:
            return cls(model=path(model), rest_prefix=_prefix(values.get("REST_API_URL_PREFIX", "/api")),
                       static_dir=path(str(values.get("STATIC_PAGES_DIR") or "")),
                       static_prefix=_prefix(values.get("STATIC_PAGES_URL_PREFIX", "/static")),
                       max_upload_mb=float(values.get("MAX_UPLOAD_MB", 10)),
                       max_image_pixels=int(values.get("MAX_IMAGE_PIXELS", SERVING_MAX_PIXELS)),
                       decode_concurrency=_bounded(values, "DECODE_CONCURRENCY", int, 1, 256, source),
                       evaluation_images_dir=path(str(values.get("EVALUATION_IMAGES_DIR") or "")),
                       evaluation_db=path(str(values.get("EVALUATION_DB") or DEFAULT_DATABASE)),
                       evaluation_order=_choice(values, "EVALUATION_ORDER", ("name", "uncertainty"), source),
                       tracking_uri=str(values.get("TRACKING_URI") or ""),
                       batch_max_size=_bounded(values, "BATCH_MAX_SIZE", int, 1, 1024, source),
                       batch_max_wait_ms=_bounded(values, "BATCH_MAX_WAIT_MS", float, 0, 10_000, source),
                       tta=_choice(values, "TTA", TTA_CHOICES, source),
                       explain_concurrency=_bounded(values, "EXPLAIN_CONCURRENCY", int, 1, 64, source),
                       explain_queue=_bounded(values, "EXPLAIN_QUEUE", int, 0, 10_000, source),
                       explain_timeout_s=_bounded(values, "EXPLAIN_TIMEOUT_S", float, 1, 86_400, source),
                       api_tokens_file=path(str(values.get("API_TOKENS_FILE") or "")),
                       trusted_hosts=_host_names(values.get("TRUSTED_HOSTS"), source),
                       inference_backend=_choice(values, "INFERENCE_BACKEND", INFERENCE_BACKENDS, source),
                       model_process=_flag(values, "MODEL_PROCESS", source),
                       metrics=_flag(values, "METRICS", source), metrics_token=_metrics_token(values, source),
                       source=source)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{source or 'server configuration'}: a value has the wrong type ({error}).") from error


def _choice(values: dict, key: str, choices: tuple[str, ...], source: str) -> str:
    """``values[key]`` (else the sample's default), one of ``choices``."""
    value = str(values.get(key) or SAMPLE[key]).strip().lower()
    if value not in choices:
        raise ConfigError(f"{source or 'server configuration'}: {key} must be one of {', '.join(choices)}. "
                          f"Received: {key}={values.get(key)!r}")
    return value


def _flag(values: dict, key: str, source: str) -> bool:
    """``values[key]`` (else the sample's default): JSON true or false."""
    value = values.get(key, SAMPLE[key])
    if not isinstance(value, bool):
        raise ConfigError(f"{source or 'server configuration'}: {key} must be true or false. Received: {key}={value!r}")
    return value


def _metrics_token(values: dict, source: str) -> str:
    """METRICS_TOKEN: empty, or a string of at least MIN_TOKEN_LENGTH characters (never echoed)."""
    value = values.get("METRICS_TOKEN") or ""
    if not isinstance(value, str) or (value and len(value.strip()) < MIN_TOKEN_LENGTH):
        raise ConfigError(f"{source or 'server configuration'}: METRICS_TOKEN must be a string of at least "
                          f"{MIN_TOKEN_LENGTH} characters; make one with: "
                          "python -c 'import secrets; print(secrets.token_urlsafe())'")
    return value.strip()


def _host_names(value, source: str) -> tuple[str, ...]:
    """TRUSTED_HOSTS: a list or a comma-separated string of host names (no scheme, port or wildcard), lowercase."""
    if value in (None, ""):
        return ()
    parts = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else None
    names = tuple(str(part).strip().lower().rstrip(".") for part in parts or () if str(part).strip())
    if parts is None or not all(re.fullmatch(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?", name) for name in names):
        raise ConfigError(f"{source or 'server configuration'}: TRUSTED_HOSTS lists the names this server is "
                          "reached by, as a list or a comma-separated string of host names without scheme, port or "
                          f"wildcard, e.g. \"timl.example.org\". Received: TRUSTED_HOSTS={value!r}")
    return names


def _bounded(values: dict, key: str, kind, low, high, source: str):
    """``values[key]`` (else the sample's default) as ``kind`` within [low, high]."""
    value = values.get(key, SAMPLE[key])
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or not low <= number <= high:
        raise ConfigError(f"{source or 'server configuration'}: {key} must be a number between {low} and {high}. "
                          f"Received: {key}={value!r}")
    return number


def _prefix(value) -> str:
    text = "/" + str(value or "").strip().strip("/")
    return "" if text == "/" else text


def sample_text() -> str:
    return f"A sample {FILE_NAME}:\n" + json.dumps(SAMPLE, indent=2)


def find_config(path: str | Path | None = None) -> Path:
    """Finds the configuration file.

    Args:
        path: the file to use; when None, ``$TIML_SERVER_CONFIG``, else the first that exists of
            ``./timl_server_config.json``, ``~/.timl/timl_server_config.json`` and ``~/timl_server_config.json``.

    Returns:
        The configuration file.

    Raises:
        ConfigError: none found; the message prints a sample configuration, as the original TIML did.
    """
    candidates = [Path(path)] if path else []
    if not path and os.environ.get("TIML_SERVER_CONFIG"):
        candidates.append(Path(os.environ["TIML_SERVER_CONFIG"]))
    if not candidates:
        candidates = [Path.cwd() / FILE_NAME, Path.home() / ".timl" / FILE_NAME, Path.home() / FILE_NAME]
    candidates = list(dict.fromkeys(candidates))  # the home folder may be the working directory
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"No server configuration found (looked for {', '.join(str(c) for c in candidates)}). "
                      f"Create one.\n{sample_text()}")


def load_config(path: str | Path | None = None) -> ServerConfig:
    """Reads and validates the server configuration (see :func:`find_config` for where it is looked up)."""
    found = find_config(path)
    try:
        values = json.loads(found.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"{found}: not a readable JSON configuration ({error}).\n{sample_text()}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{found}: the configuration must be a JSON object.\n{sample_text()}")
    return ServerConfig.from_mapping(values, found.resolve().parent, str(found))


#: The tables beside a .h5 model without a sidecar that say how it was trained, in the order they are looked for:
#: TIML's, then the original TIML's output folder (its results table names the row's model file).
CONFIG_TABLES = ("config_table.csv", "automation_result.csv", "automation_input.csv")


def load_server_classifier(config: ServerConfig):
    """The configured model (CLASSIFICATION_MODEL: a .h5/.keras file or an MLflow model URI) as a Classifier."""
    from timl import tracking
    from timl.classifier import METADATA_SUFFIX, load_classifier

    model = config.model
    if model.lower().endswith((".h5", ".keras")):
        has_sidecar = Path(model + METADATA_SUFFIX).is_file()
        tables = [Path(model).parent / name for name in CONFIG_TABLES]
        table = next((path for path in tables if path.is_file()), None)
        return load_classifier(keras_model=model, config_table=table if not has_sidecar else None)
    tracking.configure(config.tracking_uri or None, create=False)
    return load_classifier(model_uri=model)


def model_problem(config: ServerConfig) -> str | None:
    """Why the configured model (CLASSIFICATION_MODEL) cannot be loaded, found without loading it: a file that does
    not exist, a URI whose tracking store, registered version or run is not there; None when it is found.

    The message names server paths: it is for the operator (the server's log, ``timl.serve``'s refusal), not for
    clients."""
    from timl import tracking
    from timl.errors import TimlError

    model, where = config.model, f"CLASSIFICATION_MODEL in {config.source or 'the server configuration'}"
    if model.lower().endswith((".h5", ".keras")):
        if Path(model).is_file():
            return None
        return f"{where} is {model}, which is not a file. Point it at a .h5/.keras file or an MLflow model URI."
    try:
        tracking.configure(config.tracking_uri or None, create=False)
        tracking.check_model_uri(model)
    except (TimlError, *tracking.tracking_errors()) as error:
        return f"{where} is {model}, which cannot be loaded: {error}"
    return None
