"""Plots of a training run and of an evaluation: loss/accuracy curves, ROC, confusion matrix, precision-recall,
reliability diagram.

Every function draws on its own :class:`matplotlib.figure.Figure` rendered by the Agg canvas, never through
``pyplot``: nothing is drawn on screen, no global figure list grows, and plotting is safe in the threads of a web
server. Matplotlib is imported inside the functions, so importing this module is cheap.

The ROC and precision-recall plots come in two steps: computing the curves (scikit-learn) and drawing them
(matplotlib only), so that a process without scikit-learn can draw (see :mod:`timl.workers`).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from timl.metric_names import DEV, TRAIN, epoch_series

if TYPE_CHECKING:
    import pandas as pd

    from timl.calibration import ReliabilityBins

logger = logging.getLogger(__name__)

#: The curves of the history plots: file stem -> (title, the history columns drawn when present).
HISTORY_PLOTS = {
    "loss": ("Loss", tuple(epoch_series("loss", split) for split in (TRAIN, DEV))),
    "accuracy": ("Accuracy", tuple(epoch_series(name, split) for name in ("accuracy", "binary_accuracy")
                                   for split in (TRAIN, DEV))),
}


#: The fixed margins of the curve plots (fractions of the figure), shared by every file drawn without ``tight``.
CURVE_MARGINS = {"left": 0.13, "right": 0.97, "bottom": 0.12, "top": 0.92}


def _new_figure(width: float = 6.0, height: float = 4.5):
    """A figure on an Agg canvas (no pyplot, no display) and its single axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot(1, 1, 1)


def warm_up() -> None:
    """Draws a small figure with text into memory: a new process's first plot also loads the font cache and
    builds matplotlib's text caches (a few tenths of a second), which a process that draws later can do ahead."""
    import io

    figure, axes = _new_figure(2.0, 1.5)
    axes.plot([0, 1], [0, 1], label="warm-up")
    axes.set(title="warm-up", xlabel="x", ylabel="y")
    axes.legend()
    figure.savefig(io.BytesIO(), format="png")


def _save(figure, path: str | Path, *, tight: bool = False, margins: dict | None = None) -> Path:
    """Writes a figure as PNG. Fixed margins (``margins``, else :data:`CURVE_MARGINS`) suit the curve plots;
    ``tight`` (about twice as slow) fits labels of any length, for the confusion matrix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        figure.tight_layout()
    else:
        figure.subplots_adjust(**(margins or CURVE_MARGINS))
    figure.savefig(path, format="png")
    figure.clear()
    return path


_FILE_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_\-.]")


def sanitize_file_name(name: str) -> str:
    """Makes ``name`` safe in a file name: keeps ``[A-Za-z0-9_-.]``, replaces others by ``_``."""
    return _FILE_NAME_UNSAFE.sub("_", str(name))


def roc_file_name(index: int, class_name: str, prefix: str = "") -> str:
    """The original TIML's name of a class's ROC plot: ``{prefix}ROC-{index:04d}-{class}.png``."""
    return f"{prefix}ROC-{index:04d}-{sanitize_file_name(class_name)}.png"


@dataclasses.dataclass
class Curve:
    """One class's curve: ``x`` and ``y`` (false positive and true positive rates, or recall and precision)
    and its summary ``score`` (the AUC, or the average precision), with its confidence ``interval`` (low, high)
    when known."""

    index: int
    name: str
    x: np.ndarray
    y: np.ndarray
    score: float
    interval: tuple | None = None

    def label(self, score_name: str) -> str:
        """The legend entry: ``MEL (AUC = 0.9100)``, with an interval ``MEL (AUC = 0.9100, 95% CI [0.8800, 0.9400])``."""
        low, high = self.interval or (None, None)
        interval = "" if low is None or high is None else f", 95% CI [{low:.4f}, {high:.4f}]"
        return f"{self.name} ({score_name} = {self.score:.4f}{interval})"


@dataclasses.dataclass
class Curves:
    """The one-vs-rest curves of the classes that have one, and the names of those that have none."""

    curves: list[Curve]
    missing: list[str]


def plot_history(history: "pd.DataFrame", out_dir: str | Path, prefix: str = "") -> list[Path]:
    """Draws the loss and accuracy curves of a training run.

    Args:
        history: one row per epoch; columns ``epoch`` (optional; else the row number plus one) and any of
            ``loss``, ``val_loss``, ``accuracy``, ``val_accuracy`` (see :data:`HISTORY_PLOTS`).
        out_dir: the folder to write into (created if missing).
        prefix: prepended to the file names. Defaults to "".

    Returns:
        The written files, ``{prefix}plot-loss.png`` and ``{prefix}plot-accuracy.png`` (the original TIML's
        names), each only when the history has one of its columns.
    """
    epochs = history["epoch"].to_numpy() if "epoch" in history.columns else np.arange(1, len(history) + 1)
    written = []
    for stem, (title, columns) in HISTORY_PLOTS.items():
        present = [column for column in columns if column in history.columns]
        if not present:
            continue
        figure, axes = _new_figure()
        for column in present:
            axes.plot(epochs, history[column].to_numpy(dtype=float), marker="o", label=column)
        axes.set(title=title, xlabel="epoch", ylabel=stem)
        axes.grid(alpha=0.3)
        axes.legend()
        written.append(_save(figure, Path(out_dir) / f"{prefix}plot-{stem}.png"))
    return written


def _roc_axes(axes, title: str) -> None:
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    axes.set(title=title, xlabel="false positive rate (1 - specificity)",
             ylabel="true positive rate (sensitivity)", xlim=(0, 1), ylim=(0, 1.02))
    axes.grid(alpha=0.3)


class _ClassRocPlot:
    """The per-class ROC files, blitted: axes, ticks, labels and grid are rendered once; each class then draws
    only its curve, legend and title over a copy of that background (matplotlib's blitting API)."""

    def __init__(self):
        self.figure, self.axes = _new_figure()
        _roc_axes(self.axes, "")
        self.figure.subplots_adjust(**CURVE_MARGINS)
        (self.curve,) = self.axes.plot([], [], color="C0")
        self.curve.set_visible(False)
        self.figure.canvas.draw()
        self.background = self.figure.canvas.copy_from_bbox(self.figure.bbox)
        self.curve.set_visible(True)

    def save(self, x: np.ndarray, y: np.ndarray, label: str, title: str, path: Path, encoder) -> Future:
        """Draws one class; its PNG is compressed by ``encoder`` (an executor: Pillow releases the GIL while it
        compresses, so the next class is drawn meanwhile). The future's result is ``path``."""
        from PIL import Image

        canvas = self.figure.canvas
        canvas.restore_region(self.background)
        self.curve.set_data(x, y)
        self.curve.set_label(label)
        self.axes.set_title(title)
        legend = self.axes.legend(handles=[self.curve], loc="lower right")
        for artist in (self.curve, legend, self.axes.title):
            self.axes.draw_artist(artist)
        legend.remove()
        width, height = canvas.get_width_height()
        image = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1).convert("RGB")
        return encoder.submit(lambda: image.save(path, format="PNG") or path)


