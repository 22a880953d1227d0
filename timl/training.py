"""Training: every row of a table becomes an MLflow child run of the table's parent run.

``train_table`` validates the whole table first, then trains row by row. A failed row ends FAILED with its
error and the others go on; Ctrl-C or SIGTERM ends the current row KILLED; ``resume`` skips rows whose run
FINISHED and closes runs left RUNNING by a killed process. The results table is rebuilt from the tracking
store after every row, so nothing finished is lost.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import json
import logging
import math
import shutil
import signal
import time
import zipfile
from pathlib import Path

import numpy as np

from timl import __version__, config as config_module, plots, tracking, workers
from timl.errors import ConfigError, TimlError

logger = logging.getLogger(__name__)


class TrainingError(TimlError, RuntimeError):
    """Training of a row went wrong (NaN loss, no usable images)."""


@dataclasses.dataclass
class RowOutcome:
    """How one row ended."""

    row: int
    name: str
    status: str
    run_id: str | None = None
    message: str = ""
    seconds: float = 0.0


@dataclasses.dataclass
class TableOutcome:
    """How a table ended: the parent run, the output folder, the rows, and the results table."""

    parent_run_id: str
    out_dir: Path
    rows: list[RowOutcome]
    results_path: Path
    registered: str | None = None

    @property
    def failed(self) -> list[RowOutcome]:
        return [row for row in self.rows if row.status != "FINISHED"]


def default_out_dir() -> Path:
    return Path(datetime.datetime.now().strftime("train_output-%Y%m%d-%H%M%S"))


def _find_resume_run(out_dir: Path | None, experiment: str, table_path: Path) -> tuple[str | None, Path | None]:
    """Finds the parent run to resume: from the out-dir marker, else the newest run of the same table."""
    if out_dir is not None and (out_dir / tracking.PARENT_MARKER).is_file():
        return (out_dir / tracking.PARENT_MARKER).read_text().strip(), out_dir
    for run in tracking.table_runs(experiment):
        if run.data.tags.get(tracking.TAG_TABLE) == str(table_path.resolve()):
            return run.info.run_id, Path(run.data.tags.get(tracking.TAG_OUT_DIR, str(out_dir or default_out_dir())))
    return None, out_dir


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt so the current row ends KILLED."""


def _raise_terminated(signum, frame):
    raise _Terminated(f"terminated by signal {signum}")


#: What the plot process imports as it starts (see :mod:`timl.workers`).
REPORT_MODULES = ("timl.plots", "matplotlib.figure", "matplotlib.backends.backend_agg", "PIL.PngImagePlugin")


