"""Cross-validation rows: a row whose split is ``kfold=K`` trains its K folds as child runs of one
cross-validation run, ``N-METHOD-cv`` (a child of the table's run), which then holds the result of all of them.

The table loop (:mod:`timl.training.table`) asks :meth:`CrossValidations.tasks` for a row's folds: the
cross-validation run is made (or, resuming, reopened) and each fold not yet FINISHED becomes a task of an ordinary
row, ``kfold=K:i``, named ``N-METHOD-fold<i>``, whose run is a child of the cross-validation run. The executor
trains them like any row (Ray in parallel). :meth:`CrossValidations.fold_ended` counts their outcomes; when the last
fold has ended, :func:`summarise` logs the cross-validation's record and its run ends:

- each score of the folds (``train/``, ``dev/``, ``test/`` and per class) as the folds' mean under its own name, and
  their sample standard deviation beside it (``test/balanced_accuracy_std``: :func:`timl.folds.fold_statistics`);
- the dev and test scores' 95% intervals (``test/balanced_accuracy_ci_low``, ``_ci_high``): a bootstrap of the
  folds' pooled predictions (:mod:`timl.intervals`; the folds' test sets partition the data, so each image's
  out-of-fold prediction counts once; with a ``groups`` cell whole groups are resampled). ``test/samples`` is the
  number of pooled images;
- files: ``N-cv-test-per_image_results.csv`` (every image's out-of-fold prediction, its fold in the last column),
  ``N-cv-test-summary.csv``/``.json`` (the pooled predictions' summary and intervals), ``N-cv-folds.csv`` (each
  fold's headline scores, then their mean and standard deviation) and ``N-cv-test-ROC-<iiii>-<class>.png`` (each
  fold's curve, the mean curve and a band of one standard deviation).

A fold that does not finish leaves the cross-validation FAILED, naming the folds; ``--resume`` trains those folds
again (the finished ones are kept) and then summarises.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from timl import __version__, folds, tracking
from timl import metric_names as names
from timl.config import RunConfig
from timl.datasets.groups import OWN_GROUP
from timl.evaluation import evaluate, split_metrics
from timl.intervals import Bootstrap
from timl.training.executors import RowOutcome, RowTask, TableContext, headline_message

logger = logging.getLogger(__name__)

#: The param of a cross-validation run that holds its number of folds.
FOLDS_PARAM = "folds"

#: The param that says how a cross-validation's intervals are formed.
INTERVAL_PARAM = "cv_intervals"
INTERVAL_METHOD = "bootstrap of the folds' pooled predictions"

#: The splits whose pooled predictions give the cross-validation's intervals.
POOLED_SPLITS = (names.DEV, names.TEST)


@dataclasses.dataclass
class CrossValidation:
    """A cross-validation row being trained: its row, its run, its folds' run names and the outcomes so far."""

    config: RunConfig
    run_id: str
    table: TableContext
    fold_names: dict[str, int]
    outcomes: dict[int, RowOutcome] = dataclasses.field(default_factory=dict)
    started: float = dataclasses.field(default_factory=time.time)

    def outcome(self, status: str, message: str) -> RowOutcome:
        return RowOutcome(self.config.row, self.config.cv_run_name, status, self.run_id, message,
                          time.time() - self.started)


