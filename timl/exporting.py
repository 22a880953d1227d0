"""Exports of a TIML model for other inference servers: a TensorFlow SavedModel (TF Serving), an ONNX file (ONNX
Runtime) and a Triton model repository folder; each checked against the Keras model before it is kept.

Every export takes what the Keras model takes, one batch of resized RGB images as float32 in [0, 1] (input
``image``, shape (N, S, S, 3)), and gives what it gives, the probabilities (output ``probabilities``, shape (N,
classes)): the preprocessing layers stay inside (ImageNet scaling, temperature scaling), so raw resized pixels
in give the same probabilities. ONNX files are converted with ``tf2onnx`` from the model's TensorFlow graph
(extra ``export``). Importing this module is cheap: TensorFlow is imported when a model is exported.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from timl.errors import ConfigError, ModelError

#: The export formats: ``savedmodel`` (TF Serving), ``onnx`` (ONNX Runtime), ``triton`` (a model repository).
FORMATS = ("savedmodel", "onnx", "triton")

#: The model file Triton runs: ``1/model.onnx`` (backend onnxruntime) or ``1/model.savedmodel`` (tensorflow).
TRITON_PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "savedmodel": ("tensorflow_savedmodel",
                                                                               "model.savedmodel")}

#: The largest difference of an export's probabilities from the Keras model's on the check's images.
TOLERANCE = 1e-4

#: The names of every export's input and output tensor (the SavedModel signature's keys, ONNX's tensor names).
INPUT_NAME, OUTPUT_NAME = "image", "probabilities"

#: The ONNX opset of the exported files (ONNX Runtime 1.17 and later, Triton 24.01 and later run it).
ONNX_OPSET = 17

#: The labels file of a Triton folder: one class name a line, in the order of the outputs.
LABELS_FILE = "labels.txt"


@dataclasses.dataclass
class Exported:
    """A checked export: its folder, the model file in it and the largest difference from the Keras model."""

    folder: Path
    model_file: Path
    difference: float
    images: int


def check_out_folder(out: Path) -> None:
    """Refuses an output folder that exists and holds anything (an export never writes over files).

    Raises:
        ConfigError: ``out`` is a file, or a folder that is not empty.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; give a new or empty folder (an export "
                          f"never writes over files). Received: --out {out}")


def sample_images(imgsize: int, count: int = 6, seed: int = 0) -> np.ndarray:
    """The check's images: black, white and ``count - 2`` seeded random ones, (count, S, S, 3) float32 in [0, 1]."""
    random = np.random.default_rng(seed).random((max(count - 2, 0), imgsize, imgsize, 3), dtype=np.float32)
    flat = np.stack([np.zeros((imgsize, imgsize, 3), np.float32), np.ones((imgsize, imgsize, 3), np.float32)])
    return np.concatenate([flat, random])


def _image_spec(imgsize: int):
    import tensorflow as tf

    return tf.TensorSpec((None, imgsize, imgsize, 3), tf.float32, name=INPUT_NAME)


