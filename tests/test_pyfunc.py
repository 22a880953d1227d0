"""The pyfunc in-process, on a tiny model: what a scoring request may hold (base64, never a path), its caps (rows,
pixels, ``rise_masks``) and the Python entry that takes files (:func:`timl.pyfunc.predict_frame`). The same
answers through a real ``mlflow models serve`` are in test_mlflow_serve.py."""

from __future__ import annotations

import base64
import io

import pandas as pd
import pytest

from helpers import encoded, tiny_classifier
from timl import pyfunc
from timl.errors import ImageError, ModelError


@pytest.fixture(scope="module")
def model():
    wrapper = pyfunc.TimlModel()
    wrapper.classifier = tiny_classifier()
    return wrapper


def _request(*cells) -> pd.DataFrame:
    return pd.DataFrame({"image": list(cells)})


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_path_in_a_request_is_refused_alike_whether_or_not_the_file_exists(model, tmp_path):
    image = tmp_path / "on-the-server.png"
    image.write_bytes(encoded())
    messages = []
    for cell in (str(image), str(tmp_path / "not-there.png")):
        with pytest.raises(pyfunc.RequestError) as caught:
            model.predict(None, _request(_base64(encoded()), cell))
        messages.append(str(caught.value))
        assert caught.value.error_code == "INVALID_PARAMETER_VALUE" and isinstance(caught.value, ModelError)
    assert messages[0] == messages[1] == ("Column 'image', row 1: expected a base64-encoded image file (JPEG, PNG, "
                                          "BMP, TIFF or DICOM). Received: a string that is not base64")
    assert "on-the-server" not in messages[0] and "file" not in messages[0].replace("image file", "")


def test_base64_bytes_and_pil_images_are_classified(model):
    from PIL import Image

    data = encoded()
    frame = model.predict(None, _request(_base64(data), data, Image.open(io.BytesIO(data))))
    assert list(frame["predicted_class"]) == [frame["predicted_class"][0]] * 3
    assert frame[["A", "B", "C"]].sum(axis=1).round(5).tolist() == [1.0] * 3


def test_paths_are_taken_by_the_python_entry_only(model, tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(encoded())
    by_path = pyfunc.predict_frame(model.classifier, [image, str(image)])
    by_request = model.predict(None, _request(_base64(encoded())))
    assert by_path["A"].tolist() == pytest.approx([by_request["A"][0]] * 2)
    with pytest.raises(pyfunc.RequestError, match=r"row 0: .*Received: a value of type PosixPath"):
        model.predict(None, _request(image))


def test_a_request_holds_at_most_max_rows_images(model, monkeypatch):
    cell = _base64(encoded())
    assert len(model.predict(None, _request(*[cell] * pyfunc.MAX_ROWS))) == pyfunc.MAX_ROWS
    with pytest.raises(pyfunc.RequestError, match=r"at most 64 images .*Received: 65 rows"):
        model.predict(None, _request(*[cell] * 65))
    monkeypatch.setenv("TIML_PYFUNC_MAX_ROWS", "2")
    with pytest.raises(pyfunc.RequestError, match=r"at most 2 images \(rows; TIML_PYFUNC_MAX_ROWS sets the cap\). "
                                                  r"Received: 3 rows"):
        model.predict(None, _request(cell, cell, cell))
    monkeypatch.setenv("TIML_PYFUNC_MAX_ROWS", "0")
    with pytest.raises(ModelError, match="TIML_PYFUNC_MAX_ROWS must be a positive integer"):
        pyfunc.max_rows()


def test_an_image_over_the_pixel_cap_is_refused_before_it_is_decoded(model):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (5001, 5001)).save(buffer, format="PNG")  # 25 Mpx, a 25 KB file
    with pytest.raises(ImageError, match="image 0: 5001x5001 pixels exceeds the limit of 25000000 pixels"):
        model.predict(None, _request(_base64(buffer.getvalue())))


@pytest.mark.parametrize("masks", [0, -1, 10_001, 10**9, "many", 2.5])
def test_rise_masks_out_of_range_is_refused(model, masks):
    with pytest.raises(pyfunc.RequestError, match=rf"Param 'rise_masks' must be an integer from 1 to 10000 .*"
                                                  rf"Received: rise_masks={masks!r}"):
        model.predict(None, _request(_base64(encoded())), {"explain": "rise", "rise_masks": masks})


def test_rise_masks_within_range_explains(model):
    frame = model.predict(None, _request(_base64(encoded())), {"explain": "rise", "rise_masks": 8})
    assert base64.b64decode(frame["comp"][0])[:4] == b"\x89PNG"
