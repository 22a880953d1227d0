"""Every metric name TIML logs or reads, defined once: the modules that log, read, tag or select by a metric import
its name from here (``tests/test_structure.py`` fails on a metric-name literal anywhere else in ``timl/``).

The record of a trained row, and what names it:

* Per-epoch series keep Keras' names, step = epoch: ``loss``, ``accuracy``, ``learning_rate`` on the training data,
  the same with Keras' prefix ``val_`` on the dev data (``val_loss``, ``val_accuracy``: :func:`epoch_series`).
  MLflow shows them in its unprefixed "Model metrics" section; a method's best epoch is chosen by one of them.
* The kept model's scores, logged once at step = epochs, are grouped by split: ``train/``, ``dev/``, ``test/``
  summaries (:func:`summary_group`, e.g. ``dev/balanced_accuracy``: :func:`split_metric`), ``train_class/``,
  ``dev_class/``, ``test_class/`` per class (:func:`class_group`, e.g. ``dev_class/acc_MEL``:
  :func:`per_class_metric_name`). ``timl.inspect`` logs its scores on the model's run as ``inspect_<dataset>/``
  and ``inspect_<dataset>_class/`` (:func:`inspect_split`), and on its own run as ``test/`` and ``test_class/``.
  A name never holds both a series and a summary, so a chart never mixes them.
* A cross-validation run (split ``kfold=K``) holds the mean of each of its folds' scores under the score's own
  name, the folds' standard deviation beside it (``test/auc_std``: :func:`spread_name`) and the interval of the
  pooled out-of-fold predictions (``test/auc_ci_low``).
* A table's run holds ``rows/<status>`` counts and the best row's ``best/<group>_<name>`` scores
  (:func:`rows_metric`, :func:`best_metric`).

The results table (``automation_result.csv``) keeps the original TIML's columns (``valacc`` holds the per-class
``dev_class/acc_<class>`` values, :data:`ORIGINAL_CLASS_COLUMNS`) and TIML's summary columns (``val_accuracy``,
:data:`SUMMARY_COLUMNS`); for runs recorded before the grouped names it falls back to the names they were logged
under (:data:`LEGACY_METRICS`, :data:`LEGACY_CLASS_PREFIXES`). ``--select-by`` takes a metric name, a results
column or an earlier name (:func:`resolve_select_by`).
"""

from __future__ import annotations

import re

#: The splits whose scores a row reports, as their metric groups name them.
TRAIN, DEV, TEST = "train", "dev", "test"

#: Keras' prefix of a per-epoch series on the validation data (TIML's dev split).
KERAS_DEV_PREFIX = "val_"

#: Per-class lists of an evaluation summary and the short names of their metrics (``{class_group}<short>_<class>``).
PER_CLASS_METRICS = {"accuracy": "acc", "specificity": "spec", "sensitivity": "sens", "precision": "prec",
                     "f1": "f1", "auc": "auc", "average_precision": "ap", "class_prop": "prop"}

#: The calibration scalars of a summary (:mod:`timl.calibration`), a split's metrics under the same names
#: (``test/ece``): expected and maximum calibration error, Brier score, negative log likelihood.
CALIBRATION_SCALARS = ("ece", "mce", "brier", "nll")

#: Scalars of an evaluation summary and their metric names (in a split's group: ``dev/accuracy``).
SCALAR_METRICS = {"global_accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy", "mean_auc": "auc",
                  "mean_accuracy": "mean_accuracy", "weighted_mean_accuracy": "weighted_mean_accuracy",
                  "mean_specificity": "mean_specificity", "weighted_mean_specificity": "weighted_mean_specificity",
                  "mean_sensitivity": "mean_sensitivity", "weighted_mean_sensitivity": "weighted_mean_sensitivity",
                  "mean_f1": "mean_f1", "weighted_mean_f1": "weighted_mean_f1", "exact_match": "exact_match",
                  "hamming_loss": "hamming_loss", "samples": "samples",
                  **{key: key for key in CALIBRATION_SCALARS}}

