"""A TIML model run by ONNX Runtime: the exported ``model.onnx`` of :mod:`timl.exporting`, with the Keras model's
own input (RGB float32 in [0, 1], resized) and output (the probabilities).

Used by the export check, the server's ``INFERENCE_BACKEND onnxruntime`` and ``bench/serve_load.py``. The
``onnxruntime`` package (extra ``export``) is imported here alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from timl.errors import ModelError


def _session(path: Path, threads: int):
    try:
        import onnxruntime
    except ImportError as error:
        raise ModelError("ONNX Runtime is not installed: pip install 'timl[export]' (onnxruntime). "
                         f"Received: {error}") from error
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only
    # no busy-waiting between calls: a server's workers (and their decoding threads) share the cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel:
    """An ONNX model of one image input, called like a Keras model by :func:`timl.classifier.run_batches`.

    Args:
        path: the ``.onnx`` file.
        threads: ONNX Runtime's threads per call (0: its default, one per core).

    Raises:
        ModelError: ONNX Runtime is not installed, or the file is no ONNX model of one input.
    """

    def __init__(self, path: str | Path, threads: int = 0):
        self.path = Path(path)
        try:
            self.session = _session(self.path, threads)
        except ModelError:
            raise
        except Exception as error:  # onnxruntime raises its own exception types
            raise ModelError(f"Cannot load the ONNX model {self.path}: {error}") from error
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"The ONNX model {self.path} takes {len(inputs)} inputs; TIML runs models of one "
                             f"image input. Received: inputs={[item.name for item in inputs]}")
        self.input_name = inputs[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.input_shape = tuple(inputs[0].shape)
        self.output_shape = tuple(self.session.get_outputs()[0].shape)

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        """The probabilities of a batch of images (N, S, S, 3), float32 in [0, 1]."""
        return self.session.run([self.output_name], {self.input_name: np.asarray(images, np.float32)})[0]
