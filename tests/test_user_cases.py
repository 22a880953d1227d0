"""What users hit: images missing from a row's dataset, Unicode and spaces in every name, a corrupt tracking store."""

from __future__ import annotations

import shutil
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


@pytest.mark.slow  # about 50 s on 2 loaded cores
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
