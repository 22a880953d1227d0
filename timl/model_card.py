"""A registered version's model card: what the model is for, what it was trained and tested on, how well it did
(with intervals), what was not evaluated, and what produced it (:func:`model_card`, :func:`card_markdown`).

``python -m timl.register`` (and ``train --register``) writes it as ``model_card.json`` and ``model_card.md``,
artifacts of the version's run under ``model_card/<name>/v<version>/``; the REST server answers it at
``GET <rest>/model_card``. The card is read from the run's record only (params, metrics, tags, dataset inputs):
what the record does not hold is listed under "not evaluated", never invented.
"""

from __future__ import annotations

import datetime
import json
import platform
import re

from timl import __version__
from timl import metric_names as names

#: The file names of a card.
CARD_JSON, CARD_MARKDOWN = "model_card.json", "model_card.md"

#: The packages whose versions a card names (read from their installed metadata: nothing is imported).
SOFTWARE = ("keras", "tensorflow", "tensorflow-cpu", "mlflow", "numpy", "scikit-learn")

#: The metric group of results by subgroup (``test_group/<column>/<value>/...``, ``test_group/gap/...``).
SUBGROUP_GROUP = names.subgroup_group(names.TEST)

#: The folders of each file of a dataset's source (``/data/a.csv+/data/b.csv`` keeps ``a.csv+b.csv``).
_FOLDERS = re.compile(r"[^+]*[/\\]")

INTENDED_USE = ("Research and decision support: the model sorts images into the classes below to help a trained "
                "reader prioritise and double-check. It supports and does not make a diagnosis; a qualified "
                "clinician makes every decision, with the patient's history and examination.")
ALWAYS_NOT_EVALUATED = (
    "images from other devices, clinics or populations than the test set's (no external validation recorded)",
    "prospective use in a clinic, and the effect of the model on readers' decisions",
    "faithfulness of the explanations (heatmaps) on the test set",
)


def model_card(run, *, name: str, version: str, sha256: str | None, registered: str | None = None) -> dict:
    """The card of registered version ``name``/``version`` of ``run``'s model, as JSON-ready data.

    Args:
        run: the MLflow run (entity) that logged the model.
        name, version: the registered model and version.
        sha256: the model file's sha256 (version tag ``timl.model_sha256``), or None.
        registered: the ISO day of registration. Defaults to None (today).
    """
    params, metrics = run.data.params, run.data.metrics
    classes = json.loads(params["class_names"]) if params.get("class_names") else []
    scores = _scores(metrics, names.summary_group(names.TEST), exclude=names.CALIBRATION_SCORES)
    card = {
        "model": {"name": name, "version": str(version), "run_id": run.info.run_id, "method": params.get("method"),
                  "registered": registered or datetime.date.today().isoformat(), "model_sha256": sha256},
        "intended_use": INTENDED_USE,
        "classes": classes,
        "multi_label": params.get("multi_label") == "True",
        "training_data": _training_data(run, classes),
        "test_scores": scores,
        "test_scores_per_class": _scores(metrics, names.class_group(names.TEST)),
        "calibration": {**_scores(metrics, names.summary_group(names.TEST), only=names.CALIBRATION_SCORES),
                        **_scores(metrics, names.CALIBRATION_GROUP)},  # and the temperature of a calibrated row
        "subgroups": {**_scores(metrics, SUBGROUP_GROUP), **_inspection_subgroups(metrics)},
        "software": _software(run),
    }
    card["not_evaluated"] = _not_evaluated(card)
    return card


def _inspection_subgroups(metrics: dict) -> dict:
    """The subgroup scores of inspections logged on the model's run (``inspect --subgroups``), each named with
    its inspection: ``inspect_isic_group/sex/female/balanced_accuracy``."""
    return {f"{group}{short}": score for group in names.inspection_subgroup_groups(metrics)
            for short, score in _scores(metrics, group).items()}


def _scores(metrics: dict, group: str, *, only=(), exclude=()) -> dict:
    """``{short name: {"value", "ci_low", "ci_high"}}`` of the metrics in ``group`` (the bounds when logged)."""
    scores = {}
    for metric in sorted(metrics):
        short = metric[len(group):]
        if (not metric.startswith(group) or names.is_interval(metric) or (only and not short.startswith(only))
                or (exclude and short.startswith(exclude))):
            continue
        scores[short] = {"value": metrics[metric]}
        scores[short].update({bound: metrics[names.interval_name(metric, bound)] for bound in names.INTERVAL_BOUNDS
                              if names.interval_name(metric, bound) in metrics})
    return scores


def _training_data(run, classes: list[str]) -> dict:
    """The ground truth, split, groups, the logged datasets (with digests) and each split's class counts."""
    from timl import tracking

    params, metrics = run.data.params, run.data.metrics
    datasets = [{"name": item.dataset.name, "digest": item.dataset.digest, "source": _source(item.dataset),
                 "context": next((tag.value for tag in item.tags if tag.key == "mlflow.data.context"), None)}
                for item in (run.inputs.dataset_inputs if run.inputs else ())]
    counts = {}
    for split in (names.TRAIN, names.DEV, names.TEST):
        size = metrics.get(names.split_metric(split, "samples"))
        proportions = [metrics.get(names.per_class_metric_name(names.class_group(split), "prop", name))
                       for name in classes]
        if size is not None:
            counts[split] = {"images": int(size), **{name: round(size * proportion) for name, proportion
                                                      in zip(classes, proportions) if proportion is not None}}
    groups = {key.removeprefix("num_"): int(value) for key, value in params.items()
              if key.startswith("num_groups_") or key == "num_ungrouped_images"}
    return {"dataset": params.get("dataset"), "split": params.get("split"),
            "groups": run.data.tags.get(tracking.TAG_SPLIT_GROUPED), "group_counts": groups,
            "datasets": datasets, "class_counts": counts}


