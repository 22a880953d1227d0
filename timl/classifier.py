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
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from timl import __version__
from timl.errors import MissingFileError, ModelError
from timl.images import Preprocessing

if TYPE_CHECKING:
    from timl.config import RunConfig

logger = logging.getLogger(__name__)

#: The metadata sidecar of a model file: ``<model>.h5`` + this suffix.
METADATA_SUFFIX = ".json"

#: The resize filter of a model the original TIML saved (a Keras 2 ``.h5`` file) when its table names none: the
#: original resized single images (its server, its explanations) with nearest neighbour.
ORIGINAL_RESIZE_FILTER = "nearest"


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


def run_batches(model, images: np.ndarray, batch_size: int = 32, progress=None,
                metadata: np.ndarray | None = None) -> np.ndarray:
    """Runs a model over images batch by batch; uint8 input is scaled to [0, 1] one batch at a time.

    Args:
        model: a Keras model (or any callable with ``predict_on_batch`` and ``output_shape``).
        images: (N, S, S, 3) float32 in [0, 1] or uint8.
        batch_size: images per model call. Defaults to 32.
        progress: optional callable ``progress(done, total)`` called after each batch.
        metadata: (N, K) per-image numbers, the second input of a model trained with a ``metadata`` column.
    """
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size])
        if batch.dtype == np.uint8:
            batch = batch.astype(np.float32) / 255.0
        inputs = batch if metadata is None else [batch, np.asarray(metadata[start:start + batch_size], np.float32)]
        outputs.append(np.asarray(model.predict_on_batch(inputs)))
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

    @property
    def takes_metadata(self) -> bool:
        """Whether the model takes per-image metadata as a second input (a row with a ``metadata`` column)."""
        return len(getattr(self.model, "inputs", ()) or ()) > 1

    def predict_arrays(self, images: np.ndarray, batch_size: int = 32, metadata: np.ndarray | None = None,
                       tta: str | None = None) -> np.ndarray:
        """Predicts preprocessed images (N, S, S, 3), float32 in [0, 1] or uint8 (converted batch by batch).

        Args:
            tta: a test-time augmentation preset (:data:`timl.tta.TTA_PRESETS`): the probabilities averaged over
                its views (:meth:`predict_views`). Defaults to None (none).

        Raises:
            ModelError: the model takes metadata and none was given (or the reverse).
        """
        if tta is not None and tta != "none":
            return self.predict_views(images, tta, batch_size, metadata).mean
        self._check_metadata(metadata)
        return run_batches(self.model, images, batch_size, metadata=metadata)

    def predict_views(self, images: np.ndarray, tta: str, batch_size: int = 32,
                      metadata: np.ndarray | None = None, progress=None):
        """Predicts every view of a test-time augmentation preset, each batch's views in one model call.

        Args:
            images: (N, S, S, 3) float32 in [0, 1] or uint8.
            tta: a preset of :data:`timl.tta.TTA_PRESETS` (``none``: one view, the image itself).
            batch_size: images per model call (each call holds their every view). Defaults to 32.
            metadata: (N, K) per-image numbers of a model with a metadata input.
            progress: optional ``progress(done, total)`` after each batch.

        Returns:
            A :class:`timl.tta.ViewPredictions`: the probabilities averaged over the views, and their spread.

        Raises:
            ConfigError: an unknown preset. ModelError: metadata missing (or given to a model of images alone).
        """
        from timl import tta as tta_module

        preset = tta_module.get_tta(tta) or tta_module.TtaPreset(tta_module.NO_TTA, (0,), "The image itself.")
        self._check_metadata(metadata)
        return tta_module.predict_views(self.model, images, preset, batch_size, progress, metadata)

    def _check_metadata(self, metadata) -> None:
        if self.takes_metadata != (metadata is not None):
            raise ModelError(
                "This model takes per-image metadata besides the image (it was trained with a metadata column): "
                "give it with python -m timl.predict --metadata CSV; explanations and the server need a model of "
                "images alone." if self.takes_metadata else
                "This model takes images alone; metadata was given. Received: metadata")

    def predict_images(self, sources: Sequence[Any], batch_size: int = 32, tta: str | None = None) -> np.ndarray:
        """Decodes, preprocesses and predicts images given as paths, bytes or PIL images (``tta``: averaged over
        the views of a test-time augmentation preset)."""
        arrays = np.stack([self.preprocessing(source) for source in sources]) if len(sources) else np.zeros(
            (0, self.preprocessing.imgsize, self.preprocessing.imgsize, 3), np.float32)
        return self.predict_arrays(arrays, batch_size, tta=tta)

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
        if text.isascii() and text.isdigit() and int(text) < len(self.class_names):  # not "²" or "٣"
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


