"""DICOM in (issue 28): files written by pydicom here, decoded to the pixels of their source, refused with an
ImageError naming the file, and taken by every entry point (tables, predict, explain, the server, the pyfunc)
without a patient identifier reaching a log, a message, an answer or an MLflow param."""

from __future__ import annotations

import base64
import io
import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import pydicom
from pydicom.pixels import convert_color_space
from pydicom.uid import JPEGBaseline8Bit, JPEGLSLossless, RLELossless

from helpers import PATIENT
from helpers import dataset_bytes as _bytes
from helpers import dicom_bytes as dicom
from helpers import dicom_dataset as _dataset
from timl.errors import ImageError
from timl.images import decode_image


def encapsulated(frame: bytes, syntax, photometric: str, rows: int, columns: int, samples: int = 3) -> bytes:
    """A DICOM file holding one already compressed frame (a JPEG file's bytes) in ``syntax``."""
    from pydicom.encaps import encapsulate

    dataset = _dataset(syntax)
    dataset.Rows, dataset.Columns, dataset.SamplesPerPixel = rows, columns, samples
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = dataset.BitsStored = 8
    dataset.HighBit, dataset.PixelRepresentation = 7, 0
    if samples == 3:
        dataset.PlanarConfiguration = 0
    dataset.PixelData = encapsulate([frame])
    dataset["PixelData"].VR = "OB"
    return _bytes(dataset)


def ybr_422(rgb: np.ndarray) -> bytes:
    """An uncompressed YBR_FULL_422 file of ``rgb`` (pixel pairs of one colour): Y0 Y1 Cb Cr per pair."""
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    pairs = np.stack([ybr[:, 0::2, 0], ybr[:, 1::2, 0], ybr[:, 0::2, 1], ybr[:, 0::2, 2]], axis=-1)
    dataset = _dataset()
    dataset.Rows, dataset.Columns, dataset.SamplesPerPixel = rgb.shape[0], rgb.shape[1], 3
    dataset.PhotometricInterpretation, dataset.PlanarConfiguration = "YBR_FULL_422", 0
    dataset.BitsAllocated = dataset.BitsStored = 8
    dataset.HighBit, dataset.PixelRepresentation = 7, 0
    dataset.PixelData = pairs.astype(np.uint8).tobytes()
    return _bytes(dataset)


RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)
PAIRED = np.repeat(RNG.integers(0, 256, (12, 5, 3), dtype=np.uint8), 2, axis=1)  # one colour per pixel pair
GREY8 = RNG.integers(0, 256, (9, 11), dtype=np.uint8)
GREY16 = RNG.integers(100, 4000, (9, 11), dtype=np.uint16)


def _stretched(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return np.round((values - values.min()) / (values.max() - values.min()) * 255).astype(np.uint8)


def _jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=95, subsampling=1)  # 4:2:2
    return buffer.getvalue()


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=2)


