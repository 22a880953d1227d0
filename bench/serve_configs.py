"""Which server configuration comes closest to what the cores allow: gunicorn workers x batching wait x backend.

One model (default a VGG16-shaped model at 64 px, no ImageNet weights), 8 clients on ``/api/classify`` (a 600x450
JPEG per request, as in ``bench/serve_load.py``), each configuration in turn on a fresh server:

- workers 2 each calling its own model (``MODEL_PROCESS`` false), workers 2 sending their model calls to one
  model process (the default), and one worker (``--workers`` of ``timl.serve``),
- batching off (``BATCH_MAX_SIZE`` 1), on with ``BATCH_MAX_WAIT_MS`` 10 and 30, and on with 30 ms and
  ``INFERENCE_BACKEND onnxruntime``.

Per configuration: requests/s, that / the ceiling, p50, from the server's /metrics the mean batch under load, its
mean model call (against a call of that batch size with nothing else running) and each image's wait in the batch
queue, one client's p50, what batching costs that lone client (:func:`lone_client`: on - off, request by request
against the same server with batching off running beside it), and the gunicorn workers' CPU per request (the
decoding, and what HTTP, the form, the answer and the hand-off to the model cost, which the ceiling leaves out).

The ceiling is what the cores allow once each request also pays for decoding its JPEG and for this bench's own
client: cores / (cores / best + decoding + client), with ``best`` the model's own best batched throughput (one
process, batches of 1 to 8) of the backend the row uses (Keras/TensorFlow or ONNX Runtime), measured in the same
run. The closed-loop bound (:func:`closed_loop_bound`) is what 8 clients that each wait for their answer allow.
The model's speed at its best batch size and the decoding's cost are measured again just before and just after each
configuration, and that row's ceiling and bound use the means of the two: on a shared machine the model's own
throughput can change by a third within minutes (and one decoding measured at the start was once 5.9 ms where the
rows' own gave 3.2-3.7 ms), and a row whose two speeds differ by more than :data:`STEADY` is marked unsteady (its
share of the ceiling says little). Where the row's own model calls (its /metrics) ran faster than that mean, their
speed is the row's instead (:func:`row_speed`): in one run the default server's calls took 152 ms a batch where
the speeds around the row gave 165 ms, and the row read 0.94 of a ceiling it would not have reached.

    python bench/serve_configs.py [--seconds 20] [--models VGG16:64] [--rounds 1] [--configurations ROW ...]

After the rounds, one line per configuration (:func:`summary`): its steady rows' shares of the ceiling, their
median and how many reach 0.9 (issue 28), the unsteady rows' apart, and the lone client's on - off range.

Why: with 8 closed-loop clients a batch of 8 is cheapest per image, but it only forms if the batch waits while the
answered clients send their next request (the answer goes out, the client's next upload arrives, is parsed and
decoded); on 2 workers each with its own model it splits into two batches of about 4, and with a short wait into batches of 1 to 3.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from harness import start_server
from serve_load import build_model, ceiling, image_bytes, load, preprocessing_cost, seconds_per_image

#: The server layouts measured: (label, gunicorn workers, settings): two workers each calling its own model (the
#: layout before MODEL_PROCESS), two workers and one model process (the default), one worker.
LAYOUTS = (("2, a model each", 2, {"MODEL_PROCESS": False}), ("2, one model process", 2, {}), ("1", 1, {}))
#: (label, layout label, gunicorn workers, server settings) in the order measured.
CONFIGURATIONS = tuple(
    (label, layout, workers, layout_settings | settings)
    for layout, workers, layout_settings in LAYOUTS
    for label, settings in (
        ("off (BATCH_MAX_SIZE 1)", {"BATCH_MAX_SIZE": 1}),
        ("on, wait 10 ms (default before)", {"BATCH_MAX_WAIT_MS": 10}),
        ("on, wait 30 ms (default)", {"BATCH_MAX_WAIT_MS": 30}),
        ("on, wait 30 ms, ONNX Runtime", {"BATCH_MAX_WAIT_MS": 30, "INFERENCE_BACKEND": "onnxruntime"}),
    )
)


#: Largest relative change of the model's own speed between just before and just after a configuration for its
#: share of the ceiling to count (see :func:`steady`).
STEADY = 0.10


def steady(before: float, after: float, tolerance: float = STEADY) -> bool:
    """Whether the model's speed measured just before and just after a configuration (images/s) agree within
    ``tolerance`` of the larger: else the machine's speed changed while it ran, and so may its ceiling."""
    return abs(before - after) <= tolerance * max(before, after)


