"""Expert answers back into training: the reviews of the evaluate page exported as a ground-truth CSV.

``python -m timl.review export --db timl_evaluations.db --out corrected.csv --images DIR`` reads each reviewer's
current answer per image (:func:`timl.review_store.current_answers`), ignores skipped ones and counts every
other answer as a vote: for the model's predicted class when the expert agreed, for the expert's label
otherwise. Per image the rules decide (``--conflicts majority|drop``, ``--min-agreement K``); the images kept
become a ground-truth CSV in TIML's format (``image_name`` without its suffix, one 0/1 column per class) with
``images/`` beside it (links to the reviewed files), so the CSV is a dataset as it is, or first in a union with
the original ground truth in a table's ``dataset`` cell: ``corrected.csv+isic.csv`` (the experts' labels win).

The sidecar ``corrected.csv.json`` (:mod:`timl.datasets.provenance`) records where the CSV came from, and an
MLflow run records the export (tag ``timl.command=review-export``; the CSV as an artifact and as a dataset); a
row that trains on the CSV names that run as its data source.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import click
import pandas as pd

from timl import __version__
from timl.cli import group, setup_logging, tracking_uri_option, user_errors
from timl.datasets import MAX_LISTED, provenance_path, write_provenance
from timl.errors import ConfigError, DatasetError, MissingFileError
from timl.review_store import DEFAULT_DATABASE, stored_answers
from timl.review_votes import CONFLICT_RULES, LEFT_OUT_REASONS, Decision, class_columns, decide, ground_truth, restrict

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "timl-review"

@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What :func:`export_reviews` produced.

    Attributes:
        csv_path: the ground-truth CSV.
        sidecar_path: its provenance, ``<csv_path>.json``.
        images_dir: the folder of links beside the CSV, or None when no image folder was given.
        classes: the class columns, in order.
        classes_from: where they came from: ``--classes``, ``answers`` (recorded with the answers) or ``votes``.
        decisions: every reviewed image, by name.
        reviewers: the reviewers whose answers counted.
        answers: the current answers read (skipped ones included).
        skipped: the skipped answers, ignored.
        run_id: the export's MLflow run, or None without MLflow.
    """

    csv_path: Path
    sidecar_path: Path
    images_dir: Path | None
    classes: tuple[str, ...]
    classes_from: str
    decisions: tuple[Decision, ...]
    reviewers: tuple[str, ...]
    answers: int
    skipped: int
    run_id: str | None

    @property
    def kept(self) -> list[Decision]:
        return [decision for decision in self.decisions if decision.label is not None]

    @property
    def left_out(self) -> list[Decision]:
        return [decision for decision in self.decisions if decision.label is None]


# ---------------------------------------------------------------------------------------------------------------
# Reading the answers


def read_answers(database: str | Path) -> list[dict]:
    """Each reviewer's current answer per image in the evaluate page's store, skipped ones included.

    Args:
        database: the SQLite store (the server's EVALUATION_DB).

    Returns:
        The answers as :func:`timl.review_store.current_answers` gives them, oldest first.

    Raises:
        MissingFileError: no such file.
        DatasetError: not the evaluate page's store, or a store without answers.
    """
    database = Path(database)
    answers = stored_answers(database)
    if not answers:
        raise DatasetError(f"{database}: no answers yet; experts answer on the evaluate page "
                           f"(/static/evaluate.html). Received: db={str(database)!r}")
    return answers


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _plan_links(images: list[str], source_dir: Path, target_dir: Path) -> list[tuple[Path, Path]]:
    """The links to make, target -> source file; checks every one before any is made.

    Raises:
        MissingFileError: no such image folder, or reviewed images missing from it.
        ConfigError: a different file already where a link should go.
    """
    if not source_dir.is_dir():
        raise MissingFileError(f"Image folder not found; give the folder the experts reviewed (the server's "
                               f"EVALUATION_IMAGES_DIR). Received: images={str(source_dir)!r}")
    if target_dir.exists() and not target_dir.is_dir():
        raise ConfigError(f"{target_dir} is a file, not the folder of images beside the CSV; move it, or give another "
                          f"--out. Received: out={str(target_dir.parent)!r}")
    missing = [image for image in images if not (source_dir / image).is_file()]
    if missing:
        raise MissingFileError(f"{source_dir}: {len(missing)} reviewed image(s) not found, so this is not the folder "
                               f"the experts reviewed: {', '.join(missing[:MAX_LISTED])}. "
                               f"Received: images={str(source_dir)!r}")
    links, taken = [], []
    for image in images:
        source, target = (source_dir / image).resolve(), target_dir / image
        if os.path.lexists(target):
            if target.exists() and os.path.samefile(target, source):
                continue
            taken.append(str(target))
        links.append((target, source))
    if taken:
        raise ConfigError(f"{target_dir}: other files are already there under the names of reviewed images, and "
                          f"are not replaced: {', '.join(taken[:MAX_LISTED])}. Move them, or give another --out. "
                          f"Received: out={str(target_dir.parent)!r}")
    return links


