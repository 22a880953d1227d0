"""What MLflow's system metrics cost a row's training: the same row with ``--system-metrics`` and without.

    python bench/system_metrics.py [--epochs 10] [--repeats 3]

Trains one SmallCNN row (digits, 32 px) alternately with and without MLflow's system-metrics monitor (a thread
sampling CPU, memory, disk and network every 10 s while the run is active) and compares the fit's time
(``train/seconds``: the epochs only, the part a thread could slow down). Prints each pair and the median ratio
(goal: under 1 % more, i.e. a ratio under 1.01). Fits of this length swing by 10-20 % here, far more than the
monitor can cost, so it also measures the monitor's own work directly: the CPU time of one sample and its
logging, against the 10 s between samples.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import harness  # first: the benchmarks' environment


def _fit_seconds(table: Path, out: Path, uri: str, system_metrics: bool) -> float:
    from mlflow.tracking import MlflowClient

    from timl.training import train_table

    outcome = train_table(table, out_dir=out, experiment="bench", tracking_uri=uri, skip_roc=True,
                          system_metrics=system_metrics)
    if outcome.failed:
        sys.exit(f"the row failed: {outcome.failed[0].message}")
    run = MlflowClient().get_run(outcome.rows[0].run_id)
    assert system_metrics == any(name.startswith("system/") for name in run.data.metrics), "monitor on or off"
    return run.data.metrics["train/seconds"]


def _monitor_cost(uri: str, samples: int = 50) -> float:
    """CPU milliseconds of one system-metrics sample and its logging (the monitor's thread, every 10 s)."""
    import time

    import mlflow
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as run:
        monitor = SystemMetricsMonitor(run.info.run_id)
        monitor.collect_metrics()
        start = time.process_time()  # every thread's: MLflow may write the metrics from its own
        for _ in range(samples):
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
        mlflow.flush_async_logging()
        return (time.process_time() - start) / samples * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with harness.digits_workspace() as work:
        table = work / "table.csv"
        table.write_text("method,dataset,split,epochs,imgaug,batchsize,imgsize\n"
                         f"SmallCNN,{work / 'data' / 'digits'},pre,{args.epochs},none,32,32\n")
        uri = f"sqlite:///{work / 'mlflow.db'}"
        pairs = harness.alternate(args.repeats,
                                  lambda repeat: _fit_seconds(table, work / f"off{repeat}", uri, False),
                                  lambda repeat: _fit_seconds(table, work / f"on{repeat}", uri, True))
        cost = _monitor_cost(uri)
    print(f"\n| measure ({args.epochs} epochs, fit time) | seconds |\n| --- | --- |")
    for off, on in pairs:
        print(f"| without / with system metrics | {off:.2f} / {on:.2f} (ratio {on / off:.3f}) |")
    print(f"| median ratio | {statistics.median(on / off for off, on in pairs):.3f} (goal < 1.01) |")
    print(f"| the monitor's own work: one sample and its logging | {cost:.2f} ms of CPU every 10 s = "
          f"{cost / 100:.3f} % |")


if __name__ == "__main__":
    main()