def closed_loop_bound(clients: int, cores: int, batch_seconds: float, decode: float, client: float) -> float:
    """Requests/s of ``clients`` closed-loop clients answered in one batch of all of them (the cheapest per image):
    while the batch runs no client has a request to decode, so each round trip is the batch's call plus the round's
    own decoding (spread over the cores) and the bench client's CPU (one Python process: its clients take turns). No
    server beats it with batches of ``clients``; smaller batches overlap but cost more per image."""
    return clients / (batch_seconds + clients * decode / cores + clients * client)


def server_cpu(server_pid: int) -> tuple[float, float]:
    """CPU seconds so far, all threads, of the server's children (gunicorn workers and model process) and of its
    gunicorn workers alone."""
    import psutil

    total = workers = 0.0
    for child in psutil.Process(server_pid).children():
        times = child.cpu_times()
        total += times.user + times.system
        if not any("timl.serving.model_process" in part for part in child.cmdline()):
            workers += times.user + times.system
    return total, workers


def measure(model_path: Path, data: bytes, workers: int, settings: dict, clients: int, seconds: float,
            code: Path | None = None) -> dict:
    """One configuration on a fresh server (of another checkout's ``code``, see :func:`harness.start_server`): the
    load, the server's CPU per request (``cpu``; its gunicorn workers' alone: ``worker_cpu``), what its /metrics
    say of the batches formed under it (all workers), then one client alone."""
    server, base = start_server(model_path, settings, workers, code)
    try:
        load(f"{base}/api/classify", data, clients, 5)  # warm-up
        before, cpu_before = batch_counters(base), server_cpu(server.pid)
        result = load(f"{base}/api/classify", data, clients, seconds)
        after, cpu_after, served = batch_counters(base), server_cpu(server.pid), max(1, result["requests"])
        result["cpu"], result["worker_cpu"] = ((now - then) / served for now, then in zip(cpu_after, cpu_before))
        result.update({name: after[name] - before[name] for name in after})
        result["single_p50"] = load(f"{base}/api/classify", data, 1, min(seconds, 10))["p50"]
        return result
    finally:
        server.terminate()
        server.wait(timeout=120)


def lone_client(model_path: Path, data: bytes, workers: int, settings: dict, seconds: float,
                code: Path | None = None) -> tuple[float, float]:
    """What batching costs one client alone: two servers of ``workers`` side by side, one with ``settings``, one
    with those and batching off (``BATCH_MAX_SIZE`` 1), both warm; one client alternates between them request by
    request for ``seconds``. Returns the p50 (seconds) of each, on first. Measured on each server in turn instead,
    a minute apart, the lone client's on - off read from -8.7 to +21 ms on this machine, its speed drifting between
    the two; side by side a slow spell hits both alike (+1.3, -1.2, +1.0 ms in three checks)."""
    with ThreadPoolExecutor(2) as starting:  # started together: each mostly waits for its model to load
        started = [starting.submit(start_server, model_path, settings | extra, workers, code)
                   for extra in ({}, {"BATCH_MAX_SIZE": 1})]
    servers = [future.result() for future in started if not future.exception()]
    try:
        if len(servers) < 2:  # the failed start's error (the server that did start is stopped below)
            next(future for future in started if future.exception()).result()
        sessions = [requests.Session() for _ in servers]
        for _, base in servers:
            load(f"{base}/api/classify", data, 1, 2)  # warm-up
        times: list[list[float]] = [[], []]
        stop = time.time() + seconds
        while time.time() < stop:
            for (_, base), session, found in zip(servers, sessions, times):
                start = time.perf_counter()
                answer = session.post(f"{base}/api/classify", files={"file": ("x.jpg", data)}, timeout=60)
                answer.raise_for_status()
                found.append(time.perf_counter() - start)
        on, off = (statistics.median(found) for found in times)
        return on, off
    finally:
        for server, _ in servers:
            server.terminate()
        for server, _ in servers:
            server.wait(timeout=120)


def batch_counters(base: str) -> dict:
    """The server's batcher counters so far, summed over its workers (/metrics): ``calls``, ``images``,
    ``call_seconds`` (model calls) and ``queue_seconds`` (images waiting in the batch queue)."""
    from prometheus_client.parser import text_string_to_metric_families

    found = {}
    for family in text_string_to_metric_families(requests.get(f"{base}/metrics", timeout=60).text):
        for sample in family.samples:
            found[sample.name] = found.get(sample.name, 0.0) + sample.value
    return {"calls": found.get("timl_batch_size_count", 0.0), "images": found.get("timl_batch_size_sum", 0.0),
            "call_seconds": found.get("timl_model_call_seconds_sum", 0.0),
            "queue_seconds": found.get("timl_batch_queue_seconds_sum", 0.0)}


