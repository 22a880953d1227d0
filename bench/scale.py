"""What fanning a table out costs and gains: Ray against the local executor, one worker against two, and a
tracking server on PostgreSQL against SQLite.

    python bench/scale.py [--rows 4] [--epochs 10] [--imgsize 32] [--repeats 3]

Every measure trains the same table (``--rows`` SmallCNN rows on the digits demo data, different seeds) with
``timl.training.train_table``:

1. overhead: Ray with one worker of 2 CPUs (rows one after the other) / ``--executor local`` (same 2 CPUs);
   Ray's start-up (``ray.init``) is reported apart; goal <= 1.10;
2. fan-out: Ray with two workers of 1 CPU / Ray with one worker of 1 CPU (the machine has 2 cores); goal >= 1.8;
3. tracking: the local executor against an ``mlflow server`` on PostgreSQL / against an SQLite file, seconds per
   row;
4. what the machine allows: the same single-threaded ``model.fit`` (SmallCNN on random 32 px images) run alone,
   then two at once: two fits' work / the time of two at once is the most any fan-out can gain here.

Timings on a shared 2-core machine swing by 10-20 % from run to run: each pair of tables (local / Ray, one
worker / two) runs alternately ``--repeats`` times and the medians are reported.

Ray binds to the machine's network address, and benchmarks may only talk to loopback: the script re-runs itself
in a network namespace with loopback only (``unshare --net --pid``, as root), where PostgreSQL and the tracking
server run too; everything it starts ends with the namespace.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INSIDE = "TIML_BENCH_NAMESPACE"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # benchmarks talk to loopback only
os.environ.setdefault("DO_NOT_TRACK", "true")


def _table(folder: Path, data: Path, rows: int, epochs: int, imgsize: int) -> Path:
    lines = ["method,dataset,split,epochs,imgaug,batchsize,imgsize,seed"]
    lines += [f"SmallCNN,{data / 'digits.csv'},n=300,{epochs},none,32,{imgsize},{seed}" for seed in range(rows)]
    path = folder / "table.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _busy_seconds() -> float:
    """CPU-seconds the whole machine has been busy (every core, from /proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


#: Cores kept busy (CPU-seconds / wall seconds) by each timed table, by its output folder's name.
BUSY: dict[str, float] = {}


def _timed_table(table: Path, out: Path, uri: str, executor=None) -> float:
    from timl import tracking
    from timl.training import train_table

    tracking.configure(uri)  # the store exists before timing, as it does for any user after the first table
    busy, start = _busy_seconds(), time.perf_counter()
    outcome = train_table(table, out_dir=out, experiment=out.name, tracking_uri=uri, executor=executor)
    seconds = time.perf_counter() - start
    BUSY[out.name] = (_busy_seconds() - busy) / seconds
    if outcome.failed:
        sys.exit(f"{out.name}: a row failed: {outcome.failed[0].message}")
    return seconds


def _ray_table(table: Path, out: Path, uri: str, *, num_cpus: int, row_cpus: int) -> tuple[float, float]:
    """(Ray start-up, the table) on a Ray instance of ``num_cpus`` CPUs, ``row_cpus`` per row."""
    from timl.training.ray_executor import RayExecutor

    start = time.perf_counter()
    executor = RayExecutor(num_cpus=num_cpus, row_cpus=row_cpus)
    startup = time.perf_counter() - start
    try:
        return startup, _timed_table(table, out, uri, executor)
    finally:
        executor.close()


def _with_tracking_server(work: Path, table: Path) -> float:
    sys.path.insert(0, str(REPO / "tests" / "cluster"))
    from components import Postgres, TrackingServer

    postgres = Postgres(55433)
    server = None
    try:
        server = TrackingServer(postgres.start(), work / "artifacts", 55001, work / "mlflow-server.log")
        return _timed_table(table, work / "server", server.start())
    finally:
        if server is not None:
            server.stop()
        postgres.stop()


PLAIN_FIT = """
import os, sys, time
os.environ.update(TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
import keras, numpy as np
from timl import models
keras.utils.set_random_seed(0)
x = np.random.default_rng(0).random((1500, 32, 32, 3)).astype("float32")
y = np.eye(10)[np.arange(1500) % 10]
model = models.create_model("SmallCNN", 10, 32, weights="none", seed=0)
model.fit(x, y, epochs=1, batch_size=32, verbose=0)
start = time.perf_counter()
model.fit(x, y, epochs=8, batch_size=32, verbose=0)
print(time.perf_counter() - start)
"""


def _machine_ceiling() -> tuple[float, float]:
    """(one single-threaded fit alone, the slower of two run at once), seconds."""
    def start():
        return subprocess.Popen([sys.executable, "-c", PLAIN_FIT], stdout=subprocess.PIPE, text=True)

    alone = float(start().communicate()[0].strip().splitlines()[-1])
    pair = [start(), start()]
    together = max(float(process.communicate()[0].strip().splitlines()[-1]) for process in pair)
    return alone, together


def in_namespace(script: str) -> dict:
    """Runs ``script`` again with this process's arguments in a new network and PID namespace (loopback only;
    everything it starts ends with it) and returns the JSON object its last output line holds; exits with a
    message when it fails.

    Args:
        script: the bench's file; inside, ``INSIDE`` is set in its environment.
    """
    command = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child", sys.executable, script,
               *sys.argv[1:]]
    result = subprocess.run(command, env=dict(os.environ, **{INSIDE: "1", "TF_CPP_MIN_LOG_LEVEL": "2"}),
                            stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.exit(f"the benchmark failed (exit {result.returncode})")
    return json.loads(result.stdout.strip().splitlines()[-1])


def loopback_ray(work: Path) -> None:
    """Inside the namespace: brings loopback up and settles Ray on it (no auth, no usage stats, its temporary
    files in ``work/ray``)."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    (work / "ray").mkdir()
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=str(work / "ray"))


def measure(args) -> dict:
    from timl.data import write_digits

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        os.chdir(work)
        loopback_ray(work)
        write_digits(work / "data", size=args.imgsize)
        table = _table(work, work / "data", args.rows, args.epochs, args.imgsize)
        sqlite = f"sqlite:///{work / 'mlflow.db'}"
        results = {"rows": args.rows, "epochs": args.epochs, "repeats": args.repeats}
        runs: dict[str, list] = {name: [] for name in ("local", "ray_startup", "ray_one_worker", "one_cpu_worker",
                                                       "two_cpu_workers", "busy_single", "busy_pair")}
        for repeat in range(args.repeats):
            runs["local"].append(_timed_table(table, work / f"local{repeat}", sqlite))
            startup, seconds = _ray_table(table, work / f"ray{repeat}", sqlite, num_cpus=2, row_cpus=2)
            runs["ray_startup"].append(startup)
            runs["ray_one_worker"].append(seconds)
            runs["one_cpu_worker"].append(_ray_table(table, work / f"single{repeat}", sqlite, num_cpus=1,
                                                     row_cpus=1)[1])
            runs["two_cpu_workers"].append(_ray_table(table, work / f"pair{repeat}", sqlite, num_cpus=2,
                                                      row_cpus=1)[1])
            runs["busy_single"].append(BUSY[f"single{repeat}"])
            runs["busy_pair"].append(BUSY[f"pair{repeat}"])
        results.update({name: statistics.median(values) for name, values in runs.items()})
        results["overhead_pairs"] = [ray / local for local, ray in zip(runs["local"], runs["ray_one_worker"])]
        results["fanout_pairs"] = [one / two for one, two in zip(runs["one_cpu_worker"], runs["two_cpu_workers"])]
        results["sqlite"] = _timed_table(table, work / "sqlite", sqlite)
        results["server"] = _with_tracking_server(work, table)
        results["fit_alone"], results["fits_together"] = _machine_ceiling()
    return results


def report(results: dict) -> None:
    rows = results["rows"]
    pairs = {name: ", ".join(f"{value:.2f}" for value in results[name]) for name in ("overhead_pairs", "fanout_pairs")}
    print(f"\n| measure ({rows} rows, {results['epochs']} epochs; medians of {results['repeats']}) | seconds | ratio |"
          "\n| --- | --- | --- |")
    print(f"| local executor / Ray, one 2-CPU worker | {results['local']:.1f} / {results['ray_one_worker']:.1f} "
          f"| {statistics.median(results['overhead_pairs']):.2f} (pairs {pairs['overhead_pairs']}; goal <= 1.10) |")
    print(f"| Ray start-up (ray.init, apart) | {results['ray_startup']:.1f} | |")
    print(f"| Ray, one 1-CPU worker / two 1-CPU workers | {results['one_cpu_worker']:.1f} / "
          f"{results['two_cpu_workers']:.1f} | {statistics.median(results['fanout_pairs']):.2f}x "
          f"(pairs {pairs['fanout_pairs']}; goal >= 1.8) |")
    print(f"| cores busy: one 1-CPU worker / two 1-CPU workers | {results['busy_single']:.2f} / "
          f"{results['busy_pair']:.2f} | |")
    print(f"| machine: one single-threaded model.fit alone / two at once | {results['fit_alone']:.1f} / "
          f"{results['fits_together']:.1f} | ceiling {2 * results['fit_alone'] / results['fits_together']:.2f}x |")
    per_row = (results["server"] - results["sqlite"]) / rows
    print(f"| local executor, SQLite / mlflow server on PostgreSQL | {results['sqlite']:.1f} / "
          f"{results['server']:.1f} | {per_row:+.2f} s per row |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--imgsize", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if os.environ.get(INSIDE):
        print(json.dumps(measure(args)))
        return
    report(in_namespace(__file__))


if __name__ == "__main__":
    main()
