"""The explain command: one image or a test dataframe, several methods, grid pages, artifacts on a run."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from helpers import saved_model


@pytest.fixture
def model_and_images(tmp_path):
    from helpers import random_images

    names = random_images(tmp_path / "images", 3, size=(40, 24))
    frame = pd.DataFrame({"image_name": names, "A": [1, 0, 0], "B": [0, 1, 0], "C": [0, 0, 1]})
    frame.to_csv(tmp_path / "test.csv", index=False)
    return saved_model(tmp_path), tmp_path


def test_one_image_several_methods(model_and_images):
    from timl.explain import cli

    model, folder = model_and_images
    result = CliRunner().invoke(cli, ["--keras-model", str(model), "--image", str(folder / "images" / "img000.png"),
                                      "--method", "gradcam", "--method", "rise", "--rise-masks", "30", "--seed", "1",
                                      "--out-dir", str(folder / "out")])
    assert result.exit_code == 0, result.output
    for method in ("gradcam", "rise"):
        for kind in ("grey", "heatmap", "comp"):
            picture = Image.open(folder / "out" / f"img000-{method}-{kind}.png")
            assert picture.size == (40, 24)


def test_test_dataframe_pages_and_log_to_run(model_and_images, tracking_uri):
    import mlflow
    from mlflow.tracking import MlflowClient

    from timl.explain import cli

    model, folder = model_and_images
    with mlflow.start_run() as run:
        pass
    result = CliRunner().invoke(cli, ["--keras-model", str(model), "--test-dataframe", str(folder / "test.csv"),
                                      "--method", "gradcam", "--method", "gradcam++", "--out-dir", str(folder / "o"),
                                      "--log-to-run", run.info.run_id, "--tracking-uri", tracking_uri])
    assert result.exit_code == 0, result.output
    assert (folder / "o" / "explain-page-001.png").is_file()
    assert len(list((folder / "o").glob("*-comp.png"))) == 6
    logged = {item.path for item in MlflowClient().list_artifacts(run.info.run_id, "explanations")}
    assert "explanations/explain-page-001.png" in logged


@pytest.mark.parametrize("options,message", [
    (["--layer", "nope"], "Unknown layer"),
    (["--method", "occlusion"], "Unknown explanation method"),
    (["--class", "Z"], "Unknown class"),
])
def test_errors(model_and_images, options, message):
    from timl.explain import cli

    model, folder = model_and_images
    result = CliRunner().invoke(cli, ["--keras-model", str(model), "--image", str(folder / "images" / "img000.png"),
                                      "--out-dir", str(folder / "e"), *options])
    assert result.exit_code == 2 and message in result.output
