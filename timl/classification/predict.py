"""The original TIML command ``python -m timl.classification.predict``: an alias of ``python -m timl.predict``."""

from timl.predict import cli

if __name__ == "__main__":
    cli()
