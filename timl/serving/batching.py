"""Dynamic batching: concurrent ``/classify`` requests of one worker answered by one model call.

Each request decodes and resizes its image in its own thread (in parallel, and a bad image fails there, alone),
then hands the array to the worker's :class:`Batcher`. One thread per worker calls the model: it takes every
array waiting, and while other requests are still being decoded (they announced themselves with
:meth:`Batcher.expect`) it waits for them, up to ``max_wait`` seconds and ``max_size`` arrays. A lone request
never waits: with nothing else in flight its batch of one goes at once. Under load a batch also waits (up to
``max_wait``) until it holds as many arrays as the previous batch held plus those that arrived during its model
call: closed-loop clients whose answers just went out come back within a few milliseconds, and one batch of 4
costs less CPU per image than two of 2 (when the cores are saturated a returning request may wait longer than
``max_wait`` for one: see the README's serving figures). A client left alone waits for company once, then never.
If a batch's model call fails, each of its arrays is retried alone, so one bad input fails only its own request.

This is what servers built for it do (TensorFlow Serving's and Triton's dynamic batching, Ray Serve's
``@serve.batch``): on a CPU a batch of 8 costs less than 8 single calls, on a GPU barely more than one.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable

import numpy as np

logger = logging.getLogger(__name__)


class Batcher:
    """Groups arrays submitted by concurrent threads into batches for one model-calling thread.

    Args:
        predict: called with a stacked batch (n, ...) from the batcher's thread only; returns (n, ...) outputs.
        max_size: most arrays per call (1: every array alone, no waiting).
        max_wait: seconds a batch waits for announced arrays to arrive.
        observe: called after each model call with its batch size, its seconds and each array's seconds in the
            queue before the call began (the server's metrics), if given.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_size: int = 8, max_wait: float = 0.01,
                 observe: Callable[[int, float, list[float]], None] | None = None):
        self.predict, self.max_size, self.max_wait = predict, max(1, int(max_size)), max(0.0, float(max_wait))
        self.observe = observe
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._expected = 0  # requests announced (decoding) but not yet submitted
        self._in_flight = 1  # requests in flight during the last model call: the next batch waits for as many
        self._thread: threading.Thread | None = None
        #: How many model calls had each batch size (what /health reports).
        self.sizes: collections.Counter = collections.Counter()

    @contextlib.contextmanager
    def expect(self):
        """Announces a request that will submit an array soon (while its image decodes), so a batch being formed
        waits for it; the announcement ends when it submits or fails."""
        with self._lock:
            self._expected += 1
        state = {"open": True}
        try:
            yield state
        finally:
            if state["open"]:
                self._withdraw()

    def announce(self) -> dict:
        """:meth:`expect` without the block, for an announcement that arrives as a message (the model process):
        the returned announcement ends when it is given to :meth:`enqueue`, or with :meth:`withdraw`."""
        with self._lock:
            self._expected += 1
        return {"open": True}

    def withdraw(self, announcement: dict) -> None:
        """Ends an announcement whose array will not come (its request failed first)."""
        if announcement.get("open"):
            announcement["open"] = False
            self._withdraw()

    def _withdraw(self) -> None:
        with self._lock:
            self._expected -= 1

    def submit(self, array: np.ndarray, announcement: dict | None = None) -> np.ndarray:
        """Predicts one array as part of a batch; returns its output row (blocks until done).

        Raises:
            Exception: whatever the model call raised for this array alone.
        """
        return self.enqueue(array, announcement).result()

    def enqueue(self, array: np.ndarray, announcement: dict | None = None) -> Future:
        """:meth:`submit` without waiting: the future of the array's output row."""
        self._start()
        future: Future = Future()
        with self._lock:  # in the queue and no longer announced at once: a batch never waits for it twice
            self._queue.put((np.asarray(array), future, time.perf_counter()))
            if announcement is not None and announcement.get("open"):
                announcement["open"] = False
                self._expected -= 1
        return future

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="timl-batcher", daemon=True)
                    self._thread.start()

    def _collect(self) -> list:
        """One batch: the first waiting array, every array already queued, then those announced (up to the wait)."""
        batch = [self._queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            with self._lock:
                expected = self._expected
            remaining = deadline - time.monotonic()
            if (expected <= 0 and len(batch) >= self._in_flight) or remaining <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=min(remaining, 0.002)))
            except queue.Empty:
                continue
        return batch

    def _run(self) -> None:
        while True:
            batch = self._collect()
            arrays = [array for array, _, _ in batch]
            try:
                outputs = self._call(arrays, [queued for _, _, queued in batch])
            except Exception as error:  # noqa: BLE001 - one bad input must not fail the others
                self._remember_in_flight(len(batch))
                if len(batch) == 1:
                    batch[0][1].set_exception(error)
                    continue
                logger.info("A batch of %d failed (%s); answering its requests one by one.", len(batch), error)
                for array, future, queued in batch:
                    try:
                        future.set_result(self._call([array], [queued])[0])
                    except Exception as single_error:  # noqa: BLE001
                        future.set_exception(single_error)
                continue
            self._remember_in_flight(len(batch))
            for (_, future, _), output in zip(batch, outputs):
                future.set_result(output)

    def _remember_in_flight(self, answered: int) -> None:
        """How many requests the next batch waits for: this batch's, and those that arrived during its model call
        (the clients a batch missed join the next one instead of trailing behind it for good)."""
        with self._lock:
            self._in_flight = min(self.max_size, answered + self._expected + self._queue.qsize())

    def _call(self, arrays: list[np.ndarray], queued: list[float]) -> np.ndarray:
        """One model call; ``queued``: when each array entered the queue (``time.perf_counter``)."""
        started = time.perf_counter()
        outputs = np.asarray(self.predict(np.stack(arrays)))
        if len(outputs) != len(arrays):
            raise RuntimeError(f"The model answered {len(outputs)} rows for a batch of {len(arrays)}.")
        self.sizes[len(arrays)] += 1
        if self.observe is not None:
            self.observe(len(arrays), time.perf_counter() - started, [started - entered for entered in queued])
        return outputs

    @property
    def calls(self) -> int:
        """Model calls made."""
        return sum(self.sizes.values())

    @property
    def arrays(self) -> int:
        """Arrays answered."""
        return sum(size * count for size, count in self.sizes.items())

    def stats(self) -> dict:
        """Model calls, arrays answered, how many calls had each batch size, and requests announced (decoding)."""
        with self._lock:
            decoding = self._expected
        return {"model_calls": self.calls, "images": self.arrays, "decoding": decoding,
                "batch_sizes": {str(size): count for size, count in sorted(self.sizes.items())},
                "max_size": self.max_size, "max_wait_ms": self.max_wait * 1000}
