"""Tests of timl.plots: every plot writes a valid PNG, absent classes are skipped, no figure is left open."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from timl import plots


def assert_png(path):
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 100 and image.height > 100


@pytest.fixture
def predictions():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 20)  # class 2 is absent
    return np.eye(3, dtype=int)[labels], rng.dirichlet(np.ones(3), 20), ["MEL", "NV", "B/CC"]


def test_file_names_are_the_original_timl_names():
    assert plots.roc_file_name(3, "MEL") == "ROC-0003-MEL.png"
    assert plots.roc_file_name(12, "a/b", "0-dev-") == "0-dev-ROC-0012-a_b.png"


def test_plot_history_with_and_without_epoch_column(tmp_path):
    history = pd.DataFrame({"epoch": [1, 2, 3], "loss": [1.0, 0.7, 0.5], "val_loss": [1.1, 0.9, 0.8],
                            "accuracy": [0.5, 0.6, 0.7], "val_accuracy": [0.4, 0.5, 0.55]})
    written = plots.plot_history(history, tmp_path, prefix="run-")
    assert [path.name for path in written] == ["run-plot-loss.png", "run-plot-accuracy.png"]
    for path in written:
        assert_png(path)
    only_loss = plots.plot_history(pd.DataFrame({"loss": [1.0, 0.5]}), tmp_path / "sub")
    assert [path.name for path in only_loss] == ["plot-loss.png"]


def test_plot_roc_skips_absent_class(tmp_path, predictions):
    y_true, y_prob, names = predictions
    written = plots.plot_roc(y_true, y_prob, names, tmp_path, prefix="test-")
    assert [path.name for path in written] == ["test-ROC-0000-MEL.png", "test-ROC-0001-NV.png", "test-ROC-all.png"]
    for path in written:
        assert_png(path)


def test_plot_roc_with_no_defined_class(tmp_path):
    written = plots.plot_roc(np.array([[1, 0]]), np.array([[0.6, 0.4]]), ["a", "b"], tmp_path)
    assert [path.name for path in written] == ["ROC-all.png"]


def test_plot_confusion_matrix_and_precision_recall(tmp_path, predictions):
    y_true, y_prob, names = predictions
    matrix = np.array([[3, 1, 0], [2, 5, 1], [0, 0, 0]])
    assert_png(plots.plot_confusion_matrix(matrix, names, tmp_path / "cm.png"))
    assert_png(plots.plot_confusion_matrix(np.array([[4, 1, 2, 3]]), ["a"], tmp_path / "ml.png",
                                           column_names=["TN", "FP", "FN", "TP"]))
    assert_png(plots.plot_precision_recall(y_true, y_prob, names, tmp_path / "pr.png"))


def test_no_figures_left_open(tmp_path, predictions):
    import matplotlib.pyplot as plt

    y_true, y_prob, names = predictions
    before = len(plt.get_fignums())
    for _ in range(2):
        plots.plot_roc(y_true, y_prob, names, tmp_path)
        plots.plot_precision_recall(y_true, y_prob, names, tmp_path / "pr.png")
    assert len(plt.get_fignums()) == before


def test_each_class_roc_file_shows_only_its_own_curve(tmp_path):
    """The per-class files are blitted on one figure: a class drawn after another leaves no trace of it."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 60)
    y_true = np.stack([labels, 1 - labels, labels], axis=1)  # MEL and NV present; NEV is drawn last
    y_prob = rng.random((60, 3))
    after_others = plots.plot_roc(y_true, y_prob, ["MEL", "NV", "NEV"], tmp_path / "all")
    alone = plots.plot_roc(np.stack([np.zeros(60), np.zeros(60), labels], axis=1), y_prob, ["MEL", "NV", "NEV"],
                           tmp_path / "alone")
    assert [path.name for path in alone] == ["ROC-0002-NEV.png", "ROC-all.png"]
    with Image.open(after_others[2]) as drawn_last, Image.open(alone[0]) as drawn_first:
        assert np.array_equal(np.asarray(drawn_last), np.asarray(drawn_first))
    with Image.open(after_others[0]) as first, Image.open(after_others[1]) as second:
        assert not np.array_equal(np.asarray(first), np.asarray(second))
