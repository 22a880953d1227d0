"""What users hit: images missing from a row's dataset, Unicode and spaces in every name, a corrupt tracking store."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from helpers import small_cnn_row, write_table


def _copy_dataset(source: Path, folder: Path, csv_name: str, rename=lambda name: name) -> Path:
    """Copies the mini digits dataset into ``folder`` (images renamed by ``rename``); returns the CSV."""
    frame = pd.read_csv(source / "mini.csv", dtype={"image_name": str})
    (folder / "images").mkdir(parents=True)
    for name in frame["image_name"]:
        shutil.copy(source / "images" / f"{name}.png", folder / "images" / f"{rename(name)}.png")
    frame["image_name"] = frame["image_name"].map(rename)
    frame.to_csv(folder / csv_name, index=False)
    return folder / csv_name


def test_unicode_and_spaces_end_to_end_and_a_row_with_missing_images(tracking_uri, mini_digits, tmp_path):
    """Image names, the table's path and the output folder with spaces and non-ASCII letters train, predict and
    explain; a row whose CSV names images that are not there fails alone, naming them, and the table exits 1."""
    from timl.explain import cli as explain
    from timl.predict import cli as predict
    from timl.train import cli as train

    dataset = _copy_dataset(mini_digits, tmp_path / "dätä sét", "mini ö.csv", lambda name: f"Ziffer {name} – ü")
    holes = _copy_dataset(mini_digits, tmp_path / "holes", "mini.csv")
    missing = sorted(pd.read_csv(holes, dtype={"image_name": str})["image_name"])[:2]
    for name in missing:
        (holes.parent / "images" / f"{name}.png").unlink()
    table = write_table(tmp_path / "Tabelle ä b.csv", [small_cnn_row(str(dataset), epochs=1),
                                                       small_cnn_row(str(holes), epochs=1)])
    out = tmp_path / "Aus gabe ø"
    result = CliRunner().invoke(train, ["--input-table", str(table), "--out-dir", str(out), "--skip-roc",
                                        "--no-system-metrics"])
    assert result.exit_code == 1, result.output
    assert "row 0-SmallCNN: FINISHED" in result.output
    assert "row 1-SmallCNN FAILED: " in result.output and "2 image(s) not found" in result.output
    assert all(name in result.output for name in missing)
    results = pd.read_csv(out / "automation_result.csv", dtype=str, keep_default_na=False)
    assert results.loc[0, "exceptions"] == "" and all(name in results.loc[1, "exceptions"] for name in missing)
    model = next(out.glob("0-keras_model-*.h5"))

    predictions = out / "vorhersage ä.csv"
    result = CliRunner().invoke(predict, ["--keras-model", str(model), "--config-table", str(table),
                                          "--test-dataframe", str(dataset), "--output-csv", str(predictions)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(predictions, dtype={"image_name": str})
    assert sorted(frame["image_name"]) == sorted(pd.read_csv(dataset, dtype=str)["image_name"])
    assert "Ziffer" in frame["image_name"][0] and frame["image_name"][0].endswith(" – ü")

    image = sorted((dataset.parent / "images").iterdir())[0]
    result = CliRunner().invoke(explain, ["--keras-model", str(model), "--config-table", str(table), "--image",
                                          str(image), "--out-dir", str(out / "erklärung é")])
    assert result.exit_code == 0, result.output
    assert (out / "erklärung é" / f"{image.stem}-gradcam-heatmap.png").is_file()
    _serve_and_export_reviews(model, dataset.parent / "images", out, tracking_uri)


def _serve_and_export_reviews(model: Path, images: Path, out: Path, tracking_uri: str) -> None:
    """The REST server (a real HTTP server) on the model in the Unicode folder classifies an upload named in
    Unicode, lists and sends the evaluation images by their Unicode names and stores experts' answers on them;
    ``timl.review export`` writes them to a Unicode folder, the names intact, and logs its run."""
    import requests

    from helpers import serving_in_thread
    from timl import review
    from timl.serving import create_app

    names = sorted(path.name for path in images.iterdir())[:2]
    database = out / "Antworten ü.db"
    app = create_app({"CLASSIFICATION_MODEL": str(model), "EVALUATION_IMAGES_DIR": str(images),
                      "EVALUATION_DB": str(database)})
    with serving_in_thread(app) as base:
        upload = {"file": (names[0], (images / names[0]).read_bytes(), "image/png")}
        answer = requests.post(f"{base}/api/classify", files=upload, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["filename"] == names[0] and answer.json()["predicted_class"] in ("D0", "D1", "D2")
        listed = requests.get(f"{base}/api/evaluate/images", timeout=60).json()["images"]
        assert set(names) <= set(listed)
        sent = requests.get(f"{base}/api/evaluate/images/{requests.utils.quote(names[1])}", timeout=60)
        assert sent.status_code == 200 and sent.content == (images / names[1]).read_bytes()
        for name, label in zip(names, ("D2", "D1")):
            posted = requests.post(f"{base}/api/evaluate/answers", timeout=60, json={
                "image": name, "evaluator": "Dr. Ünal", "comment": "gut ✓", "agree": False, "label": label})
            assert posted.status_code == 201, posted.text
    export = out / "Prüfung ß" / "korrigiert é.csv"
    result = CliRunner().invoke(review.cli, ["export", "--db", str(database), "--out", str(export), "--images",
                                             str(images), "--tracking-uri", tracking_uri])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(export, dtype={"image_name": str})
    stems = [name[:-len(".png")] for name in names]
    assert dict(zip(frame["image_name"], frame[["D0", "D1", "D2"]].values.tolist())) == {
        stems[0]: [0, 0, 1], stems[1]: [0, 1, 0]}
    assert sorted(link.name for link in (export.parent / "images").iterdir()) == names


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_tracking_store_is_named_and_left_alone(tmp_path, damage):
    """A corrupt or truncated mlflow.db: exit 2 with a message naming the file, no traceback, the file untouched."""
    from timl.train import cli as train
    from timl import tracking

    store = tmp_path / "mlflow.db"
    if damage == "garbage":
        store.write_bytes(bytes(range(256)) * 40)
    else:
        tracking.configure(f"sqlite:///{tmp_path / 'whole.db'}")
        whole = (tmp_path / "whole.db").read_bytes()
        store.write_bytes(whole[:len(whole) // 3])
    before = store.read_bytes()
    table = write_table(tmp_path / "t.csv", [small_cnn_row(str(tmp_path / "absent.csv"), epochs=1)])
    result = CliRunner().invoke(train, ["--input-table", str(table), "--out-dir", str(tmp_path / "out"),
                                        "--tracking-uri", f"sqlite:///{store}"])
    assert result.exit_code == 2, result.output
    assert f"The tracking store {store} cannot be read: it is corrupt or truncated" in result.output
    assert "Restore it from a backup" in result.output and "Traceback" not in result.output
    assert store.read_bytes() == before, "the user's store is never rewritten"


def _on_a_small_disk(tmp_path: Path, folder: Path, size: str, train: str, between: str, after: str = "") -> str:
    """Runs the shell command ``train`` with ``folder`` on a real tmpfs of ``size`` (a private mount namespace),
    then the lines ``between``; grows the filesystem to 8 MB, runs ``train --resume``, then the lines ``after``.
    Returns the output, with ``first exit N`` and ``second exit N``."""
    script = (f"mount -t tmpfs -o size={size} tmpfs '{folder}' || exit 99\n{train}\necho \"first exit $?\"\n"
              f"{between}mount -o remount,size=8m '{folder}'\n{train} --resume\necho \"second exit $?\"\n{after}")
    result = subprocess.run(["unshare", "--mount", "bash", "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    return result.stdout + result.stderr


@pytest.mark.slow  # about 25 s on 2 cores
@pytest.mark.component("mount namespaces")
def test_a_disk_that_fills_during_a_row(mini_digits, tmp_path):
    """A real 2 MB filesystem (tmpfs in a private mount namespace) as the output folder: the first row's files fit,
    the second row's model does not. The second row fails saying the disk is full and what to do, leaves no
    half-written model file, the first row's files are intact, and ``--resume`` once there is space trains only
    the second row."""
    out = tmp_path / "out"
    out.mkdir()
    table = write_table(tmp_path / "t.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=1)] * 2)
    train = (f"'{sys.executable}' -m timl.train --input-table '{table}' --out-dir '{out}' --skip-roc "
             f"--no-system-metrics --tracking-uri 'sqlite:///{tmp_path / 'mlflow.db'}' "
             f"--checkpoint-dir '{tmp_path / 'checkpoints'}'")
    output = _on_a_small_disk(tmp_path, out, "2m", train,
                              between=f"sha256sum '{out}'/0-* > '{tmp_path / 'before.txt'}'\n"
                                      f"ls '{out}' > '{tmp_path / 'full.txt'}'\n",
                              after=f"sha256sum -c '{tmp_path / 'before.txt'}' > /dev/null && echo 'row 0 intact'\n"
                                    f"cp -r '{out}' '{tmp_path / 'kept'}'\n")
    assert "first exit 1" in output and "second exit 0" in output and "row 0 intact" in output, output[-4000:]
    assert "row 1-SmallCNN FAILED: Disk full: free space on the disk of the output folder" in output
    assert "No space left on device" in output and "Traceback" not in output
    full = (tmp_path / "full.txt").read_text().split()
    assert [name for name in full if name.startswith("0-keras_model-")], "the first row's model is kept"
    assert not [name for name in full if name.startswith("1-keras_model-")], "no half-written model file"
    assert "row 0-SmallCNN: FINISHED in 0s - skipped: already FINISHED" in output
    results = pd.read_csv(tmp_path / "kept" / "automation_result.csv", dtype=str, keep_default_na=False)
    assert list(results["exceptions"]) == ["", ""]


@pytest.mark.slow  # about 25 s on 2 cores
@pytest.mark.component("mount namespaces")
def test_a_disk_that_fills_during_a_checkpoint_write_keeps_the_previous_one(mini_digits, tmp_path):
    """--checkpoint-dir on a real 2.4 MB filesystem: the first epoch's checkpoint (last.npz 1.3 MB, best.npz
    0.45 MB) fits, the second epoch's, written aside before it replaces the first, does not. The row fails saying
    the disk is full and naming the checkpoint, the first epoch's checkpoint stays whole with no part-written file
    beside it, and ``--resume`` once there is space continues the row after its first epoch."""
    from mlflow.tracking import MlflowClient

    checkpoints = tmp_path / "check points ä"
    checkpoints.mkdir()
    table = write_table(tmp_path / "t.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=3)])
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    train = (f"'{sys.executable}' -m timl.train --input-table '{table}' --out-dir '{tmp_path / 'out'}' --skip-roc "
             f"--no-system-metrics --tracking-uri '{store}' --experiment full --checkpoint-dir '{checkpoints}'")
    epochs = "import glob, numpy; print('checkpoint epochs', *[int(numpy.load(f)['epochs']) for f in glob.glob("
    output = _on_a_small_disk(tmp_path, checkpoints, "2400k", train,
                              between=f"find '{checkpoints}' -type f -printf '%f\\n' | sort | tr '\\n' ' '; echo\n"
                                      f"'{sys.executable}' -c \"{epochs}'{checkpoints}/*/*/last.npz')])\"\n")
    assert "first exit 1" in output and "second exit 0" in output, output[-4000:]
    assert "row 0-SmallCNN FAILED: Disk full: free space on the disk of the output folder" in output
    assert re.search(r"No space left on device: '[^']*/last\.npz'", output) and "Traceback" not in output
    assert "best.json best.npz last.npz \n" in output, "no part-written checkpoint left beside the first"
    assert "checkpoint epochs 1\n" in output, "the first epoch's checkpoint is whole"
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("full").experiment_id], "tags.`timl.row` = '0'")
    finished = [run for run in runs if run.info.status == "FINISHED"]
    assert len(finished) == 1 and finished[0].data.tags["timl.resumed_at_epoch"] == "1"
    assert [metric.step for metric in client.get_metric_history(finished[0].info.run_id, "loss")] == [0, 1, 2]


@pytest.mark.component("dev full")
def test_a_full_disk_stops_the_table_with_what_to_do(tmp_path):
    """``/dev/full`` answers every write with ENOSPC, as a full disk does: the table's error names the file and
    says to free space and --resume."""
    from timl.errors import TrainingError
    from timl.training.space import disk_full_stops_the_table

    expected = rf"No space left on the device in the output folder {re.escape(str(tmp_path))}\. .*--resume"
    with pytest.raises(TrainingError, match=expected):
        with disk_full_stops_the_table(tmp_path), open("/dev/full", "w") as full:
            full.write("x")
            full.flush()
    with pytest.raises(PermissionError), disk_full_stops_the_table(tmp_path):  # other errors are left as they are
        raise PermissionError("not ENOSPC")


def test_a_corrupt_best_checkpoint_trains_its_row_afresh_and_says_so(tracking_uri, mini_digits, tmp_path, caplog,
                                                                     monkeypatch):
    """A row stopped after its 2nd of 3 epochs leaves its checkpoint; its ``best.npz`` is then truncated (a disk
    that failed). ``--resume`` warns naming the file and trains that row from its first epoch (its best epoch
    could no longer be the row's model); the other row, finished, stays as it was."""
    from mlflow.tracking import MlflowClient

    from timl import training
    from timl.errors import TrainingError
    from timl.training.callbacks import EpochLogger

    logged = EpochLogger.on_epoch_end

    def power_cut(self, epoch, logs=None):
        if epoch == 1 and not power_cut.done:
            power_cut.done = True
            raise TrainingError("the power went off")
        logged(self, epoch, logs)

    power_cut.done = False
    monkeypatch.setattr(EpochLogger, "on_epoch_end", power_cut)
    table = write_table(tmp_path / "t.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=3, seed=seed)
                                             for seed in (0, 1)])
    out = tmp_path / "out"
    first = training.train_table(table, out_dir=out, experiment="torn best", skip_roc=True)
    assert [row.status for row in first.rows] == ["FAILED", "FINISHED"], first.rows
    best = out / ".backup" / "0" / "best.npz"
    best.write_bytes(best.read_bytes()[:len(best.read_bytes()) // 2])
    monkeypatch.setattr(EpochLogger, "on_epoch_end", logged)
    again = training.train_table(table, out_dir=out, experiment="torn best", skip_roc=True, resume=True)
    assert [row.status for row in again.rows] == ["FINISHED", "FINISHED"], again.rows
    assert f"The best weights {best} cannot be used" in caplog.text
    assert "training this row from its first epoch" in caplog.text
    run = MlflowClient().get_run(again.rows[0].run_id)
    assert "timl.resumed_at_epoch" not in run.data.tags
    assert [metric.step for metric in MlflowClient().get_metric_history(run.info.run_id, "loss")] == [0, 1, 2]
    assert again.rows[1].run_id == first.rows[1].run_id, "the finished row is kept, not trained again"
    assert not (out / ".backup" / "0").exists(), "the row, recorded, leaves no checkpoint to resume"
