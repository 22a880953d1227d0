"""The one exposure rule of the TIML server: loopback, or API tokens, or an explicit ``--insecure``.

Whatever starts the server (``python -m timl.serve``, ``python -m timl.networking``, ``flask run``, gunicorn with or
without ``serving/gunicorn.conf.py``), a server that listens beyond loopback without ``API_TOKENS_FILE`` serves
nothing unless ``--insecure`` (or ``TIML_INSECURE=1``) says the network is trusted. Where the address is known
before serving, :func:`check_exposure` refuses to start; the app itself checks the address each request arrived on
(:func:`refusal`, called by :mod:`timl.serving.guard`), so a server started any other way answers 503 instead.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from timl.errors import ConfigError

#: The environment variable that allows serving beyond loopback without tokens (``--insecure`` sets it too).
INSECURE_VARIABLE = "TIML_INSECURE"

#: The app's ``config`` key that says ``--insecure`` was given (set by the command that starts the app).
INSECURE_KEY = "TIML_INSECURE"


def is_loopback(bind: str) -> bool:
    """Whether a listening address only accepts connections from this machine (loopback, a unix socket).

    Args:
        bind: a gunicorn bind address: ``HOST:PORT``, ``[IPV6]:PORT``, ``HOST``, ``unix:PATH`` or ``fd://N``.
    """
    if bind.startswith(("unix:", "fd://")):
        return True
    host = bind.rsplit(":", 1)[0] if bind.count(":") == 1 or bind.startswith("[") else bind
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_from_environment() -> bool:
    """Whether ``TIML_INSECURE=1`` is set (the ``--insecure`` of servers started without a TIML command)."""
    return os.environ.get(INSECURE_VARIABLE) == "1"


def refusal_message(bind: str, config) -> str:
    """Why a server on ``bind`` without tokens refuses to serve, and the ways out."""
    return (f"Refusing to listen on {bind} without API tokens: anyone who can reach it could use the model and "
            f"write expert answers. Set API_TOKENS_FILE in {config.source or 'the configuration'} (a JSON file of "
            "{\"token\": \"user name\"}) and put a reverse proxy with TLS in front (see the README), or bind to "
            f"127.0.0.1, or pass --insecure (or set {INSECURE_VARIABLE}=1) if the network is trusted.")


def check_exposure(bind: str, config, insecure: bool) -> None:
    """Refuses to serve beyond loopback without API tokens unless ``insecure`` is given.

    Args:
        bind: the address the server will listen on.
        config: the :class:`timl.serving.config.ServerConfig`.
        insecure: ``--insecure`` (or ``TIML_INSECURE=1``) was given.

    Raises:
        ConfigError: a non-loopback address, no API_TOKENS_FILE and no ``--insecure``.
    """
    if is_loopback(bind) or config.api_tokens_file or insecure:
        return
    raise ConfigError(refusal_message(bind, config))


def bound_address(environ: dict) -> str:
    """The address of the listener a request arrived on, as a bind address (``HOST:PORT``, ``[IPV6]:PORT`` or
    ``unix:``).

    gunicorn and werkzeug put the listening socket's address in ``SERVER_NAME``/``SERVER_PORT`` (``0.0.0.0`` for
    a server bound to every interface, whatever address the client used); on a unix socket gunicorn puts the Host
    header there instead, so the connection's socket (``gunicorn.socket``, ``werkzeug.socket``) is asked first.
    """
    connection = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    if getattr(connection, "family", None) == getattr(socket, "AF_UNIX", object()):
        return "unix:"
    host, port = str(environ.get("SERVER_NAME", "")), str(environ.get("SERVER_PORT", ""))
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{host}:{port}" if port else host


def refusal(environ: dict, config, insecure: bool) -> str | None:
    """The message a request must be answered with when its server is exposed (None: serve it).

    Args:
        environ: the request's WSGI environ.
        config: the server configuration.
        insecure: ``--insecure`` or ``TIML_INSECURE=1`` was given.
    """
    if config.api_tokens_file or insecure:
        return None
    bind = bound_address(environ)
    return None if is_loopback(bind) else refusal_message(bind, config)
