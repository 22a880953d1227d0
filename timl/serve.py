"""``python -m timl.serve``: the TIML REST server under gunicorn.

Each worker process loads the model once, at its start, and warms it (one prediction, one explanation in each
explanation process; ``/health`` says ready once every worker is warm); it answers requests in threads (gunicorn's
``gthread`` workers): concurrent ``/classify`` requests decode their images in parallel and share model calls
(dynamic batching, :mod:`timl.serving.batching`), made by one model process for every worker when there are
several (MODEL_PROCESS, :mod:`timl.serving.model_process`); explanations run in their own processes
(:mod:`timl.serving.explaining`).
:func:`gunicorn_settings` is the one place the gunicorn settings are written.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
from pathlib import Path

import click

from timl.cli import command, setup_logging, user_errors
from timl.errors import ConfigError

EXAMPLE = """Example:

  python -m timl.serve --config serving/timl_server_config.json --bind 127.0.0.1:8080 --workers 2

  then open http://127.0.0.1:8080/static/classify.html
"""


def gunicorn_settings(bind: str, workers: int = 2, threads: int = 16, timeout: int = 120, backlog: int = 64) -> dict:
    """The gunicorn settings of the TIML server.

    Args:
        bind: the address to listen on.
        workers: worker processes (HTTP, decoding, explanations; the model calls in one model process).
        threads: request threads per worker: requests decoding, waiting for a batch, or waiting for an
            explanation each hold one.
        timeout: seconds without a heartbeat before a stuck worker is restarted.
        backlog: connections that may wait to be accepted.

    Connections are not kept alive (``keepalive`` 0: one request per connection, what a reverse proxy sends
    anyway): with idle kept-alive connections gunicorn's threaded worker waited out its whole graceful timeout
    (30 s) before stopping. The workers are gunicorn's ``gthread`` workers that wait for a closing connection in
    its request's thread (:class:`timl.serving.connections.ThreadWorker`): gunicorn's own waited in the loop that
    accepts connections, and a client holding its socket open stalled that worker's other clients for 2 s.
    """
    return {"bind": bind, "workers": workers, "threads": threads, "worker_class": "timl.serving.connections.ThreadWorker",
            "timeout": timeout, "graceful_timeout": 30, "keepalive": 0, "backlog": backlog, "max_requests": 100000,
            "max_requests_jitter": 1000, "limit_request_line": 8190, "accesslog": "-"}


def check_port(bind: str) -> None:
    """Refuses, naming ``--bind``, an address another process listens on (gunicorn would retry it for a minute,
    printing "Connection in use"). The address is bound once and released, as gunicorn binds it.

    Raises:
        ConfigError: the address is in use.
    """
    if bind.startswith(("unix:", "fd://")):
        return
    host, _, port = bind.rpartition(":")
    if not port.isdigit():  # a bare host: gunicorn's default port
        host, port = bind, "8000"
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn: a closed server's port is free
        try:
            probe.bind((host, int(port)))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                return  # an address gunicorn will explain itself (a host name, an address not of this machine)
            shown = f"[{host}]" if family == socket.AF_INET6 else host
            raise ConfigError(f"Port {port} on {host} is in use (another server: perhaps a timl.serve started "
                              f"earlier). Stop it, or choose a free port with --bind {shown}:{int(port) + 1}."
                              ) from error


def run(config_path: str | None, bind: str, workers: int, threads: int, timeout: int, backlog: int,
        insecure: bool = False) -> None:
    """Runs gunicorn in this process with the TIML app (fails early, with a sample, on a bad configuration)."""
    from gunicorn.app.base import BaseApplication

    from timl.serving import metrics
    from timl.serving.app import create_app
    from timl.serving.config import load_config, model_problem
    from timl.serving.exposure import INSECURE_KEY, check_exposure
    from timl.serving.model import warm_start_from_environment
    from timl.serving.model_process import ModelProcess

    config = load_config(config_path)
    config.tokens()  # a bad tokens file stops the server here, not in every worker
    check_exposure(bind, config, insecure)
    check_port(bind)
    problem = model_problem(config)
    if problem:
        raise ConfigError(f"Not starting the server: {problem}")
    warm_start = warm_start_from_environment()
    ready_folder = Path(tempfile.mkdtemp(prefix="timl-ready-"))  # a file per warm worker: /health is ready at all
    folder, made = metrics.multiprocess_directory()  # before gunicorn forks: every worker counts into it
    model_process = ModelProcess.for_server(config, workers, warm_start != "none")  # before gunicorn forks

    class TimlApplication(BaseApplication):
        def load_config(self):
            for key, value in gunicorn_settings(bind, workers, threads, timeout, backlog).items():
                self.cfg.set(key, value)
            self.cfg.set("child_exit", lambda server, worker: worker_stopped(server, worker, ready_folder))
            self.cfg.set("worker_exit", stop_explanations)

        def load(self):
            app = create_app(config)
            app.config[INSECURE_KEY] = app.config.get(INSECURE_KEY) or insecure  # it checks each request too
            if model_process is not None:
                app.extensions["timl_model"].use_model_process(model_process.client())
            if warm_start != "none":  # /health is ready once the model (and the explanation processes) are warm
                app.extensions["timl_model"].start_warm_up(warm_start, ready_folder, workers)
            return app

    master = os.getpid()
    try:
        TimlApplication().run()
    finally:  # a worker leaving gunicorn's loop (a graceful stop, a restart) leaves through here too: the master's
        if os.getpid() == master:  # folders and model process stay
            if model_process is not None:
                model_process.stop()
            shutil.rmtree(ready_folder, ignore_errors=True)
            if made:
                metrics.remove_directory(folder)


def worker_stopped(server, worker, ready_folder: Path) -> None:
    """gunicorn's ``child_exit`` hook (in the master): the stopped worker is no longer warm (/health waits for its
    replacement), and its live metrics leave the sums."""
    from timl.serving import metrics

    (ready_folder / str(worker.pid)).unlink(missing_ok=True)
    metrics.worker_exited(server, worker)


def stop_explanations(server, worker) -> None:
    """gunicorn's ``worker_exit`` hook: a stopping worker stops its explanation processes at once (they would
    otherwise be waited for)."""
    app = getattr(worker, "wsgi", None)
    holder = app.extensions.get("timl_model") if app is not None else None
    if holder is not None:
        holder.explanations.close()


@command(epilog=EXAMPLE)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="timl_server_config.json (default: $TIML_SERVER_CONFIG, else ./, ~/.timl/, ~/).")
@click.option("--bind", default="127.0.0.1:8080", show_default=True,
              help="Address to listen on. Beyond loopback it needs API_TOKENS_FILE in the configuration (or --insecure).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes (with 2+, one model process makes every model call: MODEL_PROCESS).")
@click.option("--threads", default=16, show_default=True, type=click.IntRange(1, 256),
              help="Request threads per worker (concurrent requests share model calls).")
@click.option("--timeout", default=120, show_default=True, type=int, help="Seconds before a stuck worker is restarted.")
@click.option("--backlog", default=64, show_default=True, type=int, help="Connections that may wait in the queue.")
@click.option("--insecure", is_flag=True, help="Listen beyond loopback without API tokens (a trusted network only).")
def cli(config_path, bind, workers, threads, timeout, backlog, insecure):
    """Serve a TIML model: REST API and web pages."""
    setup_logging()
    with user_errors():
        run(config_path, bind, workers, threads, timeout, backlog, insecure)


if __name__ == "__main__":
    cli()
