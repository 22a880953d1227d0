"""``python -m timl.split``: split a one-hot dataset into train/dev/test files, or into N folds.

The original TIML's ``Scripts/Split1HotDataset.py`` and ``Scripts/SplitNfold1HotDataset.py``, as one command.
The rows are drawn stratified by class (the row's label combination; :func:`timl.datasets.stratified_order`
and :func:`timl.datasets.stratified_folds`), reproducibly from a seed, and every column of the input is kept.
The files are what the training table's splits read::

    D.csv --dev-fraction F --test-fraction T  ->  D-train.csv, D-dev.csv, D-test.csv
        dataset=D, split=pre   or   dataset=D-train.csv;D-dev.csv;D-test.csv, split=list
    D.csv --folds K                           ->  D-fold00-train.csv, D-fold00-dev.csv, D-fold00-test.csv, ...
        dataset=D-fold00, split=pre   or   dataset=D-fold00-train.csv;D-fold00-dev.csv;D-fold00-test.csv, split=list

With ``--test-fraction 0`` no test file is written (``split=pre`` reads train and dev, and a test file if present).
With ``--groups COLUMN`` (a column of D.csv) or ``--groups FILE.csv:COLUMN`` (a table with ``image_name`` and that
column, e.g. the ISIC metadata's ``lesion_id``) every group of images lands in one file of a split (whole groups
dealt stratified by class: :func:`timl.datasets.grouped_assignment`), so the files share no group.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
import numpy as np
import pandas as pd

from timl.cli import command, setup_logging, user_errors
from timl.datasets import (IMAGE_COLUMN, SPLITS, grouped_assignment, parse_groups, read_ground_truth, read_image_table,
                           stratified_folds, stratified_order)
from timl.datasets.groups import group_labels, groups_file, read_group_table
from timl.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

#: Fold numbers in file names: ``D-fold00-train.csv``, as the original SplitNfold1HotDataset wrote them.
FOLD_FORMAT = "fold{:02d}"


def _read(dataset: Path, classcolumns: str, multi_label: bool,
          groups: str | None = None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """The input's rows (every column, as text), its 0/1 labels, checked by :func:`read_ground_truth`, and the
    group label of each row (None without ``groups``)."""
    spec = parse_groups(groups)
    group_column = spec.column if spec is not None and not spec.file else None
    try:
        truth, class_names = read_ground_truth(dataset, classcolumns, multi_label, group_column=group_column)
    except DatasetError as error:
        if classcolumns.strip() != "default":
            raise
        raise DatasetError(f"{error}\nIf the file has columns other than the classes, name the class columns: "
                           "--classcolumns 'A;B;C' (classcolumns='A;B;C'); the other columns are copied. "
                           f"Received: classcolumns={classcolumns!r}") from None
    names = truth[IMAGE_COLUMN]
    if spec is None:
        labels = None
    elif group_column:
        labels = group_labels(names, truth[group_column])
    else:
        table = read_group_table(spec, groups_file(spec, Path.cwd(), dataset.parent))
        labels = group_labels(names, [table.get(name, "") for name in names])
    return read_image_table(dataset), truth[list(class_names)].to_numpy(), labels


def _parts(labels: np.ndarray, groups: np.ndarray | None, counts: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Row numbers of each split: the first ``counts[split]`` rows of the stratified order (train takes the rest),
    or, with ``groups``, whole groups dealt in those shares."""
    total = len(labels)
    shares = {"dev": counts["dev"], "test": counts.get("test", 0)}
    if groups is None:
        order = stratified_order(labels, seed)
        return {"train": order[shares["dev"] + shares["test"]:], "dev": order[:shares["dev"]],
                "test": order[shares["dev"]:shares["dev"] + shares["test"]]}
    part = grouped_assignment(labels, groups, [(total - sum(shares.values())) / total, shares["dev"] / total,
                                               shares["test"] / total], seed)
    return {split: np.flatnonzero(part == index) for index, split in enumerate(SPLITS)}


def _check_fraction(name: str, value: float, low_open: bool = True) -> None:
    low_ok = value > 0 if low_open else value >= 0
    if not (low_ok and value < 1):
        interval = "(0, 1)" if low_open else "[0, 1)"
        raise ConfigError(f"{name} must be a fraction in {interval}. Received: {name}={value!r}")


def _targets(dataset: Path, out_dir: str | Path | None, stem: str, splits) -> dict[str, Path]:
    folder = Path(out_dir) if out_dir is not None else dataset.parent
    return {split: folder / f"{stem}-{split}.csv" for split in splits}


def _refuse_existing(paths: list[Path], overwrite: bool) -> None:
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        raise ConfigError(f"The split files already exist: {', '.join(existing)}. Pass --overwrite (overwrite=True) "
                          f"to replace them, or choose another --out-dir. Received: overwrite={overwrite!r}")


