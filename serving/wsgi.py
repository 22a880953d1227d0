"""WSGI entry point: ``gunicorn -c serving/gunicorn.conf.py serving.wsgi:app`` (config from timl_server_config.json)."""

from timl.serving import create_app

app = create_app()
