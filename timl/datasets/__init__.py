"""Datasets: ground-truth CSVs, class columns, split strategies, class weights and image lookup.

A dataset is a CSV whose first column is ``image_name`` followed by one 0/1 column per class (one-hot for
single-label data, any number of ones for multi-label data), as in the ISIC challenge files. The ``split`` cell
of a training table says how the rows become train, dev and test sets:

- ``pre``: ``dataset`` is a root name R; the files ``R-train.csv``, ``R-dev.csv`` and, if present, ``R-test.csv``.
- ``frac=F`` (0 < F < 0.5): F of the rows for dev, another F for test, the rest for train.
- ``n=N``: N rows for dev, N rows for test, the rest for train.
- ``list``: ``dataset`` is ``train.csv;dev.csv`` or ``train.csv;dev.csv;test.csv``.
- ``kfold=K:i`` (K >= 2, 0 <= i < K): K-fold cross-validation; fold i is the test set, a 10% slice of the other
  folds the dev set. ``kfold=K`` in a training table trains all K folds as one cross-validation
  (:mod:`timl.training.crossval`); a dataset is loaded one fold at a time.

Except with ``pre``, a file may be a union of CSVs joined with ``+`` (``corrected.csv+isic.csv``): the rows of
every file, an image listed by several taking the first file's label, each file's images found beside it.

Random splits are stratified by class (the row's label combination) where possible, and reproducible from a seed.
With a ``groups`` cell (``COLUMN`` of the ground truth or ``FILE.csv:COLUMN``), ``frac``, ``n`` and ``kfold`` keep
every group of images (a lesion, a patient) on one side, and ``pre``/``list`` files that share a group are refused.
This package imports no TensorFlow.

Modules: ``cell`` (the ``dataset`` cell parsed once: :class:`DatasetCell`), ``tables`` (reading and checking
CSVs that name images), ``lookup`` (finding image files),
``weights`` (class weights), ``dataset`` (the Dataset), ``split_spec`` (the ``split`` cell parsed),
``stratify`` (stratified orders and folds, and whole groups dealt to parts), ``groups`` (the ``groups`` cell:
images that stay on one side of a split), ``splits`` (split strategies, unions and :func:`load_dataset`) and ``provenance`` (the export record beside a CSV exported from expert reviews);
``_common`` holds the helper their error messages share. Every public name is
re-exported here.
"""

from timl.datasets._common import MAX_LISTED
from timl.datasets.cell import LIST_SEPARATOR, UNION_SEPARATOR, DatasetCell, DatasetEntry
from timl.datasets.dataset import SPLITS, Dataset
from timl.datasets.groups import GROUPS_FORMS, GroupsSpec, parse_groups, read_groups_of, shared_groups
from timl.datasets.lookup import find_images, image_paths
from timl.datasets.provenance import REVIEW_EXPORT_KIND, provenance_path, read_provenance, write_provenance
from timl.datasets.split_spec import SPLIT_FORMS, SplitSpec, parse_split
from timl.datasets.splits import KFOLD_DEV_FRACTION, SPLIT_STRATEGIES, image_groups, load_dataset
from timl.datasets.stratify import grouped_assignment, stratified_folds, stratified_order
from timl.datasets.tables import (IMAGE_COLUMN, class_columns, read_ground_truth, read_image_names, read_image_table,
                                  read_metadata)
from timl.datasets.weights import CLASS_WEIGHT_MODES, CLASS_WEIGHTS, compute_class_weights

__all__ = [
    "CLASS_WEIGHTS",
    "CLASS_WEIGHT_MODES",
    "Dataset",
    "GROUPS_FORMS",
    "GroupsSpec",
    "DatasetCell",
    "DatasetEntry",
    "IMAGE_COLUMN",
    "KFOLD_DEV_FRACTION",
    "LIST_SEPARATOR",
    "MAX_LISTED",
    "REVIEW_EXPORT_KIND",
    "SPLITS",
    "SPLIT_FORMS",
    "SPLIT_STRATEGIES",
    "SplitSpec",
    "UNION_SEPARATOR",
    "class_columns",
    "compute_class_weights",
    "find_images",
    "grouped_assignment",
    "image_paths",
    "load_dataset",
    "image_groups",
    "parse_groups",
    "parse_split",
    "provenance_path",
    "read_ground_truth",
    "read_groups_of",
    "read_image_names",
    "read_image_table",
    "read_metadata",
    "read_provenance",
    "shared_groups",
    "stratified_folds",
    "stratified_order",
    "write_provenance",
]
