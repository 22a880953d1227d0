"""What a trained row leaves behind: its files in the output folder and its record in the row's MLflow run.

In order: the Keras file and its metadata sidecar, the dev and test reports (their plots drawn by the plot
process meanwhile), the model summary and history, the run's tags, the pyfunc model (:func:`timl.pyfunc.log_model`),
then the final metrics, linked to the logged model: the ``train/``, ``dev/`` and ``test/`` summaries and their
``train_class/``, ``dev_class/`` and ``test_class/`` per-class scores (``dev_class/acc_MEL``), named by
:mod:`timl.metric_names`, whose results table reads them back into the original columns (``valacc``).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np

from timl import plots, tracking, workers
from timl.datasets import IMAGE_COLUMN
from timl import metric_names as names
from timl.evaluation import split_metrics

#: The splits a row reports on.
REPORTED_SPLITS = (names.DEV, names.TEST)

#: The MLflow context of each split's dataset input.
DATASET_CONTEXTS = {"train": "training", "dev": "validation", "test": "testing"}

#: Tag values are cut to this length (MLflow's limit is 8000 characters).
MAX_TAG_LENGTH = 5000


def log_datasets(data) -> None:
    """Logs the row's train, dev and test sets as MLflow dataset inputs: their image names and labels (the digest
    tells whether two rows used the same data), the ground-truth CSV(s) as source (``a.csv+b.csv`` for a union).

    A split read from a CSV exported from expert answers (``timl.review export``, its record beside the CSV) is
    also named by the export: tags ``timl.dataset.<split>.source_run`` (the export's run),
    ``timl.dataset.<split>.source`` (the CSV it logged) and ``timl.dataset.<split>.reviewers``.
    """
    from timl.datasets import SPLITS, UNION_SEPARATOR

    dataset = data.dataset
    inputs, tags = [], {}
    for split in SPLITS:
        if not dataset.sizes().get(split):
            continue
        files = dataset.files[split]
        frame = dataset.frame(split)[[IMAGE_COLUMN, *dataset.class_names]]
        inputs.append(tracking.dataset_input(
            frame, source=UNION_SEPARATOR.join(str(path.resolve()) for path in files),
            name=f"{UNION_SEPARATOR.join(path.stem for path in files)}-{split}", context=DATASET_CONTEXTS[split]))
        tags.update({template.format(split=split): value for template, value in export_lineage(files).items()})
    tracking.log_datasets(tracking.active_run_id(), inputs)
    if tags:
        tracking.set_tags(tags)


def export_lineage(files) -> dict[str, str]:
    """Where CSVs exported from expert answers came from, as the templates of ``tracking.TAG_DATASET_*``: the
    export runs, their CSV artifacts (or the review store, for an export without a run) and the reviewers.

    Args:
        files: the CSV file(s) of one split.

    Returns:
        Tag template -> value; empty when no file has an export record.
    """
    from timl.datasets import read_provenance

    records = [record for record in map(read_provenance, files) if record]
    if not records:
        return {}
    sources = [record.get("artifact_uri") or f"reviews in {record.get('database')}" for record in records]
    reviewers = dict.fromkeys(str(name) for record in records for name in record.get("reviewers", []))
    runs = [str(record["run_id"]) for record in records if record.get("run_id")]
    lineage = {tracking.TAG_DATASET_SOURCE: ", ".join(sources), tracking.TAG_DATASET_REVIEWERS: ", ".join(reviewers),
               **({tracking.TAG_DATASET_SOURCE_RUN: ", ".join(runs)} if runs else {})}
    return {template: value[:MAX_TAG_LENGTH] for template, value in lineage.items()}


def log_params(config, spec, data) -> None:
    """Logs the row's cells and what they resolved to (classes, learning rate, weights, ...) as run params, and
    its datasets."""
    tracking.log_params({**config.input_cells(), "class_names": json.dumps(list(data.dataset.class_names)),
                         "num_classes": len(data.dataset.class_names), "multi_label": spec.multi_label,
                         "augmult": data.augmentation.multiplier, "dataset_source": data.dataset.source,
                         "img_dir": str(data.dataset.img_dir), "lr_used": config.lr or spec.lr,
                         "weights_used": spec.default_weights if config.weights == "default" else config.weights,
                         "quality_metric": spec.quality_metric})
    log_datasets(data)


def record_row(config, spec, data, trained, out_dir: Path, *, skip_roc: bool, reports: workers.Worker) -> dict:
    """Writes the row's files, logs them, the model and the final metrics; returns the headline metrics."""
    keras_path, metadata_path, classifier = _save_model(config, spec, data, trained, out_dir)
    reports_by_split = _start_reports(config, data, classifier, out_dir, skip_roc, reports, trained.predictions)
    # Meanwhile the plot process draws the reports' plots
    files = [keras_path, metadata_path] + _write_history(config, trained, out_dir)
    tracking.set_tags({tracking.TAG_TRAINSTART: trained.started, tracking.TAG_TRAINMODEL: keras_path.name,
                       tracking.TAG_MODEL_SHA256: json.loads(metadata_path.read_text())["sha256"]})
    # The model is logged before the final metrics, which are then linked to it: MLflow links a new model to
    # the run's metrics of its step by reading the history of every metric, one query each.
    from timl import pyfunc

    model_info = pyfunc.log_model(keras_path, metadata_path, classifier, step=config.epochs)
    metrics = _train_metrics(data, trained)
    for split, report in reports_by_split.items():
        files += report.finish()
        metrics.update(split_metrics(report.summary, split))
    tracking.log_artifacts(files)
    tracking.log_metrics(metrics, step=config.epochs, model_id=model_info.model_id)
    return {name: metrics.get(name) for name in names.HEADLINE if name in metrics}


def _save_model(config, spec, data, trained, out_dir: Path):
    """Saves ``N-keras_model-YYMMDD-hhmmss.h5`` and its metadata sidecar; returns both paths and the classifier."""
    from timl.classifier import Classifier, write_metadata

    stamp = datetime.datetime.now().strftime("%y%m%d-%H%M%S")
    keras_path = out_dir / f"{config.row}-keras_model-{stamp}.h5"
    trained.model.save(keras_path)
    classifier = Classifier(trained.model, data.preprocessing, data.dataset.class_names, spec.multi_label)
    metadata_path = write_metadata(keras_path, {**classifier.metadata(), "method": spec.name,
                                                "run_id": tracking.active_run_id()})
    return keras_path, metadata_path, classifier


def _start_reports(config, data, classifier, out_dir: Path, skip_roc: bool, reports: workers.Worker,
                   predictions: dict) -> dict:
    """Predicts dev and test (unless the fit already did: a head on cached activations) and starts their
    reports; returns split -> report."""
    started = {}
    for split in REPORTED_SPLITS:
        if data.dataset.sizes().get(split):
            labels = data.dataset.labels(split)
            probabilities = predictions.get(split)
            if probabilities is None:
                probabilities = classifier.predict_arrays(data.arrays[split], config.batchsize)
            started[split] = _report_split(reports, out_dir, f"{config.row}-{split}-", data.dataset, split,
                                           labels, probabilities, skip_roc)
    return started


def _write_history(config, trained, out_dir: Path) -> list[Path]:
    """``N-model_summary.txt``, ``N-history.csv`` and the loss/accuracy plots."""
    from timl import models

    prefix = f"{config.row}-"
    summary_path = out_dir / f"{prefix}model_summary.txt"
    summary_path.write_text(models.describe_model(trained.model))
    history_path = out_dir / f"{prefix}history.csv"
    trained.history.to_csv(history_path, index=False)
    return [summary_path, history_path] + plots.plot_history(trained.history, out_dir, prefix=prefix)


def _train_metrics(data, trained) -> dict:
    """The train group: size, training time, best epoch, accuracy at the best epoch; and the train class
    proportions (the dev and test sizes and proportions come with their summaries)."""
    metrics = {names.TRAIN_SAMPLES: data.dataset.sizes()["train"], names.TRAIN_SECONDS: trained.seconds,
               names.TRAIN_BEST_EPOCH: trained.best_epoch,
               names.TRAIN_ACCURACY: _history_value(trained.history, names.epoch_series("accuracy"),
                                                    trained.best_epoch)}
    labels = data.dataset.labels("train")
    share = labels.mean(axis=0) if len(labels) else np.zeros(len(data.dataset.class_names))
    metrics.update({names.per_class_metric_name(names.class_group(names.TRAIN), "prop", name): float(value)
                    for name, value in zip(data.dataset.class_names, share)})
    return metrics


def _history_value(history, column: str, epoch: int):
    if column not in history:
        return None
    values = history.loc[history["epoch"] == epoch, column]
    return float(values.iloc[0]) if len(values) else None


def _report_split(reports: workers.Worker, out_dir: Path, prefix: str, dataset, split: str, labels,
                  probabilities, skip_roc: bool):
    """Evaluates one split with the inspect code: summary, per-image results, confusion matrix, ROC plots
    (the plots drawn by the plot process); returns an :class:`timl.evaluation.Report`."""
    from timl import evaluation

    names = list(dataset.frame(split)[IMAGE_COLUMN])
    options = {"multi_label": dataset.multi_label}
    if skip_roc:
        result = evaluation.evaluate(labels, probabilities, dataset.class_names, **options)
        path = out_dir / f"{prefix}per_image_results.csv"
        evaluation.per_image_results(names, labels, probabilities, dataset.class_names, **options).to_csv(
            path, index=False)
        return evaluation.Report(result, [path], [])
    return evaluation.start_report(out_dir, names, labels, probabilities, list(dataset.class_names),
                                   prefix=prefix, worker=reports, **options)
