"""Explanations that don't block classification: their own queue, their own processes, their own limits.

A RISE explanation runs the model thousands of times; computed in the worker beside ``/classify`` it would take
the cores and the model away from every classification for seconds. Here each worker has
``EXPLAIN_CONCURRENCY`` explanation slots, each a process of its own at a low CPU priority holding its own
copy of the model (loaded on its first explanation): the operating system gives the cores to classification
first and explanations take what is left. At most ``EXPLAIN_QUEUE`` more explanations wait for a slot; beyond
that a request gets 503 with ``Retry-After`` (the seconds the queue ahead is expected to take). An explanation
that runs longer than ``EXPLAIN_TIMEOUT_S`` gets 504 and its process is stopped (the next one starts afresh).

A server built around a ready :class:`~timl.classifier.Classifier` object (tests, notebooks) has no model file
for a process to load: its explanations run in threads of the worker, with the same queue and limits, except
that a thread past its time limit cannot be stopped and keeps its slot until it ends.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable

from loky import BrokenProcessPool, ProcessPoolExecutor
from loky.backend.context import LokyContext

from timl.errors import TimlError

logger = logging.getLogger(__name__)

_PROCESS_CLASSIFIER = None  # the model of an explanation process, loaded by _load_in_process

#: The explanation processes' CPU priority: under full classification load each gets about a tenth of a core
#: (Linux weighs nice 10 at 110 against 1024 for nice 0), so explanations progress while /classify keeps its
#: latency; at 19 (weight 15) they starved while classification kept the cores busy.
NICENESS = 10


class QueueFull(TimlError):
    """Every explanation slot is busy and the queue is full (503 with Retry-After)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class ExplanationTimeout(TimlError):
    """An explanation ran past its time limit (504)."""


class ExplanationFailed(TimlError):
    """The explanation process died or could not load the model (503)."""


#: The images an explanation answer can carry (base64 PNGs): the grey saliency, the coloured heatmap, the composite.
IMAGE_KINDS = ("grey", "heatmap", "comp")


def render(classifier, image, method: str, layer: str | None, class_index: int | None, seed: int | None,
           params: dict, size: int | None = None, kinds: tuple[str, ...] = IMAGE_KINDS) -> dict:
    """One explanation as the API answers it: the map's facts and its images as base64 PNGs.

    Runs where the explanation is computed (an explanation process, or a thread), so the PNG encoding is not the
    worker's either. ``classifier`` is None in an explanation process: its own model is used.

    Args:
        size: the images fit within ``size`` x ``size`` pixels (what a page shows); None keeps the original size.
        kinds: which of :data:`IMAGE_KINDS` to return.
    """
    from timl import xai

    classifier = classifier or _PROCESS_CLASSIFIER
    explanation = xai.explain(classifier.model, image, method, layer=layer, class_index=class_index,
                              preprocessing=classifier.preprocessing, seed=seed, **params)
    images = {"grey": explanation.grey, "heatmap": explanation.heatmap, "comp": explanation.composite}
    answer = {"layer": explanation.layer, "class_index": explanation.class_index, "score": explanation.score}
    for kind in kinds:
        picture = images[kind]
        if size and max(picture.size) > size:
            picture = picture.copy()
            picture.thumbnail((size, size))
        answer[kind] = xai.png_base64(picture)
    return answer


def _load_in_process(parent: int, config, loading_niceness: int = NICENESS) -> None:
    """The explanation process's initializer: low priority (nice 10), follows its parent, loads the model once.

    Started by the server's warm-up (``loading_niceness`` 0), it loads at the normal priority (no request is
    answered yet, and /health waits for it) and takes the low one after."""
    from timl.serving.config import load_server_classifier
    from timl.workers import prepare_process

    global _PROCESS_CLASSIFIER
    prepare_process(parent, ("timl.xai",), niceness=loading_niceness)
    _PROCESS_CLASSIFIER = load_server_classifier(config)
    if loading_niceness < NICENESS:
        with contextlib.suppress(OSError):
            os.nice(NICENESS - loading_niceness)


def _ready() -> bool:
    return True


