"""Rows that train only their method's head on cached activations of its frozen backbone (``activations``).

The original TIML's manual: per-image ``.npy`` files are "the same format used by the system caching the
activation values ... feed prediction vectors to other trainings without re-running the convolution stage".

- ``activations=auto``: each image's backbone activations, for each view of the row's augmentation preset, are
  computed once and kept as ``<image_name>-<view:010d>.npy`` in a folder of the activation cache
  (``$TIML_ACTIVATION_CACHE``, default ``~/.cache/timl/activations``) named after what they depend on: backbone,
  weights, image size, resize filter and colour space. Later rows and later tables with the same settings
  reuse them, and only images without them are decoded.
- ``activations=FOLDER``: the files ``python -m timl.predict --layer LAYER --generate-numpy`` writes (one view per
  image), for the backbone's output layer (the layer before the head) with the row's weights.
- ``metadata=CSV``: ``image_name`` and per-image numbers (e.g. the ISIC metadata one-hot file), joined to the
  pooled activations as a second input of the head.

The head trains on them; its weights then go into the whole model (backbone + head), which is what the row saves
and logs, so predict, explain and serve use it as any row's model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from timl import tracking
from timl.config import RunConfig
from timl.datasets import IMAGE_COLUMN, SPLITS
from timl.errors import DatasetError, MissingFileError, ModelError
from timl.training.data import RowData
from timl.training.loop import Trained, fit_loop, sample_weights
from timl.training.plan import RowPlan

logger = logging.getLogger(__name__)

#: The environment variable naming the activation cache's folder.
CACHE_VARIABLE = "TIML_ACTIVATION_CACHE"

#: The activation cache's folder unless ``TIML_ACTIVATION_CACHE`` names another.
DEFAULT_CACHE = Path("~/.cache/timl/activations")

#: How many images' activations are computed per model call.
BATCH_SIZE = 32

#: How many missing names an error lists before it only counts them.
MAX_LISTED = 20


def cache_root() -> Path:
    """The activation cache's folder."""
    return Path(os.environ.get(CACHE_VARIABLE) or DEFAULT_CACHE).expanduser()


def view_file(folder: Path, name: str, view: int) -> Path:
    """The file of one image's activations for one view, as the original TIML and ``predict`` name it."""
    return Path(folder) / f"{name}-{view:010d}.npy"


def _weights_id(plan: RowPlan, weights: str) -> str:
    """What the backbone's weights are (``weights`` resolved): imagenet, a seeded random initialisation, or a
    file's sha256."""
    from timl.classifier import sha256_of

    if weights == "default":
        weights = plan.spec.default_weights
    if weights == "none":
        return f"none-seed{plan.config.seed}"
    if weights == "imagenet":
        return "imagenet"
    return f"file-{sha256_of(weights)[:16]}"


def cache_folder(plan: RowPlan, weights: str) -> Path:
    """The cache folder of a row's activations: one per backbone, weights (resolved), image size, filter and
    colour space."""
    config, spec = plan.config, plan.spec
    settings = {"backbone": spec.backbone, "weights": _weights_id(plan, weights), "imgsize": config.imgsize,
                "resizefilter": config.resizefilter, "colorspace": config.colorspace}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_root() / f"{spec.backbone}-{config.imgsize}px-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return folder


def _save(path: Path, values: np.ndarray) -> None:
    """Writes one activation file aside, then renames it (rows of other processes may read the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with partial.open("wb") as handle:
        np.save(handle, values)
    partial.replace(path)


def _compute(backbone, paths: list[str], names: list[str], folder: Path, preprocessing, augmentation) -> None:
    """Decodes the images and writes the backbone's activations of each of their views."""
    from timl import images

    pixels = images.load_images(paths, preprocessing)
    views = augmentation.multiplier
    dataset = images.make_dataset(pixels, None, batch_size=BATCH_SIZE, augmentation=augmentation.name)
    element = 0
    for batch in dataset:  # elements come image by image, view by view: i * views + v
        for values in np.asarray(backbone.predict_on_batch(batch)):
            image, view = divmod(element, views)
            _save(view_file(folder, names[image], view), values)
            element += 1
    logger.info("Cached the activations of %d images x %d views in %s", len(names), views, folder)


def gather(folder: Path, names: list[str], views: int, *, compute=None) -> np.ndarray:
    """The activations of every image and view, in the order ``image * views + view``.

    Args:
        folder: the folder of ``<image_name>-<view:010d>.npy`` files.
        names: the images.
        views: views per image.
        compute: ``compute(missing_indexes)`` writes the files of those images (``activations=auto``); without
            it a missing file is an error.

    Raises:
        DatasetError: files missing from a folder given by the user (the first names and the count).
    """
    missing = [index for index, name in enumerate(names)
               if not all(view_file(folder, name, view).is_file() for view in range(views))]
    if missing and compute is None:
        shown = ", ".join(names[index] for index in missing[:MAX_LISTED])
        raise DatasetError(f"{folder}: no activations for {len(missing)} image(s) (looked for <image_name>-"
                           f"0000000000.npy, as python -m timl.predict --layer LAYER --generate-numpy writes them): "
                           f"{shown}{' ...' if len(missing) > MAX_LISTED else ''}")
    if missing:
        compute(missing)
    return np.stack([np.load(view_file(folder, name, view)) for name in names for view in range(views)])


