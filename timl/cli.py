"""The ``timl`` command: one subcommand per stage, each also runnable as ``python -m timl.<stage>``.

Subcommands are imported only when called, so ``timl --help`` is instant. Every command is declared with
:func:`command` (or :func:`group`), so each has ``-h``/``--help`` and its example as the epilog, and takes the
options every command shares from here (:func:`tracking_uri_option`, :func:`cuda_gpu_option`,
:func:`bootstrap_option`).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys

import click

#: subcommand -> module whose ``cli`` implements it.
COMMANDS = {
    "data": "timl.data",
    "split": "timl.split",
    "train": "timl.train",
    "tune": "timl.tune",
    "results": "timl.results",
    "predict": "timl.predict",
    "inspect": "timl.inspect",
    "explain": "timl.explain",
    "register": "timl.register",
    "serve": "timl.serve",
    "client": "timl.client",
    "review": "timl.review",
    "export": "timl.export",
}


#: Every command's context settings: ``-h`` as well as ``--help``.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}

#: The help of ``--tracking-uri`` on every command that reads or writes the tracking store.
TRACKING_URI_HELP = "MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."


def unwrapped(epilog: str | None) -> str | None:
    """The epilog with click's ``\\b`` marker before each paragraph, so examples are shown as written.

    Click rewraps help paragraphs to the terminal's width, which would break a command line mid-option
    (``--test-`` / ``dataframe``); a paragraph after a line holding only ``\\b`` is kept verbatim.
    """
    if not epilog:
        return epilog
    paragraphs = epilog.strip("\n").split("\n\n")
    return "\n\n".join(text if text.startswith("\b") else "\b\n" + text for text in paragraphs)


def command(epilog: str | None = None, **settings):
    """``click.command`` with TIML's context settings (``-h``, ``--help``) and its example as the epilog.

    Args:
        epilog: the command's example(s), shown under its options as written (never rewrapped).
        **settings: further arguments of ``click.command`` (``name=...``).
    """
    return click.command(context_settings=CONTEXT_SETTINGS, epilog=unwrapped(epilog), **settings)


def group(epilog: str | None = None, **settings):
    """``click.group`` with TIML's context settings; its subcommands (``@cli.command``) inherit them."""
    return click.group(context_settings=CONTEXT_SETTINGS, epilog=unwrapped(epilog), **settings)


def tracking_uri_option(help: str = TRACKING_URI_HELP):  # noqa: A002 (click's name)
    """``--tracking-uri``: the MLflow store a command reads or writes (None: MLflow's default)."""
    return click.option("--tracking-uri", default=None, help=help)


def bootstrap_option(function):
    """``--bootstrap N``: resamples of the 95% bootstrap interval beside every summary score (0: none)."""
    from timl.intervals import DEFAULT_RESAMPLES

    return click.option("--bootstrap", type=click.IntRange(min=0), default=DEFAULT_RESAMPLES, show_default=True,
                        help="Resamples of the 95% bootstrap interval (seeded) logged beside every summary score "
                        "as _ci_low and _ci_high; 0 logs no intervals.")(function)


def cuda_gpu_option(function):
    """``--cuda-gpu N``: use only GPU N (the original TIML's option; see :func:`select_gpu`)."""
    return click.option("--cuda-gpu", type=int, help="Use only this GPU.")(function)


@contextlib.contextmanager
def user_errors():
    """Turns TIML's user errors into ``error: <message>`` on stderr and exit status 2 (no traceback)."""
    from timl.errors import TimlError

    try:
        yield
    except (TimlError, FileNotFoundError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)


def write_progress(text: str, finished: bool, stream=None) -> None:
    """Writes one progress update: on a terminal over the previous one (carriage return, a newline when
    ``finished``); to a file or pipe (not a TTY) as a line of its own, so a log holds no carriage-return frames."""
    stream = stream or sys.stderr
    if stream.isatty():
        stream.write(f"\r{text}" + ("\n" if finished else ""))
    else:
        stream.write(text + "\n")
    stream.flush()


def progress_printer(verb: str):
    """A ``progress(done, total)`` callback that keeps one line on stderr: ``explained 12/40 images (1.9 img/s,
    0:00:15 left)`` (:func:`write_progress`: a line per update when stderr is a file or pipe)."""
    import datetime
    import time

    started = time.time()

    def progress(done: int, total: int) -> None:
        rate = done / max(time.time() - started, 1e-9)
        left = datetime.timedelta(seconds=round((total - done) / rate)) if rate else "?"
        write_progress(f"{verb} {done}/{total} images ({rate:.1f} img/s, {left} left)", done == total)

    return progress


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def select_gpu(cuda_gpu: int | None) -> None:
    """Makes only GPU ``cuda_gpu`` visible (the original TIML --cuda-gpu); must run before TensorFlow loads."""
    if cuda_gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(cuda_gpu)


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        try:
            return importlib.import_module(COMMANDS[name]).cli
        except ModuleNotFoundError as error:
            if error.name == COMMANDS[name]:
                return None
            raise


@group(cls=_LazyGroup, epilog="Example: timl data digits demo_data && timl train --input-table experiments/quickstart.csv")
def main():
    """TIML: train, compare, explain and serve image classifiers from a table of configurations."""


if __name__ == "__main__":
    main()