def keras_version_of(path: str | Path) -> str | None:
    """The Keras version that wrote a legacy ``.h5`` model file (its ``keras_version`` attribute); None for other
    files or when the file does not say."""
    import h5py

    if Path(path).suffix.lower() != ".h5":
        return None
    try:
        with h5py.File(path, "r") as handle:
            version = handle.attrs.get("keras_version")
    except OSError:
        return None
    if version is None:
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


def is_keras2_file(path: str | Path) -> bool:
    """Whether a model file was written by Keras 2 (the original TIML's models; also the ``tf-keras`` package)."""
    major = (keras_version_of(path) or "").split(".")[0]
    return major.isdigit() and int(major) < 3


def _table_row(cells, model_name: str) -> int:
    """The row of a config table a model came from: the one whose ``trainmodel`` is the model's file name (a
    results table), else the first (the original TIML read the first)."""
    if "trainmodel" in cells.columns:
        matches = [number for number, name in enumerate(cells["trainmodel"]) if name.strip() == model_name]
        if matches:
            return matches[0]
    return 0


def _class_names_from_dataset(row: RunConfig) -> tuple[str, ...]:
    """The class columns of a row's dataset (``classcolumns`` default): every column but ``image_name``."""
    from timl import datasets, tables

    dataset = row.dataset.parts[0].text
    names = [f"{dataset}-train.csv"] if row.split == "pre" else [dataset, f"{dataset}.csv"]
    paths = [row.resolve_path(name) for name in names]
    path = next((candidate for candidate in paths if tables.table_exists(candidate)), None)
    if path is None:
        raise MissingFileError(f"{row.table_path}, row {row.row}: cannot read the class names, dataset file not "
                               f"found (looked for {', '.join(repr(str(p)) for p in paths)}). Give classcolumns "
                               f"explicitly. Received: dataset={row.dataset.text!r}")
    return datasets.class_columns(path)


def _from_config_table(model, config_table: str | Path,
                       model_path: Path) -> tuple[Preprocessing, tuple[str, ...], bool]:
    """Reads preprocessing and classes from an original TIML config table: the model's row (see
    :func:`_table_row`). A Keras 2 model (the original's) whose row leaves ``resizefilter`` empty resizes with
    :data:`ORIGINAL_RESIZE_FILTER`."""
    from timl import config as config_module
    from timl import models

    rows = config_module.read_table(config_table)
    if not rows:
        raise ModelError(f"{config_table}: the config table has no rows. Give the table the model was trained "
                         f"from (the original's automation_input.csv or automation_result.csv).")
    cells = config_module.read_cells(config_table)
    number = _table_row(cells, model_path.name)
    row = rows[number]
    if isinstance(row, Exception):
        raise row
    resizefilter = row.resizefilter
    filter_cell = cells["resizefilter"].iloc[number].strip() if "resizefilter" in cells.columns else ""
    if not filter_cell and is_keras2_file(model_path):
        resizefilter = ORIGINAL_RESIZE_FILTER
    preprocessing = Preprocessing(int(model.input_shape[1]), resizefilter, row.colorspace)
    multi_label = models.get_method(row.method).multi_label
    names = row.class_column_names
    return preprocessing, names if names is not None else _class_names_from_dataset(row), multi_label


def _is_sigmoid(model) -> bool:
    activation = getattr(model.layers[-1], "activation", None)
    return getattr(activation, "__name__", "") == "sigmoid"


