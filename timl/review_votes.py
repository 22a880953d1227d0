"""The votes of expert answers and the rules that turn them into labels (``timl.review export``'s logic).

Every current answer that was not skipped is a vote: for the class the served model predicted when the expert
agreed (the server records it with the answer), else for the expert's label. :func:`decide` applies the rules per
image (``--conflicts majority|drop``, ``--min-agreement K``); :func:`class_columns` picks the CSV's classes and
:func:`ground_truth` makes the kept images a ground truth in TIML's format. No file, no MLflow: the export command
(:mod:`timl.review`) reads the store and writes the results.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from timl.datasets import IMAGE_COLUMN, MAX_LISTED
from timl.errors import ConfigError, DatasetError

#: How images whose reviewers disagree are decided: the most voted class (a tie is left out), or left out.
CONFLICT_RULES = ("majority", "drop")

#: Why an image is left out: reason -> how the summary says it, after the number of images.
LEFT_OUT_REASONS = {
    "no_class": "without a class (agreements that do not name the model's class)",
    "disagree": "where reviewers disagree (--conflicts drop)",
    "tie": "with a tie between the most voted classes",
    "too_few": "with fewer agreeing reviewers than --min-agreement",
    "unknown_class": "whose class is not a class column",
    "bad_name": "not named as a plain image file",
}


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the rules made of one reviewed image.

    Attributes:
        image: the file name the experts reviewed (``ISIC_0000.jpg``).
        votes: class -> the reviewers who voted for it.
        label: the class kept, or None when the image is left out.
        reason: why it is left out (a key of ``LEFT_OUT_REASONS``), or None when kept.
    """

    image: str
    votes: dict[str, tuple[str, ...]]
    label: str | None = None
    reason: str | None = None


def voted_class(answer: dict) -> str:
    """The class an answer votes for: the predicted class when the expert agreed, else the expert's label ("" when
    the answer does not name it)."""
    return str(answer["predicted"] if answer["agree"] else answer["label"]).strip()


def _decide_one(image: str, votes: dict[str, tuple[str, ...]], conflicts: str, min_agreement: int) -> Decision:
    if Path(image).name != image or image.startswith(".") or not Path(image).stem:
        return Decision(image, votes, reason="bad_name")
    if not votes:
        return Decision(image, votes, reason="no_class")
    if conflicts == "drop" and len(votes) > 1:
        return Decision(image, votes, reason="disagree")
    ranked = sorted(votes.items(), key=lambda item: -len(item[1]))
    if len(ranked) > 1 and len(ranked[0][1]) == len(ranked[1][1]):
        return Decision(image, votes, reason="tie")
    label, voters = ranked[0]
    if len(voters) < min_agreement:
        return Decision(image, votes, reason="too_few")
    return Decision(image, votes, label=label)


def decide(answers: Iterable[dict], *, conflicts: str = "majority", min_agreement: int = 1) -> list[Decision]:
    """Applies the rules to the answers of every image.

    Args:
        answers: current answers (skipped ones are ignored).
        conflicts: ``majority`` (default: the most voted class; a tie is left out) or ``drop`` (an image whose
            reviewers vote for different classes is left out).
        min_agreement: the votes the kept class needs at least. Defaults to 1.

    Returns:
        One decision per image that has an answer which was not skipped, sorted by image name.

    Raises:
        ConfigError: an unknown rule or a ``min_agreement`` below 1.
    """
    if conflicts not in CONFLICT_RULES:
        raise ConfigError(f"Unknown conflict rule; expected one of: {', '.join(CONFLICT_RULES)}. "
                          f"Received: conflicts={conflicts!r}")
    if isinstance(min_agreement, bool) or not isinstance(min_agreement, int) or min_agreement < 1:
        raise ConfigError(f"min_agreement must be an integer >= 1 (the reviewers who must vote for the kept "
                          f"class). Received: min_agreement={min_agreement!r}")
    votes: dict[str, dict[str, list[str]]] = collections.defaultdict(dict)
    for answer in answers:
        if answer["skipped"]:
            continue
        by_class, name = votes[answer["image"]], voted_class(answer)
        if name:
            by_class.setdefault(name, []).append(answer["reviewer"])
    return [_decide_one(image, {name: tuple(voters) for name, voters in sorted(by_class.items())}, conflicts,
                        min_agreement) for image, by_class in sorted(votes.items())]


