"""What a search saves: TPE with median pruning (``python -m timl.tune``) vs the full grid of the same space, on the
digits demo data, and the search's own cost per trial.

One search row (SmallCNN; lr x batchsize x imgsize, 3 x 2 x 3 = 18 configurations, ``--epochs`` each) is trained
twice over: as its full grid (``--sampler grid --pruner none``, every configuration once) and, for each of
``--seeds`` sampler seeds, as a search of ``--trials`` trials (``--sampler tpe --pruner median``). Every trial
trains with the row's seed (0), so a configuration scores alike in the grid and in a search; only the sampler's
seed changes between the searches (the row's seed is the sampler's seed in TIML: the bench swaps it in).

Epochs are counted as trained (a pruned trial counts the epochs it trained: the steps of its ``loss`` series).
"Reached" is the epochs the search had trained, in trial order, when a trial first scored within ``--tolerance``
of the grid's best dev balanced accuracy (the search's best as it reports it: finished trials, not pruned ones).

    python bench/tune.py [--epochs 4] [--trials 8] [--seeds 3] [--overhead-trials 40]

Prints a row per seed, the medians (goal: reached within one third of the grid's epochs) and the overhead: the
study's own calls per trial (ask, the worker's study load, report and should_prune per epoch, tell) on the SQLite
storage, timed without training (goal: under 0.5 s per trial), and, from the real searches, the wall time per
trial outside the trial runs (MLflow runs, the summary and its plots included).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import harness  # first: the benchmarks' environment

SPACE = {"lr": "choice(0.0003,0.003,0.03)", "batchsize": "choice(16,64)", "imgsize": "choice(12,20,32)"}
OBJECTIVE = "dev/balanced_accuracy"


def search_table(folder: Path, data_dir: Path, epochs: int) -> Path:
    table = folder / "search.csv"
    cells = {"method": "SmallCNN", "dataset": str(data_dir / "digits"), "split": "pre", "epochs": str(epochs),
             "imgaug": "none", **SPACE}
    table.write_text(",".join(cells) + "\n" + ",".join(f'"{value}"' for value in cells.values()) + "\n")
    return table


def run_search(table: Path, out_dir: Path, uri: str, sampler: str, pruner: str, trials: int, seed: int) -> dict:
    """Trains the table's search; returns its trials in order (value or None, epochs trained, pruned), its best
    and its wall time."""
    import optuna

    from timl import tracking, training
    from timl.search import study as studies

    original = studies._sampler
    studies._sampler = lambda options, spaces, _row_seed: original(options, spaces, seed)
    try:
        options = studies.SearchOptions(trials=trials, sampler=sampler, pruner=pruner, objective=OBJECTIVE)
        start = time.perf_counter()
        outcome = training.train_table(table, out_dir=out_dir, experiment=out_dir.name, tracking_uri=uri,
                                       search=options, bootstrap=0, skip_roc=True, system_metrics=False)
        seconds = time.perf_counter() - start
    finally:
        studies._sampler = original
    if outcome.failed:
        sys.exit(f"the search failed: {outcome.failed[0].message}")
    [name] = optuna.study.get_all_study_names(options.storage_url(out_dir))
    study = optuna.load_study(study_name=name, storage=options.storage_url(out_dir))
    rows, run_seconds = [], 0.0
    for trial in study.trials:
        if studies.REPEATS in trial.user_attrs:  # told a finished trial's value: nothing trained
            rows.append({"value": trial.value, "epochs": 0, "pruned": False})
            continue
        run = tracking.get_run(trial.user_attrs[studies.RUN_ID])
        run_seconds += (run.info.end_time - run.info.start_time) / 1000
        rows.append({"value": trial.value, "epochs": len(tracking.logged_steps(run.info.run_id, "loss")),
                     "pruned": trial.state.name == "PRUNED"})
    return {"trials": rows, "best": study.best_value, "seconds": seconds,
            "outside": (seconds - run_seconds) / len(rows)}


def reached(trials: list[dict], target: float) -> int | None:
    """The epochs trained up to and including the first finished trial scoring ``target`` or more (None: never;
    a pruned trial's value is Optuna's last report, not the objective)."""
    epochs = 0
    for trial in trials:
        epochs += trial["epochs"]
        if not trial["pruned"] and trial["value"] is not None and trial["value"] >= target:
            return epochs
    return None


def overhead(trials: int, epochs: int, folder: Path) -> list[float]:
    """Seconds per trial of the study's own calls, as a search makes them, on a SQLite study without training."""
    from timl import tracking

    set_tags, tracking.set_tags = tracking.set_tags, lambda tags: None  # MLflow's cost, timed with the runs
    try:
        return _time_study_calls(trials, epochs, folder)
    finally:
        tracking.set_tags = set_tags


