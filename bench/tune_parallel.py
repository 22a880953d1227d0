"""What parallel trials gain: one search of ``--trials`` trials on Ray, one trial at a time against ``--parallel``
at once, beside what this machine allows (the ceiling ``bench/scale.py`` measures).

    python bench/tune_parallel.py [--trials 12] [--parallel 4] [--epochs 3] [--imgsize 16]

One search row (SmallCNN on the digits demo data, ``lr loguniform(1e-4,3e-2)``, batch size 32) is searched twice
with ``--sampler random --pruner none`` (the row's seed seeds the sampler: both searches train the same
configurations), each on its own Ray instance of 2 CPUs (the machine's cores):

1. serial: ``--parallel 1``, each trial a Ray task of 2 CPUs;
2. parallel: ``--parallel K``, each trial a Ray task of 2/K CPUs (K trials at once).

Ray's start-up (``ray.init``) is timed apart. The speed-up is serial wall time / parallel wall time; the ceiling is
``bench/scale.py``'s: the same single-threaded ``model.fit`` alone, then two at once (two fits' work / the time of
two at once is the most running work side by side can gain on this machine), measured before and after the
searches (other jobs' load changes it); the fraction is speed-up / the mean of both ceilings.
Both searches must end with every trial FINISHED (the bench fails otherwise).

Ray binds to the machine's network address, and benchmarks may only talk to loopback: like ``bench/scale.py``
the script re-runs itself in a network namespace with loopback only; everything it starts ends with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import harness  # first: the benchmarks' environment
import scale

SPACE = "loguniform(1e-4,3e-2)"


def search_table(folder: Path, data_dir: Path, epochs: int, imgsize: int) -> Path:
    """The search row: SmallCNN on the digits' pre-made split, the learning rate searched."""
    table = folder / "search.csv"
    cells = {"method": "SmallCNN", "dataset": str(data_dir / "digits"), "split": "pre", "epochs": str(epochs),
             "imgaug": "none", "batchsize": "32", "imgsize": str(imgsize), "lr": SPACE, "seed": "0"}
    table.write_text(",".join(cells) + "\n" + ",".join(f'"{value}"' for value in cells.values()) + "\n")
    return table


def timed_search(table: Path, out_dir: Path, uri: str, trials: int, parallel: int) -> dict:
    """Searches the table on a fresh Ray instance of 2 CPUs, ``parallel`` trials at once of 2/``parallel`` CPUs
    each; returns Ray's start-up, the search's wall time, the cores it kept busy and its trials' states."""
    from timl import training
    from timl.search import study as studies
    from timl.training.ray_executor import RayExecutor

    options = studies.SearchOptions(trials=trials, sampler="random", pruner="none", parallel=parallel)
    start = time.perf_counter()
    executor = RayExecutor(num_cpus=2, row_cpus=2 / parallel)
    startup = time.perf_counter() - start
    try:
        busy, start = scale._busy_seconds(), time.perf_counter()
        outcome = training.train_table(table, out_dir=out_dir, experiment=out_dir.name, tracking_uri=uri,
                                       executor=executor, search=options, bootstrap=0, skip_roc=True,
                                       system_metrics=False)
        seconds = time.perf_counter() - start
        busy = (scale._busy_seconds() - busy) / seconds
    finally:
        executor.close()
    return {"startup": startup, "seconds": seconds, "busy": busy, "failed": [row.message for row in outcome.failed],
            **trial_states(options.storage_url(out_dir))}


def trial_states(storage: str) -> dict:
    """The study's trials: how many, how many COMPLETE, and how many of their MLflow runs ended FINISHED."""
    import optuna

    from timl import tracking
    from timl.search import study as studies

    [name] = optuna.study.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    run_ids = [trial.user_attrs[studies.RUN_ID] for trial in trials if studies.RUN_ID in trial.user_attrs]
    runs = [tracking.get_run(run_id) for run_id in run_ids]
    return {"trials": len(trials), "complete": sum(trial.state.name == "COMPLETE" for trial in trials),
            "runs_finished": sum(run.info.status == "FINISHED" for run in runs)}