def write_savedmodel(model, imgsize: int, folder: Path) -> Path:
    """Writes a SavedModel whose ``serving_default`` signature maps ``image`` to ``probabilities``."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(image):
        return {OUTPUT_NAME: model(image, training=False)}

    archive.add_endpoint("serving_default", serve, input_signature=[_image_spec(imgsize)])
    archive.write_out(str(folder), verbose=False)
    return folder


def write_onnx(model, imgsize: int, path: Path) -> Path:
    """Writes an ONNX file (``tf2onnx`` from the model's TensorFlow graph) with input ``image`` and output
    ``probabilities``."""
    try:
        import tf2onnx
    except ImportError as error:
        raise ModelError(f"ONNX export needs tf2onnx: pip install 'timl[export]'. Received: {error}") from error
    import logging

    import onnx

    logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # its per-pass optimizer notes
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=(_image_spec(imgsize),), opset=ONNX_OPSET)
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [OUTPUT_NAME if name == old else name for name in node.output]
    proto.graph.output[0].name = OUTPUT_NAME
    onnx.save(proto, str(path))
    return path


def savedmodel_predictor(folder: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The probabilities of a SavedModel, as TF Serving computes them (``tf.saved_model.load``, its signature)."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(folder)).signatures["serving_default"]
    return lambda images: signature(**{INPUT_NAME: tf.constant(images)})[OUTPUT_NAME].numpy()


def onnx_predictor(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The probabilities of an ONNX file under ONNX Runtime."""
    from timl.onnx_runtime import OnnxModel

    return OnnxModel(path).predict_on_batch


def check_export(model, predictor: Callable, images: np.ndarray, what: str) -> float:
    """The largest difference of an export's probabilities from the Keras model's on ``images``.

    Raises:
        ModelError: over :data:`TOLERANCE`; the message names the export and the difference.
    """
    expected = np.asarray(model.predict_on_batch(images), np.float64)
    actual = np.asarray(predictor(images), np.float64)
    difference = float(np.max(np.abs(actual - expected))) if actual.shape == expected.shape else float("inf")
    if not difference <= TOLERANCE:
        raise ModelError(f"The exported {what} does not give the Keras model's probabilities: on {len(images)} "
                         f"sample images they differ by up to {difference:.3g} (at most {TOLERANCE:g} allowed; "
                         f"shapes {actual.shape} vs {expected.shape}); nothing was written. The model may use a "
                         "layer the converter translates differently.")
    return difference


def triton_config(name: str, platform: str, imgsize: int, classes: int, max_batch_size: int) -> str:
    """The ``config.pbtxt`` of a Triton model: its tensors, dynamic batching and the labels file."""
    label = f'    label_filename: "{LABELS_FILE}"'
    lines = [f'name: "{name}"', f'platform: "{platform}"', f"max_batch_size: {max_batch_size}"]
    for kind, tensor_name, dims, extra in (("input", INPUT_NAME, f"{imgsize}, {imgsize}, 3", []),
                                           ("output", OUTPUT_NAME, str(classes), [label])):
        lines += [f"{kind} [", "  {", f'    name: "{tensor_name}"', "    data_type: TYPE_FP32",
                  f"    dims: [ {dims} ]", *extra, "  }", "]"]
    lines += ["dynamic_batching {", "  max_queue_delay_microseconds: 2000", "}"]
    return "\n".join(lines) + "\n"


def _write(classifier, fmt: str, folder: Path, model_name: str, triton_platform: str,
           max_batch_size: int) -> tuple[Path, Callable]:
    """Writes one export into ``folder``; returns its model file and the predictor that runs it."""
    model, imgsize = classifier.model, classifier.preprocessing.imgsize
    if fmt == "savedmodel":
        return folder, savedmodel_predictor(write_savedmodel(model, imgsize, folder))
    if fmt == "onnx":
        path = write_onnx(model, imgsize, folder / "model.onnx")
        return path, onnx_predictor(path)
    platform, file_name = TRITON_PLATFORMS[triton_platform]
    version = folder / model_name / "1"
    version.mkdir(parents=True)
    (folder / model_name / "config.pbtxt").write_text(
        triton_config(model_name, platform, imgsize, len(classifier.class_names), max_batch_size))
    (folder / model_name / LABELS_FILE).write_text("".join(f"{name}\n" for name in classifier.class_names))
    if triton_platform == "savedmodel":
        return version / file_name, savedmodel_predictor(write_savedmodel(model, imgsize, version / file_name))
    path = write_onnx(model, imgsize, version / file_name)
    return path, onnx_predictor(path)


def export_model(classifier, fmt: str, out: str | Path, *, model_name: str = "timl_model",
                 triton_platform: str = "onnx", max_batch_size: int = 32, check_images: int = 6) -> Exported:
    """Exports a Classifier's model to ``out`` and checks the export on sample images before keeping it.

    The export is written beside ``out`` (``<out>.partial``), checked (:func:`check_export`), then moved to
    ``out``; a failed export leaves nothing.

    Args:
        classifier: a loaded :class:`timl.classifier.Classifier` (a model of images alone).
        fmt: one of :data:`FORMATS`.
        out: a new or empty folder.
        model_name: the Triton model's name (its folder and ``config.pbtxt`` name).
        triton_platform: the model file of a Triton folder, a key of :data:`TRITON_PLATFORMS`.
        max_batch_size: the Triton model's largest batch.
        check_images: how many sample images the check compares (:func:`sample_images`).

    Raises:
        ConfigError: an unknown format, platform or model name, or an ``out`` that is not empty.
        ModelError: a model with a metadata input, a converter missing or failing, or a failed check.
    """
    out = Path(out)
    _check_arguments(classifier, fmt, out, model_name, triton_platform)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        model_file, predictor = _write(classifier, fmt, partial, model_name, triton_platform, max_batch_size)
        images = sample_images(classifier.preprocessing.imgsize, check_images)
        difference = check_export(classifier.model, predictor, images, f"{fmt} model {model_file.name}")
        if out.exists():
            out.rmdir()  # empty: checked above
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return Exported(out, out / model_file.relative_to(partial), difference, len(images))


def _check_arguments(classifier, fmt: str, out: Path, model_name: str, triton_platform: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown export format. Expected one of: {', '.join(FORMATS)}. Received: --format {fmt}")
    if triton_platform not in TRITON_PLATFORMS:
        raise ConfigError(f"Unknown Triton model file. Expected one of: {', '.join(TRITON_PLATFORMS)}. "
                          f"Received: --triton-platform {triton_platform}")
    if not model_name or not all(char.isascii() and (char.isalnum() or char in "_.-") for char in model_name):
        raise ConfigError("A Triton model name is letters, digits, '_', '.' and '-'. "
                          f"Received: --model-name {model_name!r}")
    check_out_folder(out)
    if classifier.takes_metadata:
        raise ModelError("This model takes per-image metadata besides the image; exports are of models of images "
                         "alone (as the server serves).")


def onnx_classifier(classifier, threads: int = 0):
    """The Classifier with its model run by ONNX Runtime: converted (:func:`write_onnx`) and checked on sample
    images (:func:`check_export`) in a temporary folder; the explanations' Keras model stays on the original.

    Raises:
        ModelError: ONNX Runtime or tf2onnx missing, or a converted model that differs from the Keras model.
    """
    import tempfile

    from timl.onnx_runtime import OnnxModel

    imgsize = classifier.preprocessing.imgsize
    with tempfile.TemporaryDirectory(prefix="timl-onnx-") as folder:
        model = OnnxModel(write_onnx(classifier.model, imgsize, Path(folder) / "model.onnx"), threads)
    check_export(classifier.model, model.predict_on_batch, sample_images(imgsize), "ONNX model (INFERENCE_BACKEND "
                 "onnxruntime)")
    return dataclasses.replace(classifier, model=model)
