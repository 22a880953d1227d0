"""``bench/tune_parallel.py`` (issue 27, "Numbers to reach"): its table is one search row over the learning rate,
and a search that did not finish every trial fails the bench instead of giving a speed-up. The timed run itself
(Ray in a network namespace, minutes) is not run here."""

from __future__ import annotations

import pytest

from helpers import load_bench
from timl import config


@pytest.fixture(scope="module")
def bench():
    """bench/tune_parallel.py as a module."""
    return load_bench("tune_parallel")


def test_the_bench_table_is_one_search_row_over_the_learning_rate(bench, tmp_path):
    [search] = config.read_table(bench.search_table(tmp_path, tmp_path / "data", epochs=2, imgsize=16))
    assert isinstance(search, config.SearchRow)
    assert {column: space.kind for column, space in search.spaces.items()} == {"lr": "loguniform"}


def _results(**parallel_search) -> dict:
    finished = {"trials": 12, "complete": 12, "runs_finished": 12, "failed": []}
    return {"trials_asked": 12, "serial": dict(finished), "parallel_search": {**finished, **parallel_search}}


def test_a_search_with_a_trial_missing_fails_the_bench_naming_it(bench, capsys):
    bench.check(_results())  # every trial finished: no exit
    with pytest.raises(SystemExit, match="parallel_search: 11 of 12 trials finished"):
        bench.check(_results(complete=11, runs_finished=11))
    with pytest.raises(SystemExit, match="parallel_search"):
        bench.check(_results(trials=11, complete=11, runs_finished=11))
    assert "serial: 12 trials in the study, 12 COMPLETE, 12 trial runs FINISHED" in capsys.readouterr().out
