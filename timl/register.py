"""``python -m timl.register``: register a trained row's model (see :mod:`timl.registry`)."""

from timl.registry import cli

if __name__ == "__main__":
    cli()