def plot_roc(y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str], out_dir: str | Path,
             prefix: str = "") -> list[Path]:
    """Draws the one-vs-rest ROC curve of each class, and all of them in one plot.

    A class absent from ``y_true`` (or present in every row) has no ROC curve: it gets no file of its own and a
    note in the combined plot. Same as ``draw_roc(roc_curves(y_true, y_prob, class_names), out_dir, prefix)``.

    Args:
        y_true: (samples, classes) array of 0/1.
        y_prob: (samples, classes) predicted probabilities.
        class_names: the name of each column.
        out_dir: the folder to write into (created if missing).
        prefix: prepended to the file names. Defaults to "".

    Returns:
        The written files: ``{prefix}ROC-<iiii>-<class>.png`` per class with a curve (the original TIML's
        name: the class index zero-padded to four digits, e.g. ``ROC-0002-BCC.png``), then
        ``{prefix}ROC-all.png``.
    """
    return draw_roc(roc_curves(y_true, y_prob, class_names), out_dir, prefix)


def roc_curves(y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str],
               intervals: Sequence[tuple] | None = None) -> Curves:
    """The one-vs-rest ROC curve and AUC of each class that is neither absent from ``y_true`` nor in every row;
    ``intervals``, one (low, high) per class, are the AUCs' confidence intervals for the legends."""
    from sklearn.metrics import auc, roc_curve

    y_true = np.asarray(y_true).astype(bool)
    y_prob = np.asarray(y_prob, dtype=float)
    result = Curves([], [])
    for index, name in enumerate(class_names):
        truth = y_true[:, index]
        if truth.all() or not truth.any():
            result.missing.append(str(name))
            continue
        false_positive_rate, true_positive_rate, _ = roc_curve(truth, y_prob[:, index])
        result.curves.append(Curve(index, str(name), false_positive_rate, true_positive_rate,
                                   float(auc(false_positive_rate, true_positive_rate)),
                                   intervals[index] if intervals else None))
    return result


