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


def test_rise_options_reach_the_explainer_and_match_the_server(model_and_images):
    """--masks/--cells/--keep (the server's ?masks=&cells=&keep=) reach RISE; --rise-masks still works."""
    from timl.explain import cli
    from timl.serving.openapi import EXPLAIN_QUERY

    model, folder = model_and_images
    image = str(folder / "images" / "img000.png")
    greys = {}
    for name, options in {"cells3": ["--cells", "3"], "cells3-again": ["--rise-cells", "3"],
                          "cells6": ["--cells", "6", "--keep", "0.3"]}.items():
        result = CliRunner().invoke(cli, ["--keras-model", str(model), "--image", image, "--method", "rise",
                                          "--rise-masks", "24", "--seed", "2", "--out-dir", str(folder / name),
                                          *options])
        assert result.exit_code == 0, result.output
        greys[name] = (folder / name / "img000-rise-grey.png").read_bytes()
    assert greys["cells3"] == greys["cells3-again"] != greys["cells6"]
    help_text = CliRunner().invoke(cli, ["--help"]).output
    for query, (_, kind, low, high) in EXPLAIN_QUERY.items():  # same names and ranges as the server
        assert f"--{query}," in help_text and f"{low}<=x<={high}" in help_text
    bad = CliRunner().invoke(cli, ["--keras-model", str(model), "--image", image, "--cells", "1"])
    assert bad.exit_code == 2 and "--cells" in bad.output and "2<=x<=64" in bad.output


def test_the_command_says_which_class_and_layer_it_explained(model_and_images, caplog):
    import logging

    from timl.explain import cli

    model, folder = model_and_images
    image = str(folder / "images" / "img000.png")
    with caplog.at_level(logging.INFO, logger="timl.explain"):
        result = CliRunner().invoke(cli, ["--keras-model", str(model), "--image", image, "--method", "gradcam",
                                          "--method", "rise", "--rise-masks", "20", "--class", "B",
                                          "--out-dir", str(folder / "out")])
    assert result.exit_code == 0, result.output
    lines = [record.getMessage() for record in caplog.records if record.name == "timl.explain"]
    gradcam = next(line for line in lines if "gradcam" in line)
    assert gradcam.startswith("img000: gradcam explained class B (") and " at layer " in gradcam
    rise = next(line for line in lines if "rise" in line)
    assert rise.startswith("img000: rise explained class B (") and "uses no layer" in rise