def _check_sizes(dataset: Path, sizes: dict[str, int], received: str) -> None:
    empty = [split for split, size in sizes.items() if size == 0]
    if empty:
        counts = ", ".join(f"{split} {size}" for split, size in sizes.items())
        raise DatasetError(f"{dataset}: {sum(sizes.values())} rows leave the {' and '.join(empty)} set(s) empty "
                           f"({counts} rows); use larger fractions, fewer folds or more data. Received: {received}")


def _write(frame: pd.DataFrame, parts: dict[str, np.ndarray], targets: dict[str, Path]) -> list[Path]:
    """Writes the rows ``parts[split]`` (row numbers) of ``frame`` to ``targets[split]``, in the input's order."""
    written = []
    for split, rows in parts.items():
        path = targets[split]
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.iloc[np.sort(rows)].to_csv(path, index=False)
        logger.info("%s: %d rows", path, len(rows))
        written.append(path)
    return written


def split_dataset(dataset: str | Path, dev_fraction: float = 0.1, test_fraction: float = 0.1, *, seed: int = 0,
                  out_dir: str | Path | None = None, classcolumns: str = "default", multi_label: bool = False,
                  overwrite: bool = False, groups: str | None = None) -> list[Path]:
    """Splits a ground-truth CSV into ``D-train.csv``, ``D-dev.csv`` and ``D-test.csv`` (read by ``split=pre``).

    Args:
        dataset: the CSV (``image_name`` then one 0/1 column per class; other columns are kept if
            ``classcolumns`` names the class columns).
        dev_fraction: share of the rows for the dev set, in (0, 1). Defaults to 0.1.
        test_fraction: share of the rows for the test set, in [0, 1); 0 writes no test file. Defaults to 0.1.
        seed: seed of the stratified draw. Defaults to 0.
        out_dir: folder of the files. Defaults to the dataset's folder.
        classcolumns: ``default`` (every column but ``image_name``) or ``A;B;C``. Defaults to "default".
        multi_label: allow rows with any number of ones (default False: one-hot rows).
        overwrite: replace existing split files (default False: refuse).
        groups: ``COLUMN`` (of the dataset, not a class column) or ``FILE.csv:COLUMN`` (a table with
            ``image_name``; relative to the working directory, else beside the dataset): every group of images
            goes whole into one file, the fractions then met as nearly as the groups allow. Defaults to None.

    Returns:
        The files written: train, dev and (unless ``test_fraction`` is 0) test.

    Raises:
        ConfigError: a fraction out of range, or split files that exist without ``overwrite``.
        MissingFileError, DatasetError: no such file, a bad ground truth (every problem named), or a set left empty.
    """
    _check_fraction("dev_fraction", dev_fraction)
    _check_fraction("test_fraction", test_fraction, low_open=False)
    if dev_fraction + test_fraction >= 1:
        raise ConfigError("dev_fraction + test_fraction must be below 1, leaving rows for training. "
                          f"Received: dev_fraction={dev_fraction!r}, test_fraction={test_fraction!r}")
    dataset = Path(dataset)
    splits = SPLITS if test_fraction > 0 else ("train", "dev")
    targets = _targets(dataset, out_dir, dataset.stem, splits)
    _refuse_existing(list(targets.values()), overwrite)
    frame, labels, group_of = _read(dataset, classcolumns, multi_label, groups)
    counts = {"dev": round(dev_fraction * len(labels)), "test": round(test_fraction * len(labels))}
    parts = _parts(labels, group_of, counts, seed)
    parts = {split: parts[split] for split in splits}
    _check_sizes(dataset, {split: len(rows) for split, rows in parts.items()},
                 f"dev_fraction={dev_fraction!r}, test_fraction={test_fraction!r}")
    return _write(frame, parts, targets)