def train_table(input_table: str | Path, *, img_dir: str | Path | None = None, out_dir: str | Path | None = None,
                experiment: str | None = None, tracking_uri: str | None = None, rows: str | None = None,
                resume: bool = False, skip_roc: bool = False, register: str | None = None,
                select_by: str = "val_balanced_accuracy") -> TableOutcome:
    """Trains every selected row of a table; each row is an MLflow run under one parent run.

    Args:
        input_table: the training table (CSV).
        img_dir: the image folder for every row (default: ``images/`` beside each dataset CSV).
        out_dir: the output folder (default ``train_output-YYYYMMDD-hhmmss``).
        experiment: MLflow experiment (default: the table's file name without extension).
        tracking_uri: MLflow tracking URI (default: MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db``).
        rows: a selection such as ``0,2-4`` (default: every row).
        resume: reuse the parent run of the same out-dir (or of the newest run of the same table) and skip
            rows whose run FINISHED.
        skip_roc: do not draw ROC plots.
        register: register the best row's model under this name, with alias ``champion``.
        select_by: the metric that picks the best row for ``register`` (higher is better).

    Returns:
        A TableOutcome; ``outcome.failed`` lists rows that did not finish.

    Raises:
        ConfigError, MissingFileError: a whole-table problem (unknown column, missing table, bad --rows).
    """
    table_path = Path(input_table)
    configs = config_module.read_table(table_path)
    selection = config_module.parse_row_selection(rows, len(configs))
    tracking.configure(tracking_uri)
    experiment = experiment or table_path.stem
    out_dir = Path(out_dir) if out_dir else None
    parent_id = None
    if resume:
        parent_id, out_dir = _find_resume_run(out_dir, experiment, table_path)
    out_dir = out_dir or default_out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    parent_id = tracking.start_table_run(experiment, str(table_path), out_dir, parent_id)
    (out_dir / tracking.PARENT_MARKER).write_text(parent_id + "\n")
    done = _finished_keys(parent_id) if resume else {}
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    outcomes: list[RowOutcome] = []
    started = time.time()
    # The plot process starts now: it imports matplotlib while the first row reads its images
    reports = workers.Worker(REPORT_MODULES, enabled=not skip_roc)
    reports.submit(plots.warm_up)
    try:
        for position, number in enumerate(selection):
            item = configs[number]
            outcome = _run_row(item, number, parent_id, out_dir, img_dir, skip_roc, done, reports,
                               release=position < len(selection) - 1)
            outcomes.append(outcome)
            _report(outcome, position, len(selection), started)
            _write_results(parent_id, out_dir, row=number)
    except BaseException as error:  # never leave the table run RUNNING
        _write_results(parent_id, out_dir)
        tracking.end_run(parent_id, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        reports.close()
        signal.signal(signal.SIGTERM, previous)
    results_path = _write_results(parent_id, out_dir)
    failed = any(outcome.status != "FINISHED" for outcome in outcomes)
    tracking.end_run(parent_id, "FAILED" if failed else "FINISHED")
    outcome = TableOutcome(parent_id, out_dir, outcomes, results_path)
    if register:
        from timl import registry

        outcome.registered = registry.register_best(parent_id, register, select_by=select_by)
    return outcome


def _finished_keys(parent_id: str) -> dict[str, str]:
    """Row keys of the parent's FINISHED children; closes children left RUNNING by a dead process."""
    children = tracking.child_runs(parent_id)
    tracking.close_dead_runs(children)
    return {run.data.tags.get(tracking.TAG_ROW_KEY): run.info.run_id for run in children
            if run.info.status == "FINISHED" and run.data.tags.get(tracking.TAG_ROW_KEY)}


def _run_row(item, number: int, parent_id: str, out_dir: Path, img_dir, skip_roc: bool,
             done: dict[str, str], reports: workers.Worker, release: bool = True) -> RowOutcome:
    if isinstance(item, ConfigError):
        return _record_invalid_row(item, number, parent_id)
    key = item.key(__version__)
    if key in done:
        return RowOutcome(number, item.run_name, "FINISHED", done[key], "skipped: already FINISHED")
    began = time.time()
    row_run = tracking.RowRun(parent_id, item.run_name, number, key)
    try:
        with row_run:
            summary = train_row(item, out_dir=out_dir, img_dir=img_dir, skip_roc=skip_roc, reports=reports)
    except KeyboardInterrupt:
        raise
    except Exception as error:  # a failed row never takes the table down
        logger.debug("row %d failed", number, exc_info=True)
        return RowOutcome(number, item.run_name, "FAILED", row_run.run_id, f"{type(error).__name__}: {error}",
                          time.time() - began)
    finally:
        if release:  # the Keras session is cleared between rows; after the last one the process ends anyway
            _release_memory()
    message = ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if v is not None)
    return RowOutcome(number, item.run_name, "FINISHED", row_run.run_id, message, time.time() - began)


def _record_invalid_row(error: ConfigError, number: int, parent_id: str) -> RowOutcome:
    """A row that failed validation still gets a FAILED run, so the results table shows it and why."""
    row_run = tracking.RowRun(parent_id, f"{number}-invalid", number, f"invalid-{number}-{time.time()}")
    try:
        with row_run:
            raise error
    except ConfigError:
        pass
    return RowOutcome(number, f"{number}-invalid", "FAILED", row_run.run_id, str(error))


def _report(outcome: RowOutcome, position: int, total: int, started: float) -> None:
    """Prints one line per row: its outcome and the table's ETA."""
    elapsed = time.time() - started
    remaining = total - position - 1
    eta = elapsed / (position + 1) * remaining
    print(f"[{position + 1}/{total}] row {outcome.name}: {outcome.status} in {outcome.seconds:.0f}s"
          f"{' - ' + outcome.message if outcome.message else ''}"
          f"{f' | ETA {datetime.timedelta(seconds=round(eta))}' if remaining else ''}", flush=True)


