"""The original TIML command ``python -m timl.classification.train``: an alias of ``python -m timl.train``."""

from timl.train import cli

if __name__ == "__main__":
    cli()