CASES = {  # name: (DICOM bytes, expected RGB pixels, tolerance)
    "RGB": (lambda: dicom(RGB, "RGB"), lambda: RGB, 0),
    "RGB, RLE Lossless": (lambda: dicom(RGB, "RGB", RLELossless), lambda: RGB, 0),
    "YBR_FULL": (lambda: dicom(convert_color_space(RGB, "RGB", "YBR_FULL"), "YBR_FULL"), lambda: RGB, 2),
    "YBR_FULL_422": (lambda: ybr_422(PAIRED), lambda: PAIRED, 2),
    "JPEG baseline": (lambda: encapsulated(_jpeg(PAIRED), JPEGBaseline8Bit, "YBR_FULL_422", 12, 10),
                      lambda: np.asarray(Image.open(io.BytesIO(_jpeg(PAIRED))).convert("RGB")), 3),
    "MONOCHROME2 8 bit": (lambda: dicom(GREY8, "MONOCHROME2"), lambda: _grey(GREY8), 0),
    "MONOCHROME2 8 bit, RLE": (lambda: dicom(GREY8, "MONOCHROME2", RLELossless), lambda: _grey(GREY8), 0),
    "MONOCHROME1 8 bit": (lambda: dicom(GREY8, "MONOCHROME1"), lambda: _grey(255 - GREY8), 0),
    "MONOCHROME2 16 bit, min-max": (lambda: dicom(GREY16, "MONOCHROME2"), lambda: _grey(_stretched(GREY16)), 0),
    "MONOCHROME2 16 bit, window": (
        lambda: dicom(GREY16, "MONOCHROME2", WindowCenter=2000, WindowWidth=1001),
        lambda: _grey(np.round(np.clip((GREY16 - 1999.5) / 1000 + 0.5, 0, 1) * 255).astype(np.uint8)), 0),
    "MONOCHROME2 16 bit, rescaled": (
        lambda: dicom(GREY16, "MONOCHROME2", RescaleSlope=2, RescaleIntercept=-1024),
        lambda: _grey(_stretched(GREY16)), 0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_dicom_decodes_to_its_source_pixels(case):
    """Every readable kind, from bytes and from a file object, gives the RGB pixels of the array it was made of."""
    make, expected, tolerance = CASES[case]
    data = make()
    assert data[128:132] == b"DICM"
    for source in (data, io.BytesIO(data)):
        image = decode_image(source, name="scan.dcm")
        assert image.mode == "RGB"
        difference = np.abs(np.asarray(image, dtype=int) - expected().astype(int))
        assert difference.max() <= tolerance, case


def test_a_dcm_path_and_a_dicom_file_without_the_suffix_are_read(tmp_path):
    (tmp_path / "a.DCM").write_bytes(dicom(RGB, "RGB"))
    (tmp_path / "b.img").write_bytes(dicom(RGB, "RGB"))  # found by the preamble
    for name in ("a.DCM", "b.img"):
        assert (np.asarray(decode_image(tmp_path / name)) == RGB).all()


def _multi_frame() -> bytes:
    dataset = _dataset()
    dataset.set_pixel_data(np.stack([GREY8, GREY8]), "MONOCHROME2", 8)
    return _bytes(dataset)


def _wrong_photometric() -> bytes:
    data = dicom(RGB, "RGB")
    dataset = pydicom.dcmread(io.BytesIO(data))
    dataset.PhotometricInterpretation = "MONOCHROME2"  # three samples per pixel
    return _bytes(dataset)


def _palette() -> bytes:
    dataset = pydicom.dcmread(io.BytesIO(dicom(GREY8, "MONOCHROME2")))
    dataset.PhotometricInterpretation = "PALETTE COLOR"
    return _bytes(dataset)


REFUSED = {  # name: (DICOM bytes, words the message must hold)
    "truncated in the pixels": (lambda: dicom(RGB, "RGB")[:-40], ["damaged or incomplete"]),
    "truncated before the pixels": (lambda: dicom(RGB, "RGB")[:300], ["no image", "truncated"]),
    "multi-frame": (_multi_frame, ["multi-frame", "2 frames"]),
    "wrong photometric interpretation": (_wrong_photometric, ["'MONOCHROME2' with 3 sample(s)", "RGB (3)"]),
    "palette colour": (_palette, ["'PALETTE COLOR'", "MONOCHROME1 (1)"]),
    "no decoder": (lambda: encapsulated(b"\xff\xd8 not JPEG-LS", JPEGLSLossless, "MONOCHROME2", 4, 4, 1),
                   ["JPEG-LS Lossless", "no decoder", "RLE Lossless and JPEG baseline"]),
    "damaged JPEG": (lambda: encapsulated(_jpeg(PAIRED)[:60], JPEGBaseline8Bit, "YBR_FULL_422", 12, 10),
                     ["damaged or incomplete"]),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_unreadable_dicom_is_an_image_error_naming_the_file_and_no_patient(case, caplog):
    make, words = REFUSED[case]
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ImageError) as raised:
            decode_image(make(), name="scan-17.dcm")
    message = str(raised.value)
    assert message.startswith("Cannot decode scan-17.dcm: ") and all(word in message for word in words), message
    _assert_no_patient(message, caplog.text)


def test_the_pixel_cap_is_checked_before_the_pixels_are_decoded():
    """A file claiming 5000 x 5000 pixels with 10 bytes of them: refused by the cap, not by the decoder."""
    dataset = pydicom.dcmread(io.BytesIO(dicom(GREY8, "MONOCHROME2")))
    dataset.Rows = dataset.Columns = 5000
    with pytest.raises(ImageError, match=r"5000x5000 pixels exceeds the limit of 1000000 pixels"):
        decode_image(_bytes(dataset), max_pixels=1_000_000, name="big.dcm")


def _assert_no_patient(*texts: str) -> None:
    for text in texts:
        for value in (*PATIENT["PatientName"].split("^"), PATIENT["PatientID"], PATIENT["PatientBirthDate"]):
            assert value not in text, f"patient identifier {value!r} leaked: {text[:400]}"


# --- every entry point -------------------------------------------------------------------------------------------


def test_train_predict_and_explain_read_dicom_tables_and_files(tmp_path, caplog):
    """A table whose images are .dcm trains; predict and explain take a .dcm; no identifier in a param, tag or log."""
    import mlflow

    from helpers import saved_model, small_cnn_row, train_in_own_store
    from timl.explain import write_explanations
    from timl.predict import predict

    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    rows = []
    for index in range(24):
        colour = index % 2
        pixels = np.zeros((16, 16, 3), np.uint8)
        pixels[..., colour] = 200 + RNG.integers(0, 50)
        (folder / "images" / f"s{index:02d}.dcm").write_bytes(dicom(pixels, "RGB"))
        rows.append({"image_name": f"s{index:02d}", "RED": int(colour == 0), "GREEN": int(colour == 1)})
    pd.DataFrame(rows).to_csv(folder / "scans.csv", index=False)
    with caplog.at_level(logging.INFO):
        outcome, uri = train_in_own_store(tmp_path, [small_cnn_row(str(folder / "scans.csv"), epochs=1,
                                                                   split="n=8")], "dicom")
        assert not outcome.failed, [row.message for row in outcome.failed]
        run = mlflow.get_run(outcome.rows[0].run_id)
        model = saved_model(tmp_path)
        result = predict(folder / "scans.csv", tmp_path / "p.csv", keras_model=model)
        files = write_explanations(keras_model=model, image=str(folder / "images" / "s03.dcm"),
                                   methods=["gradcam"], out_dir=tmp_path / "explained")
    predictions = pd.read_csv(tmp_path / "p.csv")
    assert len(predictions) == 24 and result is not None
    assert files and all(path.exists() for path in files)
    _assert_no_patient(str(run.data.params), str(run.data.tags), caplog.text, predictions.to_csv())


def test_the_server_classifies_and_explains_an_uploaded_dicom_and_refuses_a_bad_one(caplog):
    from helpers import tiny_classifier
    from timl.serving import create_app

    client = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "MAX_IMAGE_PIXELS": 1_000_000},
                        classifier=tiny_classifier()).test_client()

    def post(url, data, filename):
        return client.post(url, data={"file": (io.BytesIO(data), filename)}, content_type="multipart/form-data")

    with caplog.at_level(logging.DEBUG):
        answer = post("/api/classify", dicom(RGB, "RGB"), "scan.dcm")
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["filename"] == "scan.dcm" and len(answer.get_json()["prediction"]) == 3
        explained = post("/api/explain/gradcam/conv_b", dicom(GREY16, "MONOCHROME2"), "upload.bin")
        assert explained.status_code == 200, explained.get_json()
        refused = post("/api/classify", _wrong_photometric(), "scan.dcm")
        truncated = post("/api/classify", dicom(RGB, "RGB")[:-40], "scan.dcm")
    for bad in (refused, truncated):
        assert bad.status_code == 400 and "the uploaded file 'scan.dcm'" in bad.get_json()["error"]
        assert "Traceback" not in bad.get_data(as_text=True)
    _assert_no_patient(caplog.text, *(reply.get_data(as_text=True) for reply in (answer, explained, refused,
                                                                                  truncated)))