def _write_results(parent_id: str, out_dir: Path, row: int | None = None) -> Path:
    """Rebuilds automation_result.csv (and N-automation_result.csv for a row) from the tracking store."""
    from timl import results

    table = results.build_results_table(parent_run_id=parent_id)
    if row is not None:
        results.write_table(table.loc[table.index == row], out_dir / f"{row}-automation_result.csv")
    path = out_dir / "automation_result.csv"
    results.write_table(table, path)
    return path


def _quiet_libraries() -> None:
    """Silences library notices that are not the user's business (legacy-HDF5 and retracing warnings)."""
    import tensorflow as tf

    logging.getLogger("absl").setLevel(logging.ERROR)
    tf.get_logger().setLevel(logging.ERROR)


def _release_memory() -> None:
    """Clears the Keras session between rows so memory does not grow with the number of rows."""
    import keras

    keras.backend.clear_session()
    gc.collect()


# ---------------------------------------------------------------------------------------------------------
# One row


_IMAGE_CACHE: dict = {}


def _load_split_images(paths: list[str], preprocessing) -> np.ndarray:
    """Decodes and resizes a split once; the last few splits are kept for the next rows of the table."""
    from timl import images

    key = (tuple(paths), preprocessing)
    if key not in _IMAGE_CACHE:
        if len(_IMAGE_CACHE) >= 3:
            _IMAGE_CACHE.pop(next(iter(_IMAGE_CACHE)))
        _IMAGE_CACHE[key] = images.cache_images(paths, preprocessing)  # on disk beyond 2 GiB
    return _IMAGE_CACHE[key]


def _dataset_base_dir(config) -> Path:
    first = config.dataset.split(";")[0]
    candidate = f"{first}-train.csv" if config.split == "pre" else first
    return Path.cwd() if Path(candidate).exists() else (Path(config.table_path).parent if config.table_path
                                                         else Path.cwd())


def _sample_weights(labels: np.ndarray, weights: dict[int, float]) -> np.ndarray:
    table = np.array([weights[index] for index in range(labels.shape[1])], dtype=np.float32)
    positive = labels > 0.5
    weighted = np.where(positive, table[None, :], 0.0).max(axis=1)
    return np.where(positive.any(axis=1), weighted, 1.0).astype(np.float32)


def train_row(config, *, out_dir: Path, img_dir=None, skip_roc: bool = False,
              reports: workers.Worker | None = None) -> dict:
    """Trains one row inside the active MLflow run and logs everything; returns the summary metrics.

    Raises:
        DatasetError, ImageError, ModelError, TrainingError: the row cannot be trained (the caller marks the
        run FAILED and goes on with the next row).
    """
    from timl import datasets, images, models

    _quiet_libraries()
    spec = models.get_method(config.method)
    dataset = datasets.load_dataset(config.dataset, config.split, classcolumns=config.classcolumns,
                                    multi_label=spec.multi_label, img_dir=img_dir, seed=config.seed,
                                    base_dir=_dataset_base_dir(config))
    preprocessing = images.Preprocessing(config.imgsize, config.resizefilter, config.colorspace)
    augmentation = images.get_augmentation(config.imgaug)
    tracking.log_params({**config.input_cells(), "class_names": json.dumps(list(dataset.class_names)),
                         "num_classes": len(dataset.class_names), "multi_label": spec.multi_label,
                         "augmult": augmentation.multiplier, "dataset_source": dataset.source,
                         "img_dir": str(dataset.img_dir), "lr_used": config.lr or spec.lr,
                         "weights_used": spec.default_weights if config.weights == "default" else config.weights,
                         "quality_metric": spec.quality_metric})
    arrays = {split: _load_split_images(dataset.paths(split), preprocessing)
              for split in ("train", "dev", "test") if dataset.sizes().get(split)}
    trained = _fit(config, spec, dataset, arrays, augmentation, out_dir)
    return _evaluate_and_log(config, spec, dataset, arrays, trained, preprocessing, out_dir, skip_roc,
                             reports or workers.Worker(enabled=False))


