"""One model process for all of a server's workers: every /classify model call in one process, batched together.

With MODEL_PROCESS (the default) and more than one gunicorn worker, ``timl.serve`` starts one process that loads
the model and runs the dynamic batcher (:mod:`timl.serving.batching`) for every worker. The workers parse and
decode the uploads, as before, and send the model inputs over a Unix socket (``multiprocessing.connection``, with a
random key, in a folder only the server's user can open); the model process answers each with its output row.

Why: with a model in each worker, two TensorFlow processes (a thread per core each) compete for the same cores:
under load each served model call took 1.6-3.2x its time alone (README, "Serving figures"). One model process runs
one thread pool on the cores, with batches formed from every worker's requests.

- :class:`ModelProcess` (in the gunicorn master): starts it, starts a new one when it stops (a warning in the
  log), stops it with the server.
- :class:`ModelProcessClient` (in each worker): the batcher the routes use (``expect``, ``submit``, ``stats``).
  While the model process is down a request is answered 503 with Retry-After (:class:`ModelRestarting`).
- :func:`main` (the model process): loads and warms the model, answers until the server stops or its parent dies.

Explanations are unchanged: each worker's explanation processes load their own model.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pickle
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path

import numpy as np

from timl.errors import TimlError
from timl.serving import metrics

logger = logging.getLogger(__name__)

#: Seconds a worker waits for an answer of the model process (then 503): a model call takes milliseconds to
#: seconds, loading the model on a first request (TIML_WARM_START none) up to about a minute.
ANSWER_TIMEOUT_S = 120
#: Seconds a client is told to wait (Retry-After) while the model process restarts.
RETRY_AFTER_S = 5


class ModelRestarting(TimlError):
    """The model process is not answering (it is starting or being restarted): 503 with Retry-After."""

    retry_after = RETRY_AFTER_S

    def __init__(self, message: str = "The model is restarting (its process is starting, or stopped and is being "
                                      "started again); try again in a few seconds."):
        super().__init__(message)


class ModelProcess:
    """The model process of a server, seen from the gunicorn master.

    Args:
        config: the server configuration (the model process loads its model and batching settings).
        folder: a private folder (mode 0700) for the socket.
        warm: whether the model process loads and warms its model at start (TIML_WARM_START not ``none``).
    """

    def __init__(self, config, folder: Path, warm: bool = True):
        self.config, self.warm = config, warm
        self.address = str(folder / "model.sock")
        self.authkey = secrets.token_bytes(32)
        self._process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @classmethod
    def for_server(cls, config, workers: int, warm: bool = True) -> "ModelProcess | None":
        """The started model process of a server of ``workers`` workers (in its master, before they are forked),
        or None: MODEL_PROCESS false, or one worker (no other model to compete with)."""
        if not config.model_process or workers < 2:
            return None
        process = cls(config, Path(tempfile.mkdtemp(prefix="timl-model-")), warm)
        process.start()
        return process

    def client(self) -> "ModelProcessClient":
        """A worker's connection to it (made in the worker, after the fork)."""
        return ModelProcessClient(self.address, self.authkey)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Starts the model process, and a thread that starts a new one whenever it stops."""
        self._launch()
        self._watcher = threading.Thread(target=self._watch, name="timl-model-process-watch", daemon=True)
        self._watcher.start()

    def _launch(self) -> None:
        # The settings and the key travel on the process's stdin: never in its command line or environment.
        process = subprocess.Popen([sys.executable, "-c", "from timl.serving.model_process import main; main()"],
                                   stdin=subprocess.PIPE)
        process.stdin.write(pickle.dumps((self.config, self.address, self.authkey, self.warm, os.getpid())))
        process.stdin.close()
        self._process = process
        logger.info("Started the model process (pid %d): every worker's model calls run there.", process.pid)

    def _watch(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            code = self._process.wait()  # 0 when gunicorn's master reaped it first (its status is then lost)
            if self._stopping.is_set():
                return
            metrics.process_exited(self._process.pid)  # its live gauges leave /metrics' sums
            delay = 1.0 if time.monotonic() - started > 60 else min(delay * 2, 30.0)
            logger.warning("The model process (pid %d) stopped (exit status %s); starting a new one in %.0f s. "
                           "Until it answers, /classify answers 503 with Retry-After.", self._process.pid, code, delay)
            if self._stopping.wait(delay):
                return
            self._launch()

    def stop(self) -> None:
        """Stops the model process (the server is stopping) and removes its socket's folder."""
        self._stopping.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(Path(self.address).parent, ignore_errors=True)


