"""One row of a table: its data, its fit, then what it records (:mod:`timl.training.record`).

:func:`train_row` runs inside the row's active MLflow run; the executor that calls it opens and closes the run.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np

from timl import tracking, workers
from timl.training.loop import Trained, fit_loop, resolve_weights, sample_weights

logger = logging.getLogger(__name__)

#: Decoded splits kept for the next rows of the table: (image paths, preprocessing) -> uint8 array.
_IMAGE_CACHE: dict = {}

#: How many decoded splits the cache keeps.
IMAGE_CACHE_SPLITS = 3


@dataclasses.dataclass
class RowData:
    """A row's data: the dataset, how its images become model input, and the decoded splits.

    Attributes:
        dataset: the split ground truth (:class:`timl.datasets.Dataset`).
        preprocessing: image size, resize filter and colour space (:class:`timl.images.Preprocessing`).
        augmentation: the augmentation preset (:class:`timl.images.Augmentation`).
        arrays: split name -> decoded images (N, S, S, 3) uint8, for the splits that have rows (empty until
            :func:`decode_splits`).
    """

    dataset: object
    preprocessing: object
    augmentation: object
    arrays: dict


def train_row(config, *, out_dir: Path, img_dir=None, skip_roc: bool = False,
              reports: workers.Worker | None = None, checkpoint_dir: Path | None = None,
              gpus: float | None = None) -> dict:
    """Trains one row inside the active MLflow run and logs everything; returns the headline metrics.

    Args:
        config: the row (:class:`timl.config.RunConfig`).
        out_dir: the table's output folder (model files, reports, checkpoints under ``.backup/N``).
        img_dir: the image folder for every row (default: ``images/`` beside the dataset CSV).
        skip_roc: do not draw ROC plots.
        reports: the process that draws the report plots (default: drawn in this process).
        checkpoint_dir: the row's checkpoint folder (default ``out_dir/.backup/N``); a row that finds a
            checkpoint there continues after its last finished epoch.
        gpus: the row's GPUs when its cell is empty (``--row-gpus``); 2 or more train under MirroredStrategy.

    Returns:
        The kept model's headline scores (:data:`timl.metric_names.HEADLINE`), by metric name:
        ``{"dev/accuracy": ..., "dev/balanced_accuracy": ..., "test/accuracy": ..., ...}``.

    Raises:
        DatasetError, ImageError, ModelError, TrainingError: the row cannot be trained (the caller marks the
        run FAILED and goes on with the next row).
    """
    from timl import models
    from timl.training import record

    _quiet_libraries()
    spec = models.get_method(config.method)
    data = load_data(config, spec, img_dir)
    record.log_params(config, spec, data)  # before decoding: a row whose images fail still shows its cells
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir / ".backup" / str(config.row)
    if config.activations:  # the head alone, on cached activations: images are decoded only to fill the cache
        from timl.training.activations import fit_head

        trained = fit_head(config, spec, data, checkpoint_dir)
    else:
        data.arrays = decode_splits(data)
        trained = fit(config, spec, data, checkpoint_dir, gpus=config.gpus if config.gpus is not None else gpus)
    metrics = record.record_row(config, spec, data, trained, out_dir, skip_roc=skip_roc,
                                reports=reports or workers.Worker(enabled=False))
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # recorded: nothing left to resume
    return metrics


def _quiet_libraries() -> None:
    """Silences library notices that are not the user's business (legacy-HDF5 and retracing warnings), and
    splits the CPU into logical devices when ``TIML_LOGICAL_CPUS`` asks for it (before TensorFlow sets up)."""
    import tensorflow as tf

    from timl.training import devices

    logging.getLogger("absl").setLevel(logging.ERROR)
    tf.get_logger().setLevel(logging.ERROR)
    devices.split_cpu()


def _dataset_base_dir(config) -> Path:
    """Where the row's relative dataset paths start: the working directory, else the table's folder."""
    from timl.datasets import UNION_SEPARATOR

    first = config.dataset.split(";")[0]
    if config.split != "pre" and not Path(first).exists():  # a union a.csv+b.csv: its first file
        first = first.split(UNION_SEPARATOR)[0].strip()
    candidates = [f"{first}-train.csv"] if config.split == "pre" else [first, f"{first}.csv"]  # a root name too
    here = any(Path(candidate).exists() for candidate in candidates)
    return Path.cwd() if here else (Path(config.table_path).parent if config.table_path else Path.cwd())


def _load_split_images(paths: list[str], preprocessing) -> np.ndarray:
    """Decodes and resizes a split once; the last few splits are kept for the next rows of the table."""
    from timl import images

    key = (tuple(paths), preprocessing)
    if key not in _IMAGE_CACHE:
        if len(_IMAGE_CACHE) >= IMAGE_CACHE_SPLITS:
            _IMAGE_CACHE.pop(next(iter(_IMAGE_CACHE)))
        _IMAGE_CACHE[key] = images.cache_images(paths, preprocessing)  # on disk beyond 2 GiB
    return _IMAGE_CACHE[key]


def load_data(config, spec, img_dir=None) -> RowData:
    """Reads and splits the row's dataset; its images are decoded by :func:`decode_splits`.

    Raises:
        DatasetError, MissingFileError: the dataset or its image files cannot be used.
    """
    from timl import datasets, images

    dataset = datasets.load_dataset(config.dataset, config.split, classcolumns=config.classcolumns,
                                    multi_label=spec.multi_label, img_dir=img_dir, seed=config.seed,
                                    base_dir=_dataset_base_dir(config))
    preprocessing = images.Preprocessing(config.imgsize, config.resizefilter, config.colorspace)
    return RowData(dataset, preprocessing, images.get_augmentation(config.imgaug), {})


def decode_splits(data: RowData) -> dict:
    """The decoded images of every split that has rows (once per table for a split that rows share).

    Raises:
        ImageError: an image cannot be decoded.
    """
    return {split: _load_split_images(data.dataset.paths(split), data.preprocessing)
            for split in ("train", "dev", "test") if data.dataset.sizes().get(split)}


def _fit_inputs(config, data: RowData, epoch=None):
    """The train and dev tf.data pipelines of a row (class weights as per-image sample weights); ``epoch`` (an
    :func:`timl.images.epoch_counter`) keys the train order and views to the epoch."""
    from timl import images

    dataset = data.dataset
    weights = dataset.class_weights(config.classweights) if config.classweights == "compute" else None
    train_labels = dataset.labels("train")
    train_data = images.make_dataset(data.arrays["train"], train_labels, batch_size=config.batchsize,
                                     augmentation=config.imgaug, shuffle=True, seed=config.seed,
                                     sample_weights=sample_weights(train_labels, weights) if weights else None,
                                     epoch=epoch)
    dev_data = images.make_dataset(data.arrays["dev"], dataset.labels("dev"), batch_size=config.batchsize)
    return train_data, dev_data


def fit(config, spec, data: RowData, checkpoint_dir: Path, *, gpus: float | None = None) -> Trained:
    """Builds the row's model and fits it on its images, continuing after the last epoch of a checkpoint.

    Args:
        config: the row (``freeze=backbone``: only the head trains).
        spec: its method.
        data: its data, decoded.
        checkpoint_dir: the row's checkpoint folder (removed once the row is recorded).
        gpus: 2 or more: train on every device of the process (:func:`timl.training.devices.strategy_for`).

    Returns:
        The fitted model with the best epoch's weights and every epoch's logs.
    """
    import keras

    from timl import models
    from timl.training import devices

    keras.utils.set_random_seed(config.seed)
    strategy = devices.strategy_for(gpus)
    tracking.log_params({"replicas": strategy.num_replicas_in_sync if strategy is not None else 1})
    with devices.scope(strategy):
        model = models.create_model(spec, len(data.dataset.class_names), config.imgsize,
                                    weights=resolve_weights(config), lr=config.lr, seed=config.seed,
                                    freeze_backbone=config.freeze == "backbone")
    from timl import images

    epoch = images.epoch_counter()
    train_data, dev_data = _fit_inputs(config, data, epoch)
    return fit_loop(config, spec, model, train_data, dev_data, checkpoint_dir, strategy=strategy, epoch_counter=epoch)
