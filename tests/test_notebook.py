"""notebooks/compare_runs.ipynb runs against a small trained table, so it never rots."""

from __future__ import annotations

import pytest

from helpers import REPO, small_cnn_row, write_table


@pytest.mark.slow
def test_compare_runs_notebook_executes(tracking_uri, mini_digits, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    from timl import training

    table = write_table(tmp_path / "t.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=2, seed=0),
                                             small_cnn_row(str(mini_digits / "mini.csv"), epochs=1, seed=1)])
    outcome = training.train_table(table, out_dir=tmp_path / "out", experiment="nb")
    assert not outcome.failed
    monkeypatch.setenv("TIML_EXPERIMENT", "nb")
    notebook = nbformat.read(REPO / "notebooks" / "compare_runs.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    assert any("2 finished rows" in output.get("text", "") for output in outputs)
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 3  # loss curves, metrics, ROC