def _time_study_calls(trials: int, epochs: int, folder: Path) -> list[float]:
    import random

    from timl.search import study as studies
    from timl.search.pruning import ReportToStudy
    from timl.search.space import parse_space
    from timl.search.trial import TrialRef

    spaces = {column: parse_space(column, cell) for column, cell in SPACE.items()}
    storage = f"sqlite:///{folder / 'overhead.db'}"
    study = studies.open_study("overhead", storage, studies.SearchOptions(), spaces, 0, resume=False)
    model = type("Model", (), {"stop_training": False})
    generator, seconds = random.Random(0), []
    for _ in range(trials):
        start = time.perf_counter()
        trial = study.ask({column: space.distribution() for column, space in spaces.items()})
        callback = ReportToStudy(TrialRef(trial.number, "overhead", storage, "0-search-SmallCNN", OBJECTIVE),
                                 "val_accuracy", "max")
        callback.set_params({"epochs": epochs})
        callback.set_model(model())
        for epoch in range(epochs):
            callback.on_epoch_end(epoch, {"val_accuracy": generator.random()})
            if callback.model.stop_training:
                break
        study.tell(trial, state=studies.states().PRUNED) if callback.model.stop_training else study.tell(
            trial, generator.random())
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs of every configuration")
    parser.add_argument("--trials", type=int, default=8, help="trials of each TPE search")
    parser.add_argument("--seeds", type=int, default=3, help="TPE searches, sampler seeds 0, 1, ...")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--overhead-trials", type=int, default=40)
    args = parser.parse_args()
    from timl import tracking

    with harness.digits_workspace() as work:
        uri = f"sqlite:///{work / 'mlflow.db'}"
        tracking.configure(uri)
        table = search_table(work, work / "data", args.epochs)
        grid = run_search(table, work / "grid", uri, "grid", "none", 18, 0)
        grid_epochs = sum(trial["epochs"] for trial in grid["trials"])
        target = grid["best"] - args.tolerance
        report = [f"space {SPACE}, {args.epochs} epochs each; grid: {len(grid['trials'])} configurations, best "
                  f"{OBJECTIVE} {grid['best']:.4f}, {grid_epochs} epochs, {grid['seconds']:.0f} s",
                  "grid: " + listing(grid),
                  "\n| seed | grid best | search best | difference | epochs to reach grid best - "
                  f"{args.tolerance} | search epochs ({args.trials} trials) | grid epochs | search s | grid s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        print("\n".join(report), flush=True)
        searches, reach = [], []
        for seed in range(args.seeds):
            search = run_search(table, work / f"tpe{seed}", uri, "tpe", "median", args.trials, seed)
            searches.append(search)
            reach.append(reached(search["trials"], target))
            epochs = sum(trial["epochs"] for trial in search["trials"])
            pruned = sum(trial["pruned"] for trial in search["trials"])
            line = (f"| {seed} | {grid['best']:.4f} | {search['best']:.4f} | {grid['best'] - search['best']:+.4f} | "
                    f"{reach[-1] if reach[-1] is not None else 'never'} | {epochs} ({pruned} pruned) | "
                    f"{grid_epochs} | {search['seconds']:.0f} | {grid['seconds']:.0f} |")
            report.append(line)
            print(line, f"\n  trials (value/epochs, p: pruned): {listing(search)}", flush=True)
        costs = overhead(args.overhead_trials, args.epochs, work)
    bests = [search["best"] for search in searches]
    median_reach = statistics.median(float("inf") if value is None else value for value in reach)
    report.append(f"| median | {grid['best']:.4f} | {statistics.median(bests):.4f} | "
                  f"{grid['best'] - statistics.median(bests):+.4f} | {median_reach} (goal <= {grid_epochs / 3:.0f}) | "
                  f"{statistics.median(sum(t['epochs'] for t in s['trials']) for s in searches)} | {grid_epochs} | "
                  f"{statistics.median(s['seconds'] for s in searches):.0f} | {grid['seconds']:.0f} |")
    report.append(f"\nstudy calls per trial (SQLite, {args.overhead_trials} trials x up to {args.epochs} reports): "
                  f"median {statistics.median(costs):.3f} s, max {max(costs):.3f} s (goal < 0.5 s)")
    report.append("wall time per trial outside the trial runs (MLflow search run, summary and plots included): "
                  + ", ".join(f"{search['outside']:.2f} s" for search in searches) + f"; grid {grid['outside']:.2f} s")
    print("\n" + "\n".join(report))


def listing(search: dict) -> str:
    return " ".join(f"{'-' if t['value'] is None or t['pruned'] else format(t['value'], '.3f')}/{t['epochs']}"
                    f"{'p' if t['pruned'] else ''}" for t in search["trials"])


if __name__ == "__main__":
    main()