def _source(dataset) -> str | None:
    """The file name(s) a logged dataset was read from, without their folders (the card is served: it names no
    path of the machine that trained); MLflow keeps the source as JSON."""
    try:
        source = json.loads(dataset.source).get("uri") or dataset.source
    except (TypeError, ValueError, AttributeError):
        source = dataset.source
    return _FOLDERS.sub("", str(source)) if source else None


def _software(run) -> dict:
    """The TIML that trained the model (run tag) and the versions at registration."""
    from importlib import metadata

    software = {"timl_at_training": run.data.tags.get("timl.version"), "timl": __version__,
                "python": platform.python_version()}
    for package in SOFTWARE:
        try:
            software[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return software


def _not_evaluated(card: dict) -> list[str]:
    """What the record does not show, beside what a test set never shows (:data:`ALWAYS_NOT_EVALUATED`)."""
    missing = []
    if not card["test_scores"]:
        missing.append("a held-out test set (the run logged no test scores)")
    elif not any("ci_low" in score for score in card["test_scores"].values()):
        missing.append("intervals of the test scores (trained with --bootstrap 0)")
    if not card["calibration"]:
        missing.append("calibration of the probabilities (no test ECE, Brier score or NLL logged)")
    if not card["subgroups"]:
        missing.append("results by patient subgroup (sex, age, anatomical site): no inspection with subgroups logged")
    return missing + list(ALWAYS_NOT_EVALUATED)


def card_markdown(card: dict) -> str:
    """The card as Markdown: the same facts as the JSON, for a person."""
    model, data = card["model"], card["training_data"]
    lines = [f"# Model card: {model['name']} v{model['version']}", "",
             f"Method {model['method'] or '?'}, run `{model['run_id']}`, registered {model['registered']}, "
             f"model file sha256 `{model['model_sha256'] or 'not pinned'}`.", "",
             "## Intended use", "", card["intended_use"], "",
             "## Classes", "", ", ".join(card["classes"]) + (" (multi-label)" if card["multi_label"] else ""), "",
             "## Training data", "",
             f"Ground truth {data['dataset'] or '?'}, split `{data['split'] or '?'}`"
             + (f", groups kept whole by `{data['groups']}`" if data["groups"] else ", no patient groups") + ".", ""]
    lines += [f"- {item['context']}: {item['name']} (digest `{item['digest']}`, {item['source']})"
              for item in data["datasets"]]
    if data["class_counts"]:
        classes = card["classes"]
        lines += ["", "| split | images | " + " | ".join(classes) + " |", "|---" * (len(classes) + 2) + "|"]
        lines += [f"| {split} | {counts['images']} | " + " | ".join(str(counts.get(name, "")) for name in classes)
                  + " |" for split, counts in data["class_counts"].items()]
    for title, key in (("Test scores", "test_scores"), ("Calibration", "calibration"), ("Subgroups", "subgroups")):
        lines += ["", f"## {title}", ""] + (_score_table(card[key]) if card[key] else ["Not measured."])
        if key == "test_scores" and card["test_scores_per_class"]:
            lines += ["", "Per class (95% interval):", ""] + _class_table(card)
    lines += ["", "## Not evaluated", ""] + [f"- {item}" for item in card["not_evaluated"]]
    lines += ["", "## Software", "", ", ".join(f"{package} {version}" for package, version in card["software"].items()
                                               if version)]
    return "\n".join(lines) + "\n"


def _score_table(scores: dict) -> list[str]:
    """A Markdown table of scores with their 95% intervals where logged."""
    rows = ["| score | value | 95% interval |", "|---|---|---|"]
    for short, score in scores.items():
        interval = f"{score['ci_low']:.3f} to {score['ci_high']:.3f}" if "ci_low" in score and "ci_high" in score else ""
        rows.append(f"| {short} | {score['value']:.4g} | {interval} |")
    return rows


def _class_table(card: dict) -> list[str]:
    """Per class sensitivity, specificity and AUC with their intervals (all per-class scores are in the JSON)."""
    shorts = [names.PER_CLASS_METRICS[key] for key in names.INTERVAL_PER_CLASS]
    rows = ["| class | " + " | ".join(shorts) + " |", "|---" * (len(shorts) + 1) + "|"]
    for class_name in card["classes"]:
        cells = []
        for short in shorts:
            score = card["test_scores_per_class"].get(f"{short}_{names.sanitize_metric_name(class_name)}")
            cells.append("" if score is None else f"{score['value']:.3f}" + (
                f" ({score['ci_low']:.3f} to {score['ci_high']:.3f})" if "ci_low" in score else ""))
        rows.append(f"| {class_name} | " + " | ".join(cells) + " |")
    return rows
