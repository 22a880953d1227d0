"""Models as used after training: the Keras file, its preprocessing and classes, and the MLflow pyfunc wrapper.

A :class:`Classifier` is what prediction, explanation and serving work with: a Keras model plus the
:class:`~timl.images.Preprocessing` it was trained with, its class names and whether it is multi-label. It is
loaded from an MLflow model URI (``runs:/ID/model``, ``models:/NAME@ALIAS``), from a ``.h5`` file with the
metadata sidecar that training writes beside it, or from a ``.h5`` file plus the original TIML config table.

:class:`TimlModel` is the ``mlflow.pyfunc.PythonModel`` logged with every trained row: it classifies images
given as base64 strings (``mlflow models serve``), bytes, paths or PIL images, and explains them through
params.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import mlflow.pyfunc
import numpy as np

from timl import __version__
from timl.errors import ModelError, MissingFileError
from timl.images import Preprocessing, decode_image

logger = logging.getLogger(__name__)

METADATA_SUFFIX = ".json"
EXPLAIN_CHOICES = ("none", "gradcam", "gradcam++", "scorecam", "smoothgrad", "rise")
DEFAULT_PARAMS = {"explain": "none", "layer": "", "class": "", "rise_masks": 2000}


def sha256_of(path: str | Path) -> str:
    """The sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _refuse_lambda_layers(path: Path) -> None:
    """Refuses a legacy .h5 model whose architecture contains a Lambda layer (arbitrary code)."""
    import h5py

    with h5py.File(path, "r") as handle:
        config = handle.attrs.get("model_config")
    if config is None:
        return
    text = config.decode() if isinstance(config, bytes) else str(config)
    if '"class_name": "Lambda"' in text or '"class_name":"Lambda"' in text:
        raise ModelError(f"Refusing to load {path}: the model contains a Lambda layer, which can run arbitrary "
                         "code. TIML loads models with Keras safe_mode on; rebuild the model without Lambda "
                         "layers (use a registered custom layer).")


def load_keras_model(path: str | Path, *, expected_sha256: str | None = None):
    """Loads a Keras model (.h5 or .keras) with safe_mode on and without compiling it.

    Args:
        path: the model file.
        expected_sha256: when given, the file's sha256 must match (it is recorded on the training run).

    Raises:
        MissingFileError: no such file. ModelError: checksum mismatch, Lambda layer, unreadable file.
    """
    import keras

    from timl import models

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"Keras model file not found. Received: keras_model={str(path)!r}")
    if expected_sha256 and sha256_of(path) != expected_sha256:
        raise ModelError(f"Refusing to load {path}: its sha256 does not match the one recorded at training "
                         f"({expected_sha256}). The file was changed or replaced.")
    if path.suffix.lower() == ".h5":
        _refuse_lambda_layers(path)
    models.ensure_registered()
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except ValueError as error:
        raise ModelError(f"Cannot load Keras model {path}: {error}") from error
    except OSError as error:
        raise ModelError(f"Cannot load Keras model {path}: not a readable Keras file ({error}).") from error


def confidence(probabilities: np.ndarray) -> np.ndarray:
    """The original TIML confidence in [-1, 1]: with b = 1/n_classes, (p-b)/(1-b) if p > b else (p-b)/b."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    base = 1.0 / probabilities.shape[-1]
    return np.where(probabilities > base, (probabilities - base) / (1.0 - base), (probabilities - base) / base)


@dataclasses.dataclass
class Classifier:
    """A trained model with everything needed to turn images into predictions.

    Attributes:
        model: the Keras model (input RGB float32 in [0, 1]).
        preprocessing: image size, resize filter and colour space used at training.
        class_names: one name per output.
        multi_label: sigmoid outputs (any number of classes per image) rather than softmax.
        source: where it came from (model_uri, keras_model, run_id), for provenance sidecars.
    """

    model: Any
    preprocessing: Preprocessing
    class_names: tuple[str, ...]
    multi_label: bool = False
    source: dict = dataclasses.field(default_factory=dict)

    def metadata(self) -> dict:
        return {"preprocessing": self.preprocessing.to_dict(), "class_names": list(self.class_names),
                "multi_label": self.multi_label, "timl_version": __version__}

    def predict_arrays(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Predicts preprocessed images (N, S, S, 3), float32 in [0, 1] or uint8 (converted batch by batch)."""
        return run_batches(self.model, images, batch_size)

    def predict_images(self, sources: Sequence[Any], batch_size: int = 32) -> np.ndarray:
        """Decodes, preprocesses and predicts images given as paths, bytes or PIL images."""
        arrays = np.stack([self.preprocessing(source) for source in sources]) if len(sources) else np.zeros(
            (0, self.preprocessing.imgsize, self.preprocessing.imgsize, 3), np.float32)
        return self.predict_arrays(arrays, batch_size)

    def predicted(self, probabilities: np.ndarray) -> list[str]:
        return [self.class_names[int(index)] for index in np.argmax(probabilities, axis=1)]