def test_an_uploaded_dicom_or_tiff_comes_back_as_a_png_the_pages_can_show(caplog):
    """POST /api/preview: what the classify pages show of a file browsers cannot draw. Its pixels alone, at most
    ``size`` on the longer side, never cached; a bad file or size is a 400 naming it."""
    from helpers import tiny_classifier
    from timl.serving import create_app

    client = create_app({"CLASSIFICATION_MODEL": "tiny.h5"}, classifier=tiny_classifier()).test_client()

    def post(url, data, filename):
        return client.post(url, data={"file": (io.BytesIO(data), filename)}, content_type="multipart/form-data")

    tiff = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 30, 30)).save(tiff, format="TIFF")
    with caplog.at_level(logging.DEBUG):
        shown = post("/api/preview", dicom(RGB, "RGB"), "scan.dcm")
        small = post("/api/preview?size=32", tiff.getvalue(), "lesion.tif")
        bad = post("/api/preview", dicom(RGB, "RGB")[:-40], "scan.dcm")
        too_big = post("/api/preview?size=9999", tiff.getvalue(), "lesion.tif")
    assert shown.status_code == 200 and shown.mimetype == "image/png"
    assert shown.headers["Cache-Control"] == "private, no-store"
    assert (np.asarray(Image.open(io.BytesIO(shown.data))) == RGB).all()  # small images keep their size
    assert Image.open(io.BytesIO(small.data)).size == (32, 21)  # the longer side fitted, the shape kept
    assert bad.status_code == 400 and "the uploaded file 'scan.dcm'" in bad.get_json()["error"]
    assert too_big.status_code == 400 and "'size'" in too_big.get_json()["error"]
    _assert_no_patient(caplog.text, shown.data.decode("latin-1"), bad.get_data(as_text=True))