#: The summary scalars (keys of :data:`SCALAR_METRICS`) and per-class lists (keys of :data:`PER_CLASS_METRICS`)
#: that get a bootstrap confidence interval (:mod:`timl.intervals`): accuracy, balanced accuracy, mean AUC, mean F1;
#: per class sensitivity, specificity, AUC.
INTERVAL_SCALARS = ("global_accuracy", "balanced_accuracy", "mean_auc", "mean_f1")
INTERVAL_PER_CLASS = ("sensitivity", "specificity", "auc")

#: The calibration scores of a split's summary, by the start of their short names (``test/ece``, ``test/mce``,
#: ``test/brier``, ``test/nll``, and per-class variants such as ``test/ece_classwise``): the model card shows them
#: apart from the other test scores.
CALIBRATION_SCORES = CALIBRATION_SCALARS

#: The summary scalars that are means of a per-image loss, whose intervals the bootstrap forms from the same
#: resamples (:func:`timl.intervals.mean_intervals`): the Brier score and the NLL (not the binned ECE and MCE, whose
#: resampled values are biased upwards).
CALIBRATION_INTERVAL_SCALARS = ("brier", "nll")

#: The bounds of an interval, as suffixes of the score they bound: ``test/balanced_accuracy_ci_low``,
#: ``test_class/sens_MEL_ci_high``; the summary files' keys too (``balanced_accuracy_ci_low``).
INTERVAL_BOUNDS = ("ci_low", "ci_high")

#: The summary files' record of how the intervals were formed: resamples and seed.
BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = "bootstrap_resamples", "bootstrap_seed"


def interval_name(name: str, bound: str) -> str:
    """A bound of the interval of score ``name``: ``interval_name("test/auc", "ci_low")`` is ``test/auc_ci_low``.

    Raises:
        ValueError: a bound other than :data:`INTERVAL_BOUNDS`.
    """
    if bound not in INTERVAL_BOUNDS:
        raise ValueError(f"An interval bound is one of {', '.join(INTERVAL_BOUNDS)}. Received: bound={bound!r}")
    return f"{name}_{bound}"


def is_interval(name: str) -> bool:
    """Whether a metric is a bound of an interval (``..._ci_low``, ``..._ci_high``)."""
    return name.endswith(tuple(f"_{bound}" for bound in INTERVAL_BOUNDS))


#: The suffix of a cross-validation score's standard deviation across its folds: ``test/balanced_accuracy_std``.
SPREAD_SUFFIX = "std"


def spread_name(name: str) -> str:
    """The standard deviation across folds of score ``name``: ``spread_name("test/auc")`` is ``test/auc_std``."""
    return f"{name}_{SPREAD_SUFFIX}"


def is_spread(name: str) -> bool:
    """Whether a metric is a cross-validation's spread across folds (``..._std``)."""
    return name.endswith(f"_{SPREAD_SUFFIX}")


#: The train group's own scores (the dev and test groups hold their evaluation summaries).
TRAIN_SAMPLES, TRAIN_SECONDS, TRAIN_BEST_EPOCH, TRAIN_ACCURACY = (
    "train/samples", "train/seconds", "train/best_epoch", "train/accuracy")

#: The kept model's headline scores.
DEV_ACCURACY, DEV_BALANCED_ACCURACY, DEV_AUC = "dev/accuracy", "dev/balanced_accuracy", "dev/auc"
TEST_ACCURACY, TEST_BALANCED_ACCURACY, TEST_AUC = "test/accuracy", "test/balanced_accuracy", "test/auc"

#: The scores of the kept model a row's progress line shows.
HEADLINE = (DEV_ACCURACY, DEV_BALANCED_ACCURACY, TEST_ACCURACY, TEST_BALANCED_ACCURACY)

#: The scores a registered model version is tagged with (tag name = metric name), when its run has them.
TAGGED_METRICS = (DEV_ACCURACY, DEV_BALANCED_ACCURACY, DEV_AUC, TEST_ACCURACY, TEST_BALANCED_ACCURACY, TEST_AUC)