@dataclasses.dataclass
class _Trained:
    model: object
    history: "object"  # pandas DataFrame
    best_epoch: int
    seconds: float
    started: str


def _fit(config, spec, dataset, arrays: dict, augmentation, out_dir: Path) -> _Trained:
    import keras

    from timl import images, models

    keras.utils.set_random_seed(config.seed)
    num_classes = len(dataset.class_names)
    model = models.create_model(spec, num_classes, config.imgsize, weights=_resolve_weights(config),
                                lr=config.lr, seed=config.seed)
    weights = dataset.class_weights(config.classweights) if config.classweights == "compute" else None
    train_labels = dataset.labels("train")
    sample_weights = _sample_weights(train_labels, weights) if weights else None
    train_data = images.make_dataset(arrays["train"], train_labels, batch_size=config.batchsize,
                                     augmentation=config.imgaug, shuffle=True, seed=config.seed,
                                     sample_weights=sample_weights)
    dev_data = images.make_dataset(arrays["dev"], dataset.labels("dev"), batch_size=config.batchsize)
    backup_dir = out_dir / ".backup" / str(config.row)
    checkpoint = _Checkpoint(backup_dir)
    first_epoch = checkpoint.restore(model)
    if first_epoch:
        tracking.set_tags({"timl.resumed_at_epoch": first_epoch})
    for logs in checkpoint.history:  # a resumed row's run holds every epoch's metrics, not only the last ones
        tracking.log_metrics({key: value for key, value in logs.items() if key != "epoch"}, step=logs["epoch"])
    best = _BestWeights(spec.quality_metric, backup_dir)
    callbacks = [checkpoint, best, _RaiseOnNaN(), tracking.epoch_logger()]
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    with tracking.timed() as timer:
        model.fit(train_data, validation_data=dev_data, epochs=config.epochs, initial_epoch=first_epoch,
                  callbacks=callbacks, shuffle=False, verbose=2)
    best.restore(model)
    shutil.rmtree(backup_dir, ignore_errors=True)
    import pandas as pd

    frame = pd.DataFrame(checkpoint.history)  # every epoch's logs, those before a resume included
    return _Trained(model, frame, best.best_epoch, timer["seconds"], started)


def _resolve_weights(config) -> str:
    if config.weights in ("default", "imagenet", "none"):
        return config.weights
    path = config.resolve_path(config.weights)
    if not path.is_file():
        raise ConfigError(f"{config.table_path}, row {config.row}: weights file not found. "
                          f"Received: weights={config.weights!r}")
    return str(path)


def _callback_base():
    import keras

    return keras.callbacks.Callback


class _RaiseOnNaN(_callback_base()):
    """Ends the row with a clear error when the loss becomes NaN or infinite (Keras' TerminateOnNaN only stops)."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingError(f"The loss became {float(loss)} at batch {batch}. Lower the learning rate "
                                "(column lr), check the images and labels, or use another method.")


def _write_npz(path: Path, arrays: dict) -> None:
    """Writes arrays aside, then renames: a kill mid-write never leaves half a file under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}-partial.npz")
    with partial.open("wb") as file:
        np.savez(file, **arrays)
    partial.replace(path)