def classifier_from_keras_file(keras_model: str | Path, config_table: str | Path | None = None) -> Classifier:
    """Loads a .h5/.keras file with its sidecar metadata, or with an original TIML config table.

    Without either, the image size comes from the model's input, the colour space is RGB, the classes are
    called C0..Cn-1 and the resize filter is the original TIML's nearest neighbour for a Keras 2 file (a model
    the original saved), else bilinear. Every model gets RGB values scaled to [0, 1], as the original fed its
    models (its data generator divided the pixel values by 255).

    Raises:
        MissingFileError, ModelError: no such file, an unloadable model, or class names that do not fit it.
    """
    path = Path(keras_model)
    sidecar = Path(str(path) + METADATA_SUFFIX)
    metadata = read_metadata(sidecar) if sidecar.is_file() else {}
    model = load_keras_model(path, expected_sha256=metadata.get("sha256"))
    if config_table is not None:
        preprocessing, names, multi_label = _from_config_table(model, config_table, path)
    elif metadata:
        loaded = from_metadata(model, metadata)
        preprocessing, names, multi_label = loaded.preprocessing, loaded.class_names, loaded.multi_label
    else:
        count = int(model.output_shape[-1])
        logger.warning("No class names known for this model; using C0..C%d.", count - 1)
        resizefilter = ORIGINAL_RESIZE_FILTER if is_keras2_file(path) else "bilinear"
        preprocessing = Preprocessing(int(model.input_shape[1]), resizefilter)
        names, multi_label = tuple(f"C{index}" for index in range(count)), _is_sigmoid(model)
    if len(names) != int(model.output_shape[-1]):
        raise ModelError(f"The model {path} has {int(model.output_shape[-1])} outputs but {len(names)} class "
                         f"names were given ({', '.join(names)}). Check classcolumns in the config table.")
    return Classifier(model, preprocessing, names, multi_label,
                      {"keras_model": str(path.resolve()), "run_id": metadata.get("run_id")})


def classifier_from_uri(model_uri: str) -> Classifier:
    """Loads the Classifier of a logged TIML model (``runs:/ID/model``, ``models:/NAME@ALIAS``, ...).

    Only the model's Keras file (safe_mode on) and its metadata JSON are read: the pickled pyfunc wrapper that
    ``mlflow.pyfunc.load_model`` would unpickle is never loaded. A registered version's Keras file must match the
    sha256 pinned on the version (tag ``timl.model_sha256``), and every model's file the sha256 of its metadata.

    Raises:
        ModelError: the URI names no model, a model that is not a TIML model, or a file whose sha256 differs.
    """
    import tempfile

    from timl import tracking

    with tempfile.TemporaryDirectory(prefix="timl-model-") as folder:
        files = tracking.download_model_files(model_uri, Path(folder))
        if files.pinned_sha256:
            _check_pinned_sha256(files, model_uri)
        metadata = read_metadata(files.metadata)
        model = load_keras_model(files.keras_model, expected_sha256=metadata.get("sha256"))
    classifier = from_metadata(model, metadata)
    classifier.source = {"model_uri": model_uri, "run_id": files.run_id}
    return classifier


def _check_pinned_sha256(files, model_uri: str) -> None:
    """Refuses a registered version's Keras file whose sha256 is not the one pinned when it was registered."""
    actual = sha256_of(files.keras_model)
    if actual != files.pinned_sha256:
        raise ModelError(f"Refusing to load {model_uri} (registered model {files.registered}): its Keras file was "
                         f"changed after registration. Expected sha256 {files.pinned_sha256} (version tag "
                         f"timl.model_sha256). Received: sha256={actual}")


def load_classifier(model_uri: str | None = None, keras_model: str | Path | None = None,
                    config_table: str | Path | None = None) -> Classifier:
    """Loads a Classifier from exactly one of an MLflow model URI or a Keras file (+ optional config table).

    Raises:
        ModelError: both or neither given, or the model cannot be loaded.
    """
    if bool(model_uri) == bool(keras_model):
        raise ModelError("Give exactly one of --model-uri or --keras-model. "
                         f"Received: model_uri={model_uri!r}, keras_model={keras_model!r}")
    if model_uri and "://" not in model_uri and model_uri.lower().endswith((".h5", ".keras")):
        raise ModelError(f"{model_uri} is a Keras file, not an MLflow model URI: give it as --keras-model "
                         f"{model_uri} (--model-uri takes runs:/RUN_ID/model, models:/NAME@ALIAS or "
                         "models:/NAME/VERSION).")
    if model_uri:
        return classifier_from_uri(model_uri)
    return classifier_from_keras_file(keras_model, config_table)
