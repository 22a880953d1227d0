"""The MLflow pyfunc of a TIML model: :class:`TimlModel`, :func:`predict_frame` and :func:`log_model`.

:class:`TimlModel` is the ``mlflow.pyfunc.PythonModel`` logged with every trained row: it classifies images
given as base64 strings (``mlflow models serve``), or in-process as bytes or PIL images, and explains them
through params. A scoring request never makes it read a file: a string is base64 or the request is refused.
In-process, :func:`predict_frame` takes paths explicitly. Everything else about a trained model (loading,
preprocessing, batched prediction, the TIML confidence) is :mod:`timl.classifier`'s.

A request's size is bounded: at most :data:`MAX_ROWS` rows (environment variable ``TIML_PYFUNC_MAX_ROWS``),
each image at most :data:`MAX_PIXELS` pixels, decoded one at a time, and ``rise_masks`` within
:data:`RISE_MASKS_RANGE`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import mlflow.pyfunc
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from timl import __version__, xai
from timl.classifier import Classifier, confidence, from_metadata, load_keras_model, read_metadata
from timl.errors import ModelError
from timl.images import SERVING_MAX_PIXELS, decode_image
from timl.tta import get_tta, std_columns
from timl.xai.render import png_base64

logger = logging.getLogger(__name__)

#: The values of the ``explain`` param: none, or an explainer of the registry.
EXPLAIN_CHOICES = ("none", *xai.list_explainers())
DEFAULT_PARAMS = {"explain": "none", "layer": "", "class": "", "rise_masks": 2000, "tta": "none"}

#: Rows one request may hold, unless the environment variable ``TIML_PYFUNC_MAX_ROWS`` says otherwise.
MAX_ROWS = 64
MAX_ROWS_VARIABLE = "TIML_PYFUNC_MAX_ROWS"

#: The pixel cap of an image the pyfunc decodes: the server's (about 25 megapixels, a dermoscopy camera's frame).
MAX_PIXELS = SERVING_MAX_PIXELS

#: The accepted values of the ``rise_masks`` param (each mask is one forward pass of the model).
RISE_MASKS_RANGE = (1, 10_000)


class RequestError(MlflowException, ModelError):
    """A scoring request TIML refuses: MLflow's scoring server answers it 400 (INVALID_PARAMETER_VALUE) with the
    message; in-process it is a :class:`~timl.errors.ModelError` (a ``ValueError``)."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def max_rows() -> int:
    """The row cap of one request: ``TIML_PYFUNC_MAX_ROWS`` when set, else :data:`MAX_ROWS`.

    Raises:
        ModelError: the variable is not a positive integer.
    """
    text = os.environ.get(MAX_ROWS_VARIABLE, "").strip()
    if not text:
        return MAX_ROWS
    if not text.isdigit() or int(text) < 1:
        raise ModelError(f"{MAX_ROWS_VARIABLE} must be a positive integer (rows per request). Received: {text!r}")
    return int(text)


def _request_image(value: Any, row: int) -> Any:
    """One cell of column ``image`` of a request as decode_image takes it: a base64 string becomes bytes; bytes
    and PIL images (in-process) pass. Never a path: a string is not looked up as a file, so the answer is the same
    whether or not it names one."""
    from PIL import Image

    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(f"Column 'image', row {row}: expected a base64-encoded image file (JPEG, PNG, BMP, "
                               f"TIFF or DICOM). Received: a string that is not base64") from None
    if isinstance(value, (bytes, bytearray, memoryview, Image.Image)):
        return value
    raise RequestError(f"Column 'image', row {row}: expected a base64-encoded image file (in-process also bytes or "
                       f"a PIL image). Received: a value of type {type(value).__name__}")


