"""Prometheus metrics of the TIML server: ``GET /metrics`` in the Prometheus text format (``prometheus-client``).

Under gunicorn every worker process writes its counts to files in one folder (prometheus-client's multiprocess
mode, ``PROMETHEUS_MULTIPROC_DIR``) and a scrape of any worker sums them all: :func:`multiprocess_directory` makes
that folder when the operator names none (and ``timl.serve`` removes it at the end), :func:`worker_exited` forgets
a stopped worker's live gauges. Without the variable (tests, ``flask run``) each app counts in its own registry.

What is counted (:data:`METRIC_NAMES`): requests by route (the URL rule, never the raw path) and status, the
latency of classify and explain, the dynamic batcher's batch sizes (its model calls are their count),
explanations in flight, 503 and 504 answers by reason, images decoded and refused by reason, the model's name and
version, and the predicted classes (a drift signal). Never a file name, a patient datum or a token.

With API tokens (API_TOKENS_FILE) or a METRICS_TOKEN configured, ``/metrics`` needs ``Authorization: Bearer``
with one of them.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from flask import Flask, Response, g, jsonify, request

logger = logging.getLogger(__name__)

#: The variable naming the folder of the workers' metric files (prometheus-client's multiprocess mode).
DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: The route of the scrape.
METRICS_ROUTE = "/metrics"
#: The Flask endpoints whose latency is measured, and their ``route`` label.
TIMED_ENDPOINTS = ("api.classify", "api.explain")
#: Latency buckets (seconds): a classification takes milliseconds, an explanation up to EXPLAIN_TIMEOUT_S.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
#: Model-call and batch-queue buckets (seconds): a CPU model call of one image takes milliseconds.
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
#: Batch-size buckets (images per model call).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: The label of a request that matched no route (a 404): its raw path is never a label.
UNMATCHED = "unmatched"

#: Every metric, as a scrape shows it (a counter's samples end in _total, a histogram's in _bucket/_count/_sum).
METRIC_NAMES = {
    "timl_http_requests_total": "counter{route, method, status}: answered requests",
    "timl_request_duration_seconds": "histogram{route}: latency of classify and explain",
    "timl_batch_size": "histogram: images per model call of the dynamic batcher (_count: the model calls)",
    "timl_model_call_seconds": "histogram: seconds of each model call of the dynamic batcher",
    "timl_batch_queue_seconds": "histogram: seconds each image waited in the batcher's queue before its model call",
    "timl_explanations_in_flight": "gauge: explanations running or waiting for a slot (all workers)",
    "timl_unavailable_total": "counter{status, reason}: 503 and 504 answers",
    "timl_images_decoded_total": "counter: images decoded",
    "timl_images_refused_total": "counter{reason}: images refused",
    "timl_model_info": "gauge{name, version}: 1 for the served model",
    "timl_predictions_total": "counter{name, version, predicted_class}: /classify answers by predicted class",
}

#: Why an image was refused, found in the ImageError's message (the first match): the ``reason`` label.
REFUSAL_REASONS = (("empty", "file is empty"), ("too_large", "exceeds the limit"), ("too_large", "too large"),
                   ("unsupported_format", "unsupported"), ("not_an_image", "not an image"),
                   ("damaged", "damaged or incomplete"))


def refusal_reason(error: Exception) -> str:
    """The ``reason`` label of a refused image: one of REFUSAL_REASONS' names, else ``other``."""
    message = str(error)
    return next((reason for reason, words in REFUSAL_REASONS if words in message), "other")


def unavailable_reason(reason: str | type) -> None:
    """Names why this request is answered 503 or 504 (the ``reason`` label): an error class (``QueueFull`` ->
    ``queue_full``) or a word; a 503 without one (the exposure guard's) counts as ``refused``."""
    name = reason if isinstance(reason, str) else re.sub(r"(?<!^)(?=[A-Z])", "_", reason.__name__).lower()
    g.timl_unavailable = name


