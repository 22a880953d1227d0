"""The TIML REST server: routes, bad input that never takes it down, a real gunicorn process, the client."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import encoded, free_port, saved_model, tiny_classifier, wait_for_http


@pytest.fixture(scope="module")
def app():
    from timl.serving import create_app

    return create_app({"CLASSIFICATION_MODEL": "tiny.h5", "MAX_UPLOAD_MB": 0.2, "MAX_IMAGE_PIXELS": 1_000_000},
                      classifier=tiny_classifier())


@pytest.fixture
def client(app):
    return app.test_client()


def post(client, url, data: bytes | None, filename="x.png"):
    form = {} if data is None else {"file": (io.BytesIO(data), filename)}
    return client.post(url, data=form, content_type="multipart/form-data")


def test_index_health_info_openapi(client):
    index = client.get("/").get_json()
    assert index["api"]["classify"] == "/api/classify" and "/static/classify.html" in index["pages"]
    assert client.get("/health").get_json()["status"] == "ok"
    info = client.get("/api/info").get_json()
    assert info["classes"] == ["A", "B", "C"] and info["input_size"] == 16
    assert info["layers"][:2] == ["conv_a", "conv_b"] and info["default_layer"] == "conv_b"
    assert set(info["explain_methods"]) == {"gradcam", "gradcam++", "scorecam", "smoothgrad", "rise"}
    spec = client.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.") and "/api/classify" in spec["paths"]


def test_classify(client):
    answer = post(client, "/api/classify", encoded(), "../../etc/passwd.png")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["filename"] == "passwd.png" and body["classes"] == ["A", "B", "C"]
    assert sum(body["prediction"]) == pytest.approx(1, abs=1e-5)
    assert all(-1 <= value <= 1 for value in body["confidence"])
    assert body["predicted_class"] == body["classes"][int(np.argmax(body["prediction"]))]


@pytest.mark.parametrize("method,layer,query", [("gradcam", "conv_a", ""), ("gradcam++", "conv_b", ""),
                                                ("rise", "-", "?masks=40&cells=4&keep=0.5&seed=3"),
                                                ("smoothgrad", "-", "?seed=1"), ("gradcam", "conv_b", "?class=B")])
def test_explain(client, method, layer, query):
    answer = post(client, f"/api/explain/{method}/{layer}{query}", encoded(size=(40, 24)))
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["method"] == method and body["args"]["layer_name"]
    for key in ("grey", "heatmap", "comp"):
        picture = Image.open(io.BytesIO(__import__("base64").b64decode(body[key])))
        assert picture.size == (40, 24)
    if "class=B" in query:
        assert body["class_index"] == 1


def _bomb() -> bytes:
    """1.2 MP of one colour: a tiny file (under the upload limit) over the configured 1 MP pixel cap."""
    buffer = io.BytesIO()
    Image.new("RGB", (1200, 1000), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_INPUTS = [
    ("not an image", b"hello, this is not an image", 400, "Cannot decode"),
    ("truncated jpeg", encoded(format_name="JPEG")[:300], 400, "Cannot decode"),
    ("empty file", b"", 400, "empty"),
    ("decompression bomb", None, 400, "exceeds the limit"),
    ("too large", b"\xff" * 300_000, 413, "larger than the limit"),
]


@pytest.mark.parametrize("name,data,status,message", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_uploads_get_json_errors_and_the_server_goes_on(client, name, data, status, message):
    answer = post(client, "/api/classify", _bomb() if data is None else data)
    assert answer.status_code == status and answer.is_json
    assert message in answer.get_json()["error"]
    assert post(client, "/api/classify", encoded()).status_code == 200


@pytest.mark.parametrize("mode,format_name", [("RGBA", "PNG"), ("CMYK", "JPEG"), ("I;16", "PNG"), ("L", "PNG"),
                                              ("P", "PNG"), ("LA", "PNG"), ("RGB", "BMP"), ("RGB", "TIFF")])
def test_unusual_images_are_converted(client, mode, format_name):
    answer = post(client, "/api/classify", encoded(mode, format_name=format_name))
    assert answer.status_code == 200, answer.get_json()


def test_request_errors_are_json(client):
    cases = [
        (post(client, "/api/classify", None), 400, "'file'"),
        (post(client, "/api/explain/nope/conv_a", encoded()), 404, "gradcam"),
        (post(client, "/api/explain/gradcam/dense", encoded()), 404, "conv_a"),
        (post(client, "/api/explain/rise/-?masks=abc", encoded()), 400, "masks"),
        (post(client, "/api/explain/gradcam/conv_a?class=Z", encoded()), 400, "A, B, C"),
        (client.get("/api/classify"), 405, ""),
        (client.get("/no/such/page"), 404, ""),
    ]
    for answer, status, fragment in cases:
        assert answer.status_code == status and answer.is_json and "error" in answer.get_json()
        assert fragment in answer.get_json()["error"]


def test_missing_configuration_prints_a_sample(tmp_path, monkeypatch):
    from timl.errors import ConfigError
    from timl.serving import create_app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("TIML_SERVER_CONFIG", raising=False)
    with pytest.raises(ConfigError) as error:
        create_app()
    assert "CLASSIFICATION_MODEL" in str(error.value) and "REST_API_URL_PREFIX_description" in str(error.value)
    result = subprocess.run([sys.executable, "-m", "timl.serve"], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=120)
    assert result.returncode == 2 and "CLASSIFICATION_MODEL" in result.stderr


@pytest.mark.slow
def test_gunicorn_server_and_client(tmp_path):
    import requests

    model = saved_model(tmp_path)
    config = tmp_path / "timl_server_config.json"
    config.write_text(json.dumps({"CLASSIFICATION_MODEL": model.name}))  # relative to the configuration file
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "timl.serve", "--config", str(config), "--workers", "2",
                               "--bind", f"127.0.0.1:{port}"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/health")
        image = tmp_path / "x.png"
        image.write_bytes(encoded())
        for _ in range(3):
            answer = requests.post(f"{base}/api/classify", files={"file": ("x.png", image.read_bytes())}, timeout=60)
            assert answer.status_code == 200 and answer.json()["classes"] == ["A", "B", "C"]
        bad = requests.post(f"{base}/api/classify", files={"file": ("x.png", b"junk")}, timeout=60)
        assert bad.status_code == 400 and "error" in bad.json()
        client = subprocess.run([sys.executable, "-m", "timl.client", str(image), f"{base}/api/explain/gradcam/conv_a"],
                                capture_output=True, text=True, timeout=120)
        assert client.returncode == 0 and "status: 200" in client.stdout and '"heatmap"' in client.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_original_routes_under_the_manuals_prefixes(tmp_path, caplog):
    """ping, echo and info as the original answered them, under REST prefix "rest" and pages under "web"."""
    from timl.serving import create_app

    config = {"CLASSIFICATION_MODEL": "tiny.h5", "REST_API_URL_PREFIX": "rest", "STATIC_PAGES_URL_PREFIX": "web",
              "STATIC_PAGES_DIR": str(tmp_path / "html")}
    with caplog.at_level("WARNING", logger="timl.serving.app"):
        client = create_app(config, classifier=tiny_classifier()).test_client()
    assert f"STATIC_PAGES_DIR {tmp_path / 'html'}" in caplog.text and "shipped" in caplog.text
    assert client.get("/rest/ping").get_data(as_text=True) == "pong"
    echo = client.get("/rest/echo/<script>hi")
    assert echo.get_data(as_text=True) == "You told me <script>hi" and echo.mimetype == "text/plain"
    info = client.get("/rest/info").get_json()
    assert info["classification"] == {"model_file": "tiny.h5"} and info["classes"] == ["A", "B", "C"]
    assert post(client, "/rest/explain/gradcam/conv_a", encoded()).status_code == 200
    assert client.get("/api/info").status_code == 404
    page = client.get("/web/classify.html")  # the shipped page, STATIC_PAGES_DIR being no folder
    assert page.status_code == 200 and b'src="timl-config.js"' in page.data
    script = client.get("/web/timl-config.js")
    assert script.mimetype == "text/javascript" and script.get_data(as_text=True).startswith('window.TIML_REST = "/rest";\n')
    spec = client.get("/rest/openapi.json").get_json()
    assert {"/rest/ping", "/rest/echo/{text}", "/rest/info"} <= set(spec["paths"])
    assert client.get("/").get_json()["api"]["ping"] == "/rest/ping"


def test_own_pages_folder_and_a_root_rest_prefix(tmp_path, caplog):
    from timl.serving import create_app

    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "mine.html").write_text("<p>mine</p>")
    config = {"CLASSIFICATION_MODEL": "tiny.h5", "REST_API_URL_PREFIX": "", "STATIC_PAGES_DIR": str(tmp_path / "pages")}
    with caplog.at_level("WARNING", logger="timl.serving.app"):
        client = create_app(config, classifier=tiny_classifier()).test_client()
    assert "STATIC_PAGES_DIR" not in caplog.text
    assert client.get("/static/mine.html").data == b"<p>mine</p>"
    assert client.get("/static/classify.html").status_code == 404  # only the configured folder
    assert client.get("/static/timl-config.js").get_data(as_text=True).startswith('window.TIML_REST = "";\n')
    assert client.get("/ping").get_data(as_text=True) == "pong" and client.get("/info").status_code == 200