def measure(args) -> dict:
    from timl import tracking

    with harness.digits_workspace(size=args.imgsize) as work:
        scale.loopback_ray(work)
        uri = f"sqlite:///{work / 'mlflow.db'}"
        tracking.configure(uri)  # the store exists before timing, as it does for any user after the first table
        table = search_table(work, work / "data", args.epochs, args.imgsize)
        results = {"trials_asked": args.trials, "parallel": args.parallel, "epochs": args.epochs,
                   "imgsize": args.imgsize, "load": [load_average()]}
        results["ceilings"] = [scale._machine_ceiling()]
        results["serial"] = timed_search(table, work / "serial", uri, args.trials, 1)
        results["parallel_search"] = timed_search(table, work / "parallel", uri, args.trials, args.parallel)
        results["ceilings"].append(scale._machine_ceiling())
        results["load"].append(load_average())
    return results


def load_average() -> float:
    """The machine's load average over the last minute (not namespaced: other jobs' work counts)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def check(results: dict) -> None:
    """Exits with a message unless both searches ended with every trial finished."""
    problems = []
    for name in ("serial", "parallel_search"):
        search, asked = results[name], results["trials_asked"]
        print(f"{name}: {search['trials']} trials in the study, {search['complete']} COMPLETE, "
              f"{search['runs_finished']} trial runs FINISHED (asked {asked})")
        if search["failed"] or not search["trials"] == search["complete"] == search["runs_finished"] == asked:
            problems.append(f"{name}: {search['complete']} of {asked} trials finished; failed rows: {search['failed']}")
    if problems:
        sys.exit("the benchmark failed: " + "; ".join(problems))


def report(results: dict) -> None:
    serial, parallel = results["serial"], results["parallel_search"]
    trials, workers = results["trials_asked"], results["parallel"]
    speedup = serial["seconds"] / parallel["seconds"]
    ceilings = [2 * alone / together for alone, together in results["ceilings"]]
    ceiling = statistics.mean(ceilings)
    print(f"\n| measure ({trials} trials, SmallCNN, {results['epochs']} epochs, {results['imgsize']} px, random "
          "sampler, no pruning; Ray on 2 CPUs) | seconds | ratio |\n| --- | --- | --- |")
    print(f"| one trial at a time (2 CPUs each) / {workers} at once ({2 / workers:g} CPUs each) | "
          f"{serial['seconds']:.1f} / {parallel['seconds']:.1f} | speed-up {speedup:.2f}x |")
    print(f"| Ray start-up (ray.init, apart): serial / parallel | {serial['startup']:.1f} / "
          f"{parallel['startup']:.1f} | |")
    print(f"| cores busy on the machine (other jobs included): serial / parallel | {serial['busy']:.2f} / "
          f"{parallel['busy']:.2f} | |")
    for moment, (alone, together), value in zip(("before", "after"), results["ceilings"], ceilings):
        print(f"| machine {moment} the searches: one single-threaded model.fit alone / two at once | {alone:.1f} / "
              f"{together:.1f} | ceiling {value:.2f}x |")
    print(f"| reached (load average {results['load'][0]:.1f} before, {results['load'][1]:.1f} after) | | "
          f"{speedup / ceiling:.0%} of the ceiling ({ceiling:.2f}x, the mean of both) |")
    print(f"\nREADME: {trials} trials on Ray (`python bench/tune_parallel.py`, 2 CPU cores): {workers} at once "
          f"{parallel['seconds']:.0f} s, one at a time {serial['seconds']:.0f} s: {speedup:.2f}x, where this machine "
          f"allows {ceiling:.2f}x ({speedup / ceiling:.0%} of it).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="trials of each search")
    parser.add_argument("--parallel", type=int, default=4, help="trials at once in the parallel search")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of every trial")
    parser.add_argument("--imgsize", type=int, default=16, help="the digits' side in pixels")
    args = parser.parse_args()
    if os.environ.get(scale.INSIDE):
        print(json.dumps(measure(args)))
        return
    results = scale.in_namespace(__file__)
    check(results)
    report(results)


if __name__ == "__main__":
    main()
