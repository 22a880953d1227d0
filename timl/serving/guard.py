"""The checks every request passes before any route: exposure, Host (DNS rebinding) and Origin (cross-site writes).

1. **Exposure** (:mod:`timl.serving.exposure`): a server listening beyond loopback without API tokens and without
   ``--insecure``/``TIML_INSECURE=1`` answers every request 503, whatever started it.
2. **Host**: a page on another site can rebind its own name to 127.0.0.1 and then read this server as if it were
   that site. The ``Host`` header must therefore name ``localhost``, an IP address (a page can only be served from
   an address by the server at that address) or a name in ``TRUSTED_HOSTS``; any other answers 400.
3. **Origin**: a POST, PUT, PATCH or DELETE with an ``Origin`` header must come from this server's own origin (the
   Origin's host and port are the request's Host) or from a ``TRUSTED_HOSTS`` name; any other answers 403.
   Requests without ``Origin`` (timl.client, curl, scripts) are not browsers' and pass.

The Host and Origin checks apply when the server has no API tokens, or when ``TRUSTED_HOSTS`` is set. With tokens
and no ``TRUSTED_HOSTS`` they are off, so existing token deployments behind a proxy keep working: the pages send the
token from their own script in an ``Authorization`` header (never a cookie), so a rebinding or cross-site page has
no token to send.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from urllib.parse import urlsplit

from flask import Flask, current_app, jsonify, request

from timl.serving import exposure

logger = logging.getLogger(__name__)

#: The methods that change the server's data: refused from another site's pages.
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

#: The longest Host or Origin echoed in an error.
ECHO_LENGTH = 200


def install(app: Flask, config) -> None:
    """Makes every request of ``app`` pass the exposure, Host and Origin checks first (see the module).

    Args:
        app: the TIML Flask app.
        config: its :class:`timl.serving.config.ServerConfig`.
    """
    app.config.setdefault(exposure.INSECURE_KEY, exposure.insecure_from_environment())
    trusted = frozenset(config.trusted_hosts)
    check_names = not config.api_tokens_file or bool(trusted)
    log_once = _once()

    @app.before_request
    def guard():
        refused = exposure.refusal(request.environ, config, current_app.config[exposure.INSECURE_KEY])
        if refused is not None:
            log_once(exposure.bound_address(request.environ), refused)
            return jsonify(error=refused), 503
        if not check_names:
            return None
        if not _host_allowed(request.host, trusted):
            return jsonify(error=_host_message(request.host, config)), 400
        origin = request.headers.get("Origin")
        if request.method in STATE_CHANGING and origin is not None and not _origin_allowed(origin, trusted):
            return jsonify(error=_origin_message(origin, request.host_url.rstrip("/"), config)), 403
        return None


def _once():
    """A logger of each listening address's refusal, once per process (every request gets the answer)."""
    logged: set[str] = set()
    lock = threading.Lock()

    def log(address: str, message: str) -> None:
        with lock:
            first = address not in logged
            logged.add(address)
        if first:
            logger.error("%s Every request on %s is answered 503 until then.", message, address)

    return log


def host_name(authority: str) -> str:
    """The host of a ``Host`` header or URL authority, lowercase, without port or brackets (``[::1]:80`` -> ``::1``)."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1:].split("]", 1)[0]
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


def _host_allowed(authority: str, trusted: frozenset[str]) -> bool:
    """Whether a Host header names this server: localhost, an IP address, or a trusted name (any port)."""
    name = host_name(authority).rstrip(".")
    if name == "localhost" or name in trusted:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _origin_allowed(origin: str, trusted: frozenset[str]) -> bool:
    """Whether an Origin header is this request's own origin (same host and port as its Host) or a trusted name's."""
    parts = urlsplit(origin.strip().lower())
    default_port = {"http": ":80", "https": ":443"}.get(parts.scheme)
    if default_port is None or not parts.netloc:
        return False  # "null" (a sandboxed frame, a file), another scheme
    if parts.netloc.removesuffix(default_port) == request.host.lower().removesuffix(default_port):
        return True
    return host_name(parts.netloc) in trusted


def _host_message(authority: str, config) -> str:
    return ("This server answers only requests addressed to it by localhost, an IP address or a name in "
            f"TRUSTED_HOSTS (in {config.source or 'the server configuration'}): another name may be a web page "
            "rebinding its own name to this server. If this server is reached under this name (a reverse proxy "
            "with 'proxy_set_header Host $host'), add the name to TRUSTED_HOSTS. "
            f"Received: Host={authority[:ECHO_LENGTH]!r}")


def _origin_message(origin: str, own_origin: str, config) -> str:
    return ("Refusing a cross-origin request: a page of another site may not change this server's data. Expected "
            f"the Origin of this server ({own_origin[:ECHO_LENGTH]}) or of a name in TRUSTED_HOSTS (in "
            f"{config.source or 'the server configuration'}); requests without an Origin header (timl.client, "
            f"scripts) are not affected. Received: Origin={origin[:ECHO_LENGTH]!r}")