def run_batches(model, images: np.ndarray, batch_size: int = 32, progress=None) -> np.ndarray:
    """Runs a model over images batch by batch; uint8 input is scaled to [0, 1] one batch at a time.

    Args:
        progress: optional callable ``progress(done, total)`` called after each batch.
    """
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size])
        if batch.dtype == np.uint8:
            batch = batch.astype(np.float32) / 255.0
        outputs.append(np.asarray(model.predict_on_batch(batch)))
        if progress is not None:
            progress(min(start + batch_size, len(images)), len(images))
    if outputs:
        return np.concatenate(outputs)
    return np.zeros((0,) + tuple(model.output_shape[1:]), np.float32)


def write_metadata(keras_path: Path, classifier_metadata: dict) -> Path:
    """Writes the sidecar ``<model>.h5.json`` (preprocessing, classes, multi-label, sha256) beside a model."""
    path = Path(str(keras_path) + METADATA_SUFFIX)
    payload = dict(classifier_metadata, sha256=sha256_of(keras_path), keras_model=Path(keras_path).name)
    path.write_text(json.dumps(payload, indent=2))
    return path


def _read_metadata(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelError(f"Cannot read model metadata {path}: {error}") from error


def _from_config_table(model, config_table: str | Path) -> tuple[Preprocessing, tuple[str, ...], bool]:
    """Reads preprocessing and classes from the first row of an original TIML config table."""
    from timl import config as config_module
    from timl import models

    rows = config_module.read_table(config_table)
    if not rows:
        raise ModelError(f"{config_table}: the config table has no rows.")
    first = rows[0]
    if isinstance(first, Exception):
        raise first
    imgsize = int(model.input_shape[1])
    preprocessing = Preprocessing(imgsize, first.resizefilter, first.colorspace)
    multi_label = models.get_method(first.method).multi_label
    if first.classcolumns != "default":
        names = tuple(name.strip() for name in first.classcolumns.split(";") if name.strip())
    else:
        names = _dataset_class_names(first)
    return preprocessing, names, multi_label


def _dataset_class_names(row) -> tuple[str, ...]:
    """Class names of a config row with classcolumns=default: every column but image_name of its dataset."""
    import pandas as pd

    first = row.dataset.split(";")[0]
    if row.split == "pre":
        first = f"{first}-train.csv"
    path = row.resolve_path(first)
    if not path.is_file():
        raise MissingFileError(f"{row.table_path}, row {row.row}: cannot read the class names, dataset file "
                               f"not found. Give classcolumns explicitly. Received: dataset={str(path)!r}")
    columns = list(pd.read_csv(path, nrows=0).columns)
    return tuple(column for column in columns if column != "image_name")


def _guess_classes(model) -> tuple[str, ...]:
    count = int(model.output_shape[-1])
    logger.warning("No class names known for this model; using C0..C%d.", count - 1)
    return tuple(f"C{index}" for index in range(count))


def classifier_from_keras_file(keras_model: str | Path, config_table: str | Path | None = None) -> Classifier:
    """Loads a .h5/.keras file with its sidecar metadata, or with an original TIML config table.

    Without either, the image size comes from the model's input, the filter and colour space default to
    bilinear and RGB, and the classes are called C0..Cn-1.
    """
    path = Path(keras_model)
    sidecar = Path(str(path) + METADATA_SUFFIX)
    metadata = _read_metadata(sidecar) if sidecar.is_file() else {}
    model = load_keras_model(path, expected_sha256=metadata.get("sha256"))
    if config_table is not None:
        preprocessing, names, multi_label = _from_config_table(model, config_table)
    elif metadata:
        preprocessing = Preprocessing.from_dict(metadata["preprocessing"])
        names, multi_label = tuple(metadata["class_names"]), bool(metadata.get("multi_label", False))
    else:
        preprocessing = Preprocessing(int(model.input_shape[1]))
        names, multi_label = _guess_classes(model), _is_sigmoid(model)
    if len(names) != int(model.output_shape[-1]):
        raise ModelError(f"The model {path} has {int(model.output_shape[-1])} outputs but {len(names)} class "
                         f"names were given ({', '.join(names)}). Check classcolumns in the config table.")
    return Classifier(model, preprocessing, names, multi_label,
                      {"keras_model": str(path.resolve()), "run_id": metadata.get("run_id")})


def _is_sigmoid(model) -> bool:
    activation = getattr(model.layers[-1], "activation", None)
    return getattr(activation, "__name__", "") == "sigmoid"


def classifier_from_uri(model_uri: str) -> Classifier:
    """Loads the Classifier inside a TIML pyfunc model (``runs:/ID/model``, ``models:/NAME@ALIAS``, ...)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        loaded = mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as error:
        raise ModelError(f"Cannot load MLflow model. Expected runs:/RUN_ID/model, models:/NAME@ALIAS or "
                         f"models:/NAME/VERSION of a TIML model. Received: model_uri={model_uri!r} ({error})") from error
    wrapper = loaded.unwrap_python_model()
    if not isinstance(wrapper, TimlModel):
        raise ModelError(f"{model_uri} is not a TIML model (its pyfunc is {type(wrapper).__name__}).")
    classifier = wrapper.classifier
    run_id = loaded.metadata.run_id
    classifier.source = {"model_uri": model_uri, "run_id": run_id}
    return classifier


def load_classifier(model_uri: str | None = None, keras_model: str | Path | None = None,
                    config_table: str | Path | None = None) -> Classifier:
    """Loads a Classifier from exactly one of an MLflow model URI or a Keras file (+ optional config table).

    Raises:
        ModelError: both or neither given, or the model cannot be loaded.
    """
    if bool(model_uri) == bool(keras_model):
        raise ModelError("Give exactly one of --model-uri or --keras-model. "
                         f"Received: model_uri={model_uri!r}, keras_model={keras_model!r}")
    if model_uri:
        return classifier_from_uri(model_uri)
    return classifier_from_keras_file(keras_model, config_table)


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


def png_base64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class TimlModel(mlflow.pyfunc.PythonModel):
    """The MLflow pyfunc of a TIML model: classifies images and, with params, explains them.

    Input: a DataFrame with a column ``image`` of base64-encoded image files (in-process also paths, bytes
    or PIL images). Output: one probability column per class, ``predicted_class``, ``confidence_<class>``
    per class, and with ``params={"explain": METHOD}`` base64 PNG columns ``grey``, ``heatmap``, ``comp``.
    """

    classifier: Classifier | None = None
    _skip_type_hint_validation = True  # the signature is given explicitly when logging

    def load_context(self, context):
        metadata = _read_metadata(Path(context.artifacts["timl_metadata"]))
        model = load_keras_model(context.artifacts["keras_model"], expected_sha256=metadata.get("sha256"))
        self.classifier = Classifier(model, Preprocessing.from_dict(metadata["preprocessing"]),
                                     tuple(metadata["class_names"]), bool(metadata.get("multi_label")))

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
    from timl import xai

    class_cell = str(params.get("class") or "").strip()
    class_index = None
    if class_cell:
        class_index = (classifier.class_names.index(class_cell) if class_cell in classifier.class_names
                       else int(class_cell) if class_cell.lstrip("-").isdigit() else None)
        if class_index is None:
            raise ModelError(f"Unknown class. Expected one of: {', '.join(classifier.class_names)} or an index. "
                             f"Received: class={class_cell!r}")
    extra = {"num_masks": int(params.get("rise_masks") or 2000), "seed": 0} if method == "rise" else {}
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