class _Checkpoint(_callback_base()):
    """What resuming a row needs after each finished epoch: the model's and the optimizer's variables (random
    seed states and the optimizer's step count included) and every epoch's logs so far, in one file. A resumed
    row thus ends with the history of all its epochs, as if it had never stopped.

    Plain arrays written aside and renamed, a few ms an epoch; Keras' BackupAndRestore saves through
    ``save_weights``, which walks every layer (about 70 ms an epoch even for the small CNN of the demo).
    """

    def __init__(self, backup_dir: Path):
        super().__init__()
        self.path = Path(backup_dir) / "last.npz"
        self.history: list[dict] = []  # one row per epoch done: {"epoch": N, "loss": ..., "val_loss": ...}

    def restore(self, model) -> int:
        """Loads the last checkpoint into ``model`` (built and compiled) and :attr:`history`; returns the
        number of epochs done, 0 if there is no usable checkpoint."""
        if not self.path.is_file():
            return 0
        try:
            with np.load(self.path) as saved:
                epochs = int(saved["epochs"])
                history = json.loads(str(saved["history"]))
                model_values = [saved[f"model_{index}"] for index in range(int(saved["model_count"]))]
                optimizer_values = [saved[f"optimizer_{index}"] for index in range(int(saved["optimizer_count"]))]
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            if len(model_values) != len(model.variables) or len(optimizer_values) != len(model.optimizer.variables):
                raise ValueError("the checkpoint holds another model's variables")
            for variable, value in zip(model.variables + model.optimizer.variables, model_values + optimizer_values):
                variable.assign(value)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            logger.warning("The checkpoint %s cannot be used (%s); training this row from its first epoch.",
                           self.path, error)
            return 0
        self.history = history
        logger.info("Resuming after epoch %d from %s", epochs, self.path)
        return epochs

    def on_epoch_end(self, epoch, logs=None):
        self.history.append({"epoch": epoch, **{key: float(value) for key, value in (logs or {}).items()}})
        model_values = [np.asarray(variable) for variable in self.model.variables]
        optimizer_values = [np.asarray(variable) for variable in self.model.optimizer.variables]
        _write_npz(self.path, {"epochs": np.array(epoch + 1), "history": np.array(json.dumps(self.history)),
                               "model_count": np.array(len(model_values)),
                               "optimizer_count": np.array(len(optimizer_values)),
                               **{f"model_{index}": value for index, value in enumerate(model_values)},
                               **{f"optimizer_{index}": value for index, value in enumerate(optimizer_values)}})


