"""The TIML server configuration: ``timl_server_config.json``, with the original TIML keys.

Looked up as ``--config PATH``, else ``$TIML_SERVER_CONFIG``, else ``./timl_server_config.json``, else
``~/.timl/timl_server_config.json`` (where the original TIML looked first), else ``~/timl_server_config.json``.
Each key has a ``KEY_description`` companion, as in the original. Relative paths resolve against the
configuration file's folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from timl.errors import ConfigError
from timl.images import DEFAULT_MAX_PIXELS

FILE_NAME = "timl_server_config.json"

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
    "MAX_IMAGE_PIXELS": DEFAULT_MAX_PIXELS,
    "MAX_IMAGE_PIXELS_description": "Largest accepted image in pixels (decompression bombs are refused).",
    "EVALUATION_IMAGES_DIR": "",
    "EVALUATION_IMAGES_DIR_description": "Folder of the images experts review on evaluate.html.",
    "EVALUATION_DB": "timl_evaluations.db",
    "EVALUATION_DB_description": "SQLite file where evaluate.html stores the experts' answers.",
    "TRACKING_URI": "",
    "TRACKING_URI_description": "MLflow tracking URI for models:/ and runs:/ URIs (default: MLFLOW_TRACKING_URI "
                                "or sqlite:///mlflow.db).",
}


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """The server's settings (see ``SAMPLE`` for what each means)."""

    model: str
    rest_prefix: str = "/api"
    static_dir: str = ""
    static_prefix: str = "/static"
    max_upload_mb: float = 10
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    evaluation_images_dir: str = ""
    evaluation_db: str = "timl_evaluations.db"
    tracking_uri: str = ""
    source: str = ""

    def as_mapping(self) -> dict:
        """The configuration under its original keys (what the evaluation blueprint reads)."""
        return {"CLASSIFICATION_MODEL": self.model, "REST_API_URL_PREFIX": self.rest_prefix,
                "STATIC_PAGES_DIR": self.static_dir, "STATIC_PAGES_URL_PREFIX": self.static_prefix,
                "MAX_UPLOAD_MB": self.max_upload_mb, "MAX_IMAGE_PIXELS": self.max_image_pixels,
                "EVALUATION_IMAGES_DIR": self.evaluation_images_dir, "EVALUATION_DB": self.evaluation_db,
                "TRACKING_URI": self.tracking_uri}

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
                       max_image_pixels=int(values.get("MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS)),
                       evaluation_images_dir=path(str(values.get("EVALUATION_IMAGES_DIR") or "")),
                       evaluation_db=path(str(values.get("EVALUATION_DB") or "timl_evaluations.db")),
                       tracking_uri=str(values.get("TRACKING_URI") or ""), source=source)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{source or 'server configuration'}: a value has the wrong type ({error}).") from error


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
