"""The TIML REST server and web pages (``create_app``); ``python -m flask --app timl.serving run`` for development."""

from timl.serving.app import create_app

__all__ = ["create_app"]
