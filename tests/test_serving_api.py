"""The TIML REST server: routes, bad input that never takes it down, a real gunicorn process, the client."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
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


def test_a_model_without_a_registered_version_has_no_model_card(client):
    """A model file has no card (cards are written on registration): 404 saying how to get one; a bad format 400."""
    answer = client.get("/api/model_card")
    assert answer.status_code == 404 and "has no model card" in answer.get_json()["error"]
    assert "python -m timl.register" in answer.get_json()["error"]
    answer = client.get("/api/model_card?format=html")
    assert answer.status_code == 400 and "format is json or md" in answer.get_json()["error"]
    assert "/api/model_card" in client.get("/api/openapi.json").get_json()["paths"]


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
        (post(client, "/api/explain/gradcam/conv_a?class=%C2%B2", encoded()), 400, "A, B, C"),  # "²" was a 500
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
    log = (tmp_path / "server.log").open("w")  # a file, not an unread pipe: a full pipe would block the server
    server = subprocess.Popen([sys.executable, "-m", "timl.serve", "--config", str(config), "--workers", "2",
                               "--bind", f"127.0.0.1:{port}"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
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
        log.close()


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


def test_the_pages_folder_serves_no_hidden_file_and_no_link_out_of_it(tmp_path):
    """STATIC_PAGES_DIR: only regular files inside the folder, none hidden; everything else is a 404 JSON."""
    from timl.serving import create_app

    pages, outside = tmp_path / "pages", tmp_path / "outside"
    (pages / "sub").mkdir(parents=True)
    (pages / ".git").mkdir()
    outside.mkdir()
    (pages / "mine.html").write_text("<p>mine</p>")
    (pages / "sub" / "deeper.html").write_text("<p>deeper</p>")
    (pages / "same.html").symlink_to(pages / "mine.html")  # a link that stays inside the folder is a page
    for hidden in (".env", ".git/config", "sub/.secret.html"):
        (pages / hidden).write_text("SECRET=inside")
    (outside / "secret.txt").write_text("SECRET=outside")
    (pages / "leak.html").symlink_to(outside / "secret.txt")
    (pages / "away").symlink_to(outside, target_is_directory=True)
    client = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "STATIC_PAGES_DIR": str(pages)},
                        classifier=tiny_classifier()).test_client()
    assert client.get("/static/mine.html").data == b"<p>mine</p>"
    assert client.get("/static/sub/deeper.html").data == b"<p>deeper</p>"
    assert client.get("/static/same.html").data == b"<p>mine</p>"
    for name in (".env", ".git/config", "sub/.secret.html", "leak.html", "away/secret.txt", "sub", "sub/",
                 "..%2Foutside%2Fsecret.txt", "sub/..%2F.env", "%2E%2E/outside/secret.txt", "nope.html",
                 "a%00b.html", "x" * 300):
        answer = client.get(f"/static/{name}")
        assert answer.status_code == 404 and answer.is_json and "error" in answer.get_json(), name
        assert b"SECRET" not in answer.data, name
    assert client.get("/").get_json()["pages"] == ["/static/leak.html", "/static/mine.html", "/static/same.html"]


def test_no_answer_names_a_server_path(tmp_path, caplog):
    """/, /info and the 503 of a model that cannot be loaded give the model's name, never its folders; the
    detail of a failed load is in the server log only."""
    from timl.serving import create_app

    models = tmp_path / "models"
    models.mkdir()
    client = create_app({"CLASSIFICATION_MODEL": str(models / "lesions.h5")},
                        classifier=tiny_classifier()).test_client()
    index, info = client.get("/"), client.get("/api/info")
    assert index.get_json()["model"] == "lesions.h5" and info.get_json()["model"] == "lesions.h5"
    assert info.get_json()["classification"] == {"model_file": "lesions.h5"}  # the key the original clients read
    assert str(tmp_path) not in index.get_data(as_text=True) + info.get_data(as_text=True)
    uri = create_app({"CLASSIFICATION_MODEL": "models:/skin-lesions/3"}, classifier=tiny_classifier()).test_client()
    assert uri.get("/").get_json()["model"] == "models:/skin-lesions/3"  # a store's name, not a path: as it is

    (models / "broken.h5").write_bytes(b"not a Keras file")
    (models / "review").mkdir()
    (models / "review" / "a.png").write_bytes(encoded())
    for model in ("missing.h5", "broken.h5"):
        client = create_app({"CLASSIFICATION_MODEL": str(models / model), "EVALUATION_ORDER": "uncertainty",
                             "EVALUATION_IMAGES_DIR": str(models / "review"),
                             "EVALUATION_DB": str(tmp_path / "answers.db")}).test_client()
        caplog.clear()
        with caplog.at_level("ERROR", logger="timl.serving.app"):
            answers = [client.get("/api/info"), post(client, "/api/classify", encoded()),
                       client.get("/api/evaluate/images/a.png/analysis")]
            listing = client.get("/api/evaluate/images")  # scored in the background: listed, nothing scored
        assert listing.status_code == 200 and listing.get_json()["scored"] == 0
        assert str(tmp_path) not in listing.get_data(as_text=True)
        for answer in answers:
            assert answer.status_code == 503 and answer.is_json, (model, answer.get_json())
            assert answer.get_json()["error"] == "The model could not be loaded; see the server log for the details."
            assert str(tmp_path) not in answer.get_data(as_text=True)
        assert str(models / model) in caplog.text  # the detail, for the administrator


# --- The gunicorn server's promises: loopback by default, stuck workers restarted ---

def _serve(tmp_path, *options: str) -> tuple[subprocess.Popen, Path]:
    """Starts ``python -m timl.serve`` on a tiny model with ``options``; its output goes to a file."""
    model = saved_model(tmp_path)
    config = tmp_path / "timl_server_config.json"
    config.write_text(json.dumps({"CLASSIFICATION_MODEL": model.name}))
    log = tmp_path / "server.log"
    with open(log, "w") as output:
        server = subprocess.Popen([sys.executable, "-m", "timl.serve", "--config", str(config), *options],
                                  cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT)
    return server, log


def _health(base: str, timeout: float = 2) -> dict | None:
    """/health's answer, or None (no answer in ``timeout`` seconds)."""
    import requests

    try:
        answer = requests.get(f"{base}/health", timeout=timeout)
        return answer.json() if answer.ok else None
    except requests.RequestException:
        return None


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _listening(processes) -> set[tuple[str, int]]:
    """The (address, port) of every listening TCP socket (IPv4 and IPv6) the processes hold."""
    found = set()
    for process in processes:
        found |= {(connection.laddr.ip, connection.laddr.port) for connection in process.net_connections("inet")
                  if connection.status == psutil.CONN_LISTEN}
    return found


