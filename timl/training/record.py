"""What a trained row leaves behind (the last stage of a row's flow): its files in the output folder and its
record in the row's MLflow run.

In order: the Keras file and its metadata sidecar, the model summary and history, the run's tags, the pyfunc
model (:func:`timl.pyfunc.log_model`), the dev and test reports (their plots, started by
:mod:`timl.training.evaluate`, drawn by the plot process meanwhile), then the final metrics, linked to the logged
model: the ``train/``, ``dev/`` and ``test/`` summaries and their ``train_class/``, ``dev_class/`` and
``test_class/`` per-class scores (``dev_class/acc_MEL``), named by :mod:`timl.metric_names`, whose results table
reads them back into the original columns (``valacc``), and with a ``subgroups`` cell the test set's
``test_group/`` scores by subgroup.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from timl import metric_names as names
from timl import plots, tracking
from timl.config import RunConfig
from timl.evaluation import split_metrics
from timl.subgroups import subgroup_metrics
from timl.training.data import RowData
from timl.training.evaluate import RowEvaluation
from timl.training.loop import Trained
from timl.training.plan import RowPlan

if TYPE_CHECKING:
    from timl.classifier import Classifier


def record_row(plan: RowPlan, data: RowData, trained: Trained, evaluation: RowEvaluation, out_dir: Path) -> dict:
    """Writes the row's files, logs them, the model and the final metrics; returns the headline metrics.

    The reports' plots are being drawn meanwhile (:func:`timl.training.evaluate.start_evaluation`); they are
    waited for after the model is logged."""
    config = plan.config
    keras_path, metadata_path = _save_model(plan, trained, evaluation.classifier, out_dir)
    files = [keras_path, metadata_path] + _write_history(config, trained, out_dir)
    tracking.set_tags({tracking.TAG_TRAINSTART: trained.started, tracking.TAG_TRAINMODEL: keras_path.name,
                       tracking.TAG_MODEL_SHA256: json.loads(metadata_path.read_text())["sha256"]})
    # The model is logged before the final metrics, which are then linked to it: MLflow links a new model to
    # the run's metrics of its step by reading the history of every metric, one query each.
    from timl import pyfunc

    model_info = pyfunc.log_model(keras_path, metadata_path, evaluation.classifier, step=config.epochs)
    metrics = {**_train_metrics(data, trained), **trained.metrics}
    for split, report in evaluation.reports.items():
        files += report.finish()
        metrics.update(split_metrics(report.summary, split))
    if evaluation.subgroups is not None:
        files += evaluation.subgroup_files
        metrics.update(subgroup_metrics(evaluation.subgroups, names.TEST))
    tracking.log_artifacts(files)
    tracking.log_metrics(metrics, step=config.epochs, model_id=model_info.model_id)
    return {name: metrics.get(name) for name in names.HEADLINE if name in metrics}


def _save_model(plan: RowPlan, trained: Trained, classifier: Classifier, out_dir: Path) -> tuple[Path, Path]:
    """Saves ``N-keras_model-YYMMDD-hhmmss.h5`` and its metadata sidecar; returns both paths."""
    from timl.classifier import write_metadata

    stamp = datetime.datetime.now().strftime("%y%m%d-%H%M%S")
    keras_path = out_dir / f"{plan.config.file_stem}-keras_model-{stamp}.h5"
    try:
        trained.model.save(keras_path)
    except BaseException:  # a full disk, an interrupt: no half-written model file is left to be mistaken for one
        keras_path.unlink(missing_ok=True)
        raise
    metadata_path = write_metadata(keras_path, {**classifier.metadata(), "method": plan.spec.name,
                                                "run_id": tracking.active_run_id()})
    return keras_path, metadata_path


def _write_history(config: RunConfig, trained: Trained, out_dir: Path) -> list[Path]:
    """``N-model_summary.txt``, ``N-history.csv`` and the loss/accuracy plots."""
    from timl import models

    prefix = f"{config.file_stem}-"
    summary_path = out_dir / f"{prefix}model_summary.txt"
    summary_path.write_text(models.describe_model(trained.model))
    history_path = out_dir / f"{prefix}history.csv"
    trained.history.to_csv(history_path, index=False)
    return [summary_path, history_path] + plots.plot_history(trained.history, out_dir, prefix=prefix)


def _train_metrics(data: RowData, trained: Trained) -> dict:
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
