"""A second process for CPU-bound work that can run beside the main one: drawing a trained row's plots.

A row ends with about 30 plots (2 s of one core on the demo) and with logging the model to MLflow (about 1 s).
Matplotlib holds the GIL, so a thread would not overlap them; a second process draws the plots while the main
process logs the model. The process starts with the table and imports only matplotlib (under a second of CPU,
spent while the first row reads its data: scikit-learn would take two more, slowing training down), so the
main process computes the curves and sends them. If the process cannot start, or dies, the work runs in the
calling process instead: same result, only slower.

The process is loky's (the process pool behind joblib and scikit-learn): unlike the standard library's spawned
processes it does not re-import the user's ``__main__`` script, so a script that calls
:func:`timl.training.train_table` without an ``if __name__ == "__main__"`` guard does not run twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

from loky import BrokenProcessPool, ProcessPoolExecutor
from loky.backend.context import LokyContext

logger = logging.getLogger(__name__)


def prepare_process(parent: int, modules: tuple[str, ...], niceness: int = 19) -> None:
    """Runs first in a helper process: the lowest CPU priority (the main process's work comes first: the work
    here uses what it leaves idle), Ctrl-C is the main process's to handle (it shuts the worker down),
    and the modules the work needs are imported now rather than on the first job."""
    import importlib

    with contextlib.suppress(OSError):
        os.nice(niceness)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the parent's pid comes from the parent: asked here, a parent killed while this process was starting
    # would already be replaced by init, and the watch would never end
    threading.Thread(target=_exit_with_parent, args=(parent,), name="timl-parent-watch", daemon=True).start()
    for name in modules:
        importlib.import_module(name)


def _exit_with_parent(parent: int) -> None:
    """Ends the worker when its parent is gone (killed: it could not say so), instead of lingering."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _ready() -> bool:
    return True


class Job:
    """The result of :meth:`Worker.submit`, computed in the worker, or here if the worker died meanwhile."""

    def __init__(self, future: Future | None, function: Callable, args: tuple, kwargs: dict):
        self._future, self._call = future, (function, args, kwargs)

    def result(self) -> Any:
        function, args, kwargs = self._call
        if self._future is not None:
            try:
                return self._future.result()
            except BrokenProcessPool:
                logger.warning("The plot process stopped; drawing in the main process instead.")
        return function(*args, **kwargs)


class Worker:
    """One spawned process running submitted functions (importable by name, with picklable arguments).

    Use as a context manager; ``Worker(enabled=False)`` runs every job in the calling process, when
    :meth:`Job.result` is called.

    Args:
        modules: imported by the process as soon as it starts.
        enabled: start a process at all. Defaults to True.
    """

    def __init__(self, modules: tuple[str, ...] = (), *, enabled: bool = True):
        self._pool: ProcessPoolExecutor | None = None
        if not enabled:
            return
        try:
            # loky's own context: by name, multiprocessing may hand out the copy of loky inside joblib
            self._pool = ProcessPoolExecutor(max_workers=1, context=LokyContext(), initializer=prepare_process,
                                             initargs=(os.getpid(), tuple(modules)))
            self._pool.submit(_ready)  # the process starts now, not with the first job
        except (OSError, RuntimeError) as error:
            logger.warning("Cannot start a plot process (%s); plots are drawn in the main process.", error)
            self._pool = None

    def submit(self, function: Callable, *args, **kwargs) -> Job:
        """Starts ``function(*args, **kwargs)`` in the process (or later, here: see :class:`Job`)."""
        future = None
        if self._pool is not None:
            try:
                future = self._pool.submit(function, *args, **kwargs)
            except (BrokenProcessPool, RuntimeError):
                logger.warning("The plot process stopped; plots are drawn in the main process from now on.")
                self._pool = None
        return Job(future, function, args, kwargs)

    def close(self) -> None:
        """Stops the process at once; a job still running (its result was never awaited) is abandoned."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, kill_workers=True)
            self._pool = None

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