def test_a_dicom_review_image_is_listed_and_shown_as_png(tmp_path):
    """The evaluation page lists .dcm files and gets their pixels as a PNG (browsers show no DICOM): no element of
    the file travels with it."""
    from helpers import tiny_classifier
    from timl.serving import create_app

    (tmp_path / "review").mkdir()
    (tmp_path / "review" / "scan.dcm").write_bytes(dicom(RGB, "RGB"))
    (tmp_path / "review" / "bad.dcm").write_bytes(dicom(RGB, "RGB")[:-40])
    client = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "EVALUATION_IMAGES_DIR": str(tmp_path / "review"),
                         "EVALUATION_DB": str(tmp_path / "answers.db")}, classifier=tiny_classifier()).test_client()
    assert client.get("/api/evaluate/images").get_json()["images"] == ["bad.dcm", "scan.dcm"]
    shown = client.get("/api/evaluate/images/scan")
    assert shown.status_code == 200 and shown.mimetype == "image/png"
    assert (np.asarray(Image.open(io.BytesIO(shown.data))) == RGB).all()
    assert shown.headers["Cache-Control"] == "private, no-store"
    bad = client.get("/api/evaluate/images/bad.dcm")
    assert bad.status_code == 400 and "Cannot decode bad.dcm" in bad.get_json()["error"]
    answer = {"image": "scan.dcm", "evaluator": "Dr. A", "agree": True, "label": "A", "predicted": "A"}
    assert client.post("/api/evaluate/answers", json=answer).status_code == 201
    _assert_no_patient(shown.data.decode("latin-1"), client.get("/api/evaluate/answers.csv").get_data(as_text=True),
                       (tmp_path / "answers.db").read_bytes().decode("latin-1"))


def test_the_pyfunc_classifies_base64_dicom():
    """The pyfunc's base64 cells may hold DICOM files; a bad one is an ImageError naming its row."""
    from helpers import tiny_classifier
    from timl import pyfunc

    model = pyfunc.TimlModel()
    model.classifier = tiny_classifier()
    frame = pd.DataFrame({"image": [base64.b64encode(dicom(RGB, "RGB")).decode(),
                                    base64.b64encode(dicom(GREY8, "MONOCHROME1")).decode()]})
    answer = model.predict(None, frame)
    assert len(answer) == 2 and {"A", "B", "C"} <= set(answer.columns)
    with pytest.raises(ImageError, match="Cannot decode image 0: it is a multi-frame DICOM file") as raised:
        model.predict(None, pd.DataFrame({"image": [base64.b64encode(_multi_frame()).decode()]}))
    _assert_no_patient(answer.to_csv(), str(raised.value))


def test_a_quoted_pydicom_error_loses_the_patients_identifiers():
    """A decoder error quoting an element's value (pydicom's messages may) is passed on without the identifiers."""
    from timl.images.dicom import _scrubbed

    dataset = pydicom.dcmread(io.BytesIO(dicom(GREY8, "MONOCHROME2")))
    message = _scrubbed("bad value 'Quimby^Zebediah' of QX-990077, born 19010203, family Quimby", dataset)
    assert message.count("[removed]") == 4
    _assert_no_patient(message)