#: The original TIML's output columns of ``automation_result.csv``, in its order. Most show a metric of the kept
#: model (:data:`ORIGINAL_METRIC_COLUMNS`, :data:`ORIGINAL_CLASS_COLUMNS`); ``augmult``, ``trainstart``,
#: ``trainmodel``, ``exceptions`` and ``notes`` come from the row's params and tags.
ORIGINAL_OUTPUT_COLUMNS = ("trainsize", "augmult", "malprop", "trainstart", "traintime", "trainacc", "trainmodel",
                           "valsize", "valmalprop", "valacc", "valspec", "valsens", "testsize", "testmalprop",
                           "testacc", "testspec", "testsens", "testauc", "exceptions", "notes")

#: Original columns that show one metric: column -> metric name.
ORIGINAL_METRIC_COLUMNS = {"trainsize": TRAIN_SAMPLES, "valsize": "dev/samples", "testsize": "test/samples",
                           "trainacc": TRAIN_ACCURACY, "traintime": TRAIN_SECONDS}

#: The metrics the results table writes as counts (integers): the images of each split; scores get 4 decimals.
COUNT_METRICS = (TRAIN_SAMPLES, "dev/samples", "test/samples")

#: Original per-class columns: column -> (split, short name) of a per-class metric (``valacc`` shows
#: ``dev_class/acc_<class>``), one value per class, in class order.
ORIGINAL_CLASS_COLUMNS = {"malprop": (TRAIN, "prop"), "valmalprop": (DEV, "prop"), "valacc": (DEV, "acc"),
                          "valspec": (DEV, "spec"), "valsens": (DEV, "sens"), "testmalprop": (TEST, "prop"),
                          "testacc": (TEST, "acc"), "testspec": (TEST, "spec"), "testsens": (TEST, "sens"),
                          "testauc": (TEST, "auc")}

#: The summary columns TIML adds to the results table: column -> the metric it shows.
SUMMARY_COLUMNS = {"val_accuracy": DEV_ACCURACY, "val_balanced_accuracy": DEV_BALANCED_ACCURACY, "val_auc": DEV_AUC,
                   "test_accuracy": TEST_ACCURACY, "test_balanced_accuracy": TEST_BALANCED_ACCURACY,
                   "test_auc": TEST_AUC}

#: The calibration columns TIML adds to the results table after all earlier ones: column -> the metric it shows
#: (``test_ece`` shows ``test/ece``).
CALIBRATION_SUMMARY_COLUMNS = {f"{column}_{name}": f"{split}/{name}"
                               for split, column in ((DEV, "val"), (TEST, "test")) for name in CALIBRATION_SCALARS}

#: The columns ``timl.results --ci`` adds after all others: the summary columns' interval bounds, column ->
#: metric (``test_balanced_accuracy_ci_low`` shows ``test/balanced_accuracy_ci_low``).
INTERVAL_COLUMNS = {interval_name(column, bound): interval_name(metric, bound)
                    for column, metric in SUMMARY_COLUMNS.items() for bound in INTERVAL_BOUNDS}

#: How runs of TIML before the grouped names called the results table's metrics (their tables still rebuild).
LEGACY_METRICS = {TRAIN_SAMPLES: "trainsize", "dev/samples": "valsize", "test/samples": "testsize",
                  TRAIN_ACCURACY: "trainacc", TRAIN_SECONDS: "train_time",
                  **{metric: column for column, metric in SUMMARY_COLUMNS.items()}}

#: How runs of TIML before the grouped names prefixed their per-class metrics (``valacc_MEL``), by split.
LEGACY_CLASS_PREFIXES = {TRAIN: "train", DEV: "val", TEST: "test"}

#: The metric that picks a table's best row by default (``--select-by``; higher is better).
DEFAULT_SELECT_BY = DEV_BALANCED_ACCURACY

#: Names ``--select-by`` also accepts: the original results table's columns and the names of earlier TIML versions.
SELECT_BY_ALIASES = {"valacc": DEV_ACCURACY, "testacc": TEST_ACCURACY, "valauc": DEV_AUC, "testauc": TEST_AUC,
                     **SUMMARY_COLUMNS}

