"""The training table: one validated, frozen :class:`RunConfig` per row.

The table is the original TIML's: the input columns below, optional extra columns, and the original output
columns, which may be present and empty (its sample tables have them) or absent. Everything downstream
receives a ``RunConfig``, never the raw row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from timl import datasets, images, metric_names, models, subgroups, tables, tta
from timl.calibration import CALIBRATION_METHODS
from timl.datasets import CLASS_WEIGHT_MODES, DatasetCell
from timl.cell_values import cell_text, parse_int, parse_lr, parse_resource
from timl.errors import ConfigError
from timl.models import WEIGHTS_CHOICES, WEIGHTS_SUFFIXES
from timl.search.row import SearchCells
from timl.search.space import Space, find_spaces
from timl.search.trial import TrialRef

#: The original TIML's input columns, in order.
INPUT_COLUMNS = ("method", "dataset", "split", "epochs", "imgaug", "batchsize", "imgsize", "resizefilter",
                 "colorspace", "classcolumns", "classweights")

#: Optional extra input columns.
EXTRA_COLUMNS = ("weights", "lr", "seed", "notes")

#: Optional resource columns: the CPUs and GPUs a row's task asks a cluster for (``--executor ray``); a row with
#: two or more GPUs trains on all of them (``tf.distribute.MirroredStrategy``). They say where a row trains, not
#: what it trains: they are not part of the row's key nor of the results table.
RESOURCE_COLUMNS = ("cpus", "gpus")

#: The original TIML's output columns, in its order (``notes`` doubles as an input column); most show a metric
#: (:mod:`timl.metric_names`).
OUTPUT_COLUMNS = metric_names.ORIGINAL_OUTPUT_COLUMNS

#: Optional columns of rows that train only their method's head: ``freeze`` (``none`` or ``backbone``: the
#: backbone keeps its loaded weights), ``activations`` (``auto``: on activations of the frozen backbone cached
#: across rows and tables; or a folder of them written by ``predict --layer``), ``metadata`` (a CSV of per-image
#: numbers joined to the head's input; needs ``activations``).
HEAD_COLUMNS = ("freeze", "activations", "metadata")

#: Optional columns of the split: ``groups`` (``COLUMN`` of the ground truth, or ``FILE.csv:COLUMN``: a table with
#: ``image_name`` and that column, such as the ISIC metadata's ``lesion_id``), the images that stay on one side of
#: the split (:mod:`timl.datasets.groups`); ``subgroups`` (``FILE.csv:COLUMN[,COLUMN...]``, :mod:`timl.subgroups`),
#: the test set scored by subgroup. A row without them keeps its params and its key.
GROUP_COLUMNS = ("groups", "subgroups")

#: Optional columns of a row's evaluation: ``tta`` (``none`` or a test-time augmentation preset of
#: :data:`timl.tta.TTA_PRESETS`), the views the row's dev and test scores average over. A row without them keeps
#: its params and its key.
EVALUATION_COLUMNS = ("tta",)

#: Optional columns of the model's probabilities: ``calibration`` (``none``, the original behaviour, or
#: ``temperature``: the probabilities rescaled by a temperature fitted on the dev set after training,
#: :mod:`timl.training.calibrate`). A row without them keeps its params and its key.
CALIBRATION_COLUMNS = ("calibration",)

#: The columns whose cell goes to the row's params and key only when it differs from its default.
OPTIONAL_COLUMNS = GROUP_COLUMNS + EVALUATION_COLUMNS + CALIBRATION_COLUMNS

#: The values of ``freeze``.
FREEZE_CHOICES = ("none", "backbone")

#: Columns TIML on MLflow adds after the original ones: the row's run and its summary scores.
SUMMARY_COLUMNS = ("run_id", *metric_names.SUMMARY_COLUMNS)

#: The calibration scores the results table shows after all earlier columns (``val_ece``, ``test_nll``, ...).
CALIBRATION_SUMMARY_COLUMNS = tuple(metric_names.CALIBRATION_SUMMARY_COLUMNS)

KNOWN_COLUMNS = tuple(dict.fromkeys(INPUT_COLUMNS + EXTRA_COLUMNS + RESOURCE_COLUMNS + HEAD_COLUMNS
                                    + OUTPUT_COLUMNS + SUMMARY_COLUMNS + OPTIONAL_COLUMNS
                                    + CALIBRATION_SUMMARY_COLUMNS))
REQUIRED_COLUMNS = ("method", "dataset", "split", "epochs")

#: The input columns that hold numbers: a decimal comma in them (``0,001`` in a ``;``-separated table, as
#: spreadsheets of decimal-comma locales write it) reads as a point. Text columns are never converted.
NUMERIC_COLUMNS = ("epochs", "batchsize", "imgsize", "lr", "seed", "cpus", "gpus")

DEFAULTS = {"imgaug": "none", "batchsize": "32", "imgsize": "224", "resizefilter": "bilinear",
            "colorspace": "RGB", "classcolumns": "default", "classweights": "default", "weights": "default",
            "lr": "", "seed": "0", "notes": "", "freeze": "none", "activations": "", "metadata": "", "groups": "",
            "subgroups": "", "tta": "none", "calibration": "none"}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One row of a training table, parsed and validated.

    Attributes:
        row: the row's number in the table, counting data rows from 0 (the ``N`` of ``N-METHOD``).
        method: a name from the method registry (``python -m timl.train --list-methods``).
        dataset: the ``dataset`` cell, parsed once (:class:`timl.datasets.DatasetCell`; ``str(dataset)`` is the
            cell as written): a ground-truth CSV or its root name (``data/isic`` for ``data/isic.csv``; split
            ``pre``: the root of ``<root>-train.csv``, ...) or ``train.csv;dev.csv[;test.csv]`` (``list``); except
            with ``pre``, a file may be a union ``corrected.csv+isic.csv`` (the first file's label wins). A string
            given to the constructor is parsed.
        split: ``pre``, ``frac=F``, ``n=N``, ``list``, ``kfold=K:i`` or ``kfold=K`` (the row trains its K folds
            as one cross-validation: :meth:`fold_configs`).
        epochs: number of epochs, at least 1.
        imgaug: an augmentation preset.
        batchsize: images per batch, at least 1.
        imgsize: side of the square model input in pixels.
        resizefilter: nearest, bilinear, bicubic or lanczos.
        colorspace: a PIL mode (RGB, HSV, YCbCr, LAB, L).
        classcolumns: ``default`` or a ``;``-separated list of class columns.
        classweights: ``default`` (all 1.0) or ``compute`` (inverse class frequency).
        weights: ``default`` (the method's), ``imagenet``, ``none`` or a path to a .h5 file.
        lr: learning rate, or ``None`` for the method's.
        seed: seed of the split, the initial weights and the shuffling.
        notes: free text, carried to the results table.
        freeze: ``none`` (every layer trains) or ``backbone`` (only the head trains).
        activations: ``""``, ``auto`` (the head trains on cached activations of the frozen backbone) or a
            folder of activations (``<image_name>-0000000000.npy``, as ``predict --layer`` writes them).
        metadata: ``""`` or a CSV of ``image_name`` and per-image numbers joined to the head's input.
        cpus: CPUs the row's task asks for (None: the executor's ``--row-cpus``).
        groups: ``""`` or the images that stay on one side of the split: ``COLUMN`` of the ground truth or
            ``FILE.csv:COLUMN`` (relative to where the dataset's paths start, else beside its CSV).
        subgroups: ``""`` or ``FILE.csv:COLUMN[,COLUMN...]`` (a column in bands as ``age_approx:0,30,45,60``):
            the test set is also scored by subgroup (:mod:`timl.subgroups`), relative to where the dataset's paths
            start, else beside its test CSV.
        tta: ``none`` or a test-time augmentation preset: the row's dev and test predictions are averaged over
            its views (:mod:`timl.tta`).
        calibration: ``none`` or ``temperature`` (:data:`timl.calibration.CALIBRATION_METHODS`).
        gpus: GPUs the row's task asks for (None: the executor's ``--row-gpus``); two or more train the row
            under ``tf.distribute.MirroredStrategy``.
        table_path: the table the row came from (relative paths in the row resolve against the working
            directory, then against the table's folder).
        cv_fold: the fold this row trains of its cross-validation row (``kfold=K``, see :meth:`fold_configs`), or
            None for a row as the table wrote it.
        trial: the trial of a search this row trains (:class:`SearchRow`, ``python -m timl.tune``), or None.
    """

    row: int
    method: str
    dataset: DatasetCell
    split: str
    epochs: int
    imgaug: str = "none"
    batchsize: int = 32
    imgsize: int = 224
    resizefilter: str = "bilinear"
    colorspace: str = "RGB"
    classcolumns: str = "default"
    classweights: str = "default"
    weights: str = "default"
    lr: float | None = None
    seed: int = 0
    notes: str = ""
    table_path: str = ""
    cpus: float | None = None
    gpus: float | None = None
    freeze: str = "none"
    activations: str = ""
    metadata: str = ""
    groups: str = ""
    subgroups: str = ""
    tta: str = "none"
    calibration: str = "none"
    cv_fold: int | None = None
    trial: TrialRef | None = None

    def __post_init__(self):
        if not isinstance(self.dataset, DatasetCell):  # a Python caller's string
            object.__setattr__(self, "dataset", DatasetCell.parse(self.dataset))

    @property
    def run_name(self) -> str:
        """``N-METHOD``; a fold of a cross-validation ``N-METHOD-fold<i>``; trial T of a search ``N.T-METHOD``."""
        suffix = "" if self.cv_fold is None else f"-fold{self.cv_fold}"
        return f"{self.file_stem.split('-')[0]}-{self.method}{suffix}"

    @property
    def file_stem(self) -> str:
        """The start of the row's file names (``N-test-summary.csv``) and of its checkpoint folder: ``N``; a fold of
        a cross-validation ``N-fold<i>``, so its folds' files stand side by side; trial T of a search ``N.T``."""
        row = str(self.row) if self.trial is None else f"{self.row}.{self.trial.number}"
        return row if self.cv_fold is None else f"{row}-fold{self.cv_fold}"

    @property
    def cross_validation(self) -> bool:
        """Whether the row is a cross-validation (``split`` ``kfold=K``): its K folds train as child runs of one
        cross-validation run (:mod:`timl.training.crossval`)."""
        return datasets.parse_split(self.split).cross_validation

    @property
    def cv_run_name(self) -> str:
        """The cross-validation run's name: ``N-METHOD-cv``."""
        return f"{self.row}-{self.method}-cv"

    def fold_configs(self) -> list["RunConfig"]:
        """The K rows of a cross-validation row, ``kfold=K:0`` ... ``kfold=K:K-1``, each knowing its fold."""
        folds = datasets.parse_split(self.split).folds
        return [dataclasses.replace(self, split=f"kfold={folds}:{fold}", cv_fold=fold) for fold in range(folds)]

    @property
    def class_column_names(self) -> tuple[str, ...] | None:
        """The ``classcolumns`` cell as names, or None for ``default`` (every column of the dataset)."""
        if self.classcolumns == "default":
            return None
        return tuple(name.strip() for name in self.classcolumns.split(";") if name.strip())

    @property
    def table_folder(self) -> Path | None:
        """The folder of the table the row came from (None for a row built without a table)."""
        return Path(self.table_path).parent if self.table_path else None

    def dataset_base_dir(self) -> Path:
        """Where the row's relative dataset paths start: the working directory, else the table's folder
        (:meth:`timl.datasets.DatasetCell.base_dir`)."""
        return self.dataset.base_dir(pre=self.split == "pre", table_folder=self.table_folder)

    @property
    def head_only(self) -> bool:
        """Whether only the method's head trains (a frozen backbone, or cached activations)."""
        return self.freeze == "backbone" or bool(self.activations)

    def input_cells(self) -> dict:
        """The row's input cells as strings, as they go to MLflow params and the results table (the optional
        columns, groups, tta and calibration, only when set: a row without them logs what it logged before)."""
        cells = {name: "" if getattr(self, name) is None else str(getattr(self, name))
                 for name in INPUT_COLUMNS + EXTRA_COLUMNS + HEAD_COLUMNS}
        return {**cells, **{name: getattr(self, name) for name in OPTIONAL_COLUMNS
                            if getattr(self, name) != DEFAULTS[name]}}

    def key(self, version: str) -> str:
        """A stable key of this row: a hash of its cells (head and group cells only when set, so rows of earlier
        tables keep their keys), the table path and the project version."""
        cells = {name: value for name, value in self.input_cells().items()
                 if name not in HEAD_COLUMNS + OPTIONAL_COLUMNS or value != DEFAULTS[name]}
        fold = {} if self.cv_fold is None else {"cv_fold": self.cv_fold}  # never a plain kfold=K:i row's key
        if self.trial is not None:  # two trials that drew the same cells are two runs
            fold.update(trial=self.trial.number, study=self.trial.study)
        payload = json.dumps({"cells": cells, "row": self.row, **fold,
                              "table": str(Path(self.table_path).resolve()) if self.table_path else "",
                              "version": version}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def resolve_path(self, path: str) -> Path:
        """Resolves a path named in the row: as given, else beside the table."""
        candidate = Path(path).expanduser()
        if candidate.is_absolute() or candidate.exists() or not self.table_path:
            return candidate
        beside = Path(self.table_path).parent / candidate
        return beside if beside.exists() else candidate

    @classmethod
    def from_row(cls, row: dict, row_number: int, table_path: str = "") -> "RunConfig":
        """Parses and validates one table row.

        Raises:
            ConfigError: naming the table, the row and every bad cell.
        """
        cells = {name: cell_text(row.get(name))
                 for name in INPUT_COLUMNS + EXTRA_COLUMNS + RESOURCE_COLUMNS + HEAD_COLUMNS + OPTIONAL_COLUMNS}
        problems = []
        for name in REQUIRED_COLUMNS:
            if not cells[name]:
                problems.append(f"column '{name}' is empty (it is required)")
        for name, default in DEFAULTS.items():
            cells[name] = cells[name] or default
        values = {"row": row_number, "table_path": str(table_path)}
        for name in ("method", "split", "imgaug", "resizefilter", "colorspace", "classcolumns",
                     "classweights", "weights", "notes", "freeze", "activations", "metadata", "groups", "subgroups",
                     "tta", "calibration"):
            values[name] = cells[name]
        values["dataset"] = DatasetCell.parse(cells["dataset"])
        for name, minimum in (("epochs", 1), ("batchsize", 1), ("imgsize", 8), ("seed", 0)):
            values[name] = parse_int(cells[name], name, minimum, problems)
        values["lr"] = parse_lr(cells["lr"], problems)
        values["cpus"] = parse_resource(cells["cpus"], "cpus", problems, positive=True)
        values["gpus"] = parse_resource(cells["gpus"], "gpus", problems, positive=False)
        if not problems:
            problems.extend(_check_choices(values))
        if problems:
            where = f"{table_path}, row {row_number}" if table_path else f"row {row_number}"
            raise ConfigError(f"{where}: " + "; ".join(problems))
        return cls(**values)


class SearchRow(SearchCells):
    """A row whose cells hold search spaces (:class:`timl.search.row.SearchCells`), sampled into rows."""

    def sample(self, values: dict, trial: TrialRef | None = None) -> RunConfig:
        """The row with each space's cell replaced by ``values`` (column -> value), validated like a written row.

        Raises:
            ConfigError: a sampled cell that is not valid (the message names the table, the row and the cell).
        """
        cells = {**self.cells, **{column: str(value) for column, value in values.items()}}
        return dataclasses.replace(RunConfig.from_row(cells, self.row, self.table_path), trial=trial)

    @classmethod
    def from_row(cls, row: dict, row_number: int, table_path: str, spaces: dict[str, Space]) -> "SearchRow":
        """A search row, its spaces' reach checked (:meth:`~timl.search.row.SearchCells.check_reach`).

        Raises:
            ConfigError: a space that can produce an invalid cell.
        """
        search = cls(row_number, {str(name): cell_text(value) for name, value in row.items()}, spaces, str(table_path))
        search.check_reach(search.sample)
        return search


def _check_choices(values: dict) -> list[str]:
    """Checks cells against the registries (method, split, augmentation, filter, colour space, weights)."""
    problems = []
    checks = (
        ("method", lambda v: models.get_method(v)),
        ("split", lambda v: datasets.parse_split(v)),
        ("groups", lambda v: datasets.parse_groups(v)),
        ("subgroups", lambda v: subgroups.parse_subgroups(v)),
        ("imgaug", lambda v: images.get_augmentation(v)),
        ("tta", lambda v: tta.get_tta(v)),
        ("resizefilter", lambda v: images.Preprocessing(16, v)),
        ("colorspace", lambda v: images.Preprocessing(16, "bilinear", v)),
    )
    for name, check in checks:
        try:
            check(values[name])
        except ValueError as error:
            problems.append(f"column '{name}': {error}")
    if values["calibration"] not in CALIBRATION_METHODS:
        problems.append(f"column 'calibration' must be one of: {', '.join(CALIBRATION_METHODS)}. "
                        f"Received: calibration={values['calibration']!r}")
    if values["classweights"] not in CLASS_WEIGHT_MODES:
        problems.append(f"column 'classweights' must be one of: {', '.join(CLASS_WEIGHT_MODES)}. "
                        f"Received: classweights={values['classweights']!r}")
    problems.extend(_check_head_cells(values))
    weights = values["weights"]
    if weights not in WEIGHTS_CHOICES and not weights.lower().endswith(WEIGHTS_SUFFIXES):
        problems.append(f"column 'weights' must be {', '.join(WEIGHTS_CHOICES)} or a path to a .h5/.keras file. "
                        f"Received: weights={weights!r}")
    return problems


def _check_head_cells(values: dict) -> list[str]:
    """The head-only cells: a known freeze, cached activations with enumerated views, metadata with them."""
    problems = []
    if values["freeze"] not in FREEZE_CHOICES:
        problems.append(f"column 'freeze' must be one of: {', '.join(FREEZE_CHOICES)}. "
                        f"Received: freeze={values['freeze']!r}")
    known = values["imgaug"] in images.AUGMENTATIONS  # an unknown one is reported with its column
    if values["activations"] and known and images.get_augmentation(values["imgaug"]).random:
        cacheable = ", ".join(name for name, preset in images.AUGMENTATIONS.items() if not preset.random)
        problems.append(f"column 'activations' needs an augmentation whose views can be cached ({cacheable}): "
                        f"random views change every epoch. Received: imgaug={values['imgaug']!r}")
    if values["activations"] not in ("", "auto") and values["imgaug"] != "none":
        problems.append("column 'activations' names a folder of one view per image (as predict --layer writes "
                        "it): use imgaug none, or activations=auto to cache every view. Received: "
                        f"imgaug={values['imgaug']!r}")
    if values["activations"] and values["tta"] != DEFAULTS["tta"]:
        problems.append("column 'tta' predicts views of the dev and test images, which a head trained on cached "
                        "activations never decodes: leave tta empty (none) or drop activations. Received: "
                        f"tta={values['tta']!r}, activations={values['activations']!r}")
    if values["metadata"] and not values["activations"]:
        problems.append("column 'metadata' joins per-image numbers to a head trained on cached activations: "
                        f"set activations (auto or a folder) too. Received: metadata={values['metadata']!r}, "
                        "activations=''")
    return problems


def read_cells(path: str | Path):
    """The cells of a training table as text (:func:`timl.tables.read_cells`: CSV with ``,``, ``;`` or tab,
    .xlsx, .ods, ``FILE.xlsx#Sheet``), decimal commas of its numeric columns read as points.

    Raises:
        MissingFileError: the table does not exist.
        ConfigError: the file cannot be read as a table (the message says why and what is accepted).
    """
    return tables.read_cells(path, what="training table", field="input_table", error=ConfigError,
                             numeric_columns=NUMERIC_COLUMNS.__contains__)


def unknown_columns_message(path: str | Path, unknown: list[str]) -> str:
    """The error of a table with unknown columns: a "did you mean" for each close to a known column, then every
    known column once (``notes`` is an input and an output column)."""
    import difflib

    inputs = tuple(dict.fromkeys(INPUT_COLUMNS + EXTRA_COLUMNS + RESOURCE_COLUMNS + HEAD_COLUMNS + OPTIONAL_COLUMNS))
    outputs = [column for column in dict.fromkeys(OUTPUT_COLUMNS + SUMMARY_COLUMNS + CALIBRATION_SUMMARY_COLUMNS)
               if column not in inputs]
    hints = [f"{column!r}: did you mean {close[0]!r}?" for column in unknown
             if (close := difflib.get_close_matches(str(column), KNOWN_COLUMNS, n=1))]
    return (f"{path}: unknown column(s) {', '.join(repr(column) for column in unknown)} (a typo?)."
            + (f" {' '.join(hints)}" if hints else "")
            + f" Known columns: {', '.join(inputs)}, and the output columns {', '.join(outputs)}.")


def read_table(path: str | Path) -> list[RunConfig | SearchRow | ConfigError]:
    """Reads a training table; returns one RunConfig (a SearchRow for a row with search spaces), or the
    ConfigError of that row, per data row (empty rows are no rows). A row's ConfigError carries the row's cells
    as written, ``error.cells`` (column -> text).

    Raises:
        MissingFileError: the table does not exist.
        ConfigError: the file cannot be read as a table, or it has an unknown column or lacks a required one (a
            whole-table error).
    """
    frame = read_cells(path)
    columns = list(frame.columns)
    unknown = [column for column in columns if column not in KNOWN_COLUMNS]
    if unknown:
        raise ConfigError(unknown_columns_message(path, unknown))
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        raise ConfigError(f"{path}: missing required column(s) {', '.join(missing)}. Received columns: "
                          f"{', '.join(columns)}")
    rows: list[RunConfig | ConfigError] = []
    for number, row in enumerate(frame.to_dict(orient="records")):
        try:
            rows.append(_read_row(row, number, str(path)))
        except ConfigError as error:
            error.cells = {str(name): str(value) for name, value in row.items()}  # as written: its run's params
            rows.append(error)
    return rows


def _read_row(row: dict, number: int, path: str) -> "RunConfig | SearchRow":
    """One row of a table: a RunConfig, or a SearchRow where a cell holds a search space.

    Raises:
        ConfigError: naming the table, the row and the bad cell.
    """
    try:
        spaces = find_spaces({str(name): cell_text(value) for name, value in row.items()})
    except ConfigError as error:
        raise ConfigError(f"{path}, row {number}: {error}") from None
    if spaces:
        return SearchRow.from_row(row, number, path, spaces)
    return RunConfig.from_row(row, number, path)


def parse_row_selection(text: str | None, count: int) -> list[int]:
    """Parses ``--rows`` (``0,2-4``) into sorted row numbers; ``None`` selects every row.

    Raises:
        ConfigError: a malformed selection or a row number outside the table.
    """
    if not text:
        return list(range(count))
    selected = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                first, last = (int(x) for x in part.split("-", 1))
                selected.update(range(first, last + 1))
            else:
                selected.add(int(part))
        except ValueError:
            raise ConfigError(f"--rows must be numbers and ranges such as 0,2-4. Received: rows={text!r}") from None
    outside = sorted(n for n in selected if not 0 <= n < count)
    if outside:
        raise ConfigError(f"--rows names rows outside the table (rows 0-{count - 1}). Received: {outside}")
    return sorted(selected)
