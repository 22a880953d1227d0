"""Batch prediction: a test dataframe of image names in, a predictions CSV (and optionally .npy files) out.

``python -m timl.predict`` keeps the original TIML options (``--keras-model M.h5 --config-table C.csv``) and
adds ``--model-uri`` for MLflow models, whose preprocessing and class names travel with the model. Images go
through the same decoding and preprocessing code as training.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import time
from pathlib import Path

import click
import numpy as np
import pandas as pd

from timl.cli import (command, cuda_gpu_option, select_gpu, setup_logging, tracking_uri_option, user_errors,
                      write_progress)
from timl.errors import ModelError
from timl.tta import NO_TTA, TTA_CHOICES

logger = logging.getLogger(__name__)

#: The per-image .npy naming of the original TIML activation cache.
NPY_SUFFIX = "-0000000000.npy"


@dataclasses.dataclass
class PredictResult:
    """What a prediction wrote: the CSV, its provenance sidecar, optional numpy outputs, the probabilities."""

    output_csv: Path
    sidecar: Path
    probabilities: np.ndarray
    numpy_file: Path | None = None
    numpy_dir: Path | None = None


def _progress(done: int, total: int, started: float) -> None:
    rate = done / max(time.time() - started, 1e-9)
    write_progress(f"predicted {done}/{total} images ({rate:.1f} img/s)", done == total)


def _run_model(model, arrays: np.ndarray, batch_size: int, show_progress: bool, metadata=None) -> np.ndarray:
    from timl.classifier import run_batches

    started = time.time()
    progress = (lambda done, total: _progress(done, total, started)) if show_progress else None
    return run_batches(model, arrays, batch_size, progress, metadata=metadata)


def layer_model(model, layer: str):
    """A model whose output is the named layer's activations.

    Raises:
        ModelError: unknown layer (listing the model's layers).
    """
    import keras

    names = [item.name for item in model.layers]
    if layer not in names:
        raise ModelError(f"Unknown layer. Expected one of: {', '.join(names)}. Received: layer={layer!r}")
    return keras.Model(model.inputs, model.get_layer(layer).output)


def _write_per_image(folder: Path, names: list[str], values: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in zip(names, values):
        np.save(folder / f"{name}{NPY_SUFFIX}", value)


def predictions_frame(names: list[str], probabilities: np.ndarray, class_names, multi_label: bool,
                      threshold: float) -> pd.DataFrame:
    """image_name, one probability column per class, inferred class and index, and 0/1 columns if multi-label."""
    frame = pd.DataFrame(probabilities.astype(np.float64), columns=list(class_names))
    frame.insert(0, "image_name", names)
    indices = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, int)
    frame["inferred_class"] = [class_names[int(index)] for index in indices]
    frame["inferred_index"] = indices.astype(int)
    if multi_label:
        for position, name in enumerate(class_names):
            frame[f"{name}_pred"] = (probabilities[:, position] >= threshold).astype(int)
    return frame


def predict(test_dataframe: str | Path, output_csv: str | Path, *, img_dir: str | Path | None = None,
            model_uri: str | None = None, keras_model: str | Path | None = None,
            config_table: str | Path | None = None, generate_numpy: bool = False, layer: str | None = None,
            threshold: float = 0.5, batch_size: int | None = None, show_progress: bool = False,
            metadata: str | Path | None = None, tta: str | None = None) -> PredictResult:
    """Predicts every image of a test dataframe and writes the predictions CSV and its sidecar.

    Args:
        test_dataframe: CSV with an ``image_name`` column (ground-truth columns are ignored).
        output_csv: where to write the predictions.
        img_dir: image folder (default: ``images/`` beside the test dataframe).
        model_uri: an MLflow model URI (``runs:/ID/model``, ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``).
        keras_model: a .h5/.keras file (alternative to model_uri), with ``config_table`` (the original TIML
            config table; its first row gives resize filter, colour space, class columns and batch size).
        generate_numpy: also write ``P.npy`` (N x C) and ``P/<image_name>-0000000000.npy`` per image.
        layer: write this layer's activations (per image .npy) instead of the predictions.
        threshold: decision threshold of multi-label models. Defaults to 0.5.
        batch_size: images per batch (default: the config table's, else 32).
        metadata: a CSV of ``image_name`` and per-image numbers, for a model trained with a ``metadata`` column
            (its second input); every image needs a row.
        tta: a test-time augmentation preset (:data:`timl.tta.TTA_PRESETS`): each image's probabilities are the
            mean over its views (one model call per batch holds every view) and ``tta_std_<class>`` columns,
            after the others, their standard deviation. Defaults to None (none).

    Raises:
        MissingFileError: missing test dataframe or images (all listed, before any model work).
        ImageError: unreadable images (all listed). ModelError: bad model or layer.
    """
    from timl import classifier as classifiers
    from timl import datasets, images
    from timl import tta as tta_module

    preset = tta_module.get_tta(tta, field="--tta")
    if preset is not None and layer:
        raise ModelError(f"--tta averages predictions; --layer writes activations: give one of them. "
                         f"Received: tta={tta!r}, layer={layer!r}")
    test_path, output_csv = Path(test_dataframe), Path(output_csv)
    names = datasets.read_image_names(test_path)
    img_dir = Path(img_dir) if img_dir else test_path.parent / "images"
    paths = datasets.image_paths(names, img_dir, test_path)
    classifier = classifiers.load_classifier(model_uri=model_uri, keras_model=keras_model, config_table=config_table)
    extra = _metadata(classifier, metadata, names)
    batch_size = batch_size or _config_batch_size(config_table) or 32
    arrays = images.load_images(paths, classifier.preprocessing)
    output_csv.parent.mkdir(parents=True, exist_ok=True)
    numpy_dir = output_csv.with_suffix("") if generate_numpy or layer else None
    if layer:
        activations = _run_model(layer_model(classifier.model, layer), arrays, batch_size, show_progress, extra)
        _write_per_image(numpy_dir, names, activations)
        probabilities = activations
    else:
        probabilities, spread = _predict_probabilities(classifier, arrays, batch_size, show_progress, extra, preset)
        frame = predictions_frame(names, probabilities, classifier.class_names, classifier.multi_label, threshold)
        if spread is not None:
            frame[tta_module.std_columns(classifier.class_names)] = spread
        frame.to_csv(output_csv, index=False)
    numpy_file = None
    if generate_numpy and not layer:
        numpy_file = output_csv.with_suffix(".npy")
        np.save(numpy_file, probabilities)
        _write_per_image(numpy_dir, names, probabilities)
    sidecar = _write_sidecar(output_csv, classifier, test_path, img_dir, threshold, layer, preset)
    return PredictResult(output_csv, sidecar, probabilities, numpy_file, numpy_dir)


def _predict_probabilities(classifier, arrays: np.ndarray, batch_size: int, show_progress: bool, metadata,
                           preset) -> tuple[np.ndarray, np.ndarray | None]:
    """The probabilities, and with a test-time augmentation preset their spread over its views (else None)."""
    if preset is None:
        return _run_model(classifier.model, arrays, batch_size, show_progress, metadata), None
    started = time.time()
    progress = (lambda done, total: _progress(done, total, started)) if show_progress else None
    views = classifier.predict_views(arrays, preset.name, batch_size, metadata, progress)
    return views.mean, views.std


def _metadata(classifier, metadata, names: list[str]):
    """The per-image metadata rows a model with a metadata input needs, in the order of ``names``.

    Raises:
        ModelError: metadata missing for such a model, or given for a model of images alone.
    """
    from timl import datasets

    if classifier.takes_metadata and not metadata:
        raise ModelError("This model takes per-image metadata besides the image (it was trained with a metadata "
                         "column): give the CSV with --metadata. Received: metadata=None")
    if metadata and not classifier.takes_metadata:
        raise ModelError(f"This model takes images alone; drop --metadata. Received: metadata={str(metadata)!r}")
    return datasets.read_metadata(metadata, names) if metadata else None


def _config_batch_size(config_table) -> int | None:
    if not config_table:
        return None
    from timl import config

    rows = config.read_table(config_table)
    return rows[0].batchsize if rows and not isinstance(rows[0], Exception) else None


def _write_sidecar(output_csv: Path, classifier, test_path: Path, img_dir: Path, threshold: float,
                   layer: str | None, preset=None) -> Path:
    """``P.csv.json``: where the predictions came from, so inspect can link its run to the model's run."""
    source = classifier.source
    payload = {"model_uri": source.get("model_uri"), "keras_model": source.get("keras_model"),
               "run_id": source.get("run_id"), "class_names": list(classifier.class_names),
               "multi_label": classifier.multi_label, "preprocessing": classifier.preprocessing.to_dict(),
               "threshold": threshold, "layer": layer, "test_dataframe": str(test_path.resolve()),
               "img_dir": str(img_dir.resolve()), "created": datetime.datetime.now().isoformat(timespec="seconds")}
    if preset is not None:  # only then: a sidecar without test-time augmentation stays as it was
        payload["tta"] = preset.name
    path = Path(str(output_csv) + ".json")
    path.write_text(json.dumps(payload, indent=2))
    return path


EXAMPLE = """Examples:

  python -m timl.predict --model-uri models:/skin@champion --test-dataframe test.csv --img-dir images
      --output-csv predictions.csv

  python -m timl.predict --keras-model train_output/0-keras_model-250101-120000.h5 --config-table runs.csv
      --test-dataframe test.csv --img-dir images --output-csv predictions.csv --generate-numpy
"""


@command(epilog=EXAMPLE)
@click.option("--model-uri", help="MLflow model URI: runs:/ID/model, models:/NAME@ALIAS or models:/NAME/VERSION.")
@click.option("--keras-model", type=click.Path(dir_okay=False), help="A .h5/.keras model file (instead of --model-uri).")
@click.option("--config-table", type=click.Path(dir_okay=False), help="The TIML table the .h5 model was trained from.")
@click.option("--test-dataframe", required=True, type=click.Path(dir_okay=False), help="CSV with an image_name column.")
@click.option("--img-dir", type=click.Path(file_okay=False), help="Image folder (default: images/ beside the test dataframe).")
@click.option("--output-csv", required=True, type=click.Path(dir_okay=False), help="Where to write the predictions.")
@click.option("--generate-numpy", is_flag=True, help="Also write P.npy and P/<image_name>-0000000000.npy.")
@click.option("--layer", help="Write this layer's activations (per image .npy) instead of the predictions.")
@click.option("--threshold", default=0.5, show_default=True, type=float, help="Multi-label decision threshold.")
@click.option("--batch-size", type=int, help="Images per batch (default: the config table's, else 32).")
@click.option("--metadata", type=click.Path(dir_okay=False),
              help="CSV of image_name and per-image numbers, for a model trained with a metadata column.")
@click.option("--tta", type=click.Choice(TTA_CHOICES), default=NO_TTA, show_default=True,
              help="Test-time augmentation: average each image's probabilities over the preset's views "
                   "(hflip: 2, hflip_rot4: 8; every view in one model call) and add tta_std_<class> columns.")
@cuda_gpu_option
@tracking_uri_option()
def cli(model_uri, keras_model, config_table, test_dataframe, img_dir, output_csv, generate_numpy, layer,
        threshold, batch_size, metadata, tta, cuda_gpu, tracking_uri):
    """Predict the class of every image of a test dataframe."""
    setup_logging()
    select_gpu(cuda_gpu)
    with user_errors():
        if model_uri:
            from timl import tracking

            tracking.configure(tracking_uri, create=False)
        result = predict(test_dataframe, output_csv, img_dir=img_dir, model_uri=model_uri, keras_model=keras_model,
                         config_table=config_table, generate_numpy=generate_numpy, layer=layer,
                         threshold=threshold, batch_size=batch_size, show_progress=True, metadata=metadata,
                         tta=tta)
    written = result.numpy_dir if layer else result.output_csv
    click.echo(f"Wrote {len(result.probabilities)} predictions to {written} (provenance: {result.sidecar})")


if __name__ == "__main__":
    cli()
