"""The Dataset: the train, dev and (optional) test sets of one ground truth, with resolved image paths."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from timl.datasets.groups import ungrouped_count
from timl.datasets.weights import compute_class_weights
from timl.errors import DatasetError

logger = logging.getLogger(__name__)

#: The split names, in order.
SPLITS = ("train", "dev", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Train, dev and (optional) test sets of one ground truth, with resolved image paths.

    Attributes:
        class_names: the class columns, in order (the model's output order).
        multi_label: whether a row may have any number of ones.
        train: ``image_name`` (str), the class columns (0/1 ints) and ``path`` (the image file).
        dev: as ``train``.
        test: as ``train``, or None when the split has no test set.
        img_dir: the folder the images were found in (the rows of a ``+`` union: beside each file, unless an
            image folder was given).
        source: a description of the CSV file(s) the sets come from (``;`` between the files of a list or pre
            split, ``+`` between the files of a union).
        files: the CSV file(s) each split's rows come from, by split (several for a ``+`` union).
        groups: split -> the group label of each row (:mod:`timl.datasets.groups`), when the split is grouped.
        group_cell: the ``groups`` cell the labels come from ("" when the split is not grouped).
    """

    class_names: tuple[str, ...]
    multi_label: bool
    train: pd.DataFrame
    dev: pd.DataFrame
    test: pd.DataFrame | None
    img_dir: Path
    source: str
    files: dict[str, tuple[Path, ...]] = dataclasses.field(default_factory=dict)
    groups: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    group_cell: str = ""

    @property
    def grouped(self) -> bool:
        """Whether the split keeps groups of images whole (a ``groups`` cell)."""
        return bool(self.group_cell)

    def group_counts(self) -> dict[str, int]:
        """The number of groups of each split (``{"train": n, "dev": n, "test": n or 0}``); empty if not grouped."""
        if not self.grouped:
            return {}
        return {split: len(set(self.groups.get(split, ()))) for split in SPLITS}

    def ungrouped_images(self) -> int:
        """How many images have no group value (each its own group)."""
        return sum(ungrouped_count(labels) for labels in self.groups.values())

    def frame(self, split: str) -> pd.DataFrame:
        """Returns the frame of ``split`` ("train", "dev" or "test").

        Raises:
            DatasetError: an unknown split name, or "test" when the dataset has no test set.
        """
        if split not in SPLITS:
            raise DatasetError(f"Unknown split name. Expected one of: {', '.join(SPLITS)}. Received: split={split!r}")
        frame = getattr(self, split)
        if frame is None:
            raise DatasetError(f"{self.source} has no test set (split without a test file). Received: split='test'")
        return frame

    def labels(self, split: str) -> np.ndarray:
        """The ground truth of ``split`` as a float32 array (rows, classes)."""
        return self.frame(split)[list(self.class_names)].to_numpy(dtype=np.float32)

    def paths(self, split: str) -> list[str]:
        """The image file paths of ``split``, in row order."""
        return self.frame(split)["path"].tolist()

    def class_weights(self, mode: str) -> dict[int, float]:
        """Class weights from the train set; see :func:`compute_class_weights`."""
        return compute_class_weights(self.labels("train"), mode)

    def sizes(self) -> dict:
        """Row counts: ``{"train": n, "dev": n, "test": n or 0}``."""
        return {"train": len(self.train), "dev": len(self.dev), "test": 0 if self.test is None else len(self.test)}