#: The groups of a table run's own metrics: its rows' end states and its best row's scores.
ROWS_GROUP, BEST_GROUP = "rows/", "best/"

#: The group of a calibrated row's temperatures (``calibration/temperature``, per class for sigmoid outputs:
#: ``calibration/temperature_MEL``; :func:`temperature_metric`).
CALIBRATION_GROUP = "calibration/"

#: The suffix of a calibrated row's scores before calibration, beside the calibrated ones: ``dev/ece`` (after)
#: and ``dev/ece_uncalibrated`` (before; :func:`uncalibrated_metric`).
UNCALIBRATED_SUFFIX = "_uncalibrated"

#: The scores a calibrated row logs before and after calibration, for dev and test.
CALIBRATION_COMPARED = ("ece", "nll", "brier")


def temperature_metric(class_name: str | None = None) -> str:
    """The metric of a fitted temperature: ``calibration/temperature`` (softmax) or, per class (sigmoid),
    ``calibration/temperature_<class>``."""
    name = f"{CALIBRATION_GROUP}temperature"
    return name if class_name is None else f"{name}_{sanitize_metric_name(class_name)}"


def uncalibrated_metric(split: str, name: str) -> str:
    """A split's score before calibration: ``uncalibrated_metric("test", "ece")`` is ``test/ece_uncalibrated``."""
    return f"{summary_group(split)}{name}{UNCALIBRATED_SUFFIX}"

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


def sanitize_metric_name(name: str) -> str:
    """Makes ``name`` a valid MLflow metric name part: keeps ``[A-Za-z0-9_-. /]``, replaces others by ``_``."""
    return _UNSAFE.sub("_", str(name))


def summary_group(split: str) -> str:
    """The metric prefix of a split's summary scores (a section of MLflow's charts view): ``dev/``."""
    return f"{sanitize_metric_name(split)}/"


def class_group(split: str) -> str:
    """The metric prefix of a split's per-class scores (their own section): ``dev_class/``."""
    return f"{sanitize_metric_name(split)}_class/"


def split_metric(split: str, name: str) -> str:
    """A summary score of a split: ``split_metric("dev", "balanced_accuracy")`` is ``dev/balanced_accuracy``."""
    return f"{summary_group(split)}{name}"


def per_class_metric_name(prefix: str, short: str, class_name: str) -> str:
    """The MLflow name of one class's metric: ``{prefix}{short}_{class}``, the class sanitised.

    The one naming rule of per-class metrics: training logs ``dev_class/acc_MEL`` (prefix :func:`class_group`),
    inspect ``test_class/acc_MEL``, and the results table reads them back with it.
    """
    return f"{prefix}{short}_{sanitize_metric_name(class_name)}"


def inspect_split(dataset: str) -> str:
    """The split name ``timl.inspect`` scores a model's run under: ``inspect_<dataset>``, whose groups are
    ``inspect_<dataset>/`` and ``inspect_<dataset>_class/``."""
    return f"inspect_{sanitize_metric_name(dataset)}"


def epoch_series(name: str, split: str = TRAIN) -> str:
    """The name of a Keras per-epoch series: ``name`` on the training data, ``val_<name>`` on dev.

    Raises:
        ValueError: a split other than train or dev (Keras fits on those two only).
    """
    if split not in (TRAIN, DEV):
        raise ValueError(f"Keras logs per-epoch series on the {TRAIN} and {DEV} splits only. Received: split={split!r}")
    return f"{KERAS_DEV_PREFIX}{name}" if split == DEV else name


def rows_metric(status: str) -> str:
    """A table run's count of rows that ended in ``status``: ``rows/finished``."""
    return f"{ROWS_GROUP}{status.lower()}"


#: A search run's counts of its trials (``python -m timl.tune``): ``trials/finished``, ``trials/pruned``,
#: ``trials/failed``.
TRIALS_GROUP = "trials/"
TRIAL_STATES = ("finished", "pruned", "failed")
#: Finished trials that repeated a finished trial's cells (told its value, nothing trained): ``trials/repeated``.
TRIALS_REPEATED = "repeated"