class CrossValidations:
    """The cross-validation rows of a table: opened as the table loop reaches them, summarised as their last fold
    ends.

    Args:
        table: what the table's rows share; each fold's task gets a copy whose parent run is its cross-validation.
    """

    def __init__(self, table: TableContext):
        self.table = table
        self._open: dict[tuple[int, str], CrossValidation] = {}

    def tasks(self, config: RunConfig, row_key: str, row_ended: Callable[[RowOutcome], None]) -> Iterator[RowTask]:
        """The tasks of a cross-validation row's folds not yet FINISHED; a FINISHED fold (``--resume``) is reported
        to ``row_ended`` as skipped instead (the last one's outcome completes the cross-validation)."""
        cross_validation = self._start(config, row_key)
        done = tracking.finished_children(cross_validation.run_id)
        fold_table = dataclasses.replace(self.table, parent_run_id=cross_validation.run_id)
        folds = config.fold_configs()
        for fold in folds:
            self._open[(fold.row, fold.run_name)] = cross_validation
        for fold in folds:
            fold_key = fold.key(__version__)
            if fold_key in done:
                row_ended(RowOutcome(fold.row, fold.run_name, "FINISHED", done[fold_key], "skipped: already FINISHED"))
            else:
                yield RowTask(fold, fold_key, fold_table)

    def _start(self, config: RunConfig, row_key: str) -> CrossValidation:
        """Creates the row's cross-validation run, or reopens the one an earlier, unfinished attempt left."""
        earlier = [run for run in tracking.child_runs(self.table.parent_run_id)
                   if run.data.tags.get(tracking.TAG_ROW_KEY) == row_key]
        if earlier:
            run_id = tracking.reopen_run(earlier[-1].info.run_id)
        else:
            run_id = tracking.create_row_run(self.table.parent_run_id, config.cv_run_name, config.row, row_key,
                                             kind=tracking.KIND_CV)
            tracking.log_params({**config.input_cells(), FOLDS_PARAM: len(config.fold_configs()),
                                 INTERVAL_PARAM: INTERVAL_METHOD}, run_id=run_id)
        names_of_folds = {fold.run_name: fold.cv_fold for fold in config.fold_configs()}
        return CrossValidation(config, run_id, self.table, names_of_folds)

    def fold_ended(self, outcome: RowOutcome) -> RowOutcome | None:
        """Records a row's outcome; returns the cross-validation's own outcome when it was its last fold (None for
        any other row)."""
        cross_validation = self._open.pop((outcome.row, outcome.name), None)
        if cross_validation is None:
            return None
        cross_validation.outcomes[cross_validation.fold_names[outcome.name]] = outcome
        if len(cross_validation.outcomes) < len(cross_validation.fold_names):
            return None
        return finish(cross_validation)

    def abort(self) -> None:
        """Ends the cross-validations whose folds were still training KILLED (an interrupted table)."""
        for run_id in {cross_validation.run_id for cross_validation in self._open.values()}:
            tracking.kill_run(run_id)
        self._open.clear()


def finish(cross_validation: CrossValidation) -> RowOutcome:
    """Summarises a cross-validation whose folds all FINISHED and ends its run FINISHED; otherwise ends it FAILED
    naming the folds that did not finish."""
    unfinished = [f"fold {fold} {outcome.status}: {outcome.message}"
                  for fold, outcome in sorted(cross_validation.outcomes.items()) if outcome.status != "FINISHED"]
    if unfinished:
        message = (f"{len(unfinished)} of {len(cross_validation.fold_names)} folds did not finish (--resume trains "
                   f"them again): " + "; ".join(unfinished))
        tracking.fail_run(cross_validation.run_id, message)
        return cross_validation.outcome("FAILED", message)
    try:
        headline = summarise(cross_validation)
    except Exception as error:  # the folds stay FINISHED: --resume summarises again
        logger.debug("cross-validation of row %d failed", cross_validation.config.row, exc_info=True)
        message = tracking.error_text(error)
        tracking.fail_run(cross_validation.run_id, message)
        return cross_validation.outcome("FAILED", message)
    tracking.end_run(cross_validation.run_id, "FINISHED")
    return cross_validation.outcome("FINISHED", headline_message(headline))


def summarise(cross_validation: CrossValidation) -> dict:
    """Logs a cross-validation's scores, intervals, files and shared params on its run (see the module's
    description); returns its headline scores."""
    from timl import models

    config, table = cross_validation.config, cross_validation.table
    fold_runs = [tracking.get_run(cross_validation.outcomes[fold].run_id)
                 for fold in sorted(cross_validation.outcomes)]
    params = _shared_params(fold_runs)
    class_names = json.loads(params.get("class_names", "[]") or "[]")
    multi_label = models.get_method(config.method).multi_label
    metrics = folds.fold_statistics([run.data.metrics for run in fold_runs])
    predictions = _fold_predictions(config, fold_runs, len(class_names))
    group_of = _groups_of_images(config, multi_label) if config.groups else None  # read once for both splits
    out_dir = Path(table.out_dir)
    prefix = f"{config.row}-cv-"
    files = []
    for split in POOLED_SPLITS:
        pooled = folds.pool(predictions[split])
        groups = (None if group_of is None else
                  np.array([group_of.get(name, f"{OWN_GROUP}{name}") for name in pooled.image_names], dtype=object))
        summary = evaluate(pooled.y_true, pooled.y_prob, class_names, multi_label=multi_label,
                           bootstrap=Bootstrap(resamples=table.bootstrap, groups=groups))
        metrics.update({name: value for name, value in split_metrics(summary, split).items()
                        if names.is_interval(name)})
        if split == names.TEST:
            metrics[names.split_metric(names.TEST, "samples")] = len(pooled.image_names)
            files += _write_test_files(out_dir, prefix, pooled, predictions[split], summary, class_names,
                                       multi_label, table.skip_roc)
    files.append(_write_fold_table(out_dir / f"{prefix}folds.csv", fold_runs))
    tracking.log_params(params, run_id=cross_validation.run_id)
    tracking.log_artifacts(files, run_id=cross_validation.run_id)
    tracking.log_metrics(metrics, run_id=cross_validation.run_id)
    return {name: metrics.get(name) for name in names.HEADLINE if name in metrics}