def _write_dataset(frame: pd.DataFrame, csv_path: Path, links: list[tuple[Path, Path]] | None) -> None:
    """Writes the CSV and, unless ``links`` is None, ``images/`` beside it with the planned links."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(csv_path, index=False)
    if links is not None:
        (csv_path.parent / "images").mkdir(exist_ok=True)
    for target, source in links or ():
        target.symlink_to(source)


def _check_out(csv_path: Path, overwrite: bool) -> None:
    if csv_path.is_dir():
        raise ConfigError(f"--out is a folder; give the CSV file to write. Received: out={str(csv_path)!r}")
    if csv_path.exists() and not overwrite:
        raise ConfigError(f"The output CSV already exists; pass --overwrite to replace it (and its "
                          f"{provenance_path(csv_path).name}) or give another --out. Received: out={str(csv_path)!r}")


def _provenance(csv_path: Path, database: Path, images: Path | None, answers: list[dict], decisions: list[Decision],
                rules: dict) -> dict:
    """The sidecar's record (the run's fields are added once the run exists)."""
    counted = [answer for answer in answers if not answer["skipped"]]
    kept = [decision for decision in decisions if decision.label is not None]
    left_out = {decision.image: decision.reason for decision in decisions if decision.label is None}
    return {"csv": str(csv_path.resolve()), "created": datetime.datetime.now().isoformat(timespec="seconds"),
            "database": str(database.resolve()), "images": str(images.resolve()) if images else None,
            "linked_images": str((csv_path.parent / "images").resolve()) if images else None,
            "models": list(dict.fromkeys(answer["model"] for answer in counted if answer.get("model"))),
            "reviewers": sorted({answer["reviewer"] for answer in counted}), "rules": rules,
            "counts": {"answers": len(answers), "skipped": len(answers) - len(counted),
                       "images_reviewed": len(decisions), "images_kept": len(kept), "images_left_out": len(left_out),
                       "left_out_by_reason": dict(collections.Counter(left_out.values()))},
            "left_out": left_out, "timl_version": __version__, "run_id": None, "experiment": None,
            "artifact_uri": None}


def _record_run(record: dict, frame: pd.DataFrame, csv_path: Path, *, experiment: str,
                tracking_uri: str | None) -> str:
    """Records the export as an MLflow run: tags naming the source, the rules as params, the counts as metrics, the
    CSV and its sidecar as artifacts and the CSV as a dataset input. Rewrites the sidecar with the run. Returns the
    run id."""
    from timl import tracking

    try:
        return _log_run(record, frame, csv_path, experiment=experiment, tracking_uri=tracking.configure(tracking_uri))
    except tracking.tracking_errors() as error:
        raise ConfigError(f"The export could not be recorded in MLflow ({error}); {csv_path} and its provenance are "
                          f"written, without a run. Give another --tracking-uri, or --no-mlflow. "
                          f"Received: tracking_uri={tracking_uri!r}") from error


def _log_run(record: dict, frame: pd.DataFrame, csv_path: Path, *, experiment: str, tracking_uri: str | None) -> str:
    from timl import tracking

    tags = {tracking.TAG_COMMAND: "review-export", tracking.TAG_REVIEW_MODEL: "; ".join(record["models"])[:5000],
            tracking.TAG_REVIEW_REVIEWERS: ", ".join(record["reviewers"])[:5000],
            tracking.TAG_REVIEW_IMAGES: record["images"] or ""}
    counts = {key: value for key, value in record["counts"].items() if isinstance(value, int)}
    params = {**record["rules"], "database": record["database"], "images": record["images"], "csv": record["csv"]}
    with tracking.command_run(experiment, f"review-export {csv_path.stem}", tags, tracking_uri) as run_id:
        tracking.log_metrics(counts, run_id=run_id, tracking_uri=tracking_uri)
        tracking.log_params(params, run_id=run_id, tracking_uri=tracking_uri)
        [artifact_uri] = tracking.log_artifacts([csv_path], run_id=run_id, tracking_uri=tracking_uri)
        dataset = tracking.dataset_input(frame, source=str(csv_path.resolve()), name=csv_path.stem,
                                         context="review-export")
        tracking.log_datasets([dataset], run_id=run_id, tracking_uri=tracking_uri)
        record.update(run_id=run_id, experiment=experiment, artifact_uri=artifact_uri)
        tracking.log_artifacts([write_provenance(csv_path, record)], run_id=run_id, tracking_uri=tracking_uri)
    return run_id


def export_reviews(database: str | Path, out: str | Path, *, images: str | Path | None = None,
                   min_agreement: int = 1, conflicts: str = "majority", classes: str | Sequence[str] | None = None,
                   overwrite: bool = False, experiment: str | None = DEFAULT_EXPERIMENT,
                   tracking_uri: str | None = None) -> ExportResult:
    """Exports the experts' answers as a ground-truth CSV, its provenance sidecar and an MLflow run.

    Args:
        database: the evaluate page's SQLite store (the server's EVALUATION_DB).
        out: the CSV to write; ``<out>.json`` gets its provenance.
        images: the folder the experts reviewed (the server's EVALUATION_IMAGES_DIR): the kept images are linked
            into ``images/`` beside ``out``, TIML's default image folder. Defaults to None (no links).
        min_agreement: the reviewers who must vote for an image's kept class. Defaults to 1.
        conflicts: ``majority`` (default) or ``drop``; see :func:`decide`.
        classes: the class columns (``A;B;C`` or a sequence). Defaults to the classes recorded with the answers,
            else the sorted classes voted for.
        overwrite: replace an existing ``out``. Defaults to False.
        experiment: the MLflow experiment of the export's run; None records no run. Defaults to "timl-review".
        tracking_uri: the MLflow tracking URI. Defaults to MLflow's own (``MLFLOW_TRACKING_URI``, else
            ``sqlite:///mlflow.db``).

    Returns:
        An :class:`ExportResult`.

    Raises:
        MissingFileError: no such database or image folder, or reviewed images missing from it.
        DatasetError: not a store of answers, no answers, no image left after the rules, or files that would
            share an image name.
        ConfigError: bad rules or classes, different class lists recorded and no ``classes``, an existing ``out``
            without ``overwrite``, or other files where the links should go.
    """
    database, csv_path = Path(database), Path(out)
    source_dir = Path(images) if images is not None else None
    answers = read_answers(database)
    decisions = decide(answers, conflicts=conflicts, min_agreement=min_agreement)
    skipped = sum(1 for answer in answers if answer["skipped"])
    if not decisions:
        raise DatasetError(f"{database}: no answers left: all {skipped} answers were skipped. "
                           f"Received: db={str(database)!r}")
    names, classes_from = class_columns(answers, decisions, classes)
    decisions = restrict(decisions, names)
    if not any(decision.label is not None for decision in decisions):
        raise DatasetError(f"{database}: no image is left after the rules (conflicts={conflicts}, min_agreement="
                           f"{min_agreement}): {_reasons_line(decisions)}. Received: db={str(database)!r}")
    frame = ground_truth(decisions, names)
    _check_out(csv_path, overwrite)
    kept_files = [decision.image for decision in decisions if decision.label is not None]
    links = _plan_links(kept_files, source_dir, csv_path.parent / "images") if source_dir else []
    _write_dataset(frame, csv_path, links if source_dir else None)
    rules = {"conflicts": conflicts, "min_agreement": min_agreement, "classes": ";".join(names),
             "classes_from": classes_from}
    record = _provenance(csv_path, database, source_dir, answers, decisions, rules)
    sidecar = write_provenance(csv_path, record)
    run_id = _record_run(record, frame, csv_path, experiment=experiment,
                         tracking_uri=tracking_uri) if experiment else None
    logger.info("Exported %d reviewed images to %s (MLflow run %s)", len(frame), csv_path, run_id)
    return ExportResult(csv_path=csv_path, sidecar_path=sidecar,
                        images_dir=csv_path.parent / "images" if source_dir else None, classes=names,
                        classes_from=classes_from, decisions=tuple(decisions), reviewers=tuple(record["reviewers"]),
                        answers=len(answers), skipped=skipped, run_id=run_id)


# ---------------------------------------------------------------------------------------------------------------
# The command


def _reasons_line(decisions: Iterable[Decision]) -> str:
    """The images left out, by reason: ``1 with a tie ... (b.png); 2 where reviewers disagree ... (c.png, d.png)``."""
    by_reason: dict[str, list[str]] = {}
    for decision in decisions:
        if decision.label is None:
            by_reason.setdefault(decision.reason, []).append(decision.image)
    return "; ".join(f"{len(found)} {LEFT_OUT_REASONS[reason]} ({', '.join(found[:MAX_LISTED])}"
                     f"{' ...' if len(found) > MAX_LISTED else ''})" for reason, found in by_reason.items())


def summary_lines(result: ExportResult, experiment: str | None = None) -> list[str]:
    """What the command prints: images kept and left out (and why), reviewers, files, the run."""
    origin = {"answers": "recorded with the answers", "votes": "the classes voted for"}
    lines = [f"Kept {len(result.kept)} of {len(result.decisions)} reviewed images in {result.csv_path} "
             f"(classes {';'.join(result.classes)}: {origin.get(result.classes_from, result.classes_from)})."]
    if result.left_out:
        lines.append(f"Left out {len(result.left_out)}: {_reasons_line(result.left_out)}.")
    lines.append(f"Reviewers ({len(result.reviewers)}): {', '.join(result.reviewers)}; {result.answers} answers, "
                 f"{result.skipped} skipped (ignored).")
    if result.images_dir:
        lines.append(f"Images: {len(result.kept)} linked in {result.images_dir}")
    lines.append(f"Provenance: {result.sidecar_path}")
    if result.run_id:
        lines.append(f"MLflow run: {result.run_id} (experiment {experiment})")
    lines.append(f"Train on it: dataset={result.csv_path}, or {result.csv_path}+ORIGINAL.csv to correct the "
                 f"original ground truth")
    return lines


EXAMPLE = """\b
Example:
  python -m timl.review export --db timl_evaluations.db --out corrected/corrected.csv --images review_images
  python -m timl.review export --db timl_evaluations.db --out corrected.csv --min-agreement 2 \\
      --conflicts drop --classes 'MEL;NV;BCC' --no-mlflow
"""


@group(name="review", epilog=EXAMPLE)
def cli():
    """Expert answers back into training: export the evaluate page's reviews as a ground-truth CSV."""


@cli.command(name="export", epilog=EXAMPLE)
@click.option("--db", "database", default=DEFAULT_DATABASE, show_default=True,
              help="The evaluate page's answers (the server's EVALUATION_DB).")
@click.option("--out", required=True, help="The ground-truth CSV to write (its provenance: <out>.json).")
@click.option("--images", default=None,
              help="The folder the experts reviewed (EVALUATION_IMAGES_DIR): kept images are linked into images/ "
                   "beside --out. [default: no links]")
@click.option("--min-agreement", default=1, show_default=True, type=click.IntRange(min=1),
              help="Reviewers who must vote for an image's kept class.")
@click.option("--conflicts", default="majority", show_default=True, type=click.Choice(CONFLICT_RULES),
              help="Reviewers who disagree: the most voted class (a tie is left out), or drop the image.")
@click.option("--classes", default=None,
              help="Class columns, A;B;C. [default: the classes recorded with the answers, else those voted for]")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@click.option("--experiment", default=DEFAULT_EXPERIMENT, show_default=True, help="MLflow experiment of the run.")
@tracking_uri_option(help="MLflow tracking URI. [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db]")
@click.option("--no-mlflow", is_flag=True, help="Record no MLflow run.")
def export_command(database, out, images, min_agreement, conflicts, classes, overwrite, experiment, tracking_uri,
                   no_mlflow):
    """Write the experts' answers as a ground-truth CSV (with images/ beside it), its provenance and a run."""
    setup_logging()
    with user_errors():
        result = export_reviews(database, out, images=images, min_agreement=min_agreement, conflicts=conflicts,
                                classes=classes, overwrite=overwrite, experiment=None if no_mlflow else experiment,
                                tracking_uri=tracking_uri)
    for line in summary_lines(result, experiment):
        click.echo(line)


if __name__ == "__main__":
    cli()