def table(rows: list[dict]) -> list[str]:
    """The markdown table of the measured configurations (rows of :func:`main`: label, workers, rps, ceiling, bound,
    p50, the batch counters of :func:`batch_counters`, ``alone`` (seconds of a model call of the mean batch size
    with nothing else running), single_p50, ``lone``: :func:`lone_client`'s p50s on and off (None for a row with
    batching off), ``speeds``: the
    model's best throughput just before and just after the configuration, ``decodes``: a request's decoding
    (seconds) just before and just after it, and ``worker_cpu``: the gunicorn workers' CPU seconds per request,
    decoding included, and the model calls too where the workers call their own model)."""
    lines = ["| workers | batching | requests/s | / ceiling | closed-loop bound / ceiling | p50 (ms) | mean batch | "
             "model call: served / alone (ms) | queue wait per image (ms) | one client: p50 (ms) | "
             "one client: on - off, side by side (ms) | "
             "model's best before / after; its calls served (images/s) | decoding before / after (ms) | "
             "workers' CPU per request (ms) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        calls = max(row["calls"], 1)
        difference = "" if row["lone"] is None else f"{lone_cost(row) * 1000:+.1f}"
        lines.append(f"| {row['workers']} | {row['label']} | {row['rps']:.1f} | {share(row):.2f} | "
                     f"{row['bound'] / row['ceiling']:.2f} | {row['p50'] * 1000:.0f} | {row['images'] / calls:.1f} | "
                     f"{row['call_seconds'] / calls * 1000:.0f} / {row['alone'] * 1000:.0f} | "
                     f"{row['queue_seconds'] / max(row['images'], 1) * 1000:.0f} | {row['single_p50'] * 1000:.1f} | "
                     f"{difference} | {_speeds(row)} | {' / '.join(f'{decode * 1000:.1f}' for decode in row['decodes'])} | "
                     f"{row['worker_cpu'] * 1000:.1f} |")
    return lines


def share(row: dict) -> float:
    """A row's requests/s as a share of its ceiling."""
    return row["rps"] / row["ceiling"]


def lone_cost(row: dict) -> float:
    """What batching cost a row's lone client (seconds, on - off; :func:`lone_client`), for a row that has one."""
    on, off = row["lone"]
    return on - off


def summary(rows: list[dict], floor: float = 0.9) -> list[str]:
    """One line per configuration over every round of a run (rows of :func:`main`, in any order): its steady rows'
    shares of the ceiling, their median, how many reach ``floor`` (issue 28 asks 0.9 at 8 clients, with the lone
    client within 2 ms of batching off), the unsteady rows' shares apart, and the lone client's on - off range."""
    lines = []
    for key in dict.fromkeys((row["workers"], row["label"]) for row in rows):
        own = [row for row in rows if (row["workers"], row["label"]) == key]
        shares = [share(row) for row in own if steady(*row["speeds"])]
        unsteady = [share(row) for row in own if not steady(*row["speeds"])]
        line = f"{key[0]} / {key[1]}: "
        line += (f"steady rows {', '.join(f'{share:.2f}' for share in shares)} (median {statistics.median(shares):.2f}; "
                 f"{sum(share >= floor for share in shares)} of {len(shares)} at {floor} or more)"
                 if shares else "no steady row")
        if unsteady:
            line += f", unsteady {', '.join(f'{share:.2f}' for share in unsteady)}"
        lone = [lone_cost(row) * 1000 for row in own if row["lone"] is not None]
        if lone:
            line += f"; one client on - off {min(lone):+.1f} to {max(lone):+.1f} ms"
        lines.append(line)
    return lines


def _speeds(row: dict) -> str:
    before, after = row["speeds"]
    return (f"{before:.0f} / {after:.0f}" + ("" if steady(before, after) else " (unsteady)") +
            f"; {served_speed(row['images'], row['call_seconds']):.0f}")


def served_speed(images: float, call_seconds: float) -> float:
    """Images/s of a row's own model calls (its /metrics): at most the model's speed at that batch size, since
    decoding shares the cores with them."""
    return images / call_seconds if call_seconds else 0.0


def row_speed(speeds: tuple[float, float], images: float, call_seconds: float) -> float:
    """The model's speed (images/s) a row's ceiling and bound are worked out from: the mean of its best measured
    just before and just after the row, or the speed of the row's own model calls where they ran faster (the
    machine was faster while the row ran than around it: the measurements around it would give the row too low a
    ceiling, and a share of it above its own closed-loop bound)."""
    return max(statistics.mean(speeds), served_speed(images, call_seconds))


def chosen_configurations(rows: list[int] | None) -> tuple:
    """The configurations of the table's ``rows`` (numbered from 1, in :data:`CONFIGURATIONS`' order), all without
    ``rows``; SystemExit naming the valid numbers for a row that is not one."""
    if not rows:
        return CONFIGURATIONS
    unknown = [row for row in rows if not 1 <= row <= len(CONFIGURATIONS)]
    if unknown:
        raise SystemExit(f"--configurations: no row {unknown[0]}; the rows are 1 to {len(CONFIGURATIONS)}:\n" +
                         "\n".join(f"  {number}: {layout} / {label}" for number, (label, layout, _, _)
                                   in enumerate(CONFIGURATIONS, 1)))
    return tuple(CONFIGURATIONS[row - 1] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=["VGG16:64"], help="METHOD:SIZE ...")
    parser.add_argument("--rounds", type=int, default=1, help="times through every configuration")
    parser.add_argument("--configurations", type=int, nargs="+", metavar="ROW",
                        help=f"only these rows of the table (1 to {len(CONFIGURATIONS)}, in its order; 7 is the "
                             "default server), e.g. --configurations 7 --rounds 6")
    args = parser.parse_args()
    chosen = chosen_configurations(args.configurations)
    from timl.classifier import load_classifier
    from timl.exporting import onnx_classifier

    data = image_bytes()
    cores = len(os.sched_getaffinity(0))
    print(f"{args.clients} clients, {args.seconds:.0f} s per configuration, {cores} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the start")
    with tempfile.TemporaryDirectory() as folder:
        for method, imgsize in (spec.split(":") for spec in args.models):
            path = build_model(Path(folder), method, int(imgsize))
            keras_classifier = load_classifier(keras_model=path)
            models = {"keras": keras_classifier, "onnxruntime": onnx_classifier(keras_classifier)}
            alone = {name: {batch: seconds_per_image(model, batch, 10, time.perf_counter) * batch
                            for batch in range(1, args.clients + 1)}
                     for name, model in models.items()}
            # the model's own best batched throughput (images/s) and its call of a batch of every client
            best_batch = {name: max(calls, key=lambda batch: batch / calls[batch]) for name, calls in alone.items()}
            best = {name: best_batch[name] / calls[best_batch[name]] for name, calls in alone.items()}
            batch_seconds = {name: calls[args.clients] for name, calls in alone.items()}

            def speed(backend: str) -> float:  # the model's throughput at its best batch size now (images/s)
                return 1 / seconds_per_image(models[backend], best_batch[backend], 5, time.perf_counter)

            print(f"\n{method} {imgsize} px: best {best['keras']:.0f} images/s (Keras), {best['onnxruntime']:.0f} "
                  f"(ONNX Runtime); a batch of {args.clients}: {batch_seconds['keras'] * 1000:.0f} ms (Keras), "
                  f"{batch_seconds['onnxruntime'] * 1000:.0f} ms (ONNX Runtime)\n")
            every_round = []
            for round_index in range(args.rounds):
                rows = []
                for label, layout, workers, settings in chosen:
                    backend = settings.get("INFERENCE_BACKEND", "keras")
                    before, decoded = speed(backend), preprocessing_cost(keras_classifier.preprocessing, data)
                    found = measure(path, data, workers, settings, args.clients, args.seconds)
                    speeds = (before, speed(backend))
                    decodes = (decoded, preprocessing_cost(keras_classifier.preprocessing, data))
                    now = row_speed(speeds, found["images"], found["call_seconds"])  # as fast as around or in it
                    decode = statistics.mean(decodes)  # and the decoding
                    lone = None if settings.get("BATCH_MAX_SIZE") == 1 else lone_client(
                        path, data, workers, settings, args.seconds)
                    rows.append({**found, "label": label, "workers": layout, "lone": lone, "speeds": speeds,
                        "decodes": decodes,
                        "ceiling": ceiling(cores, now, decode, found["client_cpu"]),
                        "bound": closed_loop_bound(args.clients, cores, batch_seconds[backend] * best[backend] / now,
                                                   decode, found["client_cpu"]),
                        "alone": alone[backend][min(args.clients, max(1, round(found["images"] /
                                                                                max(found["calls"], 1))))]})
                print(f"Round {round_index + 1} (load average {os.getloadavg()[0]:.1f} at its end):\n")
                print("\n".join(table(rows)) + "\n")
                unsteady = sum(not steady(*row["speeds"]) for row in rows)
                if unsteady:
                    print(f"{unsteady} of {len(rows)} rows unsteady: the model's own speed changed by more than "
                          f"{STEADY:.0%} while they ran; their share of the ceiling is not reliable.\n")
                every_round += rows
            print(f"{method} {imgsize} px over {args.rounds} round(s), share of the ceiling:")
            print("\n".join(f"- {line}" for line in summary(every_round)) + "\n")


if __name__ == "__main__":
    main()