class ModelProcessClient:
    """A worker's connection to the model process, used as its batcher (:class:`timl.serving.batching.Batcher`'s
    ``expect``, ``submit`` and ``stats``); connected on first use, and again after the model process restarted.

    Args:
        address: the model process's socket.
        authkey: its key.
        timeout: seconds to wait for an answer.
    """

    def __init__(self, address: str, authkey: bytes, timeout: float = ANSWER_TIMEOUT_S):
        self.address, self._authkey, self.timeout = address, authkey, timeout
        self._connection: Connection | None = None
        self._lock = threading.Lock()  # one sender at a time; guards the connection (taken before _pending)
        self._pending = threading.Lock()  # guards the waiting futures (the reader never waits for a sender)
        self._waiting: dict[int, Future] = {}
        self._ids = itertools.count()

    def _send(self, message: tuple, future: Future | None = None) -> None:
        with self._lock:
            if self._connection is None:
                try:
                    self._connection = Client(self.address, family="AF_UNIX", authkey=self._authkey)
                except (OSError, EOFError, AuthenticationError) as error:
                    raise ModelRestarting() from error
                threading.Thread(target=self._read, args=(self._connection,), name="timl-model-client",
                                 daemon=True).start()
            if future is not None:
                with self._pending:
                    self._waiting[message[1]] = future
            try:
                self._connection.send(message)
            except (OSError, ValueError) as error:  # the model process stopped: its reader fails the others
                if future is not None:
                    with self._pending:
                        self._waiting.pop(message[1], None)
                raise ModelRestarting() from error

    def _read(self, connection: Connection) -> None:
        try:
            while True:
                ident, ok, value = connection.recv()
                with self._pending:
                    future = self._waiting.pop(ident, None)
                if future is not None:
                    future.set_result(value) if ok else future.set_exception(value)
        except (EOFError, OSError) as error:
            logger.warning("The connection to the model process ended (%s): waiting requests answer 503.",
                           str(error) or "it stopped")
            with self._lock, self._pending:  # no new connection meanwhile: every waiting future was this one's
                if self._connection is connection:
                    self._connection = None
                waiting, self._waiting = self._waiting, {}
            with contextlib.suppress(OSError):
                connection.close()
            for future in waiting.values():
                future.set_exception(ModelRestarting())

    def _request(self, kind: str, *payload) -> Future:
        """Sends one request; the future of its answer."""
        future: Future = Future()
        self._send((kind, next(self._ids), *payload), future)
        return future

    def _result(self, future: Future):
        """The answer of a request, waited for up to :attr:`timeout` seconds."""
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            raise ModelRestarting(f"The model process did not answer within {self.timeout:g} s; try again later.") from None

    @contextlib.contextmanager
    def expect(self):
        """Announces a request whose array follows (the model process's batch being formed waits for it)."""
        self._send(("expect", None))
        state = {"open": True}
        try:
            yield state
        finally:
            if state["open"]:
                with contextlib.suppress(TimlError):
                    self._send(("withdraw", None))

    def submit(self, array: np.ndarray, announcement: dict | None = None) -> np.ndarray:
        """One array's output row, from a batch of the model process."""
        announced = bool(announcement and announcement.get("open"))
        if announced:
            announcement["open"] = False
        return self._result(self._request("predict", np.asarray(array), announced))

    def predict(self, arrays: np.ndarray) -> np.ndarray:
        """The output rows of several arrays (each joins a batch of the model process)."""
        futures = [self._request("predict", np.asarray(array), False) for array in arrays]
        return np.stack([self._result(future) for future in futures])

    def stats(self) -> dict:
        """The model process's batcher counts (every worker's calls), its pid and whether it is ready."""
        try:
            return self._result(self._request("stats"))
        except TimlError:
            return {"model_process": {"ready": False}}

    @property
    def ready(self) -> bool:
        """Whether the model process answers and has loaded and warmed its model."""
        return bool(self.stats().get("model_process", {}).get("ready"))

    def wait_until_ready(self, timeout: float) -> bool:
        """Waits (up to ``timeout`` seconds) until the model process is :attr:`ready`; returns whether it is."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True


def serve(config, address: str, authkey: bytes, warm: bool) -> None:
    """The model process: a :class:`~timl.serving.model.ModelHolder` (its model, TTA and inference backend, its
    batcher and metrics) answering the workers' connections."""
    from timl.serving.model import ModelHolder

    holder = ModelHolder(config, metrics=metrics.ServerMetrics(config.metrics, lambda: holder.describe()))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(address)  # the socket of a model process that stopped
    listener = Listener(address, family="AF_UNIX", authkey=authkey)
    ready = threading.Event()
    if warm:
        threading.Thread(target=lambda: (holder.warm_up(explanations=False), ready.set()), name="timl-warm-up",
                         daemon=True).start()
    else:
        ready.set()
    logger.info("The model process listens; its model %s.", "is warming" if warm else "loads on the first request")
    while True:
        try:
            connection = listener.accept()
        except (OSError, EOFError, AuthenticationError) as error:  # a wrong key, or a client that left at once
            logger.warning("A connection to the model process was refused: %s", error)
            continue
        threading.Thread(target=_answer, args=(holder, ready, connection), name="timl-model-connection",
                         daemon=True).start()


