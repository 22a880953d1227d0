"""The review queue's uncertainty order (EVALUATION_ORDER ``uncertainty``), computed outside the requests.

How unsure the model is of each image of EVALUATION_IMAGES_DIR: 1 - (top probability - second), 1 for a tie.
A background thread of the worker predicts the images not scored yet, :data:`SCORING_BATCH` per model call, once
per file (its path, size and modification time); a listing never waits for it and orders what is scored so far.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from timl.errors import ImageError

logger = logging.getLogger(__name__)

#: Images predicted per model call: scoring a folder holds one batch of model inputs at a time.
SCORING_BATCH = 32


def _file_key(path: Path) -> tuple:
    """The cache key of an image file: a changed file (size or modification time) is scored again."""
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


class UncertaintyRanking:
    """How unsure the model is of each review image, computed in batches by one background thread per worker.

    Args:
        prepare: the model input of one image file (decoded and resized); raises ImageError for an unreadable file.
        predict: the probabilities of a stack of model inputs.
        batch_size: images per model call. Defaults to ``SCORING_BATCH``.
    """

    def __init__(self, prepare: Callable[[Path], np.ndarray], predict: Callable[[np.ndarray], np.ndarray],
                 batch_size: int = SCORING_BATCH):
        self._prepare = prepare
        self._predict = predict
        self.batch_size = batch_size
        self._scores: dict[tuple, float] = {}
        self._unreadable: set[tuple] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def scores(self, paths: list[Path]) -> list[float | None]:
        """Each image's uncertainty so far: None for the images not scored yet (or unreadable). Starts scoring the
        images not scored yet in the background, unless that is already under way; never waits for it."""
        keys = [_file_key(path) for path in paths]
        with self._lock:
            waiting = [(key, path) for key, path in zip(keys, paths)
                       if key not in self._scores and key not in self._unreadable]
            if waiting and not self.busy:
                self._thread = threading.Thread(target=self._score_all, args=(waiting,), daemon=True,
                                                name="timl-uncertainty")
                self._thread.start()
            return [self._scores.get(key) for key in keys]

    @property
    def busy(self) -> bool:
        """Whether the background thread is scoring images."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Waits for the scoring under way (if any) to end; returns whether it has ended."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.busy

    def _score_all(self, waiting: list[tuple[tuple, Path]]) -> None:
        try:
            for start in range(0, len(waiting), self.batch_size):
                self._score_batch(waiting[start:start + self.batch_size])
        except Exception as error:  # the next listing tries again; image names stay out of the log
            logger.warning("Scoring the review images by uncertainty stopped (%s); the next listing retries.",
                           type(error).__name__)

    def _score_batch(self, batch: list[tuple[tuple, Path]]) -> None:
        arrays, keys = [], []
        for key, path in batch:
            try:
                arrays.append(self._prepare(path))
                keys.append(key)
            except ImageError:
                with self._lock:
                    self._unreadable.add(key)
        if not arrays:
            return
        probabilities = np.asarray(self._predict(np.stack(arrays)))
        top = np.sort(probabilities, axis=1)[:, ::-1]
        margins = top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0)
        with self._lock:
            self._scores.update({key: float(1 - margin) for key, margin in zip(keys, margins)})