class _ProcessSlot:
    """One explanation process (loky: it never re-imports the server's ``__main__``), started on first use."""

    def __init__(self, config):
        self._config = config
        self._pool = None
        self.loading_niceness = NICENESS  # the warm-up's process loads at 0

    def submit(self, function: Callable, *args) -> Future:

        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, context=LokyContext(), initializer=_load_in_process,
                                             initargs=(os.getpid(), self._config, self.loading_niceness))
            self.loading_niceness = NICENESS  # a process started later (after a timeout) loads at the low one
            self._pool.submit(_ready).result()  # started and the model loaded: not counted in the time limit
        return self._pool.submit(function, None, *args)

    def stop(self) -> bool:
        """Stops the process (a runaway explanation); the slot is free at once. Returns True."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, kill_workers=True)
            self._pool = None
        return True


class _ThreadSlot:
    """One explanation thread of the worker, for a server built around a ready classifier object."""

    def __init__(self, classifier):
        self._classifier = classifier
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="timl-explain")

    def submit(self, function: Callable, *args) -> Future:
        return self._pool.submit(function, self._classifier, *args)

    def stop(self) -> bool:
        """A thread cannot be stopped: the slot stays busy until the explanation ends. Returns False."""
        return False


class ExplanationQueue:
    """Runs explanations in a bounded number of slots with a bounded queue and a time limit each.

    Args:
        slots: the slots (explanation processes or threads).
        max_waiting: explanations that may wait for a slot; more raise :class:`QueueFull`.
        timeout: seconds an explanation may run; longer raises :class:`ExplanationTimeout`.
    """

    def __init__(self, slots: list, max_waiting: int, timeout: float):
        self._free = list(slots)
        self._all = list(slots)
        self._slots = len(slots)
        self.max_waiting, self.timeout = max_waiting, timeout
        self._condition = threading.Condition()
        self._admitted = 0  # running + waiting
        self._seconds = 5.0  # running mean of an explanation's duration, for Retry-After
        self.completed = self.rejected = self.timed_out = 0

    @classmethod
    def for_server(cls, config, classifier=None) -> "ExplanationQueue":
        """Process slots for a configured model; thread slots around a ready ``classifier``."""
        count = config.explain_concurrency
        slots = [_ThreadSlot(classifier) if classifier is not None else _ProcessSlot(config) for _ in range(count)]
        return cls(slots, config.explain_queue, config.explain_timeout_s)

    def run(self, function: Callable, *args) -> Any:
        """Runs ``function(classifier, *args)`` in a free slot (waiting for one if the queue has room).

        Raises:
            QueueFull: every slot busy and ``max_waiting`` explanations already waiting.
            ExplanationTimeout: it ran longer than ``timeout`` seconds.
        """
        with self._condition:
            if self._admitted >= self._slots + self.max_waiting:
                self.rejected += 1
                retry = math.ceil(self._seconds * (self._admitted - self._slots + 1) / self._slots)
                raise QueueFull(f"The server is busy with {self._admitted} explanations ({self._slots} at once, "
                                f"{self.max_waiting} waiting); try again in about {retry} s.", max(1, retry))
            self._admitted += 1
            while not self._free:
                self._condition.wait()
            slot = self._free.pop()
        start = time.monotonic()
        future = None
        try:
            future = slot.submit(function, *args)
            result = future.result(timeout=self.timeout)
        except BrokenProcessPool as error:
            slot.stop()
            raise ExplanationFailed(f"The explanation process stopped ({error.__cause__ or error}); the next "
                                    "explanation starts a new one.") from None
        except FutureTimeout:
            self.timed_out += 1
            raise ExplanationTimeout(f"The explanation took longer than the limit of {self.timeout:g} s "
                                     "(EXPLAIN_TIMEOUT_S) and was stopped. Ask for fewer masks or samples, or "
                                     "raise the limit.") from None
        finally:
            self._release(slot, future)
        with self._condition:
            self.completed += 1
            self._seconds = 0.8 * self._seconds + 0.2 * (time.monotonic() - start)
        return result

    def warm_up(self, function: Callable, *args) -> None:
        """Runs ``function(classifier, *args)`` once in every slot before any request (each explanation process
        started, its model loaded and traced), not counted in :meth:`stats`; call before the server is ready.

        Raises:
            Exception: what the function raised, or a timeout past ``timeout`` seconds.
        """
        with self._condition:
            slots = list(self._free)
        for slot in slots:
            if isinstance(slot, _ProcessSlot):
                slot.loading_niceness = 0  # no request waits yet: load at the normal priority
            slot.submit(function, *args).result(timeout=self.timeout)

    def close(self) -> None:
        """Stops every explanation process (the worker is stopping)."""
        for slot in self._all:
            slot.stop()

    def _release(self, slot, future: Future | None) -> None:
        def free(_=None):
            with self._condition:
                self._free.append(slot)
                self._admitted -= 1
                self._condition.notify()

        if future is None or future.done() or slot.stop():
            free()
        else:  # a thread past its limit: its slot is free when it ends
            future.add_done_callback(free)

    def stats(self) -> dict:
        with self._condition:
            return {"slots": self._slots, "max_waiting": self.max_waiting, "admitted": self._admitted,
                    "completed": self.completed, "rejected": self.rejected, "timed_out": self.timed_out,
                    "timeout_s": self.timeout}
