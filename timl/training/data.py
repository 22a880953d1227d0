"""A row's data (the second stage of a row's flow): its dataset read and split, logged as the run's inputs, then
its images decoded (or, for a head on cached activations, its metadata read).

The inputs are logged before any image is decoded, so a row whose images fail still shows its cells.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from timl import tracking
from timl.datasets import IMAGE_COLUMN, SPLITS, UNION_SEPARATOR, Dataset, read_provenance
from timl.training.plan import RowPlan

if TYPE_CHECKING:
    from timl.images import Augmentation, Preprocessing

#: Decoded splits kept for the next rows of the table: (image paths, preprocessing) -> uint8 array.
_IMAGE_CACHE: dict = {}

#: How many decoded splits the cache keeps.
IMAGE_CACHE_SPLITS = 3

#: The MLflow context of each split's dataset input.
DATASET_CONTEXTS = {"train": "training", "dev": "validation", "test": "testing"}

#: Tag values are cut to this length (MLflow's limit is 8000 characters).
MAX_TAG_LENGTH = 5000


@dataclasses.dataclass
class RowData:
    """A row's data: the dataset, how its images become model input, and the decoded splits.

    Attributes:
        dataset: the split ground truth.
        preprocessing: image size, resize filter and colour space.
        augmentation: the augmentation preset.
        arrays: split name -> decoded images (N, S, S, 3) uint8, for the splits that have rows (empty for a head
            on cached activations, which decodes only the images its cache lacks).
        metadata: split name -> per-image numbers of the ``metadata`` CSV, or None without one.
    """

    dataset: Dataset
    preprocessing: Preprocessing
    augmentation: Augmentation
    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    metadata: dict[str, np.ndarray] | None = None


def prepare_data(plan: RowPlan, img_dir: str | Path | None = None) -> RowData:
    """Reads and splits the row's dataset, logs its cells and datasets to the active run, then decodes its images
    (a head on cached activations: reads its metadata instead).

    Raises:
        DatasetError, MissingFileError, ImageError: the dataset, its image files or its metadata cannot be used.
    """
    data = load_data(plan, img_dir)
    log_inputs(plan, data)  # before decoding: a row whose images fail still shows its cells
    if plan.config.activations:  # the images are decoded by the fit, only those the activation cache lacks
        data.metadata = read_metadata(plan, data.dataset) if plan.config.metadata else None
    else:
        data.arrays = decode_splits(data)
    return data


def load_data(plan: RowPlan, img_dir: str | Path | None = None) -> RowData:
    """Reads and splits the row's dataset; its images are decoded by :func:`decode_splits`.

    Raises:
        DatasetError, MissingFileError: the dataset or its image files cannot be used.
    """
    from timl import datasets, images

    config = plan.config
    dataset = datasets.load_dataset(config.dataset, config.split, classcolumns=config.classcolumns,
                                    multi_label=plan.spec.multi_label, img_dir=img_dir, seed=config.seed,
                                    base_dir=config.dataset_base_dir(), groups=config.groups or None)
    preprocessing = images.Preprocessing(config.imgsize, config.resizefilter, config.colorspace)
    return RowData(dataset, preprocessing, images.get_augmentation(config.imgaug))


def _load_split_images(paths: list[str], preprocessing: Preprocessing) -> np.ndarray:
    """Decodes and resizes a split once; the last few splits are kept for the next rows of the table."""
    from timl import images

    key = (tuple(paths), preprocessing)
    if key not in _IMAGE_CACHE:
        if len(_IMAGE_CACHE) >= IMAGE_CACHE_SPLITS:
            _IMAGE_CACHE.pop(next(iter(_IMAGE_CACHE)))
        _IMAGE_CACHE[key] = images.cache_images(paths, preprocessing)  # on disk beyond 2 GiB
    return _IMAGE_CACHE[key]


def decode_splits(data: RowData) -> dict[str, np.ndarray]:
    """The decoded images of every split that has rows (once per table for a split that rows share).

    Raises:
        ImageError: an image cannot be decoded.
    """
    return {split: _load_split_images(data.dataset.paths(split), data.preprocessing)
            for split in SPLITS if data.dataset.sizes().get(split)}


def read_metadata(plan: RowPlan, dataset: Dataset) -> dict[str, np.ndarray]:
    """The metadata CSV's numbers of every image of every split (:func:`timl.datasets.read_metadata`).

    Raises:
        MissingFileError, DatasetError: no such file, cells that are not numbers, or images without a row.
    """
    from timl import datasets

    path = plan.config.resolve_path(plan.config.metadata)
    return {split: datasets.read_metadata(path, list(dataset.frame(split)[IMAGE_COLUMN]))
            for split in SPLITS if dataset.sizes().get(split)}


def log_inputs(plan: RowPlan, data: RowData) -> None:
    """Logs the row's cells and what they resolved to (classes, learning rate, weights, ...) as run params, and
    its datasets (:func:`log_datasets`)."""
    config, spec = plan.config, plan.spec
    tracking.log_params({**config.input_cells(), "class_names": json.dumps(list(data.dataset.class_names)),
                         "num_classes": len(data.dataset.class_names), "multi_label": spec.multi_label,
                         "augmult": data.augmentation.multiplier, "dataset_source": data.dataset.source,
                         "img_dir": str(data.dataset.img_dir), "lr_used": config.lr or spec.lr,
                         "weights_used": spec.default_weights if config.weights == "default" else config.weights,
                         "quality_metric": spec.quality_metric, **group_params(data.dataset)})
    if data.dataset.grouped:
        tracking.set_tags({tracking.TAG_SPLIT_GROUPED: data.dataset.group_cell})
    log_datasets(data)


def group_params(dataset: Dataset) -> dict:
    """The params of a grouped split: the number of groups of each split (``num_groups_train``, ...) and of
    images without a group value (``num_ungrouped_images``, each its own group); empty when not grouped."""
    if not dataset.grouped:
        return {}
    counts = {f"num_groups_{split}": count for split, count in dataset.group_counts().items()}
    return {**counts, "num_ungrouped_images": dataset.ungrouped_images()}


def log_datasets(data: RowData) -> None:
    """Logs the row's train, dev and test sets as MLflow dataset inputs: their image names and labels (the digest
    tells whether two rows used the same data), the ground-truth CSV(s) as source (``a.csv+b.csv`` for a union).

    A split read from a CSV exported from expert answers (``timl.review export``, its record beside the CSV) is
    also named by the export: tags ``timl.dataset.<split>.source_run`` (the export's run),
    ``timl.dataset.<split>.source`` (the CSV it logged) and ``timl.dataset.<split>.reviewers``.
    """
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
    tracking.log_datasets(inputs)
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
    records = [record for record in map(read_provenance, files) if record]
    if not records:
        return {}
    sources = [record.get("artifact_uri") or f"reviews in {record.get('database')}" for record in records]
    reviewers = dict.fromkeys(str(name) for record in records for name in record.get("reviewers", []))
    runs = [str(record["run_id"]) for record in records if record.get("run_id")]
    lineage = {tracking.TAG_DATASET_SOURCE: ", ".join(sources), tracking.TAG_DATASET_REVIEWERS: ", ".join(reviewers),
               **({tracking.TAG_DATASET_SOURCE_RUN: ", ".join(runs)} if runs else {})}
    return {template: value[:MAX_TAG_LENGTH] for template, value in lineage.items()}
