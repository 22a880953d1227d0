"""The Classifier: a trained Keras model with its preprocessing and classes, its loaders and batched prediction.

A :class:`Classifier` is what prediction, explanation and serving work with: a Keras model plus the
:class:`~timl.images.Preprocessing` it was trained with, its class names and whether it is multi-label. It is
loaded from an MLflow model URI (``runs:/ID/model``, ``models:/NAME@ALIAS``), from a ``.h5`` file with the
metadata sidecar that training writes beside it, or from a ``.h5`` file plus the original TIML config table
(:func:`load_classifier`). Every entry point reads a user's class choice with :meth:`Classifier.class_index`.

Importing this module is cheap: Keras is imported when a model is loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from timl import __version__
from timl.errors import MissingFileError, ModelError
from timl.images import Preprocessing

logger = logging.getLogger(__name__)

#: The metadata sidecar of a model file: ``<model>.h5`` + this suffix.
METADATA_SUFFIX = ".json"


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


def run_batches(model, images: np.ndarray, batch_size: int = 32, progress=None) -> np.ndarray:
    """Runs a model over images batch by batch; uint8 input is scaled to [0, 1] one batch at a time.

    Args:
        model: a Keras model (or any callable with ``predict_on_batch`` and ``output_shape``).
        images: (N, S, S, 3) float32 in [0, 1] or uint8.
        batch_size: images per model call. Defaults to 32.
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
        """What the sidecar and the pyfunc model record: preprocessing, classes, multi-label, TIML version."""
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
        """The class name of highest probability of each row."""
        return [self.class_names[int(index)] for index in np.argmax(probabilities, axis=1)]

    def class_index(self, text: str | int | None) -> int | None:
        """The class a user named (a class name, or an index 0..n-1), for explanations; None when empty.

        The one rule for every entry point: the explain command's ``--class``, the server's ``?class=`` and the
        pyfunc's ``class`` param.

        Raises:
            ModelError: neither a class name nor an index of this model; the message lists the classes.
        """
        text = "" if text is None else str(text).strip()
        if not text:
            return None
        if text in self.class_names:
            return self.class_names.index(text)
        if text.isdigit() and int(text) < len(self.class_names):
            return int(text)
        raise ModelError(f"Unknown class. Expected one of: {', '.join(self.class_names)} or an index "
                         f"0-{len(self.class_names) - 1}. Received: class={text!r}")


def write_metadata(keras_path: Path, classifier_metadata: dict) -> Path:
    """Writes the sidecar ``<model>.h5.json`` (preprocessing, classes, multi-label, sha256) beside a model."""
    path = Path(str(keras_path) + METADATA_SUFFIX)
    payload = dict(classifier_metadata, sha256=sha256_of(keras_path), keras_model=Path(keras_path).name)
    path.write_text(json.dumps(payload, indent=2))
    return path


def read_metadata(path: str | Path) -> dict:
    """Reads a metadata sidecar.

    Raises:
        ModelError: the file is unreadable or not JSON.
    """
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelError(f"Cannot read model metadata {path}: {error}") from error


def from_metadata(model, metadata: dict) -> Classifier:
    """A Classifier from a loaded model and its metadata (sidecar or pyfunc artifact)."""
    return Classifier(model, Preprocessing.from_dict(metadata["preprocessing"]), tuple(metadata["class_names"]),
                      bool(metadata.get("multi_label", False)))


def _from_config_table(model, config_table: str | Path) -> tuple[Preprocessing, tuple[str, ...], bool]:
    """Reads preprocessing and classes from the first row of an original TIML config table."""
    from timl import config as config_module
    from timl import datasets, models

    rows = config_module.read_table(config_table)
    if not rows:
        raise ModelError(f"{config_table}: the config table has no rows.")
    first = rows[0]
    if isinstance(first, Exception):
        raise first
    preprocessing = Preprocessing(int(model.input_shape[1]), first.resizefilter, first.colorspace)
    multi_label = models.get_method(first.method).multi_label
    if first.classcolumns != "default":
        return preprocessing, tuple(name.strip() for name in first.classcolumns.split(";") if name.strip()), multi_label
    dataset = first.dataset.split(";")[0]
    path = first.resolve_path(f"{dataset}-train.csv" if first.split == "pre" else dataset)
    if not path.is_file():
        raise MissingFileError(f"{first.table_path}, row {first.row}: cannot read the class names, dataset file "
                               f"not found. Give classcolumns explicitly. Received: dataset={str(path)!r}")
    return preprocessing, datasets.class_columns(path), multi_label


def _is_sigmoid(model) -> bool:
    activation = getattr(model.layers[-1], "activation", None)
    return getattr(activation, "__name__", "") == "sigmoid"


def classifier_from_keras_file(keras_model: str | Path, config_table: str | Path | None = None) -> Classifier:
    """Loads a .h5/.keras file with its sidecar metadata, or with an original TIML config table.

    Without either, the image size comes from the model's input, the filter and colour space default to
    bilinear and RGB, and the classes are called C0..Cn-1.

    Raises:
        MissingFileError, ModelError: no such file, an unloadable model, or class names that do not fit it.
    """
    path = Path(keras_model)
    sidecar = Path(str(path) + METADATA_SUFFIX)
    metadata = read_metadata(sidecar) if sidecar.is_file() else {}
    model = load_keras_model(path, expected_sha256=metadata.get("sha256"))
    if config_table is not None:
        preprocessing, names, multi_label = _from_config_table(model, config_table)
    elif metadata:
        loaded = from_metadata(model, metadata)
        preprocessing, names, multi_label = loaded.preprocessing, loaded.class_names, loaded.multi_label
    else:
        count = int(model.output_shape[-1])
        logger.warning("No class names known for this model; using C0..C%d.", count - 1)
        preprocessing = Preprocessing(int(model.input_shape[1]))
        names, multi_label = tuple(f"C{index}" for index in range(count)), _is_sigmoid(model)
    if len(names) != int(model.output_shape[-1]):
        raise ModelError(f"The model {path} has {int(model.output_shape[-1])} outputs but {len(names)} class "
                         f"names were given ({', '.join(names)}). Check classcolumns in the config table.")
    return Classifier(model, preprocessing, names, multi_label,
                      {"keras_model": str(path.resolve()), "run_id": metadata.get("run_id")})


def classifier_from_uri(model_uri: str) -> Classifier:
    """Loads the Classifier inside a TIML pyfunc model (``runs:/ID/model``, ``models:/NAME@ALIAS``, ...).

    Raises:
        ModelError: the URI names no model, or a model that is not a TIML model.
    """
    from timl import tracking

    wrapper, run_id = tracking.load_python_model(model_uri)
    classifier = getattr(wrapper, "classifier", None)
    if not isinstance(classifier, Classifier):
        raise ModelError(f"{model_uri} is not a TIML model (its pyfunc is {type(wrapper).__name__}).")
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
