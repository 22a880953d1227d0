"""Promises of the README's Reliability section checked as the README words them (issue 18): an out-of-memory
row, the sha256 of every saved model, the minimum versions of the libraries that load files from outside."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

from helpers import REPO, random_images, small_cnn_row, write_table

#: The address-space limit of the training process in the out-of-memory test. The SmallCNN row needs under
#: 5 GiB of address space (measured: it trains under a 5 GiB limit); the out-of-memory row asks for one 32 GiB
#: tensor, so it fails on any machine whatever its RAM, and nothing near that size is ever touched.
TRAINING_ADDRESS_SPACE = 12 * 2**30


def _row_runs(experiment: str, tracking_uri: str | None = None) -> dict:
    """Row runs of ``experiment`` by row number (in the current tracking store unless ``tracking_uri``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], filter_string="tags.`timl.kind` = 'row'")
    return {int(run.data.tags["timl.row"]): run for run in runs}


def _list_dataset(folder: Path) -> str:
    """Six random 32 px PNGs, two per split, two classes; the ``dataset`` cell of split ``list``."""
    names = random_images(folder / "images", 6, size=(32, 32))
    for index, split in enumerate(("train", "dev", "test")):
        pd.DataFrame({"image_name": names[2 * index:2 * index + 2], "A": [1, 0], "B": [0, 1]}).to_csv(
            folder / f"{split}.csv", index=False)
    return ";".join(str(folder / f"{split}.csv") for split in ("train", "dev", "test"))


@pytest.mark.slow
def test_an_out_of_memory_row_fails_alone(tmp_path):
    """README: a failed row (... out of memory) ends FAILED with its error in ``exceptions``; the other rows
    train; exit status 1.

    A real out-of-memory error, not a simulated one: VGG16-fc4k-ml at 2048 px flattens a 64x64x512 feature map
    into its first 4096-unit dense layer, whose kernel (2097152 x 4096 float32, 32 GiB) TensorFlow cannot
    allocate. The training process runs under an address-space limit (``ulimit -v``, as batch schedulers set
    it) well below that, so the allocation fails at once on any machine instead of swapping or waking the OOM
    killer; on the CPU (a GPU's allocator fails the same way, but the limit would not let CUDA start).
    """
    dataset = _list_dataset(tmp_path / "data")
    oom = small_cnn_row(dataset, method="VGG16-fc4k-ml", split="list", imgsize=2048, batchsize=2, epochs=1,
                        weights="none")
    good = small_cnn_row(dataset, split="list", epochs=1)
    table = write_table(tmp_path / "t.csv", [oom, good])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    limited = ["bash", "-c", f'ulimit -v {TRAINING_ADDRESS_SPACE // 1024} && exec "$@"', "limited"]
    result = subprocess.run([*limited, sys.executable, "-m", "timl.train", "--input-table", str(table),
                             "--out-dir", str(tmp_path / "out"), "--experiment", "oom", "--tracking-uri", uri,
                             "--skip-roc", "--no-system-metrics"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-4000:]
    memory = re.compile(r"ResourceExhaustedError: .*OOM when allocating tensor with shape\[2097152,4096\]")
    runs = _row_runs("oom", uri)
    assert {row: run.info.status for row, run in runs.items()} == {0: "FAILED", 1: "FINISHED"}, output[-4000:]
    assert memory.search(runs[0].data.tags["timl.exception"]), runs[0].data.tags["timl.exception"]
    assert runs[0].data.tags["timl.exception"].startswith("Out of memory: lower the row's batchsize or imgsize")
    assert "timl.exception" not in runs[1].data.tags
    frame = pd.read_csv(tmp_path / "out" / "automation_result.csv", dtype=str, keep_default_na=False)
    assert memory.search(frame.loc[0, "exceptions"]) and frame.loc[1, "exceptions"] == ""
    assert list((tmp_path / "out").glob("1-keras_model-*.h5")), "the row after the failed one saved no model"
    assert re.search(r"row 0-VGG16-fc4k-ml: FAILED .*OOM when allocating", output)


def test_every_saved_model_has_its_sha256_on_its_run_and_in_its_sidecar(tracking_uri, mini_digits, tmp_path):
    """README: the sha256 of every saved model is recorded on its run and in ``<model>.h5.json``."""
    import mlflow

    from timl import tracking, training

    row = small_cnn_row(str(mini_digits / "mini.csv"), epochs=1)
    table = write_table(tmp_path / "t.csv", [row, dict(row, seed=1)])
    outcome = training.train_table(table, out_dir=tmp_path / "out", experiment="sha", skip_roc=True)
    assert [result.status for result in outcome.rows] == ["FINISHED", "FINISHED"]
    runs = _row_runs("sha")
    for number, run in runs.items():
        [model] = (tmp_path / "out").glob(f"{number}-keras_model-*.h5")
        digest = hashlib.sha256(model.read_bytes()).hexdigest()
        sidecar = json.loads(Path(f"{model}.json").read_text())
        assert run.data.tags[tracking.TAG_MODEL_SHA256] == digest == sidecar["sha256"]
        assert run.data.tags[tracking.TAG_TRAINMODEL] == model.name and sidecar["run_id"] == run.info.run_id
        logged = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=model.name,
                                                     dst_path=str(tmp_path / f"logged-{number}"))
        assert hashlib.sha256(Path(logged).read_bytes()).hexdigest() == digest  # the run's copy is that file
    assert len({run.data.tags[tracking.TAG_MODEL_SHA256] for run in runs.values()}) == 2


#: What the README says after the Reliability table: "Keras >= 3.13 (...), MLflow >= 3.5, Pillow >= 11.3".
README_MINIMUMS = {"keras": "3.13", "mlflow": "3.5", "pillow": "11.3"}


def test_minimum_versions_are_the_ones_the_readme_states():
    """README: minimum versions in pyproject.toml keep Keras, MLflow and Pillow at releases with their known
    loading and path-traversal fixes: Keras >= 3.13, MLflow >= 3.5, Pillow >= 11.3."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    readme = " ".join((REPO / "README.md").read_text().split())
    sentence = re.search(r"Minimum versions in `pyproject.toml` keep [^.]*(?:\.\d+[^.]*)*\.", readme)
    assert sentence, "the README's sentence on minimum versions is gone"
    stated = {name.lower(): version for name, version in re.findall(r"(Keras|MLflow|Pillow) >= (\d+(?:\.\d+)*)",
                                                                       sentence.group(0))}
    assert stated == README_MINIMUMS, sentence.group(0)

    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    requirements = {canonicalize_name(req.name): req for req in map(Requirement, dependencies)}
    for name, minimum in README_MINIMUMS.items():
        specifiers = list(requirements[name].specifier)
        floors = [spec.version for spec in specifiers if spec.operator == ">="]
        assert floors == [minimum], f"pyproject.toml: {requirements[name]}; the README states {name} >= {minimum}"
        installed = metadata.version(name)
        assert Version(installed) >= Version(minimum), f"{name} {installed} installed; the README: >= {minimum}"
        assert requirements[name].specifier.contains(installed, prereleases=True), (name, installed)

