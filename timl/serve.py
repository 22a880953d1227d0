"""``python -m timl.serve``: the TIML REST server under gunicorn (the model is loaded once per worker)."""

from __future__ import annotations

import click

EXAMPLE = """Example:

  python -m timl.serve --config serving/timl_server_config.json --bind 127.0.0.1:8080 --workers 2

  then open http://127.0.0.1:8080/static/classify.html
"""


def run(config_path: str | None, bind: str, workers: int, timeout: int, backlog: int) -> None:
    """Runs gunicorn in this process with the TIML app (fails early, with a sample, on a bad configuration)."""
    from gunicorn.app.base import BaseApplication

    from timl.serving.app import create_app
    from timl.serving.config import load_config

    config = load_config(config_path)

    class TimlApplication(BaseApplication):
        def load_config(self):
            settings = {"bind": bind, "workers": workers, "timeout": timeout, "graceful_timeout": 30,
                        "backlog": backlog, "max_requests": 100000, "max_requests_jitter": 1000,
                        "limit_request_line": 8190, "accesslog": "-", "worker_class": "sync"}
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self):
            return create_app(config)

    TimlApplication().run()


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLE)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="timl_server_config.json (default: $TIML_SERVER_CONFIG, else ./, ~/.timl/, ~/).")
@click.option("--bind", default="127.0.0.1:8080", show_default=True, help="Address to listen on.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="gunicorn worker processes.")
@click.option("--timeout", default=120, show_default=True, type=int, help="Seconds before a stuck worker is restarted.")
@click.option("--backlog", default=64, show_default=True, type=int, help="Connections that may wait in the queue.")
def cli(config_path, bind, workers, timeout, backlog):
    """Serve a TIML model: REST API and web pages."""
    from timl.cli import setup_logging, user_errors

    setup_logging()
    with user_errors():
        run(config_path, bind, workers, timeout, backlog)


if __name__ == "__main__":
    cli()
