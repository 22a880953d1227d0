"""What the outputs say (issue 25): failed rows keep their cells, help examples as written, the demo's files."""

from __future__ import annotations

import json

import pandas as pd
from click.testing import CliRunner

from helpers import REPO, small_cnn_row, write_table


def test_failed_rows_keep_their_cells_in_the_results_table(tracking_uri, tmp_path):
    from timl.training import train_table

    missing = str(tmp_path / "no-such-dataset.csv")
    table = write_table(tmp_path / "t.csv", [small_cnn_row(missing, method="Nope", epochs="2x"),
                                             small_cnn_row(missing, epochs=1)])
    outcome = train_table(table, out_dir=tmp_path / "out", experiment="failed-cells", skip_roc=True)
    assert [row.status for row in outcome.rows] == ["FAILED", "FAILED"]
    written = pd.read_csv(outcome.results_path, dtype=str, keep_default_na=False)
    invalid, no_data = written.iloc[0], written.iloc[1]
    assert (invalid["method"], invalid["dataset"], invalid["epochs"]) == ("Nope", missing, "2x"), \
        "a row that failed validation shows its cells as written"
    assert "epochs" in invalid["exceptions"]
    assert (no_data["method"], no_data["dataset"], no_data["epochs"], no_data["imgsize"]) == (
        "SmallCNN", missing, "1", "16"), "a row that failed before its data stage shows its cells"


def test_help_examples_are_never_wrapped_mid_option():
    from timl import explain, predict, register

    for module in (predict, explain, register):
        result = CliRunner().invoke(module.cli, ["--help"], terminal_width=80)
        assert result.exit_code == 0
        examples = result.output[result.output.index("Examples:"):]
        for line in examples.splitlines():
            assert not line.rstrip().endswith("-"), f"{module.__name__} --help wraps an example: {line!r}"
    assert "--test-dataframe test.csv" in CliRunner().invoke(predict.cli, ["--help"], terminal_width=80).output


def test_the_data_help_names_the_folder_the_readme_and_makefile_use():
    from timl import data

    readme, makefile = (REPO / "README.md").read_text(), (REPO / "Makefile").read_text()
    assert "demo_data" in readme and "timl.data digits demo_data" in makefile
    for arguments in ([], ["digits"]):
        help_text = CliRunner().invoke(data.cli, [*arguments, "--help"]).output
        assert "digits demo_data" in help_text and "demo-data" not in help_text


def test_make_demo_installs_only_the_package():
    makefile = (REPO / "Makefile").read_text()
    demo = next(line for line in makefile.splitlines() if line.startswith("demo:"))
    assert "$(PACKAGE_STAMP)" in demo and "$(STAMP)" not in demo.replace("$(PACKAGE_STAMP)", "")
    package_recipe = makefile.split("$(PACKAGE_STAMP): pyproject.toml")[1].split("\n\n")[0]
    assert "pip install --quiet -e ." in package_recipe and "[dev]" not in package_recipe
    assert "tf-keras" not in package_recipe
    test = next(line for line in makefile.splitlines() if line.startswith("test:"))
    assert "$(STAMP)" in test, "make test keeps the dev extra"


def test_the_sample_configuration_reviews_the_demo_images(tmp_path):
    from timl.serving.config import ServerConfig

    sample = json.loads((REPO / "serving" / "timl_server_config.json").read_text())
    assert sample["EVALUATION_IMAGES_DIR"] == "demo_data/images", "where make demo writes the digits images"
    copied = ServerConfig.from_mapping(sample, base_dir=tmp_path)  # the README copies it to the repository root
    assert copied.evaluation_images_dir == str(tmp_path / "demo_data" / "images")


def test_the_sample_configuration_lists_every_setting():
    """The sample file is what a user copies and edits: every setting the server reads is in it, described."""
    from timl.serving.config import SAMPLE

    sample = json.loads((REPO / "serving" / "timl_server_config.json").read_text())
    assert [key for key in SAMPLE if key not in sample] == []
    assert all(f"{key}_description" in sample for key in sample if not key.endswith("_description"))


def test_the_evaluations_lock_file_is_ignored_by_git():
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "timl_evaluations.db.lock" in ignored


def test_the_license_is_an_spdx_expression():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT", "a table license is deprecated by setuptools"
    assert any(requirement.startswith("setuptools>=77") for requirement in project["build-system"]["requires"])


def test_progress_to_a_file_or_pipe_is_one_line_per_update(monkeypatch):
    import io

    from timl.cli import progress_printer

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, tty in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr("sys.stderr", stream)
        progress = progress_printer("explained")
        for done in (1, 2, 3):
            progress(done, 3)
        written = stream.getvalue()
        if tty:
            assert written.count("\r") == 3 and written.endswith("left)\n"), "a terminal keeps one line"
        else:
            assert "\r" not in written and len(written.splitlines()) == 3, "a log file gets a line per update"
            assert written.splitlines()[-1].startswith("explained 3/3 images")


def test_predict_progress_in_a_pipe_has_no_carriage_returns(monkeypatch):
    import io
    import time

    from timl import predict

    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    for done in (32, 64, 70):
        predict._progress(done, 70, time.time())
    assert "\r" not in stream.getvalue() and len(stream.getvalue().splitlines()) == 3