class ServerMetrics:
    """The metrics of one app (a gunicorn worker). With ``enabled`` False every method does nothing.

    Args:
        enabled: the METRICS setting.
        model_facts: called once, after the model is loaded: its ``name`` and ``version`` (``describe()``).
    """

    def __init__(self, enabled: bool = True, model_facts=None):
        self.enabled = enabled
        self._model_facts = model_facts
        self._model_labels: tuple[str, str] | None = None
        if not enabled:
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get(DIRECTORY_VARIABLE))
        self.registry = None if self.multiprocess else CollectorRegistry()
        registry = self.registry
        self.requests = Counter("timl_http_requests", "Answered requests by route (URL rule), method and status.",
                                ["route", "method", "status"], registry=registry)
        self.latency = Histogram("timl_request_duration_seconds", "Seconds to answer classify and explain.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_sizes = Histogram("timl_batch_size", "Images per model call of the dynamic batcher.",
                                     buckets=BATCH_BUCKETS, registry=registry)
        self.model_calls = Histogram("timl_model_call_seconds", "Seconds of each model call of the dynamic batcher.",
                                     buckets=CALL_BUCKETS, registry=registry)
        self.queued = Histogram("timl_batch_queue_seconds", "Seconds each image waited in the batcher's queue "
                                "before its model call.", buckets=CALL_BUCKETS, registry=registry)
        self.in_flight = Gauge("timl_explanations_in_flight", "Explanations running or waiting for a slot.",
                               multiprocess_mode="livesum", registry=registry)
        self.unavailable = Counter("timl_unavailable", "503 and 504 answers by reason.", ["status", "reason"],
                                   registry=registry)
        self.decoded = Counter("timl_images_decoded", "Images decoded.", registry=registry)
        self.refused = Counter("timl_images_refused", "Images refused, by reason.", ["reason"], registry=registry)
        self.model_info = Gauge("timl_model_info", "The served model (value 1).", ["name", "version"],
                                multiprocess_mode="max", registry=registry)
        self.predictions = Counter("timl_predictions", "/classify answers by predicted class (a drift signal).",
                                   ["name", "version", "predicted_class"], registry=registry)

    def batch(self, size: int, seconds: float = 0.0, waits: list[float] = ()) -> None:
        """One model call of the dynamic batcher: ``size`` images, the call's ``seconds``, and the seconds each of
        its images waited in the queue (with the call: where a served request's time goes, as Triton's compute and
        queue durations tell)."""
        if self.enabled:
            self.batch_sizes.observe(size)
            self.model_calls.observe(seconds)
            for wait in waits:
                self.queued.observe(wait)

    @contextlib.contextmanager
    def decoding(self):
        """Counts the image decoded in the block, or refused (an ImageError) with its reason."""
        if not self.enabled:
            yield
            return
        from timl.errors import ImageError

        try:
            yield
        except ImageError as error:
            self.refused.labels(refusal_reason(error)).inc()
            raise
        self.decoded.inc()

    @contextlib.contextmanager
    def explaining(self):
        """An explanation in flight (waiting for a slot or running) for the block's duration."""
        if not self.enabled:
            yield
            return
        with self.in_flight.track_inprogress():
            yield

    def model_labels(self) -> tuple[str, str]:
        """The served model's name and version (empty for a model file or a run); sets ``timl_model_info``."""
        if not self.enabled:
            return "", ""
        if self._model_labels is None:
            facts = self._model_facts() if self._model_facts else {}
            self._model_labels = (str(facts.get("name", "")), str(facts.get("version") or ""))
            self.model_info.labels(*self._model_labels).set(1)
        return self._model_labels

    def predicted(self, class_name: str) -> None:
        """One /classify answer predicting ``class_name``."""
        if self.enabled:
            self.predictions.labels(*self.model_labels(), class_name).inc()

    def install(self, app: Flask, tokens) -> None:
        """Counts every request of ``app`` and adds ``GET /metrics``; call before any other ``before_request``
        (so a refused request is timed too).

        Args:
            app: the TIML app.
            tokens: called at the first scrape: the tokens /metrics accepts (none: it is open).
        """
        if not self.enabled:
            return
        app.before_request(self._started)
        app.after_request(self._answered)
        accepted: list[list[bytes]] = []  # read at the first scrape

        @app.get(METRICS_ROUTE)
        def metrics():
            if not accepted:
                accepted.append([token.encode() for token in tokens()])
            if accepted[0] and not _authorised(accepted[0]):
                message = ("/metrics needs a token: send 'Authorization: Bearer TOKEN' with METRICS_TOKEN or an "
                           "API token (a Prometheus scrape config's 'authorization' section).")
                return jsonify(error=message), 401, {"WWW-Authenticate": 'Bearer realm="TIML metrics"'}
            return self.scrape()

    def scrape(self) -> Response:
        """The text format of every worker's metrics (multiprocess mode) or of this app's."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if self._model_facts is not None and self._model_labels is None:
            with contextlib.suppress(Exception):  # the model not loaded (yet): no model_info
                self.model_labels()
        registry = self.registry
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    def _started(self) -> None:
        g.timl_started = time.perf_counter()

    def _answered(self, response):
        rule = request.url_rule
        route = rule.rule if rule is not None else UNMATCHED
        status = response.status_code
        self.requests.labels(route, request.method, str(status)).inc()
        if request.endpoint in TIMED_ENDPOINTS and "timl_started" in g:
            self.latency.labels(route).observe(time.perf_counter() - g.timl_started)
        if status in (503, 504):
            self.unavailable.labels(str(status), g.get("timl_unavailable", "refused")).inc()
        return response


def _authorised(accepted: list[bytes]) -> bool:
    """Whether the request's ``Authorization: Bearer`` token is one of ``accepted`` (each compared in constant time)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    given = token.strip().encode()
    matches = [hmac.compare_digest(given, secret) for secret in accepted]
    return scheme.lower() == "bearer" and any(matches)


def multiprocess_directory() -> tuple[Path, bool]:
    """The folder of the workers' metric files, set in ``PROMETHEUS_MULTIPROC_DIR`` before gunicorn forks them.

    The operator's folder (the variable set) is emptied of an earlier run's metric files, as prometheus-client
    asks; without one a new temporary folder is made.

    Returns:
        The folder, and whether it was made here (the caller removes it at the end: :func:`remove_directory`).
    """
    given = os.environ.get(DIRECTORY_VARIABLE)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):  # counter_123.db, gauge_livesum_123.db, histogram_123.db
            stale.unlink(missing_ok=True)
        return folder, False
    folder = Path(tempfile.mkdtemp(prefix="timl-metrics-"))
    os.environ[DIRECTORY_VARIABLE] = str(folder)
    return folder, True


def remove_directory(folder: Path) -> None:
    """Removes the metrics folder :func:`multiprocess_directory` made, and ``PROMETHEUS_MULTIPROC_DIR`` with it:
    a process started later from this one (a server run in-process, then any server) would count into a folder
    that is gone and fail at its first metric."""
    shutil.rmtree(folder, ignore_errors=True)
    if os.environ.get(DIRECTORY_VARIABLE) == str(folder):
        del os.environ[DIRECTORY_VARIABLE]


def worker_exited(server, worker) -> None:
    """gunicorn's ``child_exit`` hook: a stopped worker's live gauges leave the sums (its counts stay)."""
    process_exited(worker.pid)


def process_exited(pid: int) -> None:
    """A stopped process's live gauges leave the sums (its counts stay): a worker, or the model process."""
    if not os.environ.get(DIRECTORY_VARIABLE):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