def _recorded_classes(answers: list[dict]) -> dict[tuple[str, ...], list[str]]:
    """The class lists recorded with the answers (old answers have none) -> the models that recorded each."""
    recorded: dict[tuple[str, ...], list[str]] = {}
    for answer in answers:
        try:
            classes = json.loads(answer.get("classes") or "[]")
        except json.JSONDecodeError:
            continue
        if isinstance(classes, list) and classes:
            models = recorded.setdefault(tuple(str(name) for name in classes), [])
            if answer.get("model", "") not in models:
                models.append(answer.get("model", ""))
    return recorded


def parse_classes(classes: str | Sequence[str]) -> tuple[str, ...]:
    """The ``--classes`` option: ``A;B;C`` or a sequence of names.

    Raises:
        ConfigError: no name, or a name given twice.
    """
    names = [name.strip() for name in (classes.split(";") if isinstance(classes, str) else classes)]
    names = [name for name in names if name]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if not names or duplicated:
        problem = f"{', '.join(duplicated)} given twice" if duplicated else "no class name"
        raise ConfigError(f"--classes needs the class columns separated by ';' (A;B;C): {problem}. "
                          f"Received: classes={classes!r}")
    return tuple(names)


def class_columns(answers: list[dict], decisions: list[Decision],
                  classes: str | Sequence[str] | None = None) -> tuple[tuple[str, ...], str]:
    """The CSV's class columns: ``classes`` if given, else the classes recorded with the answers, else the sorted
    union of the classes voted for.

    Returns:
        The classes, and where they came from (``--classes``, ``answers`` or ``votes``).

    Raises:
        ConfigError: bad ``classes``, or answers that recorded different class lists (two models) and no
            ``classes``.
    """
    if classes is not None:
        return parse_classes(classes), "--classes"
    counted = [answer for answer in answers if not answer["skipped"]]
    recorded = _recorded_classes(counted)
    if len(recorded) > 1:
        lists = "; ".join(f"{';'.join(names)} (model {', '.join(models) or 'unnamed'})"
                          for names, models in recorded.items())
        raise ConfigError(f"The answers recorded different class lists, so the class columns are not clear: {lists}. "
                          f"Give them with --classes A;B;C. Received: classes=None")
    if recorded:
        return next(iter(recorded)), "answers"
    return tuple(sorted({name for decision in decisions for name in decision.votes})), "votes"


def restrict(decisions: list[Decision], classes: tuple[str, ...]) -> list[Decision]:
    """Leaves out the images whose kept class is not one of ``classes``."""
    return [dataclasses.replace(decision, label=None, reason="unknown_class")
            if decision.label is not None and decision.label not in classes else decision for decision in decisions]


def ground_truth(decisions: list[Decision], classes: tuple[str, ...]) -> pd.DataFrame:
    """The kept images as a ground truth: ``image_name`` (the file name without its suffix) and one 0/1 column per
    class.

    Raises:
        DatasetError: two kept files with the same name but another suffix (``a.png`` and ``a.jpg``).
    """
    kept = [decision for decision in decisions if decision.label is not None]
    names = [Path(decision.image).stem for decision in kept]
    counts = collections.Counter(names)
    clashes = sorted({decision.image for decision, name in zip(kept, names) if counts[name] > 1})
    if clashes:
        raise DatasetError(f"Files that differ only in their suffix would share an image_name: "
                           f"{', '.join(clashes[:MAX_LISTED])}. Rename one of each in the evaluation images.")
    frame = pd.DataFrame({IMAGE_COLUMN: names})
    for name in classes:
        frame[name] = [int(decision.label == name) for decision in kept]
    return frame
