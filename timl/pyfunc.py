"""The MLflow pyfunc of a TIML model: :class:`TimlModel` and :func:`log_model`, nothing else.

:class:`TimlModel` is the ``mlflow.pyfunc.PythonModel`` logged with every trained row: it classifies images
given as base64 strings (``mlflow models serve``), bytes, paths or PIL images, and explains them through
params. Everything else about a trained model (loading, preprocessing, batched prediction, the TIML
confidence) is :mod:`timl.classifier`'s.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

from timl import __version__, xai
from timl.classifier import Classifier, confidence, from_metadata, load_keras_model, read_metadata
from timl.errors import ModelError
from timl.images import decode_image
from timl.xai.render import png_base64

logger = logging.getLogger(__name__)

#: The values of the ``explain`` param: none, or an explainer of the registry.
EXPLAIN_CHOICES = ("none", *xai.list_explainers())
DEFAULT_PARAMS = {"explain": "none", "layer": "", "class": "", "rise_masks": 2000}


def _decode_input(value: Any) -> Any:
    """Turns one cell of the pyfunc input into something decode_image accepts."""
    if isinstance(value, str):
        if Path(value).suffix and len(value) < 4096 and Path(value).is_file():
            return value
        try:
            return base64.b64decode(value, validate=True)
        except ValueError as error:
            raise ModelError("Column 'image' must hold base64-encoded image files (or, in-process, paths, "
                             "bytes or PIL images). Received a string that is neither a file nor base64.") from error
    return value


class TimlModel(mlflow.pyfunc.PythonModel):
    """The MLflow pyfunc of a TIML model: classifies images and, with params, explains them.

    Input: a DataFrame with a column ``image`` of base64-encoded image files (in-process also paths, bytes
    or PIL images). Output: one probability column per class, ``predicted_class``, ``confidence_<class>``
    per class, and with ``params={"explain": METHOD}`` base64 PNG columns ``grey``, ``heatmap``, ``comp``.
    """

    classifier: Classifier | None = None
    _skip_type_hint_validation = True  # the signature is given explicitly when logging

    def load_context(self, context):
        metadata = read_metadata(Path(context.artifacts["timl_metadata"]))
        model = load_keras_model(context.artifacts["keras_model"], expected_sha256=metadata.get("sha256"))
        self.classifier = from_metadata(model, metadata)

    def predict(self, context, model_input, params=None):
        import pandas as pd

        params = {**DEFAULT_PARAMS, **(params or {})}
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame({"image": model_input})
        if "image" not in frame.columns:
            raise ModelError(f"The input needs a column 'image'. Received columns: {list(frame.columns)}")
        images = [decode_image(_decode_input(value), name=f"image {index}")
                  for index, value in enumerate(frame["image"])]
        return predict_frame(self.classifier, images, params)


def predict_frame(classifier: Classifier, images: list, params: dict):
    """The pyfunc output for decoded PIL images: probabilities, class, confidences, optional explanations."""
    import pandas as pd

    probabilities = classifier.predict_images(images)
    frame = pd.DataFrame(probabilities.astype(np.float64), columns=list(classifier.class_names))
    frame["predicted_class"] = classifier.predicted(probabilities)
    for index, name in enumerate(classifier.class_names):
        frame[f"confidence_{name}"] = confidence(probabilities)[:, index]
    method = str(params.get("explain") or "none")
    if method != "none":
        _add_explanations(frame, classifier, images, method, params)
    return frame


def _add_explanations(frame, classifier: Classifier, images: list, method: str, params: dict) -> None:
    explainer = xai.get_explainer(method)
    class_index = classifier.class_index(params.get("class"))
    # ``rise_masks`` sets the mask count of a masking explainer, whose maps are then seeded for repeatability
    extra = {"num_masks": int(params.get("rise_masks") or 2000), "seed": 0} if "num_masks" in explainer.defaults else {}
    columns = {"grey": [], "heatmap": [], "comp": []}
    for image in images:
        explanation = xai.explain(classifier.model, image, method, layer=str(params.get("layer") or "") or None,
                                  class_index=class_index, preprocessing=classifier.preprocessing, **extra)
        for column, picture in (("grey", explanation.grey), ("heatmap", explanation.heatmap),
                                ("comp", explanation.composite)):
            columns[column].append(png_base64(picture))
    for column, values in columns.items():
        frame[column] = values


def pip_requirements() -> list[str]:
    """The requirements recorded with a logged model (explicit: inferring them costs a model reload)."""
    from importlib import metadata

    names = ("mlflow", "keras", "tensorflow-cpu", "pillow", "pandas", "numpy", "h5py", "tf-keras-vis",
             "matplotlib", "scikit-learn")
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