def _answer(holder, ready: threading.Event, connection: Connection) -> None:
    """Answers one worker's messages until it disconnects: ``("expect", _)``, ``("withdraw", _)``,
    ``("predict", id, array, announced)`` and ``("stats", id)``."""
    lock = threading.Lock()
    batcher = holder.batcher
    announcements: list[dict] = []  # this worker's open announcements: withdrawn if it disconnects

    def reply(ident: int, future: Future) -> None:
        error = future.exception()
        message = (ident, error is None, future.result() if error is None else _portable(error))
        with lock, contextlib.suppress(OSError, ValueError):
            connection.send(message)

    try:
        while True:
            kind, ident, *payload = connection.recv()
            if kind == "expect":
                announcements.append(batcher.announce())
            elif kind == "withdraw" and announcements:
                batcher.withdraw(announcements.pop())
            elif kind == "predict":
                array, announced = payload
                announcement = announcements.pop() if announced and announcements else None
                batcher.enqueue(array, announcement).add_done_callback(lambda future, i=ident: reply(i, future))
            elif kind == "stats":
                facts = batcher.stats() | {"model_process": {"pid": os.getpid(), "ready": ready.is_set()}}
                with lock:
                    connection.send((ident, True, facts))
    except (EOFError, OSError):
        pass
    finally:
        for announcement in announcements:
            batcher.withdraw(announcement)
        connection.close()


def _portable(error: BaseException) -> BaseException:
    """The error as the worker will raise it: itself if it pickles, else a RuntimeError with its message."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any error that does not survive the trip
        return RuntimeError(f"{type(error).__name__}: {error}")


def _exit_with_parent(parent: int) -> None:
    """Ends this process when the server that started it is gone (killed without stopping it)."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def main() -> None:
    from timl.cli import setup_logging

    setup_logging()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which then stops this process
    config, address, authkey, warm, parent = pickle.load(sys.stdin.buffer)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    serve(config, address, authkey, warm)
