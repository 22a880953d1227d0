"""A row's evaluation (the fourth stage of a row's flow): the kept model, as a Classifier, predicts the dev and
test sets and their reports start; a row with a ``subgroups`` cell also scores its test set by subgroup
(:mod:`timl.subgroups`: ``N-test-subgroups.csv``, ``N-test-subgroups-<score>.png``, ``test_group/...``).

A report's summary, per-image results and curves are computed here; its plots are drawn by the plot process
(:mod:`timl.workers`) while the row records its model (:mod:`timl.training.record`), which then waits for them
(:meth:`timl.reports.Report.finish`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from timl import metric_names as names
from timl import workers
from timl.datasets import IMAGE_COLUMN, Dataset
from timl.reports import Report
from timl.intervals import DEFAULT_RESAMPLES, Bootstrap
from timl.training.data import RowData
from timl.training.loop import Trained
from timl.training.plan import RowPlan

if TYPE_CHECKING:
    from timl.classifier import Classifier
    from timl.subgroups import SubgroupResults

#: The splits a row reports on.
REPORTED_SPLITS = (names.DEV, names.TEST)


@dataclasses.dataclass
class RowEvaluation:
    """The kept model as a Classifier (what the row saves and logs), the reports started for it, by split, and
    the test set's scores by subgroup and their files (a ``subgroups`` cell)."""

    classifier: Classifier
    reports: dict[str, Report]
    subgroups: SubgroupResults | None = None
    subgroup_files: list[Path] = dataclasses.field(default_factory=list)


def start_evaluation(plan: RowPlan, data: RowData, trained: Trained, out_dir: Path, *, skip_roc: bool,
                     reports: workers.Worker, bootstrap: int = DEFAULT_RESAMPLES) -> RowEvaluation:
    """Predicts dev and test (unless the fit already did: a head on cached activations) and starts their reports;
    a row's ``tta`` cell averages the predictions over its test-time augmentation views.

    Args:
        plan: the row.
        data: its data (the decoded dev and test images, unless ``trained`` holds their predictions).
        trained: the fitted model.
        out_dir: where the reports' files go (``N-dev-...``, ``N-test-...``).
        skip_roc: write no ROC plots (nor any other report plot).
        reports: the process that draws the report plots.
        bootstrap: resamples of each score's 95% interval (0: none).

    Returns:
        The classifier and the reports, their plots still being drawn.
    """
    from timl.classifier import Classifier

    classifier = Classifier(trained.model, data.preprocessing, data.dataset.class_names, plan.spec.multi_label)
    started, predicted = {}, {}
    for split in REPORTED_SPLITS:
        if data.dataset.sizes().get(split):
            labels = data.dataset.labels(split)
            probabilities = trained.predictions.get(split)
            if probabilities is None:
                probabilities = classifier.predict_arrays(data.arrays[split], plan.config.batchsize,
                                                          tta=plan.config.tta)
            predicted[split] = probabilities
            started[split] = _report_split(reports, out_dir, f"{plan.config.file_stem}-{split}-", data.dataset, split,
                                           labels, probabilities, skip_roc,
                                           Bootstrap(resamples=bootstrap, groups=data.dataset.groups.get(split)))
    evaluation = RowEvaluation(classifier, started)
    if plan.config.subgroups and names.TEST in started:
        _score_subgroups(plan, data, predicted[names.TEST], started[names.TEST].summary, out_dir, bootstrap,
                         evaluation)
    return evaluation


def _score_subgroups(plan: RowPlan, data: RowData, probabilities, summary: dict, out_dir: Path, bootstrap: int,
                     evaluation: RowEvaluation) -> None:
    """Scores the test set by the row's subgroups (the table relative to where the dataset's paths start, else
    beside the test CSV) and writes their files."""
    from timl import subgroups

    spec = subgroups.parse_subgroups(plan.config.subgroups)
    dataset = data.dataset
    folders = [plan.config.dataset_base_dir(), *(Path(file).parent for file in dataset.files.get(names.TEST, ()))]
    labels = subgroups.read_subgroup_labels(spec, subgroups.subgroups_file(spec, *folders),
                                            list(dataset.frame(names.TEST)[IMAGE_COLUMN]))
    evaluation.subgroups = subgroups.score_subgroups(
        spec, labels, dataset.labels(names.TEST), probabilities, dataset.class_names,
        multi_label=dataset.multi_label, bootstrap=Bootstrap(resamples=bootstrap))
    evaluation.subgroup_files = subgroups.write_subgroup_report(
        out_dir, evaluation.subgroups, prefix=f"{plan.config.file_stem}-{names.TEST}-", overall=summary)


def _report_split(plot_worker: workers.Worker, out_dir: Path, prefix: str, dataset: Dataset, split: str, labels,
                  probabilities, skip_roc: bool, bootstrap: Bootstrap) -> Report:
    """Evaluates one split with the inspect code: summary, per-image results, confusion matrix, ROC plots
    (the plots drawn by the plot process)."""
    from timl import evaluation, reports

    names = list(dataset.frame(split)[IMAGE_COLUMN])
    options = {"multi_label": dataset.multi_label}
    if skip_roc:
        result = evaluation.evaluate(labels, probabilities, dataset.class_names, bootstrap=bootstrap, **options)
        path = out_dir / f"{prefix}per_image_results.csv"
        reports.per_image_results(names, labels, probabilities, dataset.class_names, **options).to_csv(
            path, index=False)
        return reports.Report(result, [path], [])
    return reports.start_report(out_dir, names, labels, probabilities, list(dataset.class_names),
                                prefix=prefix, worker=plot_worker, bootstrap=bootstrap, **options)