def _activations(plan: RowPlan, data: RowData, backbone, weights: str) -> tuple[Path, dict[str, np.ndarray]]:
    """Every split's activations (every view for train, the image itself for dev and test)."""
    config, spec = plan.config, plan.spec
    auto = config.activations == "auto"
    if auto:
        folder = cache_folder(plan, weights)
    else:
        folder = config.resolve_path(config.activations)
        if not folder.is_dir():
            raise MissingFileError(f"{config.table_path}, row {config.row}: activations folder not found. "
                                   f"Expected auto or a folder written by predict --layer. Received: "
                                   f"activations={config.activations!r}")
    found = {}
    for split in SPLITS:
        if not data.dataset.sizes().get(split):
            continue
        names, paths = list(data.dataset.frame(split)[IMAGE_COLUMN]), data.dataset.paths(split)
        augmentation = data.augmentation if split == "train" else _no_augmentation()

        def compute(missing, names=names, paths=paths, augmentation=augmentation):
            _compute(backbone, [paths[index] for index in missing], [names[index] for index in missing], folder,
                     data.preprocessing, augmentation)

        found[split] = gather(folder, names, augmentation.multiplier, compute=compute if auto else None)
    expected = tuple(backbone.output.shape[1:])
    if found["train"].shape[1:] != expected:
        raise ModelError(f"{folder}: the activations have the shape {found['train'].shape[1:]}, but the backbone of "
                         f"{spec.name} at {config.imgsize} px gives {expected}. Write them with predict --layer "
                         f"{backbone.layers[-1].name} of a model of this method.")
    return folder, found


def _no_augmentation():
    from timl import images

    return images.get_augmentation("none")


def _inputs(features: np.ndarray, metadata: np.ndarray | None):
    return features if metadata is None else (features, metadata)


def _pipelines(config: RunConfig, data: RowData, features: dict, epoch):
    """The head's train (every view, reshuffled each epoch in the order the image pipeline draws for the same seed
    and epoch: see :func:`timl.images.epoch_order`) and dev pipelines."""
    import tensorflow as tf

    from timl import images

    views, metadata = data.augmentation.multiplier, data.metadata
    labels = np.repeat(data.dataset.labels("train"), views, axis=0)
    train_metadata = np.repeat(metadata["train"], views, axis=0) if metadata else None
    columns = [_inputs(features["train"], train_metadata), labels]
    if config.classweights == "compute":
        columns.append(np.repeat(sample_weights(data.dataset.labels("train"),
                                                data.dataset.class_weights("compute")), views))
    tensors = tf.nest.map_structure(tf.convert_to_tensor, tuple(columns))
    train = images.epoch_order(len(labels), config.seed, epoch).map(
        lambda index: tf.nest.map_structure(lambda column: tf.gather(column, index), tensors)).batch(config.batchsize)
    dev = tf.data.Dataset.from_tensor_slices(
        (_inputs(features["dev"], metadata["dev"] if metadata else None), data.dataset.labels("dev"))
    ).batch(config.batchsize)
    return train.prefetch(tf.data.AUTOTUNE), dev.prefetch(tf.data.AUTOTUNE)


def fit_head(plan: RowPlan, data: RowData, weights: str) -> Trained:
    """Trains the row's head on its backbone's activations; returns the whole model with the trained head.

    Args:
        plan: the row (``activations``: ``auto`` or a folder).
        data: its data (no decoded images: only those the cache lacks are decoded; ``metadata`` when given).
        weights: the backbone's weights, resolved (:func:`timl.training.plan.resolve_weights`).

    Returns:
        A :class:`Trained` whose model is backbone + head, with the dev and test probabilities (computed on the
        cached activations, as the whole model computes them on the images).

    Raises:
        DatasetError, MissingFileError, ModelError: missing or mismatched activations.
    """
    import keras

    from timl import models

    config, spec, metadata = plan.config, plan.spec, data.metadata
    keras.utils.set_random_seed(config.seed)
    metadata_size = metadata["train"].shape[1] if metadata else 0
    num_classes = len(data.dataset.class_names)
    model = models.create_model(spec, num_classes, config.imgsize, weights=weights, lr=config.lr,
                                seed=config.seed, metadata_size=metadata_size, freeze_backbone=True)
    backbone = models.backbone_of(model)
    folder, features = _activations(plan, data, backbone, weights)
    tracking.log_params({"replicas": 1, "activations_folder": str(folder), "metadata_size": metadata_size})
    head = models.create_head(spec, features["train"].shape[1:], num_classes, metadata_size=metadata_size,
                              lr=config.lr, seed=config.seed)
    models.copy_head(model, head)  # the head starts where the whole model's would: a cached row trains as without
    from timl import images

    epoch = images.epoch_counter()
    train_data, dev_data = _pipelines(config, data, features, epoch)
    trained = fit_loop(plan, head, train_data, dev_data, epoch_counter=epoch)
    models.copy_head(trained.model, model)
    predictions = {split: np.asarray(trained.model.predict(_inputs(features[split], metadata[split] if metadata
                                                                   else None), batch_size=256, verbose=0))
                   for split in ("dev", "test") if split in features}
    return Trained(model, trained.history, trained.best_epoch, trained.seconds, trained.started, predictions)
