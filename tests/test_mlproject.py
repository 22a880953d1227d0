"""The MLflow project entry point: `mlflow run . -P table=... --env-manager local`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import REPO, small_cnn_row, write_table


@pytest.mark.slow
def test_mlflow_run_trains_a_table(tmp_path, mini_digits):
    table = write_table(tmp_path / "table.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=1)])
    # values with shell syntax and spaces reach timl.train as one argument each, never run (issue 21, finding 7)
    img_dir = tmp_path / "x;echo INJECTED-$((6*7));"
    img_dir.symlink_to(mini_digits / "images")
    out_dir = tmp_path / "a b"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    mlflow = Path(sys.executable).parent / "mlflow"
    result = subprocess.run([str(mlflow), "run", str(REPO), "-P", f"table={table}", "-P", f"out_dir={out_dir}",
                             "-P", f"img_dir={img_dir}", "--env-manager", "local", "--experiment-name", "project"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "INJECTED-42" not in result.stdout + result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    frame = pd.read_csv(out_dir / "automation_result.csv", dtype=str, keep_default_na=False)
    assert len(frame) == 1 and frame.loc[0, "method"] == "SmallCNN" and frame.loc[0, "run_id"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("project")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if run.data.tags.get("timl.kind") == "table"]
    rows = [run for run in runs if run.data.tags.get("timl.kind") == "row"]
    assert len(parents) == 1 and len(rows) == 1
    assert rows[0].data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert all(run.info.status == "FINISHED" for run in runs)


def test_the_project_and_the_train_command_map_to_the_table_options():
    """The MLproject's parameters and train's flags are TableOptions fields under the same names (the table
    aside), with the same defaults (the project's '' is an option left out)."""
    import dataclasses

    import yaml

    from timl.train import cli
    from timl.training import TableOptions

    fields = {field.name: field.default for field in dataclasses.fields(TableOptions)}
    flags = cli.make_context("timl.train", []).params  # every flag at its default
    assert set(flags) - set(fields) == {"input_table", "cuda_gpu", "list_methods", "verbose"}
    assert set(fields) <= set(flags)
    assert {name: flags[name] for name in fields} == fields
    entry = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]["main"]
    parameters = dict(entry["parameters"])
    assert parameters.pop("table")["default"] and "--input-table {table}" in entry["command"]
    for name, parameter in parameters.items():
        assert name in fields, name
        assert f"--{name.replace('_', '-')} {{{name}}}" in entry["command"], name
        assert TableOptions(**{name: parameter["default"]}) == TableOptions(**{name: fields[name]}), name