def trials_metric(state: str) -> str:
    """A search run's count of trials that ended ``state`` (one of :data:`TRIAL_STATES`): ``trials/pruned``."""
    return f"{TRIALS_GROUP}{state}"


def is_best_score(name: str) -> bool:
    """Whether a row's metric is one of the scores its table run copies when the row is the best: the dev and
    test summaries, sizes and interval bounds excepted."""
    return (name.startswith((summary_group(DEV), summary_group(TEST))) and not name.endswith("/samples")
            and not is_interval(name) and not is_spread(name))


def best_metric(name: str) -> str:
    """The table run's copy of its best row's score ``name``: ``best/dev_accuracy``."""
    return f"{BEST_GROUP}{name.replace('/', '_')}"


def resolve_select_by(name: str) -> str:
    """The metric a ``--select-by`` value names: a results column or an earlier name maps to today's metric."""
    return SELECT_BY_ALIASES.get(name, name)


#: Scores by subgroup (``inspect --subgroups``, the ``subgroups`` column: :mod:`timl.subgroups`), in the group
#: ``<split>_group/``: each group's size and scores, ``test_group/<column>/<value>/sens_MEL`` (MLflow allows no
#: ``=`` in a name), their interval bounds (``..._ci_low``), and the largest difference between the scored groups
#: of a column (``test_group/gap/<column>/sens_MEL``) and of any column (``test_group/gap/sens_MEL``).
SUBGROUP_GAP = "gap"

#: A group's size among its scores.
SUBGROUP_SIZE = "samples"

#: The summary scalar and the per-class lists (keys of :data:`PER_CLASS_METRICS`) scored for each subgroup.
SUBGROUP_SCALARS = ("balanced_accuracy",)
SUBGROUP_PER_CLASS = ("sensitivity", "specificity", "auc")


def subgroup_group(split: str) -> str:
    """The metric prefix of a split's scores by subgroup: ``test_group/``."""
    return f"{sanitize_metric_name(split)}_group/"


def inspection_subgroup_groups(metrics) -> list[str]:
    """The subgroup prefixes of the inspections logged on a model's run (``inspect_<dataset>_group/``), found in
    its metric names."""
    prefix, suffix = inspect_split(""), subgroup_group("")
    return sorted({name[:name.index(suffix) + len(suffix)] for name in metrics
                   if name.startswith(prefix) and suffix in name})


def subgroup_name_part(value: str) -> str:
    """A column or a value as one level of a subgroup metric name: sanitised, ``/`` (``head/neck``) as ``_``."""
    return sanitize_metric_name(value).replace("/", "_")


def subgroup_score_names(class_names) -> list[str]:
    """The scores of a subgroup, as the last part of their names: ``balanced_accuracy``, ``sens_MEL``, ...,
    ``spec_MEL``, ..., ``auc_MEL``, ... (per class in class order)."""
    return [*(SCALAR_METRICS[key] for key in SUBGROUP_SCALARS),
            *(per_class_metric_name("", PER_CLASS_METRICS[key], name) for key in SUBGROUP_PER_CLASS
              for name in class_names)]


def subgroup_metric(split: str, column: str, value: str, score: str) -> str:
    """A group's score: ``subgroup_metric("test", "sex", "male", "sens_MEL")`` is ``test_group/sex/male/sens_MEL``."""
    return f"{subgroup_group(split)}{subgroup_name_part(column)}/{subgroup_name_part(value)}/{score}"


def subgroup_gap_metric(split: str, score: str, column: str | None = None) -> str:
    """The largest gap of a score between groups: of one column (``test_group/gap/sex/sens_MEL``) or of any
    (``test_group/gap/sens_MEL``)."""
    within = f"{subgroup_name_part(column)}/" if column is not None else ""
    return f"{subgroup_group(split)}{SUBGROUP_GAP}/{within}{score}"