def draw_roc(roc: Curves, out_dir: str | Path, prefix: str = "") -> list[Path]:
    """Draws the curves of :func:`roc_curves` (see :func:`plot_roc`).

    The per-class files share one figure whose axes are rendered once (see :class:`_ClassRocPlot`): building
    and drawing axes and ticks costs more than the curve.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    combined, combined_axes = _new_figure(7.0, 6.0)
    class_plot = _ClassRocPlot()
    pending = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="timl-png") as encoder:
        for curve in roc.curves:
            label = curve.label("AUC")
            path = out_dir / roc_file_name(curve.index, curve.name, prefix)
            pending.append(class_plot.save(curve.x, curve.y, label, f"ROC of class {curve.name}", path, encoder))
            combined_axes.plot(curve.x, curve.y, label=label)
        written = [future.result() for future in pending]
    _roc_axes(combined_axes, "ROC, one class vs. the rest")
    if roc.missing:
        combined_axes.text(0.98, 0.02 if len(written) == 0 else 0.5, "no ROC (class absent or in every image): "
                           + ", ".join(roc.missing), ha="right", va="bottom", fontsize=8, wrap=True,
                           transform=combined_axes.transAxes)
    if written:
        combined_axes.legend(loc="lower right", fontsize=8)
    written.append(_save(combined, out_dir / f"{prefix}ROC-all.png"))
    return written


def draw_fold_roc(rocs: Sequence, out_dir: str | Path, prefix: str = "") -> list[Path]:
    """Draws each class's ROC across the folds of a cross-validation (:func:`timl.folds.fold_rocs`): every fold's
    curve thin, the mean curve thick with a band of one standard deviation, the mean AUC ± its spread in the legend.

    Returns:
        The written files, ``{prefix}ROC-<iiii>-<class>.png`` (the original TIML's names).
    """
    from timl.folds import ROC_GRID

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for roc in rocs:
        figure, axes = _new_figure()
        for fold, ((false_positive_rate, true_positive_rate), area) in enumerate(zip(roc.curves, roc.aucs)):
            axes.plot(false_positive_rate, true_positive_rate, linewidth=0.8, alpha=0.45,
                      label=f"fold {fold} (AUC = {area:.4f})")
        axes.plot(ROC_GRID, roc.mean_tpr, color="C0", linewidth=2.2, label=roc.label)
        low, high = np.clip(roc.mean_tpr - roc.std_tpr, 0, 1), np.clip(roc.mean_tpr + roc.std_tpr, 0, 1)
        axes.fill_between(ROC_GRID, low, high, color="C0", alpha=0.18, label="± 1 standard deviation")
        _roc_axes(axes, f"ROC of class {roc.name}, cross-validation")
        axes.legend(loc="lower right", fontsize=7)
        written.append(_save(figure, out_dir / roc_file_name(roc.index, roc.name, prefix)))
    return written


def plot_confusion_matrix(matrix, class_names: Sequence[str], path: str | Path, *,
                          column_names: Sequence[str] | None = None, title: str = "Confusion matrix") -> Path:
    """Draws a confusion matrix as an annotated heat map.

    Args:
        matrix: 2-D array of counts, rows the true classes.
        class_names: the row labels (and the column labels unless ``column_names`` is given).
        path: the PNG file to write.
        column_names: the column labels, e.g. ``TN FP FN TP`` for a multi-label table. Defaults to
            ``class_names`` (rows: true class, columns: predicted class).
        title: the plot's title. Defaults to "Confusion matrix".

    Returns:
        ``path`` as a Path.
    """
    matrix = np.asarray(matrix)
    column_names = list(class_names if column_names is None else column_names)
    side = 2.5 + 0.6 * max(len(class_names), len(column_names))
    figure, axes = _new_figure(min(side + 1.5, 30.0), min(side, 30.0))
    image = axes.imshow(matrix, cmap="Blues", aspect="auto")
    figure.colorbar(image, ax=axes)
    axes.set_xticks(np.arange(len(column_names)), labels=[str(name) for name in column_names], rotation=45,
                    ha="right")
    axes.set_yticks(np.arange(len(class_names)), labels=[str(name) for name in class_names])
    predicted_label = "predicted" if column_names == list(class_names) else ""
    axes.set(title=title, xlabel=predicted_label, ylabel="ground truth")
    limit = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        # inside the axes: left out of the tight layout, which would otherwise measure every cell's text
        axes.text(column, row, f"{count:g}", ha="center", va="center", fontsize=8,
                  color="white" if count > limit else "black").set_in_layout(False)
    return _save(figure, path, tight=True)


def plot_precision_recall(y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str],
                          path: str | Path) -> Path:
    """Draws the one-vs-rest precision-recall curve of each class present in ``y_true``.

    Same as ``draw_precision_recall(precision_recall_curves(y_true, y_prob, class_names), path)``.

    Args:
        y_true: (samples, classes) array of 0/1.
        y_prob: (samples, classes) predicted probabilities.
        class_names: the name of each column.
        path: the PNG file to write.

    Returns:
        ``path`` as a Path.
    """
    return draw_precision_recall(precision_recall_curves(y_true, y_prob, class_names), path)


def precision_recall_curves(y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str]) -> Curves:
    """The one-vs-rest precision-recall curve (x recall, y precision) and average precision of each class
    present in ``y_true``."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y_true = np.asarray(y_true).astype(bool)
    y_prob = np.asarray(y_prob, dtype=float)
    result = Curves([], [])
    for index, name in enumerate(class_names):
        truth = y_true[:, index]
        if not truth.any():
            result.missing.append(str(name))
            continue
        precision, recall, _ = precision_recall_curve(truth, y_prob[:, index])
        result.curves.append(Curve(index, str(name), recall, precision,
                                   float(average_precision_score(truth, y_prob[:, index]))))
    return result


def draw_precision_recall(curves: Curves, path: str | Path) -> Path:
    """Draws the curves of :func:`precision_recall_curves` into one PNG file; returns ``path`` as a Path."""
    figure, axes = _new_figure(7.0, 6.0)
    for curve in curves.curves:
        axes.step(curve.x, curve.y, where="post", label=curve.label("AP"))
    axes.set(title="Precision-recall, one class vs. the rest", xlabel="recall (sensitivity)",
             ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.grid(alpha=0.3)
    if curves.missing:
        axes.text(0.02, 0.02, "absent from the ground truth: " + ", ".join(curves.missing), fontsize=8,
                  transform=axes.transAxes)
    if curves.curves:
        axes.legend(loc="lower left" if not curves.missing else "center left", fontsize=8)
    return _save(figure, path)


def draw_reliability(bins: "ReliabilityBins", path: str | Path, *, ece: float | None = None) -> Path:
    """Draws a reliability diagram: above, each confidence bin's accuracy against its mean confidence (bars;
    the diagonal is perfect calibration, each bar labelled with its count); below, the bins' counts.

    Args:
        bins: the bins (:func:`timl.calibration.reliability_bins`).
        path: the PNG file to write.
        ece: the expected calibration error shown in the title. Defaults to None (computed from ``bins``).

    Returns:
        ``path`` as a Path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 6.5), dpi=100)
    FigureCanvasAgg(figure)
    upper, lower = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    width = np.diff(bins.edges)
    filled = bins.counts > 0
    left = bins.edges[:-1][filled]
    upper.bar(left, bins.accuracy[filled], width=width[filled], align="edge", edgecolor="black", alpha=0.7,
              label="fraction correct" if not bins.multi_label else "fraction present")
    upper.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    upper.plot(bins.confidence[filled], bins.confidence[filled], "r.", label="mean confidence")
    for start, step, height, count in zip(left, width[filled], bins.accuracy[filled], bins.counts[filled]):
        upper.text(start + step / 2, min(height, 0.95) + 0.02, str(count), ha="center", fontsize=6)
    ece = bins.expected_error() if ece is None else ece
    upper.set(title=f"Reliability ({'every class' if bins.multi_label else 'top label'}), ECE {ece:.3f}",
              ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.05))
    upper.legend(loc="upper left", fontsize=8)
    upper.grid(alpha=0.3)
    lower.bar(bins.edges[:-1], bins.counts, width=width, align="edge", edgecolor="black", color="gray")
    lower.set(xlabel="confidence", ylabel="predictions", xlim=(0, 1))
    return _save(figure, path, tight=True)


def plot_forest(rows: Sequence[tuple], path: str | Path, *, title: str, reference: float | None = None) -> Path:
    """A forest plot: one line per ``(label, value, low, high)``, top to bottom, the value as a point and its
    interval as a horizontal bar (a row without a value is named with no mark), a dashed line at ``reference``.

    Args:
        rows: the labels and their values and bounds (None where undefined).
        path: the PNG written.
        title: the plot's title.
        reference: a value to compare with (the whole set's score). Defaults to None (no line).
    """
    height = max(2.0, 0.9 + 0.32 * len(rows))
    figure, axes = _new_figure(7.0, height)
    positions = np.arange(len(rows))[::-1]
    for position, (_, value, low, high) in zip(positions, rows):
        if low is not None and high is not None:
            axes.hlines(position, low, high, color="tab:blue", linewidth=2)
        if value is not None:
            axes.plot([value], [position], "o", color="tab:blue")
    if reference is not None:
        axes.axvline(reference, color="grey", linestyle="--", linewidth=1, label="all images")
        axes.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize="small", frameon=False)
    axes.set_yticks(positions, [row[0] for row in rows], fontsize="small")
    axes.set_title(title, loc="right", fontsize="medium")
    axes.set(xlim=(-0.02, 1.02), ylim=(-0.7, len(rows) - 0.3))
    axes.grid(axis="x", alpha=0.3)
    longest = max((len(str(row[0])) for row in rows), default=0)
    margins = {"left": min(0.6, 0.03 + 0.0125 * longest), "right": 0.97, "bottom": 0.45 / height,
               "top": 1 - 0.45 / height}
    return _save(figure, path, margins=margins)
