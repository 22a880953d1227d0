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
    script = (f"mount -t tmpfs -o size=2m tmpfs '{out}' || exit 99\n{train}\necho \"first exit $?\"\n"
              f"sha256sum '{out}'/0-* > '{tmp_path / 'before.txt'}'\nls '{out}' > '{tmp_path / 'full.txt'}'\n"
              f"mount -o remount,size=8m '{out}'\n{train} --resume\necho \"second exit $?\"\n"
              f"sha256sum -c '{tmp_path / 'before.txt'}' > /dev/null && echo 'row 0 intact'\n"
              f"cp -r '{out}' '{tmp_path / 'kept'}'\n")
    result = subprocess.run(["unshare", "--mount", "bash", "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    output = result.stdout + result.stderr
    assert "first exit 1" in output and "second exit 0" in output and "row 0 intact" in output, output[-4000:]
    assert "row 1-SmallCNN FAILED: Disk full: free space on the disk of the output folder" in output
    assert "No space left on device" in output and "Traceback" not in output
    full = (tmp_path / "full.txt").read_text().split()
    assert [name for name in full if name.startswith("0-keras_model-")], "the first row's model is kept"
    assert not [name for name in full if name.startswith("1-keras_model-")], "no half-written model file"
    assert "row 0-SmallCNN: FINISHED in 0s - skipped: already FINISHED" in output
    results = pd.read_csv(tmp_path / "kept" / "automation_result.csv", dtype=str, keep_default_na=False)
    assert list(results["exceptions"]) == ["", ""]


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
