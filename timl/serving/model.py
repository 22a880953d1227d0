"""The model of a server worker: loaded once, on first use; classifications batched, explanations queued.

:class:`ModelHolder` is what the routes use: :meth:`ModelHolder.classify` (decoding in the request's thread,
the model call batched with concurrent requests: :mod:`timl.serving.batching`) and
:meth:`ModelHolder.explain` (in an explanation slot: :mod:`timl.serving.explaining`).
"""

from __future__ import annotations

import threading

import numpy as np

from timl.serving.batching import Batcher
from timl.serving.config import ServerConfig, load_server_classifier
from timl.serving.explaining import ExplanationQueue, render

class ModelHolder:
    """One worker's model: loaded once, on first use, thread-safely; its batcher and its explanation queue.

    Args:
        config: the server configuration (model, batching and explanation limits).
        classifier: a ready classifier (tests); its explanations then run in threads, not processes.
    """

    def __init__(self, config: ServerConfig, classifier=None):
        self.config = config
        self._classifier = classifier
        self._lock = threading.Lock()
        self.batcher = Batcher(self._predict, config.batch_max_size, config.batch_max_wait_ms / 1000)
        self.explanations = ExplanationQueue.for_server(config, classifier)

    @property
    def loaded(self) -> bool:
        return self._classifier is not None

    @property
    def classifier(self):
        if self._classifier is None:
            with self._lock:
                if self._classifier is None:
                    self._classifier = load_server_classifier(self.config)
        return self._classifier

    def _predict(self, arrays: np.ndarray) -> np.ndarray:
        return self.classifier.predict_arrays(arrays, batch_size=max(len(arrays), 1))

    def classify(self, image, announcement: dict | None = None) -> np.ndarray:
        """The probabilities of one decoded image; the model call is shared with concurrent requests.

        Args:
            image: the decoded image.
            announcement: from ``batcher.expect()``, entered before the upload was read and decoded, so that a
                batch being formed waits for this request.
        """
        array = self.classifier.preprocessing(image)
        return self.batcher.submit(array, announcement)

    def explain(self, image, method: str, layer: str | None, class_index: int | None, seed: int | None,
                params: dict) -> dict:
        """One explanation (see :func:`timl.serving.explaining.render`), computed in an explanation slot."""
        return self.explanations.run(render, image, method, layer, class_index, seed, params)
