"""Searches (issue 27): a row whose cells are search spaces, searched by ``python -m timl.tune`` with Optuna, each
trial a tracked row under its search run; pruning from the epochs; resume after an interrupt; bad spaces."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import small_cnn_row, write_table

from timl import metric_names as names

def _prune_trial(number: int):
    """A pruner that surely prunes trial ``number`` at its first report (and no other trial)."""
    import optuna

    class PruneOneTrial(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return trial.number == number

    return lambda pruner, startup_trials: PruneOneTrial()


# ------------------------------------------------------------------------------------------------ spaces


@pytest.mark.parametrize("column, cell, expected", [
    ("lr", "loguniform(0,1)", "loguniform() needs LOW > 0"),
    ("batchsize", "choice()", "choice() needs one value or more"),
    ("dataset", "choice(a.csv,b.csv)", "column 'dataset' cannot hold a search space"),
    ("lr", "uniform(1,)", "uniform() takes two numbers"),
    ("epochs", "int(0,3)", "column 'epochs' must be an integer >= 1"),  # a space that can produce a bad cell
    ("method", "choice(SmallCNN,NoSuchNet)", "can produce method='NoSuchNet'"),
    ("lr", "Uniform(0.1,0.5)", "lower-case name"),
])
def test_a_bad_space_fails_its_row_naming_the_cell_and_the_accepted_forms(tmp_path, column, cell, expected):
    from timl import config
    from timl.errors import ConfigError

    table = write_table(tmp_path / "t.csv", [small_cnn_row("data.csv"), {**small_cnn_row("data.csv"), column: cell}])
    plain, bad = config.read_table(table)
    assert isinstance(plain, config.RunConfig)
    assert isinstance(bad, ConfigError)
    message = str(bad)
    assert f"t.csv, row 1" in message and f"column '{column}'" in message and expected in message, message
    if column not in ("dataset", "epochs", "method"):
        assert "Accepted search spaces: loguniform(LOW,HIGH)" in message and "choice(A,B,...)" in message
    if column == "dataset":
        assert "lr" in message and "method" in message, "the columns that take a space are listed"
    assert bad.cells[column] == cell, "the row's FAILED run shows its cells as written"


def test_a_search_row_reads_as_its_spaces_and_samples_validated_rows(tmp_path):
    from timl import __version__, config
    from timl.errors import ConfigError

    table = write_table(tmp_path / "t.csv", [small_cnn_row("data.csv", lr="loguniform(1e-5,1e-2)",
                                                           batchsize="int(16,128,16)",
                                                           imgaug="choice(none,random_flip)")])
    [search] = config.read_table(table)
    assert isinstance(search, config.SearchRow) and search.run_name == "0-search-SmallCNN"
    assert {column: space.kind for column, space in search.spaces.items()} == {
        "lr": "loguniform", "batchsize": "int", "imgaug": "choice"}
    assert search.spaces["batchsize"].values == (16, 128, 16)
    row = search.sample({"lr": 0.001, "batchsize": 48, "imgaug": "random_flip"})
    assert (row.lr, row.batchsize, row.imgaug, row.method) == (0.001, 48, "random_flip", "SmallCNN")
    with pytest.raises(ConfigError, match="column 'imgaug'"):
        search.sample({"lr": 0.001, "batchsize": 48, "imgaug": "sideways"})
    assert search.key(__version__) == config.read_table(table)[0].key(__version__), "a stable key: --resume"


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_a_search_table_trains_its_trials_as_rows_prunes_and_registers_the_best(tracking_uri, tmp_path,
                                                                                 mini_digits, monkeypatch):
    from mlflow.tracking import MlflowClient

    from timl import register, tracking, tune
    from timl.search import study as studies

    monkeypatch.setattr(studies, "make_pruner", _prune_trial(1))
    dataset = str(mini_digits / "mini.csv")
    table = write_table(tmp_path / "t.csv", [small_cnn_row(dataset, lr="loguniform(1e-3,3e-2)",
                                                           batchsize="int(16,32,16)"),
                                             small_cnn_row(dataset, epochs=1)])
    result = CliRunner().invoke(tune.cli, ["--input-table", str(table), "--trials", "3", "--out-dir",
                                           str(tmp_path / "out"), "--experiment", "tune", "--bootstrap", "0",
                                           "--skip-roc", "--no-system-metrics", "--register", "digits-search"])
    assert result.exit_code == 0, result.output
    parent = (tmp_path / "out" / "parent_run_id.txt").read_text().strip()
    children = {run.info.run_name: run for run in tracking.child_runs(parent)}
    assert set(children) == {"0-search-SmallCNN", "1-SmallCNN"}, "a plain row trains as today"
    search = children["0-search-SmallCNN"]
    assert search.data.tags["timl.kind"] == "search" and search.info.status == "FINISHED"
    assert search.data.params["lr"] == "loguniform(1e-3,3e-2)" and search.data.params["trials"] == "3"
    trials = {run.info.run_name: run for run in tracking.child_runs(search.info.run_id)}
    assert set(trials) == {"0.0-SmallCNN", "0.1-SmallCNN", "0.2-SmallCNN"}
    assert all(run.info.status == "FINISHED" for run in trials.values()), "pruned trials do not look failed"
    assert {run.data.tags["timl.trial"] for run in trials.values()} == {"0", "1", "2"}
    assert all(1e-3 <= float(run.data.params["lr"]) <= 3e-2 for run in trials.values()), "sampled values as params"
    pruned = [run for run in trials.values() if "timl.pruned" in run.data.tags]
    assert [run.info.run_name for run in pruned] == ["0.1-SmallCNN"]
    assert "pruned after epoch 0" in pruned[0].data.tags["timl.pruned"]
    history = MlflowClient().get_metric_history(pruned[0].info.run_id, "loss")
    assert [point.step for point in history] == [0], "a pruned trial keeps the epochs it trained, no more"
    assert pruned[0].data.metrics[names.DEV_BALANCED_ACCURACY] >= 0, "and its full record"
    metrics = search.data.metrics
    assert (metrics["trials/finished"], metrics["trials/pruned"], metrics["trials/failed"]) == (2, 1, 0)
    best = trials[search.data.tags["timl.best_row"]]
    assert best.info.run_name != "0.1-SmallCNN" and float(best.data.params["lr"]) == float(
        search.data.tags["timl.best.lr"])
    assert metrics[names.best_metric(names.DEV_BALANCED_ACCURACY)] == best.data.metrics[names.DEV_BALANCED_ACCURACY]
    artifacts = {item.path for item in MlflowClient().list_artifacts(search.info.run_id)}
    assert {"best_trial.json", "search-history.png", "search-slice.png"} <= artifacts, artifacts
    results = pd.read_csv(tmp_path / "out" / "automation_result.csv", dtype=str, keep_default_na=False)
    assert list(results.columns[-2:]) == ["search", "trial"]
    assert results[["search", "trial"]].values.tolist() == [
        ["0-search-SmallCNN", "0"], ["0-search-SmallCNN", "1"], ["0-search-SmallCNN", "2"], ["", ""]]
    best_row = register.best_run(parent)
    assert best_row != search.info.run_id and best_row in {run.info.run_id for run in trials.values()} | {
        children["1-SmallCNN"].info.run_id}, "the best trial (or row) is registered, never the search itself"
    version = MlflowClient().get_model_version_by_alias("digits-search", "champion")
    assert version.run_id == best_row


@pytest.mark.slow
def test_an_interrupted_search_resumes_with_the_missing_trials_each_once(tracking_uri, tmp_path, mini_digits,
                                                                         monkeypatch):
    from timl import tracking, training
    from timl.search import study as studies
    from timl.search.study import SearchOptions
    from timl.training import row as row_module

    table = write_table(tmp_path / "t.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=1,
                                                           lr="loguniform(1e-3,1e-2)")])
    search_options = SearchOptions(trials=2, pruner="none")
    real_train_row, calls = row_module.train_row, []

    def interrupted_second_trial(*args, **keywords):
        calls.append(args[0].run_name)
        if len(calls) == 2:
            raise KeyboardInterrupt("Ctrl-C during trial 1")
        return real_train_row(*args, **keywords)

    monkeypatch.setattr(row_module, "train_row", interrupted_second_trial)
    options = dict(out_dir=tmp_path / "out", experiment="tune", bootstrap=0, skip_roc=True, system_metrics=False,
                   search=search_options)
    with pytest.raises(KeyboardInterrupt):
        training.train_table(table, **options)
    monkeypatch.setattr(row_module, "train_row", real_train_row)
    outcome = training.train_table(table, resume=True, **options)
    assert [(row.name, row.status) for row in outcome.rows] == [
        ("0.2-SmallCNN", "FINISHED"), ("0-search-SmallCNN", "FINISHED")]
    [search] = tracking.child_runs(outcome.parent_run_id)
    trials = sorted((run.info.run_name, run.info.status) for run in tracking.child_runs(search.info.run_id))
    assert trials == [("0.0-SmallCNN", "FINISHED"), ("0.1-SmallCNN", "KILLED"), ("0.2-SmallCNN", "FINISHED")], \
        "each trial once; the interrupted one stays KILLED"
    import optuna

    study = optuna.load_study(study_name=search.data.params["study"], storage=search_options.storage_url(
        tmp_path / "out"))
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert study.trials[1].user_attrs[studies.INTERRUPTED] and studies.counted(study) == 2
    assert study.trials[2].params != study.trials[0].params, "the resumed sampler does not replay the first run's"
    search = tracking.get_run(search.info.run_id)
    assert search.data.metrics["trials/finished"] == 2 and search.data.metrics["trials/failed"] == 0
    again = training.train_table(table, resume=True, **options)
    assert [(row.name, row.message) for row in again.rows] == [("0-search-SmallCNN", "skipped: already FINISHED")]


def test_a_trial_left_running_by_a_killed_search_is_closed_and_counts_for_nothing(tmp_path):
    from timl.search import study as studies
    from timl.search.space import parse_space
    from timl.search.study import SearchOptions

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    spaces = {"lr": parse_space("lr", "loguniform(1e-4,1e-2)")}
    options = SearchOptions(trials=2)
    study = studies.open_study("s", storage, options, spaces, 0, resume=False)
    done = study.ask({"lr": spaces["lr"].distribution()})
    study.tell(done, 0.5)
    study.ask({"lr": spaces["lr"].distribution()})  # the process is killed while this trial trains
    with pytest.raises(Exception, match="exists in .*--resume"):
        studies.open_study("s", storage, options, spaces, 0, resume=False)
    resumed = studies.open_study("s", storage, options, spaces, 0, resume=True)
    assert [trial.state.name for trial in resumed.trials] == ["COMPLETE", "FAIL"]
    assert studies.counted(resumed) == 1, "the interrupted trial is trained again"


@pytest.mark.parametrize("objective, direction, reported", [
    ("dev/loss", "minimize", "val_loss"),  # the objective's own Keras series
    ("dev/balanced_accuracy", "maximize", "val_accuracy"),  # no Keras series: the quality metric, same way
    ("dev/brier", "minimize", "val_loss"),  # no Keras series, minimized: never a maximized series
])
def test_each_epoch_reports_a_series_going_the_objectives_way_and_prunes_the_worse(tmp_path, monkeypatch,
                                                                                    objective, direction, reported):
    from timl import tracking
    from timl.search import study as studies
    from timl.search.pruning import ReportToStudy
    from timl.search.space import parse_space
    from timl.search.trial import TrialRef

    import optuna

    tags, opened = {}, []
    monkeypatch.setattr(tracking, "set_tags", tags.update)
    get_storage = optuna.storages.get_storage
    monkeypatch.setattr(optuna.storages, "get_storage", lambda storage: (opened.append(storage) if isinstance(storage, str) else None) or get_storage(storage))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    spaces = {"lr": parse_space("lr", "loguniform(1e-4,1e-2)")}
    study = studies.open_study("s", storage, studies.SearchOptions(direction=direction), spaces, 0, resume=False)
    better, worse = (0.2, 2.0) if direction == "minimize" else (0.9, 0.1)
    for _ in range(2):  # two finished trials: the median at epoch 0
        trial = study.ask({"lr": spaces["lr"].distribution()})
        trial.report(0.5 if direction == "minimize" else 0.6, 0)
        study.tell(trial, 0.5)
    logs = {"loss": 9.0, "accuracy": 0.0}
    pruned = {}
    for value in (better, worse):
        trial = study.ask({"lr": spaces["lr"].distribution()})
        callback = ReportToStudy(TrialRef(trial.number, "s", storage, "0-search-SmallCNN", objective,
                                          direction=direction), "val_accuracy", "max")
        callback.set_params({"epochs": 3})
        callback.set_model(type("Model", (), {"stop_training": False})())
        callback.on_epoch_end(0, {**logs, reported: value,
                                  **({} if reported == "val_accuracy" else {"val_accuracy": 1 - value})})
        pruned[value] = callback.model.stop_training
        assert study.trials[trial.number].intermediate_values == {0: value}, f"{reported} is reported"
    assert tags[tracking.TAG_PRUNING_SERIES] == reported, "the trial run names the series its pruner saw"
    assert pruned == {better: False, worse: True}, "the worse trial is pruned, the better one trains on"
    assert opened == [storage], "the storage is opened once per process, not per trial (0.5 s each)"


def test_a_grid_search_tells_its_last_point_and_is_done(tmp_path):
    from timl.search import study as studies
    from timl.search.space import parse_space

    spaces = {"lr": parse_space("lr", "choice(0.001,0.01)"), "batchsize": parse_space("batchsize", "int(16,32,16)")}
    study = studies.open_study("g", f"sqlite:///{tmp_path / 'study.db'}", studies.SearchOptions(sampler="grid"),
                               spaces, 0, resume=False)
    seen = set()
    for number in range(4):
        trial = study.ask({column: space.distribution() for column, space in spaces.items()})
        seen.add((trial.params["lr"], trial.params["batchsize"]))
        study.tell(trial, 0.1 * number)  # the last one raised "Study.stop is supposed to be invoked inside ..."
    assert seen == {("0.001", 16), ("0.001", 32), ("0.01", 16), ("0.01", 32)} and study.sampler.is_exhausted(study)


def test_timl_train_refuses_a_search_row_and_names_its_cell(tracking_uri, tmp_path):
    from timl import train

    table = write_table(tmp_path / "t.csv", [small_cnn_row("data.csv", lr="loguniform(1e-4,1e-2)")])
    result = CliRunner().invoke(train.cli, ["--input-table", str(table), "--out-dir", str(tmp_path / "out"),
                                            "--no-system-metrics", "--skip-roc"])
    assert result.exit_code == 1, result.output
    assert "lr='loguniform(1e-4,1e-2)'" in result.output and "python -m timl.tune" in result.output, result.output
    results = pd.read_csv(tmp_path / "out" / "automation_result.csv", dtype=str, keep_default_na=False)
    assert results["lr"].tolist() == ["loguniform(1e-4,1e-2)"] and "timl.tune" in results["exceptions"][0]


def test_tune_is_a_timl_command_and_an_mlproject_entry_point():
    import yaml

    from helpers import REPO
    from timl import cli

    assert cli.COMMANDS["tune"] == "timl.tune"
    result = CliRunner().invoke(cli.main, ["tune", "--help"])
    assert result.exit_code == 0 and "--trials" in result.output and "--executor" in result.output
    project = yaml.safe_load((REPO / "MLproject").read_text())
    assert project["entry_points"]["tune"]["command"].startswith("python -m timl.tune --input-table {table}")
    assert json.dumps(project["entry_points"]["tune"]["parameters"]["trials"]) == '{"type": "string", "default": "10"}'


class _ParallelExecutor:
    """Stands in for the Ray executor without training a model: it holds the tasks it is given and ends the
    oldest when a task is None (a search waiting for a slot) or the tasks run out; each row's run gets
    ``dev/balanced_accuracy`` = 10 x its lr."""

    def __init__(self):
        self.most_at_once = 0

    def run_all(self, tasks):
        pending = []
        for task in tasks:
            if task is None:
                yield self._end(pending.pop(0))
                continue
            pending.append(task)
            self.most_at_once = max(self.most_at_once, len(pending))
        while pending:
            yield self._end(pending.pop(0))

    @staticmethod
    def _end(task):
        from timl import tracking
        from timl.training.executors import RowOutcome

        config = task.config
        run_id = tracking.create_row_run(task.table.parent_run_id, config.run_name, config.row, task.row_key,
                                         tags=config.trial.tags())
        tracking.log_params(config.input_cells(), run_id=run_id)
        tracking.log_metrics({names.DEV_BALANCED_ACCURACY: config.lr * 10}, run_id=run_id)
        tracking.end_run(run_id, "FINISHED")
        return RowOutcome(config.row, config.run_name, "FINISHED", run_id)


def test_parallel_trials_are_asked_for_as_slots_free_and_each_told(tracking_uri, tmp_path, monkeypatch):
    from timl import register, tracking, training
    from timl.search import summary
    from timl.search.study import SearchOptions

    monkeypatch.setattr(summary, "PLOTS", {})  # the plots are the end-to-end test's (they take seconds)
    table = write_table(tmp_path / "t.csv", [small_cnn_row("data.csv", lr="uniform(0.001,0.09)")])
    executor = _ParallelExecutor()
    outcome = training.train_table(table, executor=executor, out_dir=tmp_path / "out", experiment="tune",
                                   search=SearchOptions(trials=5, parallel=2, pruner="none"))
    assert executor.most_at_once == 2, "--parallel 2: two trials at once, never more"
    assert [row.name for row in outcome.rows] == [f"0.{number}-SmallCNN" for number in range(5)] + [
        "0-search-SmallCNN"]
    [search] = tracking.child_runs(outcome.parent_run_id)
    trials = tracking.child_runs(search.info.run_id)
    best = max(trials, key=lambda run: float(run.data.params["lr"]))
    assert search.data.tags["timl.best_run_id"] == best.info.run_id and search.info.status == "FINISHED"
    assert search.data.metrics["trials/finished"] == 5
    assert register.best_run(outcome.parent_run_id) == best.info.run_id, "--register finds the best trial"


def test_a_trial_asking_for_a_finished_trials_cells_again_is_told_its_value_and_trains_nothing(
        tracking_uri, tmp_path, monkeypatch):
    """Samplers over ``choice`` cells ask for the same cells again: such a trial is told the finished trial's
    value (the same cells and seed train the same model) instead of training it twice."""
    from timl import tracking, training
    from timl.search import summary
    from timl.search.study import SearchOptions

    monkeypatch.setattr(summary, "PLOTS", {})
    table = write_table(tmp_path / "t.csv", [small_cnn_row("data.csv", lr="choice(0.01,0.02)")])
    executor = _ParallelExecutor()
    outcome = training.train_table(table, executor=executor, out_dir=tmp_path / "out", experiment="tune",
                                   search=SearchOptions(trials=6, sampler="random", pruner="none"))
    [search] = tracking.child_runs(outcome.parent_run_id)
    trained = tracking.child_runs(search.info.run_id)
    assert sorted(float(run.data.params["lr"]) for run in trained) == [0.01, 0.02], "each configuration once"
    assert search.data.metrics["trials/finished"] == 6 and search.data.metrics["trials/repeated"] == 4
    best = max(trained, key=lambda run: float(run.data.params["lr"]))
    assert search.data.tags["timl.best_run_id"] == best.info.run_id and search.info.status == "FINISHED"
    assert "6 finished, 0 pruned, 0 failed, 4 repeated" in outcome.rows[-1].message


def test_a_trial_whose_run_ended_before_a_killed_search_told_the_study_counts_once(tracking_uri, tmp_path,
                                                                                   monkeypatch):
    """A search killed (SIGKILL: no clean-up) between a trial's run ending FINISHED and telling the study: the
    resumed search tells the study that trial's result instead of training another in its place."""
    import optuna

    from timl import tracking, training
    from timl.search import searches, summary
    from timl.search.study import SearchOptions

    class KilledAfterTheFirstRun(_ParallelExecutor):
        def run_all(self, tasks):
            self._end(next(iter(tasks)))
            raise KeyboardInterrupt("SIGKILL before the study heard of trial 0")

    monkeypatch.setattr(summary, "PLOTS", {})
    monkeypatch.setattr(searches.Searches, "abort", lambda self: None)  # a killed process cleans nothing up
    table = write_table(tmp_path / "t.csv", [small_cnn_row("data.csv", lr="uniform(0.001,0.09)")])
    options = dict(out_dir=tmp_path / "out", experiment="tune", search=SearchOptions(trials=2, pruner="none"))
    with pytest.raises(KeyboardInterrupt):
        training.train_table(table, executor=KilledAfterTheFirstRun(), **options)
    outcome = training.train_table(table, executor=_ParallelExecutor(), resume=True, **options)
    [search] = tracking.child_runs(outcome.parent_run_id)
    trials = {run.info.run_name: run for run in tracking.child_runs(search.info.run_id)}
    assert {name: run.info.status for name, run in trials.items()} == {
        "0.0-SmallCNN": "FINISHED", "0.1-SmallCNN": "FINISHED"}, "each trial once"
    study = optuna.load_study(study_name=search.data.params["study"], storage=options["search"].storage_url(
        tmp_path / "out"))
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.trials[0].value == pytest.approx(float(trials["0.0-SmallCNN"].data.params["lr"]) * 10), \
        "the study has the result of the trial it had not heard of"