def split_folds(dataset: str | Path, folds: int = 5, dev_fraction: float | None = None, *, seed: int = 0,
                out_dir: str | Path | None = None, classcolumns: str = "default", multi_label: bool = False,
                overwrite: bool = False, groups: str | None = None) -> list[Path]:
    """Splits a ground-truth CSV into ``folds`` folds: ``D-foldNN-train|dev|test.csv`` for NN = 00 .. folds-1.

    Each row is in the test set of exactly one fold; a fold's dev set is drawn (stratified) from the other
    folds' rows, and the rest is its training set.

    Args:
        dataset: the CSV, as for :func:`split_dataset`.
        folds: number of folds, at least 2. Defaults to 5, as the original.
        dev_fraction: share of a fold's non-test rows for its dev set, in (0, 1). Defaults to None: the dev set is
            as large as the fold's test set, as the original.
        seed, out_dir, classcolumns, multi_label, overwrite, groups: as for :func:`split_dataset` (with
            ``groups``, the folds and each fold's dev set hold whole groups).

    Returns:
        The files written, fold by fold (train, dev, test).

    Raises:
        ConfigError: fewer than 2 folds, a fraction out of range, or split files that exist without ``overwrite``.
        MissingFileError, DatasetError: no such file, a bad ground truth, or a set left empty (too few rows).
    """
    if not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"folds must be an integer of at least 2. Received: folds={folds!r}")
    if dev_fraction is not None:
        _check_fraction("dev_fraction", dev_fraction)
    dataset = Path(dataset)
    targets = [_targets(dataset, out_dir, f"{dataset.stem}-{FOLD_FORMAT.format(fold)}", SPLITS)
               for fold in range(folds)]
    _refuse_existing([path for fold in targets for path in fold.values()], overwrite)
    frame, labels, group_of = _read(dataset, classcolumns, multi_label, groups)
    if group_of is None:
        assignment = stratified_folds(labels, folds, seed)
    else:
        assignment = grouped_assignment(labels, group_of, np.full(folds, 1 / folds), seed)
    fold_parts = []
    for fold in range(folds):
        test, rest = np.flatnonzero(assignment == fold), np.flatnonzero(assignment != fold)
        dev_count = len(test) if dev_fraction is None else round(dev_fraction * len(rest))
        if group_of is None:
            rest = rest[stratified_order(labels[rest], seed + 1)]
            parts = {"train": rest[dev_count:], "dev": rest[:dev_count], "test": test}
        else:
            part = grouped_assignment(labels[rest], group_of[rest], (1 - dev_count / len(rest), dev_count / len(rest)),
                                      seed + 1) if len(rest) else np.zeros(0, int)
            parts = {"train": rest[part == 0], "dev": rest[part == 1], "test": test}
        _check_sizes(dataset, {split: len(rows) for split, rows in parts.items()},
                     f"folds={folds!r}, dev_fraction={dev_fraction!r} (fold {fold})")
        fold_parts.append(parts)
    return [path for parts, fold_targets in zip(fold_parts, targets) for path in _write(frame, parts, fold_targets)]


EXAMPLE = """Examples:

\b
  python -m timl.split data/ISIC2019.csv --dev-fraction 0.1 --test-fraction 0.1
      -> data/ISIC2019-train.csv, -dev.csv, -test.csv  (table: dataset=data/ISIC2019, split=pre)
  python -m timl.split data/ISIC2019.csv --folds 5 --out-dir folds
      -> folds/ISIC2019-fold00-train.csv, -dev.csv, -test.csv, ... fold04  (dataset=folds/ISIC2019-fold00, split=pre)
  python -m timl.split data/ISIC2019.csv --groups ISIC_2019_Training_Metadata.csv:lesion_id
      -> files that share no lesion  (table: dataset=data/ISIC2019, split=pre, groups=...:lesion_id)
"""


@command(epilog=EXAMPLE)
@click.argument("dataset", type=click.Path(dir_okay=False))
@click.option("--dev-fraction", type=float,
              help="Share of the rows for dev (default 0.1; with --folds: as many rows as the fold's test set).")
@click.option("--test-fraction", type=float, help="Share of the rows for test (default 0.1; 0: no test file). "
                                                  "Not with --folds: each fold is a test set.")
@click.option("--folds", type=int, help="Split into this many folds (at least 2) instead of one train/dev/test split.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the stratified draw.")
@click.option("--out-dir", type=click.Path(file_okay=False), help="Folder of the files (default: the dataset's).")
@click.option("--classcolumns", default="default", show_default=True,
              help="The class columns: every column but image_name, or A;B;C (other columns are copied).")
@click.option("--multi-label", is_flag=True, help="Rows may have any number of ones (default: one-hot rows).")
@click.option("--overwrite", is_flag=True, help="Replace split files that already exist.")
@click.option("--groups", default=None, help="Keep groups of images whole: COLUMN (of DATASET) or FILE.csv:COLUMN "
                                             "(a table with image_name and COLUMN); the files share no group.")
def cli(dataset, dev_fraction, test_fraction, folds, seed, out_dir, classcolumns, multi_label, overwrite, groups):
    """Split DATASET (image_name + one-hot class columns) into train/dev/test files, stratified by class."""
    setup_logging()
    options = {"seed": seed, "out_dir": out_dir, "classcolumns": classcolumns, "multi_label": multi_label,
               "overwrite": overwrite, "groups": groups}
    with user_errors():
        if folds is not None:
            if test_fraction is not None:
                raise ConfigError("--test-fraction does not go with --folds: each fold's test set is one fold. "
                                  f"Received: --folds {folds} --test-fraction {test_fraction}")
            written = split_folds(dataset, folds, dev_fraction, **options)
        else:
            fractions = {name: value for name, value in (("dev_fraction", dev_fraction),
                                                         ("test_fraction", test_fraction)) if value is not None}
            written = split_dataset(dataset, **fractions, **options)
    click.echo(f"Wrote {len(written)} files to {written[0].parent}")


if __name__ == "__main__":
    cli()
