"""Where a ground-truth CSV came from: the JSON sidecar ``<csv>.json`` that ``timl.review export`` writes.

An exported CSV is a dataset like any other; its sidecar records the review store it came from, the images,
the model(s) the experts reviewed, the reviewers, the rules and the MLflow run of the export. Training reads it
back (:func:`read_provenance`) to name a row's data source on the row's run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

#: The ``kind`` of a sidecar written by ``timl.review export``.
REVIEW_EXPORT_KIND = "timl.review-export"


def provenance_path(csv_path: str | Path) -> Path:
    """The sidecar of a CSV: ``corrected.csv`` -> ``corrected.csv.json``."""
    return Path(f"{csv_path}.json")


def write_provenance(csv_path: str | Path, record: dict) -> Path:
    """Writes the sidecar of ``csv_path`` (``kind`` set to :data:`REVIEW_EXPORT_KIND`); returns its path."""
    path = provenance_path(csv_path)
    path.write_text(json.dumps({"kind": REVIEW_EXPORT_KIND, **record}, indent=2, default=str) + "\n",
                    encoding="utf-8")
    return path


def read_provenance(csv_path: str | Path) -> dict | None:
    """The export record of a CSV, or None when it has no sidecar written by ``timl.review export``.

    Most ground-truth CSVs have none; a sidecar of another kind is not an export record, and an unreadable one
    is reported as a warning (the data itself is unaffected).
    """
    path = provenance_path(csv_path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        logger.warning("%s: not a readable export record, the data source is not named (%s)", path, error)
        return None
    if not isinstance(record, dict) or record.get("kind") != REVIEW_EXPORT_KIND:
        return None
    return record