class _BestWeights(_callback_base()):
    """Keeps the weights of the best epoch by the method's quality metric (on dev); saved under backup_dir."""

    def __init__(self, monitor: str, backup_dir: Path):
        super().__init__()
        self.monitor = monitor
        self.backup_dir = Path(backup_dir)
        self.best_value = -math.inf
        self.best_epoch = -1
        self.best_weights = None
        state = self.backup_dir / "best.json"
        if state.is_file():  # a resumed row: the best epoch so far survives the restart
            saved = json.loads(state.read_text())
            self.best_value, self.best_epoch = saved["value"], saved["epoch"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            value = (logs or {}).get("val_accuracy", -(logs or {}).get("val_loss", math.inf))
        if value is not None and float(value) > self.best_value:
            self.best_value, self.best_epoch = float(value), epoch
            self.best_weights = self.model.get_weights()
            # The in-memory copy as plain arrays (a few ms; Keras' save_weights walks every layer, ~0.1 s)
            _write_npz(self.backup_dir / "best.npz", {f"arr_{index}": value
                                                      for index, value in enumerate(self.best_weights)})
            state = self.backup_dir / "best-partial.json"
            state.write_text(json.dumps({"value": self.best_value, "epoch": epoch}))
            state.replace(self.backup_dir / "best.json")

    def restore(self, model) -> None:
        if self.best_weights is not None:
            model.set_weights(self.best_weights)
        elif (self.backup_dir / "best.npz").is_file():
            try:
                with np.load(self.backup_dir / "best.npz") as saved:
                    model.set_weights([saved[f"arr_{index}"] for index in range(len(saved.files))])
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                logger.warning("The saved best weights are unreadable; keeping the last epoch's weights.")


def _evaluate_and_log(config, spec, dataset, arrays: dict, trained: _Trained, preprocessing, out_dir: Path,
                      skip_roc: bool, reports: workers.Worker) -> dict:
    from timl import models, pyfunc

    stamp = datetime.datetime.now().strftime("%y%m%d-%H%M%S")
    keras_path = out_dir / f"{config.row}-keras_model-{stamp}.h5"
    trained.model.save(keras_path)
    classifier = pyfunc.Classifier(trained.model, preprocessing, dataset.class_names, spec.multi_label)
    metadata_path = pyfunc.write_metadata(keras_path, {**classifier.metadata(), "method": spec.name,
                                                       "run_id": tracking.active_run_id()})
    prefix = f"{config.row}-"
    splits = {}
    for split, short in (("dev", "val"), ("test", "test")):
        if split in arrays:
            labels = dataset.labels(split)
            probabilities = classifier.predict_arrays(arrays[split], config.batchsize)
            splits[short] = labels, _report_split(reports, out_dir, f"{prefix}{split}-", dataset, split, labels,
                                                  probabilities, skip_roc)
    # Meanwhile the plot process draws the reports' plots
    files = [keras_path, metadata_path]
    summary_path = out_dir / f"{prefix}model_summary.txt"
    summary_path.write_text(models.describe_model(trained.model))
    history_path = out_dir / f"{prefix}history.csv"
    trained.history.to_csv(history_path, index=False)
    files += [summary_path, history_path] + plots.plot_history(trained.history, out_dir, prefix=prefix)
    tracking.set_tags({"timl.trainstart": trained.started, "timl.trainmodel": keras_path.name,
                       "timl.model_sha256": json.loads(metadata_path.read_text())["sha256"]})
    # The model is logged before the final metrics, which are then linked to it: MLflow links a new model to
    # the run's metrics of its step by reading the history of every metric, one query each.
    model_info = pyfunc.log_model(keras_path, metadata_path, classifier, step=config.epochs)
    metrics = {"trainsize": dataset.sizes()["train"], "valsize": dataset.sizes()["dev"],
               "testsize": dataset.sizes().get("test", 0), "train_time": trained.seconds,
               "best_epoch": trained.best_epoch,
               "trainacc": _history_value(trained.history, "accuracy", trained.best_epoch)}
    metrics.update(_proportions("train", dataset.labels("train"), dataset.class_names))
    headline = {}
    for short, (labels, report) in splits.items():
        files += report.finish()
        result = report.summary
        metrics.update(_split_metrics(short, result, dataset.class_names))
        metrics.update(_proportions(short, labels, dataset.class_names))
        headline[f"{short}_accuracy"] = result.get("global_accuracy")
        headline[f"{short}_balanced_accuracy"] = result.get("balanced_accuracy")
    metrics.update(headline)
    tracking.log_artifacts(files)
    tracking.log_metrics(metrics, step=config.epochs, model_id=model_info.model_id)
    return headline


def _history_value(history, column: str, epoch: int):
    if column not in history:
        return None
    values = history.loc[history["epoch"] == epoch, column]
    return float(values.iloc[0]) if len(values) else None


def _proportions(short: str, labels: np.ndarray, class_names) -> dict:
    share = labels.mean(axis=0) if len(labels) else np.zeros(len(class_names))
    return {f"{short}prop_{_metric_name(name)}": float(value) for name, value in zip(class_names, share)}


def _metric_name(name: str) -> str:
    from timl.evaluation import sanitize_metric_name

    return sanitize_metric_name(name)


def _split_metrics(short: str, result: dict, class_names) -> dict:
    """Per-class acc/spec/sens/auc as valacc_MEL ... and the split's summaries (val_auc, ...)."""
    metrics = {f"{short}_auc": result.get("mean_auc"), f"{short}_mean_f1": result.get("mean_f1")}
    for key, column in (("acc", "accuracy"), ("spec", "specificity"), ("sens", "sensitivity"), ("auc", "auc"),
                        ("f1", "f1")):
        for name, value in zip(class_names, result.get(column) or []):
            metrics[f"{short}{key}_{_metric_name(name)}"] = value
    return metrics


def _report_split(reports: workers.Worker, out_dir: Path, prefix: str, dataset, split: str, labels,
                  probabilities, skip_roc: bool) -> "evaluation.Report":
    """Evaluates one split with the inspect code: summary, per-image results, confusion matrix, ROC plots
    (the plots drawn by the plot process)."""
    from timl import evaluation

    names = list(dataset.frame(split)["image_name"])
    options = {"multi_label": dataset.multi_label}
    if skip_roc:
        result = evaluation.evaluate(labels, probabilities, dataset.class_names, **options)
        path = out_dir / f"{prefix}per_image_results.csv"
        evaluation.per_image_results(names, labels, probabilities, dataset.class_names, **options).to_csv(
            path, index=False)
        return evaluation.Report(result, [path], [])
    return evaluation.start_report(out_dir, names, labels, probabilities, list(dataset.class_names),
                                   prefix=prefix, worker=reports, **options)