def _shared_params(fold_runs: list) -> dict:
    """The params every fold logged with the same value (the class names, the method's settings), the split and
    the sizes of each fold's groups aside."""
    shared = dict(fold_runs[0].data.params)
    for run in fold_runs[1:]:
        shared = {key: value for key, value in shared.items() if run.data.params.get(key) == value}
    shared.pop("split", None)
    return shared


def _fold_predictions(config: RunConfig, fold_runs: list, class_count: int) -> dict[str, list]:
    """Each fold's dev and test predictions, read back from its run's ``per_image_results.csv`` files."""
    stems = {fold.cv_fold: fold.file_stem for fold in config.fold_configs()}
    predictions: dict[str, list] = {split: [] for split in POOLED_SPLITS}
    with tempfile.TemporaryDirectory(prefix="timl-cv-") as work:
        for position, run in enumerate(fold_runs):
            fold = int(run.data.tags.get(tracking.TAG_FOLD, position))
            for split in POOLED_SPLITS:
                name = f"{stems[fold]}-{split}-per_image_results.csv"
                path = tracking.download_artifact(run.info.run_id, name, Path(work) / str(fold))
                predictions[split].append(folds.read_per_image_results(path, class_count, fold))
    return predictions


def _groups_of_images(config: RunConfig, multi_label: bool) -> dict[str, str]:
    """Image name -> group label of the row's dataset, read from its ``groups`` cell as its folds read it."""
    from timl import datasets

    first = config.fold_configs()[0]
    return datasets.image_groups(first.dataset, first.split, classcolumns=first.classcolumns,
                                 multi_label=multi_label, seed=first.seed, base_dir=first.dataset_base_dir(),
                                 groups=first.groups)


def _write_test_files(out_dir: Path, prefix: str, pooled, parts: list, summary: dict, class_names: list[str],
                      multi_label: bool, skip_roc: bool) -> list[Path]:
    """The pooled out-of-fold predictions' per-image results (with their fold), summary and the folds' ROC (from
    each fold's own predictions, ``parts``)."""
    from timl import plots, reports

    out_dir.mkdir(parents=True, exist_ok=True)
    per_image = reports.per_image_results(pooled.image_names, pooled.y_true, pooled.y_prob, class_names,
                                          multi_label=multi_label)
    per_image[folds.FOLD_COLUMN] = pooled.folds
    files = [out_dir / f"{prefix}{names.TEST}-per_image_results.csv", out_dir / f"{prefix}{names.TEST}-summary.csv",
             out_dir / f"{prefix}{names.TEST}-summary.json"]
    per_image.to_csv(files[0], index=False)
    reports.write_summary(summary, files[1], files[2])
    if not skip_roc:
        files += plots.draw_fold_roc(folds.fold_rocs(parts, class_names), out_dir, prefix=f"{prefix}{names.TEST}-")
    return files


def _write_fold_table(path: Path, fold_runs: list) -> Path:
    """``N-cv-folds.csv``: each fold's run and headline scores, then the folds' mean and standard deviation."""
    rows = [{"fold": run.data.tags.get(tracking.TAG_FOLD, ""), "run_id": run.info.run_id,
             **{name: run.data.metrics.get(name) for name in names.HEADLINE}} for run in fold_runs]
    frame = pd.DataFrame(rows, columns=["fold", "run_id", *names.HEADLINE])
    scores = frame[list(names.HEADLINE)].astype(float)
    frame.loc[len(frame)] = {"fold": "mean", "run_id": "", **scores.mean().to_dict()}
    frame.loc[len(frame)] = {"fold": "std", "run_id": "", **scores.std(ddof=1).to_dict()}
    frame.to_csv(path, index=False)
    return path
