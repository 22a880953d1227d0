"""Helpers shared by the tests (fixtures are in conftest.py): tables, generated images, tiny models, servers."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
SHARED_ISIC = REPO.parent / "shared" / "data" / "isic2019-sample"


def load_bench(name: str):
    """``bench/NAME.py`` as a module (imported with ``bench/`` on ``sys.path`` for its harness and siblings, then
    taken off again)."""
    import importlib.util

    import pytest

    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO / "bench"))
        spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def write_table(path: Path, rows: list[dict]) -> Path:
    """Writes a training table with the original TIML input columns."""
    columns = ["method", "dataset", "split", "epochs", "imgaug", "batchsize", "imgsize", "resizefilter",
               "colorspace", "classcolumns", "classweights"]
    extra = [key for row in rows for key in row if key not in columns]
    pd.DataFrame(rows, columns=columns + list(dict.fromkeys(extra))).to_csv(path, index=False)
    return path


def small_cnn_row(dataset: str, **overrides) -> dict:
    """A training-table row of the small CNN: 2 epochs, 16 px, split n=15."""
    row = {"method": "SmallCNN", "dataset": dataset, "split": "n=15", "epochs": 2, "imgaug": "none",
           "batchsize": 16, "imgsize": 16, "resizefilter": "bilinear", "colorspace": "RGB",
           "classcolumns": "default", "classweights": "default"}
    row.update(overrides)
    return row


def random_images(folder: Path, count: int, size=(20, 16), seed: int = 0) -> list[str]:
    """Writes ``count`` random RGB PNGs named img000..; returns the names."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        name = f"img{index:03d}"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{name}.png")
        names.append(name)
    return names


def tiny_classifier(size: int = 16, classes=("A", "B", "C")):
    """A two-convolution softmax classifier (untrained, seeded) with its preprocessing and classes."""
    import keras

    from timl.classifier import Classifier
    from timl.images import Preprocessing

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(classes), activation="softmax")(x)
    return Classifier(keras.Model(inputs, outputs), Preprocessing(size), tuple(classes), False)


def colour_classifier(size: int = 16, classes=("A", "B", "C")):
    """A classifier that predicts the class of the image's strongest colour channel (red: the first class, green
    the second, blue the third), with a probability near 1 for a pure colour."""
    import keras

    from timl.classifier import Classifier
    from timl.images import Preprocessing

    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(3, 1, name="conv_a")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(len(classes), activation="softmax")
    model = keras.Model(inputs, dense(x))
    model.get_layer("conv_a").set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3), np.zeros(3, np.float32)])
    dense.set_weights([20 * np.eye(3, len(classes), dtype=np.float32), np.zeros(len(classes), np.float32)])
    return Classifier(model, Preprocessing(size), tuple(classes), False)


def encoded(mode="RGB", size=(40, 24), format_name="PNG", **save) -> bytes:
    """A random image of ``mode`` and ``size`` encoded as ``format_name``."""
    from PIL import Image

    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray((rng.integers(0, 65535, (size[1], size[0]))).astype(np.uint16))
    elif mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=format_name, **save)
    return buffer.getvalue()


#: A made-up patient of the DICOM files the tests write (tests/test_dicom.py): no identifier of it may show in a
#: message, a log, an answer or a param.
PATIENT = {"PatientName": "Quimby^Zebediah", "PatientID": "QX-990077", "PatientBirthDate": "19010203"}


def dicom_dataset(syntax=None):
    """An empty Secondary Capture DICOM data set (pydicom) with its file meta and the made-up :data:`PATIENT`."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID = generate_uid()
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    for keyword, value in PATIENT.items():
        setattr(dataset, keyword, value)
    return dataset


def dataset_bytes(dataset) -> bytes:
    """A pydicom data set as the bytes of a DICOM file (preamble and file meta)."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom_bytes(pixels: np.ndarray, photometric: str, syntax=None, **elements) -> bytes:
    """A DICOM file of ``pixels`` (rows x columns [x 3]), compressed with ``syntax`` when pydicom can encode it."""
    dataset = dicom_dataset()
    dataset.set_pixel_data(pixels, photometric, pixels.dtype.itemsize * 8)
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    if syntax is not None:
        dataset.compress(syntax)
    return dataset_bytes(dataset)


def saved_model(folder: Path, size: int = 16) -> Path:
    """A tiny model (input ``size`` px) saved as .h5 with its metadata sidecar, as training writes it."""
    from timl.classifier import write_metadata

    classifier = tiny_classifier(size)
    path = folder / "tiny.h5"
    classifier.model.save(path)
    write_metadata(path, classifier.metadata())
    return path


def logged_tiny_model(folder: Path) -> str:
    """Logs a tiny model (:func:`saved_model`) as TIML's pyfunc in a new run of the active store, with the run tag
    training sets (``timl.model_sha256``); returns the run id (its model: ``runs:/RUN_ID/model``)."""
    import mlflow

    from timl import pyfunc, tracking
    from timl.classifier import classifier_from_keras_file, sha256_of

    path = saved_model(folder)
    with mlflow.start_run() as run:
        mlflow.set_tag(tracking.TAG_MODEL_SHA256, sha256_of(path))
        pyfunc.log_model(path, Path(str(path) + ".json"), classifier_from_keras_file(path))
    return run.info.run_id


def logged_model_folder(store: Path, run_id: str) -> Path:
    """The local artifact folder of a run's logged model ``model`` in a file artifact store under ``store``."""
    import mlflow

    model_id = mlflow.get_run(run_id).outputs.model_outputs[0].model_id
    return next(store.glob(f"mlruns/*/models/{model_id}/artifacts"))


@contextlib.contextmanager
def serving_in_thread(app):
    """A real HTTP server for the WSGI ``app`` on a free loopback port, in a background thread; yields its URL and
    shuts it down on leaving."""
    from werkzeug.serving import make_server

    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}"
    finally:
        http.shutdown()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float = 300) -> None:
    """Waits until ``url`` answers 200 (a server process starting up: /health says ready once the model is loaded
    and warm, which takes minutes on a busy machine)."""
    import time

    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(url, timeout=30).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)  # also after a 503 "starting": a busy loop would take a core from the warming server
    raise AssertionError(f"{url} did not answer within {timeout} s")


def train_in_own_store(folder: Path, rows: list[dict], experiment: str, **options):
    """Trains a table in ``folder`` with its own SQLite store (module fixtures); returns (outcome, uri)."""
    import mlflow

    from timl import training

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    previous = os.getcwd()
    os.chdir(folder)
    try:
        table = write_table(folder / "table.csv", rows)
        outcome = training.train_table(table, out_dir=folder / "out", experiment=experiment, tracking_uri=uri,
                                       **{"skip_roc": True, **options})
    finally:
        os.chdir(previous)
    mlflow.set_tracking_uri(uri)
    return outcome, uri



CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--window-size=1280,1000")


def chromium(profile_dir: Path, flags: tuple[str, ...] = CHROMIUM_FLAGS):
    """A headless Debian Chromium driven by selenium (chromium and chromium-driver must be installed)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*flags, f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.implicitly_wait(0)
    return driver


def wait_until(driver, condition, timeout: float = 60):
    """Waits until ``condition(driver)`` is truthy; returns it."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda current: condition(current))
