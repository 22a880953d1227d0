"""The model of a server worker: loaded once, on first use; classifications batched, explanations queued.

:class:`ModelHolder` is what the routes use: :meth:`ModelHolder.decoding` (one of DECODE_CONCURRENCY decoding
slots), :meth:`ModelHolder.classify` (decoding in the request's thread, the model call batched with concurrent
requests: :mod:`timl.serving.batching`), :meth:`ModelHolder.explain` (in an explanation slot:
:mod:`timl.serving.explaining`) and :meth:`ModelHolder.uncertainty` (the review order, computed in the
background: :mod:`timl.serving.ranking`).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import threading
from pathlib import Path

import numpy as np

from timl.errors import TimlError
from timl.serving.batching import Batcher
from timl.serving.config import ServerConfig, load_server_classifier, model_problem
from timl.serving.explaining import IMAGE_KINDS, ExplanationQueue, render
from timl.serving.metrics import ServerMetrics
from timl.serving.ranking import UncertaintyRanking

logger = logging.getLogger(__name__)


#: Seconds a worker's warm-up waits for the server's model process to load and warm its model.
MODEL_PROCESS_START_S = 600


class ModelUnavailable(TimlError):
    """The configured model could not be loaded (503). The message names server paths: it is for the server log
    only, and a client is told no more than that the model could not be loaded."""


class NoModelCard(TimlError, LookupError):
    """The served model has no model card (404): it is not a registered version, or one registered before TIML
    wrote cards."""


class ModelHolder:
    """One worker's model: loaded once, on first use, thread-safely; its batcher and its explanation queue.

    Args:
        config: the server configuration (model, batching and explanation limits).
        classifier: a ready classifier (tests); its explanations then run in threads, not processes.
        metrics: the app's Prometheus metrics (none counted without).
    """

    def __init__(self, config: ServerConfig, classifier=None, metrics: ServerMetrics | None = None):
        self.config = config
        self._classifier = classifier
        self._lock = threading.Lock()
        self.metrics = metrics or ServerMetrics(enabled=False)
        self.batcher = Batcher(self._predict, config.batch_max_size, config.batch_max_wait_ms / 1000,
                               self.metrics.batch)
        self.explanations = ExplanationQueue.for_server(config, classifier)
        self._description: dict | None = None
        self._card: dict | None = None
        self._predictions: dict = {}
        self._decode_slots = threading.BoundedSemaphore(config.decode_concurrency)
        self.ranking = UncertaintyRanking(self._prepare_file, self._probabilities)
        self._load_error: str | None = None
        self._found = classifier is not None
        self._warming: threading.Event | None = None  # set once warm; None: no warm-up (ready at once)
        self._workers: tuple[Path | None, int] = (None, 1)  # the server's ready folder and worker count
        self._inference = None
        self._remote = None  # the model process's client, when the server runs one (use_model_process)

    def use_model_process(self, client) -> None:
        """Sends this worker's model calls to the server's model process (:mod:`timl.serving.model_process`)
        instead of calling its own model: ``client`` becomes :attr:`batcher`."""
        self.batcher = self._remote = client

    def problem(self) -> str | None:
        """Why the model cannot be loaded (for the operator: it names server paths), or None.

        Until the model is found once, the configured model is looked for on each call (cheaply:
        :func:`timl.serving.config.model_problem`, so a model registered after the start is found); a failed load
        is the problem until a later load succeeds."""
        if self._classifier is not None:
            return None
        if self._load_error is None and not self._found:
            problem = model_problem(self.config)
            self._found = problem is None
            return problem
        return self._load_error

    @property
    def loaded(self) -> bool:
        return self._classifier is not None

    @property
    def classifier(self):
        if self._classifier is None:
            with self._lock:
                if self._classifier is None:
                    try:
                        self._classifier = load_server_classifier(self.config)
                    except Exception as error:  # a missing, refused or unreadable model: tried again next time
                        self._load_error = f"The model {self.config.model} could not be loaded: {error}"
                        raise ModelUnavailable(self._load_error) from error
                    self._load_error = None
        return self._classifier

    @property
    def inference(self):
        """The classifier /classify's model calls run: :attr:`classifier`, or with INFERENCE_BACKEND onnxruntime
        the same model converted to ONNX once (:func:`timl.exporting.onnx_classifier`)."""
        classifier = self.classifier
        if self.config.inference_backend == "keras":
            return classifier
        if self._inference is None:
            with self._lock:
                if self._inference is None:
                    from timl.exporting import onnx_classifier

                    try:
                        self._inference = onnx_classifier(classifier)
                    except Exception as error:  # a converter missing or failing: the operator is told why
                        raise ModelUnavailable(f"The model {self.config.model} could not be run by ONNX Runtime "
                                               f"(INFERENCE_BACKEND onnxruntime): {error}") from error
        return self._inference

    def describe(self) -> dict:
        """The model as a person should see it: ``name``, ``version`` (registered models), ``date``, ``run_id``,
        and ``label`` (one line, e.g. "skin-lesions v3 · 2026-11-30"); never a server path."""
        if self._description is None:
            from timl import tracking

            classifier = self.classifier
            source = classifier.source or {}
            facts = {}
            if source.get("model_uri"):
                facts = tracking.model_card_facts(source["model_uri"], source.get("run_id"))
            else:
                path = Path(self.config.model)
                facts = {"name": path.stem}
                if path.is_file():
                    facts["date"] = datetime.date.fromtimestamp(path.stat().st_mtime).isoformat()
            facts.setdefault("name", Path(self.config.model).stem or "model")
            version = f" v{facts['version']}" if facts.get("version") else (
                f" (run {facts['run_id'][:8]})" if facts.get("run_id") else "")
            facts["label"] = f"{facts['name']}{version}" + (f" · {facts['date']}" if facts.get("date") else "")
            self._description = facts
        return self._description

    def model_card(self) -> dict:
        """The model card of the served registered version (the one :meth:`describe` names): ``{"json": ...,
        "markdown": ...}`` as ``timl.register`` wrote them.

        Raises:
            NoModelCard: the model is a file or a run, or its version has no card.
        """
        if self._card is None:
            from timl import model_card, tracking

            facts = self.describe()
            files = (tracking.version_files(f"models:/{facts['name']}/{facts['version']}", tracking.TAG_MODEL_CARD)
                     if facts.get("version") else None) or {}
            if model_card.CARD_JSON not in files:
                raise NoModelCard(f"The served model ({facts['label']}) has no model card. Cards are written when a "
                                  "version is registered (python -m timl.register, or train --register); serve "
                                  "models:/NAME@ALIAS or models:/NAME/VERSION of such a version to have one.")
            import json

            self._card = {"json": json.loads(files[model_card.CARD_JSON]),
                          "markdown": files.get(model_card.CARD_MARKDOWN, "")}
        return self._card

    def review_facts(self) -> dict:
        """What every expert answer records of the model: its URI (:meth:`model_uri`) and its classes."""
        return {"model": self.model_uri(), "classes": list(self.classifier.class_names)}

    def model_uri(self) -> str:
        """The served model as a URI a review's provenance can load again: ``models:/NAME/VERSION`` for a
        registered version (an alias resolved to its version), else the configured ``runs:/`` or ``models:/`` URI;
        a model file by its file name (the server's paths are never told to clients)."""
        facts = self.describe()
        if facts.get("version"):
            return f"models:/{facts['name']}/{facts['version']}"
        source = self.classifier.source or {}
        return source.get("model_uri") or Path(self.config.model).name

    @contextlib.contextmanager
    def decoding(self):
        """One of the worker's DECODE_CONCURRENCY decoding slots, held while an image is decoded (and, for a
        classification, resized): more decodes wait their turn, so few full-size images are in memory at once."""
        with self._decode_slots, self.metrics.decoding():
            yield

    def decode_file(self, path: Path):
        """A server-side image (a review image) decoded in a decoding slot, under MAX_IMAGE_PIXELS."""
        from timl.images import decode_image

        with self.decoding():
            return decode_image(path, max_pixels=self.config.max_image_pixels, name=path.name)

    def _prepare_file(self, path: Path) -> np.ndarray:
        """The model input of a server-side image, decoded and resized in a decoding slot."""
        from timl.images import decode_image

        preprocessing = self.classifier.preprocessing
        with self.decoding():
            return preprocessing(decode_image(path, max_pixels=self.config.max_image_pixels, name=path.name))

    def uncertainty(self, paths: list[Path]) -> list[float | None]:
        """How unsure the model is of each image: 1 - (top probability - second), 1 for a tie; None for the images
        not scored yet (or unreadable). Never waits: the images not scored yet are predicted in the background,
        in batches, once per file (path, size and modification time); see :mod:`timl.serving.ranking`."""
        return self.ranking.scores(paths)

    def prediction(self, path: Path) -> tuple[str, float]:
        """The model's predicted class of an image file and its probability, as an expert answer records them;
        cached per file (path, size and modification time)."""
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._predictions:
            probabilities, _ = self.submit(self._prepare_file(path), None)
            index = int(probabilities.argmax())
            self._predictions[key] = (self.classifier.class_names[index], float(probabilities[index]))
        return self._predictions[key]

    def _predict(self, arrays: np.ndarray) -> np.ndarray:
        """The batcher's model call: the probabilities (n, C); with the TTA setting, the mean over the views and
        their spread stacked (n, 2, C), every view of the batch in one model call; with a model process, its
        batches' rows."""
        if self._remote is not None:
            return self._remote.predict(arrays)
        if self.config.tta == "none":
            return self.inference.predict_arrays(arrays, batch_size=max(len(arrays), 1))
        views = self.inference.predict_views(arrays, self.config.tta, batch_size=max(len(arrays), 1))
        return np.stack([views.mean, views.std], axis=1)

    def _probabilities(self, arrays: np.ndarray) -> np.ndarray:
        """The probabilities (n, C) of a batch (with the TTA setting, averaged over the views)."""
        outputs = self._predict(arrays)
        return outputs[:, 0] if outputs.ndim == 3 else outputs

    def submit(self, array: np.ndarray, announcement: dict | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """One preprocessed image through the batcher: its probabilities, and with the TTA setting the views'
        spread per class (else None)."""
        output = self.batcher.submit(array, announcement)
        return (output[0], output[1]) if output.ndim == 2 else (output, None)

    def classify(self, image, announcement: dict | None = None) -> np.ndarray:
        """The probabilities of one decoded image; the model call is shared with concurrent requests.

        Args:
            image: the decoded image.
            announcement: from ``batcher.expect()``, entered before the upload was read and decoded, so that a
                batch being formed waits for this request.
        """
        array = self.classifier.preprocessing(image)
        return self.submit(array, announcement)[0]

    def explain(self, image, method: str, layer: str | None, class_index: int | None, seed: int | None,
                params: dict, size: int | None = None, kinds: tuple[str, ...] = IMAGE_KINDS) -> dict:
        """One explanation (see :func:`timl.serving.explaining.render`), computed in an explanation slot."""
        with self.metrics.explaining():
            return self.explanations.run(render, image, method, layer, class_index, seed, params, size, kinds)

    @property
    def warming(self) -> bool:
        """Whether the warm-up (:meth:`start_warm_up`) is still running, here or in another worker of the server:
        /health is not ready until every worker is warm (a request may reach any of them), nor while the server's
        model process is not (starting, or restarting after it stopped)."""
        if self._remote is not None and not self._remote.ready:
            return True
        if self._warming is None:
            return False
        if not self._warming.is_set():
            return True
        folder, workers = self._workers
        return folder is not None and len(list(folder.iterdir())) < workers

    def start_warm_up(self, level: str = "all", ready_folder: Path | None = None, workers: int = 1) -> None:
        """Loads and warms the model (and with ``level`` "all" the explanation slots) in the background
        (:meth:`warm_up`), so the first request waits no longer than the next; :attr:`warming` until done.

        Args:
            level: "all" or "model" (see :data:`WARM_START_LEVELS`).
            ready_folder: the server's folder where each warm worker leaves a file named by its pid (gunicorn:
                the master removes a stopped worker's); None: this worker alone.
            workers: how many workers the server runs.
        """
        self._warming = threading.Event()
        self._workers = (ready_folder, workers)
        threading.Thread(target=self.warm_up, args=(level == "all",), name="timl-warm-up", daemon=True).start()

    def warm_up(self, explanations: bool = True) -> None:
        """Loads the model, decodes a small image and makes one prediction (with a model process: waits until it
        has warmed its own); meanwhile (in parallel: each
        explanation slot is a process of its own) one explanation of the default method in every explanation slot.
        None of them is counted in /health or /metrics. A failure is logged (the model's own load failure is
        /health's 503 as before) and ends the warm-up."""
        from PIL import Image

        from timl.images import decode_image

        image = decode_image(Image.new("RGB", (64, 48), (128, 96, 64)))
        explaining = threading.Thread(target=self._warm_explanations, args=(image,), name="timl-warm-explanations",
                                      daemon=True)
        if explanations:
            explaining.start()
        try:
            classifier = self.classifier
            array = classifier.preprocessing(image)[np.newaxis]
            if self._remote is None:
                self._predict(array)
            elif not self._remote.wait_until_ready(MODEL_PROCESS_START_S):  # it warms its model itself
                raise ModelUnavailable(f"the model process was not ready within {MODEL_PROCESS_START_S} s")
            self.metrics.model_labels()
        except Exception as error:  # noqa: BLE001 - the server still answers; the first requests are slower
            logger.warning("The warm-up failed (%s); requests load what they need when they come.", error)
        finally:
            if explanations:
                explaining.join()
            if self._workers[0] is not None:
                (self._workers[0] / str(os.getpid())).touch()
            if self._warming is not None:
                self._warming.set()

    def _warm_explanations(self, image) -> None:
        from timl import xai

        try:
            self.explanations.warm_up(render, image, xai.DEFAULT_EXPLAINER, None, None, 0, {}, 64, ("heatmap",))
        except Exception as error:  # noqa: BLE001 - the explanation process loads again on the first explanation
            logger.warning("The explanation warm-up failed (%s); the first explanation loads its model.", error)


#: The environment variable that says what the server warms at its start, before /health is ready: ``all`` (the
#: default: the model and the explanation processes), ``model`` (the model only), ``none`` (everything on first use).
WARM_START_VARIABLE = "TIML_WARM_START"
WARM_START_LEVELS = ("all", "model", "none")


def warm_start_from_environment() -> str:
    """The warm start level of ``TIML_WARM_START`` (default ``all``).

    Raises:
        ConfigError: another value, named with the accepted ones.
    """
    from timl.errors import ConfigError

    level = os.environ.get(WARM_START_VARIABLE, "").strip().lower() or "all"
    if level not in WARM_START_LEVELS:
        raise ConfigError(f"{WARM_START_VARIABLE} must be one of {', '.join(WARM_START_LEVELS)}. "
                          f"Received: {WARM_START_VARIABLE}={os.environ[WARM_START_VARIABLE]!r}")
    return level
