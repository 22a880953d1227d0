"""The original TIML command ``python -m timl.classification.inspect``: an alias of ``python -m timl.inspect``."""

from timl.inspect import cli

if __name__ == "__main__":
    cli()