class TimlModel(mlflow.pyfunc.PythonModel):
    """The MLflow pyfunc of a TIML model: classifies images and, with params, explains them.

    Input: a DataFrame with a column ``image`` of base64-encoded image files (in-process also bytes or PIL
    images; never paths: use :func:`predict_frame` for files), at most :func:`max_rows` rows. Output: one
    probability column per class, ``predicted_class``, ``confidence_<class>`` per class, and with
    ``params={"explain": METHOD}`` base64 PNG columns ``grey``, ``heatmap``, ``comp``; with
    ``params={"tta": PRESET}`` the probabilities are averaged over the preset's views and ``tta_std_<class>``
    columns follow the others.
    """

    classifier: Classifier | None = None
    _skip_type_hint_validation = True  # the signature is given explicitly when logging

    def load_context(self, context):
        metadata = read_metadata(Path(context.artifacts["timl_metadata"]))
        model = load_keras_model(context.artifacts["keras_model"], expected_sha256=metadata.get("sha256"))
        self.classifier = from_metadata(model, metadata)
        max_rows()  # a bad TIML_PYFUNC_MAX_ROWS stops the server as it starts, not at its first request

    def predict(self, context, model_input, params=None):
        """Classifies (and explains) the request's images.

        Raises:
            RequestError: no column ``image``, more rows than :func:`max_rows`, a cell that is not a base64 image
                file, or a param out of range. ImageError: a cell that does not decode as a supported image.
        """
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame({"image": model_input})
        if "image" not in frame.columns:
            raise RequestError(f"The input needs a column 'image'. Received columns: {list(frame.columns)}")
        cap = max_rows()
        if len(frame) > cap:
            raise RequestError(f"A request holds at most {cap} images (rows; {MAX_ROWS_VARIABLE} sets the cap). "
                               f"Received: {len(frame)} rows")
        images = [_request_image(value, row) for row, value in enumerate(frame["image"])]
        return predict_frame(self.classifier, images, params)


def predict_frame(classifier: Classifier, images: Sequence[Any], params: dict | None = None, *,
                  max_pixels: int | None = MAX_PIXELS):
    """The pyfunc output for images: probabilities, class, confidences and, with ``params["explain"]``, pictures.

    The Python entry for files: ``images`` may hold paths (``str`` or ``Path``), bytes or PIL images. Each image
    is decoded when it is used and dropped after, so a call holds one full-size image at a time.

    Args:
        classifier: the model (e.g. ``timl.classifier.load_classifier(...)``).
        images: the images, in-process paths, bytes or PIL images.
        params: ``explain``, ``layer``, ``class``, ``rise_masks``, ``tta`` as in :data:`DEFAULT_PARAMS` (its
            defaults); ``tta`` a test-time augmentation preset (:data:`timl.tta.TTA_PRESETS`).
        max_pixels: the pixel cap of each image. Defaults to :data:`MAX_PIXELS`.

    Raises:
        RequestError: ``rise_masks`` outside :data:`RISE_MASKS_RANGE`, an unknown ``tta``. ImageError, ModelError: an image that
            does not decode, an unknown method, layer or class.
    """
    import pandas as pd

    params = {**DEFAULT_PARAMS, **(params or {})}
    explaining = _explanation_settings(classifier, params)  # every param checked before any image is decoded
    preset = get_tta(params.get("tta"), field="tta", error=_tta_error)
    arrays = [classifier.preprocessing(decode_image(image, max_pixels=max_pixels, name=f"image {row}"))
              for row, image in enumerate(images)]
    size = classifier.preprocessing.imgsize
    arrays = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.float32)
    spread = None
    if preset is None:
        probabilities = classifier.predict_arrays(arrays)
    else:
        views = classifier.predict_views(arrays, preset.name)
        probabilities, spread = views.mean, views.std
    frame = pd.DataFrame(probabilities.astype(np.float64), columns=list(classifier.class_names))
    frame["predicted_class"] = classifier.predicted(probabilities)
    for index, name in enumerate(classifier.class_names):
        frame[f"confidence_{name}"] = confidence(probabilities)[:, index]
    if explaining is not None:
        _add_explanations(frame, classifier, images, explaining, max_pixels)
    if spread is not None:
        frame[std_columns(classifier.class_names)] = spread
    return frame


def _tta_error(message: str) -> RequestError:
    return RequestError(f"Param 'tta': {message}")


