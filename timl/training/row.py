"""One row of a table, from its cells to its record, in the order its data flows through the stages:

1. resolve (:mod:`timl.training.plan`): the method, the checkpoint folder, the GPUs;
2. data (:mod:`timl.training.data`): the dataset read and split, logged as the run's params and inputs, then
   its images decoded (a head on cached activations: its metadata read);
3. fit (:mod:`timl.training.loop`, or :mod:`timl.training.activations` for a head on cached activations): the
   weights cell resolved once, the model built and fitted, resuming after the last epoch of a checkpoint;
   then, with ``calibration=temperature``, its temperature fitted on dev and appended (:mod:`timl.training.calibrate`);
4. evaluate (:mod:`timl.training.evaluate`): dev and test predicted, their reports started (the plots drawn by
   the plot process from here on);
5. record (:mod:`timl.training.record`): the model saved and logged while the plots are drawn, then the reports'
   files and the final metrics.

The checkpoint is removed only once the row is recorded: a kill during the evaluation resumes after the last
epoch instead of training the row again. :func:`train_row` runs inside the row's active MLflow run; the executor
that calls it opens and closes the run.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from timl import tracking, workers
from timl.config import RunConfig
from timl.intervals import DEFAULT_RESAMPLES
from timl.training.calibrate import calibrate
from timl.training.data import RowData, prepare_data
from timl.training.loop import Trained, fit_images
from timl.training.plan import RowPlan, resolve_row, resolve_weights

logger = logging.getLogger(__name__)


def train_row(config: RunConfig, *, out_dir: Path, img_dir: str | Path | None = None, skip_roc: bool = False,
              reports: workers.Worker | None = None, checkpoint_dir: Path | None = None,
              gpus: float | None = None, bootstrap: int = DEFAULT_RESAMPLES) -> dict:
    """Trains one row inside the active MLflow run and logs everything; returns the headline metrics.

    Args:
        config: the row.
        out_dir: the table's output folder (model files, reports, checkpoints under ``.backup/N``).
        img_dir: the image folder for every row (default: ``images/`` beside the dataset CSV).
        skip_roc: do not draw ROC plots.
        reports: the process that draws the report plots (default: drawn in this process).
        checkpoint_dir: the row's checkpoint folder (default ``out_dir/.backup/N``); a row that finds a
            checkpoint there continues after its last finished epoch.
        gpus: the row's GPUs when its cell is empty (``--row-gpus``); 2 or more train under MirroredStrategy.
        bootstrap: resamples of the dev and test scores' 95% intervals (``--bootstrap``; 0: none).

    Returns:
        The kept model's headline scores (:data:`timl.metric_names.HEADLINE`), by metric name:
        ``{"dev/accuracy": ..., "dev/balanced_accuracy": ..., "test/accuracy": ..., ...}``.

    Raises:
        DatasetError, ImageError, ModelError, TrainingError: the row cannot be trained (the caller marks the
        run FAILED and goes on with the next row).
    """
    from timl.training import evaluate, record

    _quiet_libraries()
    tracking.log_params(config.input_cells())  # first: a row that fails before its data stage shows its cells
    plan = resolve_row(config, out_dir=Path(out_dir), checkpoint_dir=checkpoint_dir, gpus=gpus)
    data = prepare_data(plan, img_dir)
    trained = calibrate(plan, data, fit(plan, data))
    evaluation = evaluate.start_evaluation(plan, data, trained, Path(out_dir), skip_roc=skip_roc,
                                           reports=reports or workers.Worker(enabled=False), bootstrap=bootstrap)
    metrics = record.record_row(plan, data, trained, evaluation, Path(out_dir))
    shutil.rmtree(plan.checkpoint_dir, ignore_errors=True)  # recorded: nothing left to resume
    return metrics


def fit(plan: RowPlan, data: RowData) -> Trained:
    """Fits the row's model: on its decoded images, or its head alone on cached activations (``activations``).

    Raises:
        ConfigError: a weights file that does not exist (checked here, after the row's cells are logged).
        ModelError, TrainingError, DatasetError, MissingFileError: the model cannot be built or fitted.
    """
    weights = resolve_weights(plan.config)
    if plan.config.activations:
        from timl.training.activations import fit_head

        return fit_head(plan, data, weights)
    return fit_images(plan, data, weights)


def _quiet_libraries() -> None:
    """Silences library notices that are not the user's business (legacy-HDF5 and retracing warnings), and
    splits the CPU into logical devices when ``TIML_LOGICAL_CPUS`` asks for it (before TensorFlow sets up)."""
    import tensorflow as tf

    from timl.training import devices

    logging.getLogger("absl").setLevel(logging.ERROR)
    tf.get_logger().setLevel(logging.ERROR)
    devices.split_cpu()
