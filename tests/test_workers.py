"""The plot process: jobs run there, its death falls back to the main process, a user's script is not re-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from helpers import REPO, small_cnn_row, write_table
from timl import evaluation, plots, workers


def test_jobs_run_in_another_process():
    with workers.Worker(("timl.plots",)) as worker:
        assert worker.submit(os.getpid).result() != os.getpid()


def test_a_worker_that_dies_leaves_the_work_to_the_main_process(tmp_path, caplog):
    with workers.Worker(("timl.plots",)) as worker:
        child = worker.submit(os.getpid).result()
        os.kill(child, signal.SIGKILL)
        time.sleep(0.5)
        job = worker.submit(os.getpid)
        assert job.result() == os.getpid()
    assert "plot process stopped" in caplog.text


def test_reports_drawn_by_the_worker_match_those_drawn_here(tmp_path):
    rng = np.random.default_rng(0)
    y_true = np.eye(3)[rng.integers(0, 3, 40)]
    y_prob = rng.random((40, 3))
    names = ["i%d" % k for k in range(40)]
    here = evaluation.start_report(tmp_path / "here", names, y_true, y_prob, ["A", "B", "C"])
    with workers.Worker(("timl.plots",)) as worker:
        there = evaluation.start_report(tmp_path / "there", names, y_true, y_prob, ["A", "B", "C"], worker=worker)
        files_there = there.finish()
    files_here = here.finish()
    assert [path.name for path in files_here] == [path.name for path in files_there]
    assert len([path for path in files_there if path.suffix == ".png"]) == 6  # 3 classes, all, confusion, PR
    for mine, theirs in zip(files_here, files_there):
        assert mine.read_bytes() == theirs.read_bytes(), mine.name


def test_the_worker_leaves_with_a_killed_table(tmp_path, mini_digits):
    """SIGKILL of the main process: the plot process does not linger."""
    table = write_table(tmp_path / "t.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=40)])
    process = subprocess.Popen([sys.executable, "-m", "timl.train", "--input-table", str(table), "--out-dir",
                                str(tmp_path / "out"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    children = []
    while time.time() < deadline and not children:
        time.sleep(0.5)
        children = psutil.Process(process.pid).children(recursive=True)
    assert children, "the plot process did not start"
    process.kill()
    process.wait()
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [child.cmdline() for child in alive]


def test_a_script_without_main_guard_trains_once(tmp_path, mini_digits):
    """Python's own spawned processes re-import the user's script; the plot process must not."""
    table = write_table(tmp_path / "t.csv", [small_cnn_row(str(mini_digits / "mini.csv"), epochs=1)])
    script = tmp_path / "train_it.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(REPO)!r})\nfrom timl import training\n"
                      f"print('SCRIPT RAN', flush=True)\n"
                      f"training.train_table({str(table)!r}, out_dir={str(tmp_path / 'out')!r}, "
                      f"tracking_uri={'sqlite:///' + str(tmp_path / 'mlflow.db')!r})\n")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SCRIPT RAN") == 1
    assert len(list((tmp_path / "out").glob("0-dev-ROC-*.png"))) >= 2


@pytest.mark.parametrize("draw", [plots.draw_roc, plots.draw_precision_recall])
def test_drawing_needs_no_scikit_learn(draw, tmp_path):
    """The plot process imports matplotlib only: drawing from computed curves must not import scikit-learn."""
    code = ("import sys, numpy as np\nfrom timl import plots\n"
            "curves = plots.Curves([plots.Curve(0, 'A', np.array([0, 1.0]), np.array([0, 1.0]), 0.5)], ['B'])\n"
            f"plots.{draw.__name__}(curves, {str(tmp_path / 'x.png') if draw is plots.draw_precision_recall else str(tmp_path)!r})\n"
            "print('sklearn' in sys.modules, 'pandas' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
