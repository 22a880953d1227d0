"""Registering a row's model, or the best row of a table, in the MLflow model registry (on hand-made runs)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from timl import register, tracking
from timl.errors import ConfigError, ModelError


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _row_with_model(parent: str, row: int, metrics: dict, status: str = "FINISHED", test_labels=None) -> str:
    """A row run with a logged pyfunc model ``model`` (a tiny one: registration does not look inside) and, given
    ``test_labels``, a logged test set (MLflow dataset input, context ``testing``) of that many images."""
    import mlflow
    import pandas as pd

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    experiment = _client().get_run(parent).info.experiment_id
    with mlflow.start_run(experiment_id=experiment, tags={tracking.TAG_PARENT: parent, tracking.TAG_ROW: str(row)}) as run:
        mlflow.log_params({"method": "SmallCNN", "dataset": "gt.csv", "split": "n=5", "epochs": 2, "imgsize": 16})
        mlflow.log_metrics(metrics)
        mlflow.pyfunc.log_model(name="model", python_model=Echo())
        if test_labels is not None:
            frame = pd.DataFrame({"image": [f"{i:04d}" for i in range(len(test_labels))], "MEL": test_labels})
            tracking.log_datasets([tracking.dataset_input(frame, source="gt.csv", name="gt-test", context="testing")])
    _client().set_terminated(run.info.run_id, status=status)
    return run.info.run_id


@pytest.fixture
def table(tracking_uri):
    parent = _client().create_run(tracking.experiment_id("reg"), tags={tracking.TAG_KIND: "table"}).info.run_id
    rows = [_row_with_model(parent, 0, {"dev/accuracy": 0.6, "dev/balanced_accuracy": 0.7}),
            _row_with_model(parent, 1, {"dev/accuracy": 0.9, "dev/balanced_accuracy": 0.5, "test/auc": 0.81234,
                                        "test/accuracy": 0.875}),
            _row_with_model(parent, 2, {"dev/accuracy": 0.99}, status="FAILED")]
    return parent, rows


def test_register_run_describes_and_tags_the_version(table):
    _, rows = table
    assert register.register_run(rows[1], "lesions") == "models:/lesions/1"
    version = _client().get_model_version_by_alias("lesions", "champion")
    assert str(version.version) == "1" and version.run_id == rows[1]
    assert version.description == (f"TIML SmallCNN trained on gt.csv (split n=5, 2 epochs, imgsize 16), run {rows[1]}."
                                   " Test: accuracy 0.875, auc 0.812.")
    assert version.tags["dev/accuracy"] == "0.9000" and version.tags["test/auc"] == "0.8123"
    assert version.tags["method"] == "SmallCNN" and version.tags["run_id"] == rows[1]
    assert register.register_run(rows[0], "lesions", alias=None) == "models:/lesions/2"
    assert str(_client().get_model_version_by_alias("lesions", "champion").version) == "1", "no alias: left alone"


def test_registering_prints_no_mlflow_notice_about_artifact_paths(table, caplog):
    """MLflow 3 logs a model as a logged model (models:/m-ID); registering runs:/ID/model warned about a missing
    artifact path every time (issue 25). Other MLflow warnings stay."""
    import logging

    _, rows = table
    with caplog.at_level(logging.WARNING):
        register.register_run(rows[0], "quiet")
    assert not [record for record in caplog.records if "has no artifacts at artifact path" in record.getMessage()]
    other = logging.getLogger("mlflow.tracking._model_registry.fluent")
    with caplog.at_level(logging.WARNING):
        other.warning("another MLflow warning")
    assert "another MLflow warning" in caplog.text and not other.filters, "the filter is gone after registering"


def test_the_best_finished_row_by_any_metric(table):
    parent, rows = table
    assert register.best_run(parent) == rows[0]  # dev/balanced_accuracy, the default
    assert register.best_run(parent, "valacc") == rows[1], "the original short name; the FAILED row never wins"
    with pytest.raises(ConfigError, match="has the metric 'val_f2' to select by"):
        register.best_run(parent, "val_f2")
    assert register.register_best(parent, "best", select_by="val_accuracy") == "models:/best/1", "an earlier name"
    assert _client().get_model_version_by_alias("best", "champion").run_id == rows[1]


def test_the_command(table, tracking_uri):
    _, rows = table
    result = CliRunner().invoke(register.cli, ["--run-id", rows[0], "--name", "cmd", "--tracking-uri", tracking_uri])
    assert result.exit_code == 0 and "Registered models:/cmd/1 (models:/cmd@champion)" in result.output
    result = CliRunner().invoke(register.cli, ["--run-id", "0" * 32, "--name", "cmd", "--tracking-uri", tracking_uri])
    assert result.exit_code == 2 and "No such run in this tracking store" in result.output
    bare = _client().create_run(tracking.experiment_id("reg")).info.run_id
    result = CliRunner().invoke(register.cli, ["--run-id", bare, "--name", "cmd", "--tracking-uri", tracking_uri])
    assert result.exit_code == 2 and "has no logged model 'model'" in result.output


def test_the_best_row_of_a_finished_table_registers_without_training_and_once(table, tracking_uri, tmp_path):
    parent, rows = table
    out = tmp_path / "train_output-x"
    out.mkdir()
    (out / tracking.PARENT_MARKER).write_text(parent + "\n")

    def invoke(*options):
        return CliRunner().invoke(register.cli, [*options, "--tracking-uri", tracking_uri])

    result = invoke("--out-dir", str(out), "--name", "best", "--select-by", "valacc")
    assert result.exit_code == 0, result.output
    assert f"The best row of table run {parent} by dev/accuracy: run {rows[1]}" in result.output
    assert "Registered models:/best/1 (models:/best@champion)" in result.output
    again = invoke("--table-run", parent, "--name", "best", "--select-by", "valacc")
    assert again.exit_code == 0 and "Already registered as models:/best/1 (models:/best@champion)" in again.output
    assert len(_client().search_model_versions("name = 'best'")) == 1, "no duplicate version"
    assert register.register_run(rows[1], "best") == "models:/best/1"
    for options, expected in ((("--run-id", rows[0], "--table-run", parent), "Give exactly one of --run-id"),
                              ((), "none of them"), (("--out-dir", str(tmp_path)), "no parent_run_id.txt")):
        result = invoke(*options, "--name", "x")
        assert result.exit_code == 2 and expected in result.output, result.output


def test_a_registered_model_is_described_by_name_version_and_date(table):
    """What the server's pages show in their header (``/info`` model_info) for models:/ and runs:/ URIs."""
    import datetime

    _, rows = table
    register.register_run(rows[1], "lesions")
    today = datetime.date.today().isoformat()
    by_alias = tracking.model_card_facts("models:/lesions@champion")
    assert (by_alias["name"], by_alias["version"], by_alias["date"], by_alias["run_id"]) == ("lesions", "1", today,
                                                                                               rows[1])
    assert tracking.model_card_facts("models:/lesions/1")["version"] == "1"
    by_run = tracking.model_card_facts(f"runs:/{rows[0]}/model", rows[0])
    assert by_run["run_id"] == rows[0] and by_run["date"] == today and by_run["name"]
    assert tracking.model_card_facts("models:/nope@champion") == {}  # unknown: nothing invented