def test_the_server_listens_on_loopback_8080_by_default(monkeypatch):
    """README: the REST server binds to 127.0.0.1:8080 unless told otherwise: ``python -m timl.serve`` without
    ``--bind`` hands that address to the server (the next test shows the server listens on exactly what it is
    handed, on a free port: 8080 itself may be taken on a test machine)."""
    from click.testing import CliRunner

    from timl import serve

    handed = []
    monkeypatch.setattr(serve, "run", lambda config, bind, *rest: handed.append(bind))
    result = CliRunner().invoke(serve.cli, ["--config", "timl_server_config.json"])
    assert result.exit_code == 0, result.output
    assert handed == ["127.0.0.1:8080"]


def test_the_server_listens_on_the_loopback_address_it_is_given_and_no_other(tmp_path):
    """``python -m timl.serve --bind 127.0.0.1:PORT`` listens on 127.0.0.1:PORT and on no other address (not
    0.0.0.0, not ::), in the master and every worker."""
    port = free_port()
    server, log = _serve(tmp_path, "--workers", "1", "--bind", f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        health = None
        while health is None and time.time() < deadline:
            if server.poll() is not None:
                raise AssertionError(f"the server stopped: {log.read_text()[-3000:]}")
            health = _health(base)
            time.sleep(0.2)
        assert health, f"no answer on {base}: {log.read_text()[-3000:]}"
        master = psutil.Process(server.pid)
        workers = master.children()
        assert health["pid"] in [worker.pid for worker in workers], f"another server answered on {port}"
        assert _listening([master, *workers]) == {("127.0.0.1", port)}
        assert f"Listening at: {base}" in log.read_text()
    finally:
        _stop(server)


def test_a_client_holding_its_socket_open_does_not_stall_the_next_one(tmp_path):
    """A client that reads its whole answer and keeps its socket open: the next client of that worker is answered
    at once (gunicorn's own gthread worker waited for the first client's close, up to 2 s, in the loop that accepts
    connections: 1.96 s here), and the first socket is closed by the server within 2 s."""
    import socket

    import requests

    port = free_port()
    server, log = _serve(tmp_path, "--workers", "1", "--bind", f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/health")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
            held.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            while chunk := held.recv(65536):  # the server ends its side once the answer is sent
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200") and b'"pid"' in answer, answer[:300]
            start = time.monotonic()
            assert requests.get(f"{base}/health", timeout=10).ok
            assert time.monotonic() - start < 1.0, "the next client waited for the held socket"
            time.sleep(3)
            with pytest.raises(ConnectionError):  # the server has closed the socket: the first write is refused
                for _ in range(10):  # with a reset, and the next one fails
                    held.sendall(b"x")
                    time.sleep(0.1)
    finally:
        _stop(server)


def test_an_upload_sent_chunked_is_classified_as_one_sent_with_its_length(tmp_path):
    """A real server (its worker reads bodies through timl.serving.connections.WholeReads): the same image posted
    with a Content-Length and chunked (a client streaming its upload) gets the same probabilities; a multipart body
    cut short is a 400, and the worker answers the next request."""
    import requests

    port = free_port()
    server, log = _serve(tmp_path, "--workers", "1", "--bind", f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/health")
        image = encoded(size=(300, 200))
        boundary = "timl-test-boundary"
        form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        by_length = requests.post(f"{base}/api/classify", data=form, headers=headers, timeout=60)
        streamed = requests.post(f"{base}/api/classify", headers=headers, timeout=60,
                                 data=(form[i:i + 4096] for i in range(0, len(form), 4096)))
        assert by_length.status_code == streamed.status_code == 200, (
            by_length.text, streamed.text, log.read_text()[-2000:])
        assert streamed.json() == by_length.json()
        cut = requests.post(f"{base}/api/classify", data=form[:len(form) // 2], headers=headers, timeout=60)
        assert cut.status_code == 400, cut.text
        assert requests.post(f"{base}/api/classify", data=form, headers=headers, timeout=60).json() == by_length.json()
    finally:
        _stop(server)


#: The --timeout of the stuck-worker test: gthread workers beat every second when idle, so a few seconds is
#: enough for a healthy worker never to be taken for a stuck one, and keeps the test short.
STUCK_TIMEOUT_S = 4


def test_a_stuck_worker_is_restarted_after_the_timeout(tmp_path):
    """README: the server restarts stuck workers (gunicorn timeout 120 s, ``--timeout N``).

    A worker is made stuck for real (SIGSTOP: alive, holding its socket, answering nothing). Gunicorn's
    master sees no heartbeat for N seconds (the worker's last beat is at most 1 s old when it stops), sends
    SIGABRT, on its next check a second later SIGKILL, and starts a new worker: a new pid about N s after the
    stop (bounds N - 1.5 and N + 4), which then answers /health.
    """
    from timl.serve import cli, gunicorn_settings

    assert gunicorn_settings("127.0.0.1:8080")["timeout"] == 120
    assert {param.name: param.default for param in cli.params}["timeout"] == 120
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server, log = _serve(tmp_path, "--workers", "1", "--timeout", str(STUCK_TIMEOUT_S), "--bind", f"127.0.0.1:{port}")
    worker = None
    try:
        wait_for_http(f"{base}/health")
        master = psutil.Process(server.pid)
        [worker] = master.children()
        time.sleep(STUCK_TIMEOUT_S + 1.5)
        assert [child.pid for child in master.children()] == [worker.pid], "an idle worker was restarted"
        assert _health(base)["pid"] == worker.pid
        worker.suspend()
        stopped = time.monotonic()
        assert _health(base, timeout=1) is None, "a stopped worker answered"
        new = []
        while not new and time.monotonic() - stopped < STUCK_TIMEOUT_S + 30:
            new = [child for child in master.children() if child.pid != worker.pid]
            time.sleep(0.05)
        restarted = time.monotonic() - stopped
        assert new, f"no new worker {restarted:.1f} s after the stop: {log.read_text()[-3000:]}"
        assert STUCK_TIMEOUT_S - 1.5 <= restarted <= STUCK_TIMEOUT_S + 4, f"restarted after {restarted:.1f} s"
        health = None
        while time.monotonic() - stopped < STUCK_TIMEOUT_S + 30 and not health:
            health = _health(base)
        assert health and health["pid"] == new[0].pid, health
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, "the stuck worker lives on"
        text = log.read_text()
        assert f"WORKER TIMEOUT (pid:{worker.pid})" in text and f"Booting worker with pid: {new[0].pid}" in text
    finally:
        if worker is not None and worker.is_running():
            with contextlib.suppress(psutil.Error):
                worker.resume()
                worker.kill()
        _stop(server)