def _explanation_settings(classifier: Classifier, params: dict) -> dict | None:
    """The arguments of ``xai.explain`` the params ask for (None for ``explain`` none), checked.

    Raises:
        RequestError: ``rise_masks`` out of range. ModelError: an unknown method or class.
    """
    num_masks = _rise_masks(params.get("rise_masks"))
    method = str(params.get("explain") or "none")
    if method == "none":
        return None
    explainer = xai.get_explainer(method)
    # ``rise_masks`` sets the mask count of a masking explainer, whose maps are then seeded for repeatability
    extra = {"num_masks": num_masks, "seed": 0} if "num_masks" in explainer.defaults else {}
    return {"method": method, "layer": str(params.get("layer") or "") or None,
            "class_index": classifier.class_index(params.get("class")), **extra}


def _rise_masks(value: Any) -> int:
    """The ``rise_masks`` param as a mask count within :data:`RISE_MASKS_RANGE` (empty: the default)."""
    low, high = RISE_MASKS_RANGE
    if value is None or str(value).strip() == "":
        return int(DEFAULT_PARAMS["rise_masks"])
    try:
        count = int(str(value).strip())
    except ValueError:
        count = None
    if count is None or not low <= count <= high:
        raise RequestError(f"Param 'rise_masks' must be an integer from {low} to {high} (masks, one model pass "
                           f"each). Received: rise_masks={value!r}")
    return count


def _add_explanations(frame, classifier: Classifier, images: Sequence[Any], settings: dict,
                      max_pixels: int | None) -> None:
    """Adds the base64 PNG columns grey, heatmap and comp, decoding and explaining one image at a time."""
    columns = {"grey": [], "heatmap": [], "comp": []}
    for row, source in enumerate(images):
        image = decode_image(source, max_pixels=max_pixels, name=f"image {row}")
        explanation = xai.explain(classifier.model, image, preprocessing=classifier.preprocessing, **settings)
        for column, picture in (("grey", explanation.grey), ("heatmap", explanation.heatmap),
                                ("comp", explanation.composite)):
            columns[column].append(png_base64(picture))
    for column, values in columns.items():
        frame[column] = values


def pip_requirements() -> list[str]:
    """The requirements recorded with a logged model (explicit: inferring them costs a model reload)."""
    from importlib import metadata

    names = ("mlflow", "keras", "tensorflow-cpu", "pillow", "pandas", "numpy", "h5py", "tf-keras-vis",
             "matplotlib", "scikit-learn", "pydicom")
    pinned = []
    for name in names:
        try:
            pinned.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pinned + [f"timl=={__version__}"]


def _sample_png(size: int) -> str:
    from PIL import Image

    return png_base64(Image.new("RGB", (size, size), (128, 96, 64)))


def log_model(keras_path: Path, metadata_path: Path, classifier: Classifier, *, name: str = "model",
              step: int = 0):
    """Logs a TIML pyfunc model, linked to the active run, with signature, params and an input example.

    Args:
        keras_path: the saved Keras model.
        metadata_path: its TIML sidecar (preprocessing, class names, sha256).
        classifier: the loaded classifier (its class names give the output columns).
        name: the model's name in the run. Defaults to "model".
        step: the step the model belongs to, e.g. the epochs trained. Defaults to 0.

    Returns:
        The ModelInfo of the logged model (``runs:/RUN_ID/model`` and ``models:/m-...`` both load it).
    """
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    example = pd.DataFrame({"image": [_sample_png(16)]})
    sample_output = pd.DataFrame({**{c: [0.5] for c in classifier.class_names}, "predicted_class": ["x"],
                                  **{f"confidence_{c}": [0.0] for c in classifier.class_names}})
    signature = infer_signature(example, sample_output, params=dict(DEFAULT_PARAMS))
    wrapper = TimlModel()
    quiet = logging.getLogger("mlflow.pyfunc")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the CloudPickle notice: TimlModel is imported by reference from timl
    try:
        return mlflow.pyfunc.log_model(
            name=name, python_model=wrapper,
            artifacts={"keras_model": str(keras_path), "timl_metadata": str(metadata_path)},
            signature=signature, input_example=example, pip_requirements=pip_requirements(), step=step)
    finally:
        quiet.setLevel(level)