def test_a_registered_version_pins_its_keras_file(tracking_uri, tmp_path):
    """The version is tagged with the file's sha256; a file swapped in the artifact store afterwards (its metadata
    made to match) is refused when the version is loaded, and the run can no longer be registered."""
    from helpers import logged_model_folder, logged_tiny_model, tiny_classifier
    from timl.classifier import load_classifier, sha256_of, write_metadata

    run_id = logged_tiny_model(tmp_path)
    register.register_run(run_id, "tiny")
    pinned = _client().get_model_version("tiny", "1").tags[tracking.TAG_MODEL_SHA256]
    assert pinned == sha256_of(tmp_path / "tiny.h5")
    assert load_classifier(model_uri="models:/tiny@champion").class_names == ("A", "B", "C")

    other = tiny_classifier()
    other.model.layers[-1].set_weights([weights + 1.0 for weights in other.model.layers[-1].get_weights()])
    swapped = logged_model_folder(tmp_path, run_id) / "artifacts" / "tiny.h5"
    other.model.save(swapped)
    write_metadata(swapped, other.metadata())
    for uri in ("models:/tiny@champion", "models:/tiny/1"):
        with pytest.raises(ModelError, match=rf"Refusing to load {uri} \(registered model tiny/1\): its Keras file was "
                                             rf"changed after registration. Expected sha256 {pinned} .*"
                                             rf"Received: sha256={sha256_of(swapped)}"):
            load_classifier(model_uri=uri)
    with pytest.raises(ConfigError, match=rf"Refusing to register run {run_id}: its logged Keras file changed after "
                                          rf"training. Expected sha256 {pinned}"):
        register.register_run(run_id, "tiny")


GATE = "test/balanced_accuracy >= champion + 0.01"


@pytest.fixture
def contenders(tracking_uri):
    """Rows on the same test set (0.80 the champion, 0.85 better, 0.805 not better by 0.01) and one on other data."""
    parent = _client().create_run(tracking.experiment_id("gates"), tags={tracking.TAG_KIND: "table"}).info.run_id
    same = [1, 0, 1, 1]
    rows = {name: _row_with_model(parent, row, {"test/balanced_accuracy": score, "test_group/gap/sens_MEL": gap},
                                  test_labels=labels)
            for row, (name, score, gap, labels) in enumerate([("champion", 0.80, 0.05, same), ("better", 0.85, 0.08, same),
                                                              ("worse", 0.805, 0.02, same),
                                                              ("elsewhere", 0.95, 0.01, [0, 0, 1, 1])])}
    register.register_run(rows["champion"], "lesions")
    return rows


def _register(tracking_uri, run_id, *options):
    return CliRunner().invoke(register.cli, ["--run-id", run_id, "--name", "lesions", "--tracking-uri", tracking_uri,
                                             "--gate", GATE, "--gate", "test_group/gap/sens_MEL <= 0.10", *options])


