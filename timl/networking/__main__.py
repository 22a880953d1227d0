"""``python -m timl.networking``: the TIML server on Flask's development server, as the original TIML ran it.

Also the module the original manual hands to Flask (``export FLASK_APP=timl.networking.__main__.py; python -m
flask run``): Flask finds its ``app``, built on first access (see :mod:`timl.networking`).
"""

from __future__ import annotations

import click

from timl.cli import command

EXAMPLE = """Examples:

\b
  python -m timl.networking --config timl_server_config.json --host 127.0.0.1 --port 5000
  export FLASK_APP=timl.networking.__main__.py; python -m flask run --port 5000    (the original manual's way)

\b
  then, with the manual's REST_API_URL_PREFIX "rest" and STATIC_PAGES_URL_PREFIX "web", open
  http://127.0.0.1:5000/rest/info and http://127.0.0.1:5000/web/classify.html
"""


def run(config_path: str | None = None, host: str = "127.0.0.1", port: int = 5000, insecure: bool = False) -> None:
    """Serves the TIML app on Flask's development server (one process; ``python -m timl.serve`` for production).

    Args:
        config_path: a ``timl_server_config.json``; None looks in ``$TIML_SERVER_CONFIG``, ``./``, ``~/.timl/``
            and ``~/``.
        host: address to listen on. Defaults to "127.0.0.1"; beyond loopback API_TOKENS_FILE is needed (or
            ``insecure``).
        port: port to listen on. Defaults to 5000, Flask's.
        insecure: listen beyond loopback without API tokens (a trusted network only; also ``TIML_INSECURE=1``).
            Defaults to False.

    Raises:
        SystemExit: status 2 without a usable configuration (a sample configuration is printed), or on an address
            beyond loopback without API tokens and without ``insecure`` (the message says the ways out).
    """
    from timl.networking import refuse_exposure, server_app

    app = server_app(config_path)
    refuse_exposure(app, f"[{host}]:{port}" if ":" in host else f"{host}:{port}", insecure)
    app.run(host=host, port=port, threaded=True)


@command(epilog=EXAMPLE)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="timl_server_config.json (default: $TIML_SERVER_CONFIG, else ./, ~/.timl/, ~/).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Beyond loopback it needs API_TOKENS_FILE (or --insecure).")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--insecure", is_flag=True, help="Listen beyond loopback without API tokens (a trusted network only).")
def cli(config_path, host, port, insecure):
    """Run the TIML server (REST API and web pages) on Flask's development server."""
    run(config_path, host, port, insecure)


def __getattr__(name: str):
    if name == "app":  # for FLASK_APP=timl.networking.__main__.py
        from timl.networking import server_app

        return server_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    cli()
