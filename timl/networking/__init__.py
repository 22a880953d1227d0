"""The TIML server under the original TIML's name, started as the original manual says::

    export FLASK_APP=timl.networking.__main__.py
    python -m flask run [--host H --port P]

``app`` is built on first access (``flask run`` asks for it), from the configuration that
:func:`timl.serving.config.find_config` finds; importing this package reads no file. Without a configuration the
process stops with status 2 and prints a sample configuration, as the original did. Beyond loopback without API
tokens (``flask run --host 0.0.0.0``) the app answers every request 503 unless ``TIML_INSECURE=1`` is set
(:mod:`timl.serving.exposure`); ``python -m timl.networking`` refuses to start there instead. ``python -m timl.serve``
(gunicorn) remains the way to serve in production; ``python -m timl.networking`` runs the development server.
"""

from __future__ import annotations

#: Exit status when the server cannot start (no configuration, or an unusable one), as ``timl.serve`` uses.
EXIT_CONFIG_ERROR = 2

_apps: dict = {}


def server_app(config_path=None):
    """The TIML server app for ``config_path`` (None: looked up as usual), built once per process.

    Args:
        config_path: a ``timl_server_config.json``; None looks in ``$TIML_SERVER_CONFIG``, ``./``, ``~/.timl/``
            and ``~/``.

    Returns:
        The Flask app of :func:`timl.serving.create_app`.

    Raises:
        SystemExit: status 2 when no usable configuration is found; the error and a sample configuration are
            printed on stderr first.
    """
    import click

    from timl.cli import setup_logging
    from timl.errors import ConfigError
    from timl.serving import create_app

    key = str(config_path or "")
    if key not in _apps:
        setup_logging()
        try:
            _apps[key] = create_app(config_path)
        except ConfigError as error:
            click.echo(f"error: {error}", err=True)
            raise SystemExit(EXIT_CONFIG_ERROR) from None
    return _apps[key]


def refuse_exposure(app, bind: str, insecure: bool) -> None:
    """Stops the process (status 2, the message on stderr) before ``app`` listens on ``bind`` beyond loopback
    without API tokens and without ``insecure`` or ``TIML_INSECURE=1``; with ``insecure`` the app serves there.

    Raises:
        SystemExit: status 2 on a refused address.
    """
    import click

    from timl.errors import ConfigError
    from timl.serving.exposure import INSECURE_KEY, check_exposure

    insecure = insecure or bool(app.config.get(INSECURE_KEY))
    try:
        check_exposure(bind, app.config["TIML"], insecure)
    except ConfigError as error:
        click.echo(f"error: {error}", err=True)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    app.config[INSECURE_KEY] = insecure


def __getattr__(name: str):
    if name == "app":
        return server_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