def _champion():
    return _client().get_model_version_by_alias("lesions", "champion")


def test_a_better_model_takes_the_champion_alias(contenders, tracking_uri):
    result = _register(tracking_uri, contenders["better"])
    assert result.exit_code == 0, result.output
    assert "Registered models:/lesions/2 (models:/lesions@champion)" in result.output
    assert f"{GATE}: candidate 0.8500, champion 0.8000 (needs >= 0.8100): holds" in result.output
    assert _champion().run_id == contenders["better"]
    assert "0.8500" in _champion().tags[tracking.TAG_CHAMPION_GATES]


def test_a_worse_model_is_registered_but_the_champion_stays(contenders, tracking_uri):
    result = _register(tracking_uri, contenders["worse"])
    assert result.exit_code == 1, result.output
    assert ("Registered models:/lesions/2 without the alias 'champion': models:/lesions@champion stays at version 1."
            in result.output)
    assert f"gate failed: {GATE}: candidate 0.8050, champion 0.8000 (needs >= 0.8100)" in result.output
    assert "sens_MEL <= 0.10" not in result.output.split("gate failed")[-1], "only the failed gate is named"
    assert _champion().run_id == contenders["champion"]
    assert _client().get_model_version("lesions", "2").run_id == contenders["worse"], "still registered"
    assert not _client().get_model_version("lesions", "2").aliases


def test_force_moves_the_alias_and_records_the_override(contenders, tracking_uri):
    import getpass

    result = _register(tracking_uri, contenders["worse"], "--force")
    assert result.exit_code == 0, result.output
    assert "moved despite: gate failed" in result.output
    assert _champion().run_id == contenders["worse"]
    override = _champion().tags[tracking.TAG_CHAMPION_OVERRIDE]
    assert override.startswith(f"forced by {getpass.getuser()} over version 1: gate failed: {GATE}: candidate 0.8050")


def test_other_test_data_is_a_refusal_not_a_comparison(contenders, tracking_uri):
    result = _register(tracking_uri, contenders["elsewhere"])
    assert result.exit_code == 1, result.output
    assert "Refusing to compare: different test data." in result.output and "gt-test (digest" in result.output
    assert "candidate 0.9500" not in result.output, "nothing compared"
    assert _champion().run_id == contenders["champion"]
    no_data = _row_with_model(_client().get_run(contenders["champion"]).data.tags[tracking.TAG_PARENT], 9,
                              {"test/balanced_accuracy": 0.99, "test_group/gap/sens_MEL": 0.0})
    result = _register(tracking_uri, no_data)
    assert result.exit_code == 1 and "logged no test dataset" in result.output


def test_the_first_champion_needs_no_comparison_but_absolute_gates_hold(contenders, tracking_uri):
    result = CliRunner().invoke(register.cli, ["--run-id", contenders["worse"], "--name", "new", "--tracking-uri",
                                               tracking_uri, "--gate", GATE])
    assert result.exit_code == 0 and "(models:/new@champion)" in result.output, result.output
    result = CliRunner().invoke(register.cli, ["--run-id", contenders["better"], "--name", "strict", "--tracking-uri",
                                               tracking_uri, "--gate", "test_group/gap/sens_MEL < 0.05"])
    assert result.exit_code == 1 and "gate failed: test_group/gap/sens_MEL < 0.05: candidate 0.0800" in result.output


BAD_GATES = [
    ("test/balanced_accuracy", "does not parse"),
    ("test/balanced_accuracy => champion", "does not parse"),
    ("test/balanced_accuracy >= best + 0.1", "is neither a number nor champion"),
    ("test/balanced_accuracy >= champion * 2", "is neither a number nor champion"),
    ("test/balanced_acc >= champion", "names the metric 'test/balanced_acc', which neither the candidate run nor the "
                                      "champion run has. Expected one of their metrics, e.g. test/balanced_accuracy"),
]


def test_a_bad_gate_is_a_usage_error_that_registers_nothing(contenders, tracking_uri):
    for gate, message in BAD_GATES:
        result = CliRunner().invoke(register.cli, ["--run-id", contenders["better"], "--name", "lesions",
                                                   "--tracking-uri", tracking_uri, "--gate", gate])
        assert result.exit_code == 2 and message in result.output and f"gate={gate!r}" in result.output, result.output
        assert "Expected" in result.output
    assert len(_client().search_model_versions("name='lesions'")) == 1


def test_train_checks_its_gates_before_any_row_trains(tmp_path):
    from timl.train import cli

    table = tmp_path / "table.csv"
    table.write_text("method,dataset\nSmallCNN,missing.csv\n")
    result = CliRunner().invoke(cli, ["--input-table", str(table), "--register", "x", "--gate", "test/auc >> 1"])
    assert result.exit_code == 2 and "Gate 'test/auc >> 1'" in result.output, result.output
    assert "OP one of >=, <=, >, <" in result.output
    result = CliRunner().invoke(cli, ["--input-table", str(table), "--gate", "test/auc > 0.5"])
    assert result.exit_code == 2 and "--gate and --force-champion need --register NAME." in result.output
