"""One exposure rule for every way of starting the server, and the Host and Origin checks (issue 21, findings 3
and 4). Real processes bound to 0.0.0.0 (every interface, no traffic leaves the machine) are asked on 127.0.0.1;
each is stopped by its pid."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from helpers import REPO, encoded, free_port, saved_model, tiny_classifier

TOKEN = "a-long-enough-token-0123456789"

#: Every kind of route: the API, the expert reviews, the pages and their script, the index, health, a missing one.
ROUTES = (("GET", "/api/info"), ("POST", "/api/classify"), ("GET", "/api/evaluate/answers.csv"),
          ("POST", "/api/evaluate/answers"), ("GET", "/api/ping"), ("GET", "/static/classify.html"),
          ("GET", "/static/timl-config.js"), ("GET", "/"), ("GET", "/health"), ("GET", "/no-such-route"))


def _folder(tmp_path: Path, tokens: bool = False) -> Path:
    """A model, a review folder and a configuration (with a tokens file if ``tokens``); returns the configuration."""
    saved_model(tmp_path)
    (tmp_path / "review").mkdir()
    (tmp_path / "review" / "a.png").write_bytes(encoded())
    values = {"CLASSIFICATION_MODEL": "tiny.h5", "EVALUATION_IMAGES_DIR": "review", "EVALUATION_DB": "answers.db"}
    if tokens:
        (tmp_path / "tokens.json").write_text(json.dumps({TOKEN: "Dr. A"}))
        values["API_TOKENS_FILE"] = "tokens.json"
    config = tmp_path / "timl_server_config.json"
    config.write_text(json.dumps(values))
    return config


def _environment(config: Path, **extra) -> dict:
    env = {key: value for key, value in os.environ.items()
           if key not in ("TIML_INSECURE", "TIML_SERVER_CONFIG") and not key.startswith("FLASK_")}
    return env | {"TIML_SERVER_CONFIG": str(config), "PYTHONPATH": str(REPO)} | extra


def _start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    with log.open("w") as stream:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=stream, stderr=subprocess.STDOUT)


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=30)


@contextlib.contextmanager
def _serving(command: list[str], env: dict, log: Path, port: int) -> Iterator[str]:
    """Starts a server process on ``port`` (its output in ``log``), waits until it answers anything and yields its
    loopback URL; stops it on leaving."""
    server = _start(command, env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_any_answer(f"{base}/health", server, log)
        yield base
    finally:
        _stop(server)


def _wait_for_any_answer(url: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Waits until ``url`` answers anything (a refusing server answers 503)."""
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server stopped (status {server.returncode}):\n{log.read_text()}")
        try:
            requests.get(url, timeout=30)
            return
        except requests.RequestException:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout} s:\n{log.read_text()}")


def _call(base: str, method: str, path: str, **options):
    import requests

    if path == "/api/classify":
        options["files"] = {"file": ("x.png", encoded())}
    elif path == "/api/evaluate/answers":
        options["json"] = {"image": "a.png", "evaluator": "Dr. B", "agree": True, "label": "", "predicted": "A"}
    return requests.request(method, f"{base}{path}", timeout=120, **options)


def _assert_every_route_refused(base: str, log: Path, bind: str) -> None:
    for method, path in ROUTES:
        answer = _call(base, method, path)
        assert answer.status_code == 503, (method, path, answer.status_code, answer.text)
        error = answer.json()["error"]
        assert f"Refusing to listen on {bind}" in error and "API_TOKENS_FILE" in error, error
        assert "--insecure" in error and "TIML_INSECURE=1" in error
    assert log.read_text().count("Refusing to listen on") == 1  # logged once, answered every time


def _assert_serves(base: str, token: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if token:
        assert _call(base, "GET", "/api/info").status_code == 401
    assert _call(base, "GET", "/api/info", headers=headers).json()["classes"] == ["A", "B", "C"]
    classified = _call(base, "POST", "/api/classify", headers=headers)
    assert classified.status_code == 200 and len(classified.json()["prediction"]) == 3
    assert _call(base, "POST", "/api/evaluate/answers", headers=headers).status_code == 201
    rows = list(csv.DictReader(io.StringIO(_call(base, "GET", "/api/evaluate/answers.csv", headers=headers).text)))
    assert [row["evaluator"] for row in rows] == ["Dr. B"]
    assert _call(base, "GET", "/static/classify.html").status_code == 200


# --- finding 3: every entry point holds the rule ------------------------------------------------------------------

FLASK_APPS = {"manual": ["-m", "flask", "run"], "app": ["-m", "flask", "--app", "timl.networking.__main__", "run"]}


@pytest.mark.slow
@pytest.mark.parametrize("form", FLASK_APPS)
def test_flask_run_beyond_loopback_answers_every_route_503(tmp_path, form):
    """``flask run --host 0.0.0.0`` (the manual's FLASK_APP=timl.networking.__main__.py, and --app): the address
    is only known once requests arrive, so each one is answered 503 with the ways out, logged once."""
    config, port, log = _folder(tmp_path), free_port(), tmp_path / "server.log"
    env = _environment(config, **({"FLASK_APP": "timl.networking.__main__.py"} if form == "manual" else {}))
    with _serving([sys.executable, *FLASK_APPS[form], "--host", "0.0.0.0", "--port", str(port)], env, log, port) as base:
        _assert_every_route_refused(base, log, f"0.0.0.0:{port}")


@pytest.mark.slow
def test_flask_run_beyond_loopback_serves_with_timl_insecure(tmp_path):
    config, port, log = _folder(tmp_path), free_port(), tmp_path / "server.log"
    env = _environment(config, TIML_INSECURE="1")
    with _serving([sys.executable, *FLASK_APPS["app"], "--host", "0.0.0.0", "--port", str(port)], env, log, port) as base:
        _assert_serves(base)
    assert "Refusing" not in log.read_text()


def test_networking_module_refuses_to_start_beyond_loopback(tmp_path):
    config = _folder(tmp_path)
    command = [sys.executable, "-m", "timl.networking", "--host", "0.0.0.0", "--port", str(free_port())]
    refused = subprocess.run(command, cwd=REPO, env=_environment(config), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "Refusing to listen on 0.0.0.0:" in refused.stderr and "--insecure" in refused.stderr
    ipv6 = subprocess.run(command[:4] + ["::"] + command[5:], cwd=REPO, env=_environment(config),
                          capture_output=True, text=True, timeout=120)
    assert ipv6.returncode == 2 and "Refusing to listen on [::]:" in ipv6.stderr


@pytest.mark.slow
@pytest.mark.parametrize("way", ["--insecure", "tokens"])
def test_networking_module_beyond_loopback_serves_with_insecure_or_tokens(tmp_path, way):
    config, port, log = _folder(tmp_path, tokens=way == "tokens"), free_port(), tmp_path / "server.log"
    command = [sys.executable, "-m", "timl.networking", "--host", "0.0.0.0", "--port", str(port)]
    with _serving(command + (["--insecure"] if way == "--insecure" else []), _environment(config), log, port) as base:
        _assert_serves(base, TOKEN if way == "tokens" else None)


@pytest.mark.slow
def test_gunicorn_without_its_configuration_answers_every_route_503(tmp_path):
    """``gunicorn serving.wsgi:app -b 0.0.0.0:PORT`` without ``-c serving/gunicorn.conf.py``: nothing checks the
    address at start, so the app answers each request 503."""
    config, port, log = _folder(tmp_path), free_port(), tmp_path / "server.log"
    command = [sys.executable, "-m", "gunicorn", "serving.wsgi:app", "-b", f"0.0.0.0:{port}", "-w", "1"]
    with _serving(command, _environment(config), log, port) as base:
        _assert_every_route_refused(base, log, f"0.0.0.0:{port}")


@pytest.mark.slow
def test_gunicorn_without_its_configuration_serves_with_tokens(tmp_path):
    config, port, log = _folder(tmp_path, tokens=True), free_port(), tmp_path / "server.log"
    command = [sys.executable, "-m", "gunicorn", "serving.wsgi:app", "-b", f"0.0.0.0:{port}", "-w", "1"]
    with _serving(command, _environment(config), log, port) as base:
        _assert_serves(base, TOKEN)


@pytest.mark.slow
def test_timl_serve_beyond_loopback_with_insecure_serves(tmp_path):
    """``timl.serve --insecure`` tells its workers' apps, which check each request's address too."""
    config, port, log = _folder(tmp_path), free_port(), tmp_path / "server.log"
    command = [sys.executable, "-m", "timl.serve", "--config", str(config), "--bind", f"0.0.0.0:{port}",
               "--workers", "1", "--insecure"]
    with _serving(command, _environment(config), log, port) as base:
        _assert_serves(base)


def test_the_bound_address_of_gunicorn_and_werkzeug_environs():
    """What the servers put in the environ: the listener's address, brackets added for IPv6; a unix socket is
    recognised by its connection, not by SERVER_NAME (gunicorn puts the Host header there)."""
    import socket

    from timl.serving.exposure import bound_address, is_loopback

    assert bound_address({"SERVER_NAME": "0.0.0.0", "SERVER_PORT": "8080"}) == "0.0.0.0:8080"
    assert bound_address({"SERVER_NAME": "::", "SERVER_PORT": "8080"}) == "[::]:8080"
    assert bound_address({"SERVER_NAME": "::1", "SERVER_PORT": "8080"}) == "[::1]:8080"
    with socket.socket(socket.AF_UNIX) as unix:
        assert bound_address({"SERVER_NAME": "evil.example", "SERVER_PORT": "80", "gunicorn.socket": unix}) == "unix:"
    for address, loopback in (("127.0.0.1:5000", True), ("[::1]:80", True), ("localhost:80", True), ("unix:", True),
                              ("0.0.0.0:80", False), ("[::]:80", False), ("10.1.2.3:80", False), (":80", False)):
        assert is_loopback(address) is loopback, address


def test_the_rule_has_one_home():
    """timl.serve and serving/gunicorn.conf.py use timl.serving.exposure's rule, not copies of it."""
    for path in ("timl/serve.py", "serving/gunicorn.conf.py"):
        text = (REPO / path).read_text()
        assert "from timl.serving.exposure import" in text and "def is_loopback" not in text, path


# --- finding 4: Host and Origin -----------------------------------------------------------------------------------


def _app(tmp_path: Path, **values):
    from timl.serving import create_app

    (tmp_path / "review").mkdir(exist_ok=True)
    (tmp_path / "review" / "a.png").write_bytes(encoded())
    return create_app({"CLASSIFICATION_MODEL": "tiny.h5", "EVALUATION_IMAGES_DIR": str(tmp_path / "review"),
                       "EVALUATION_DB": str(tmp_path / "answers.db"), **values}, classifier=tiny_classifier())


ANSWER = {"image": "a.png", "evaluator": "Dr. B", "agree": True, "label": "", "predicted": "A"}


def test_a_rebinding_host_is_refused_on_every_route(tmp_path):
    client = _app(tmp_path).test_client()
    for url in ("/api/info", "/api/evaluate/answers.csv", "/api/evaluate/images/a.png", "/static/evaluate.html", "/"):
        answer = client.get(url, headers={"Host": "evil.example:8080"})
        error = answer.get_json()["error"]
        assert answer.status_code == 400 and "TRUSTED_HOSTS" in error and "Host='evil.example:8080'" in error, url
    refused = client.post("/api/evaluate/answers", json=ANSWER, headers={"Host": "evil.example"})
    assert refused.status_code == 400 and client.get("/api/evaluate/answers.csv").text.count("\n") == 1
    for host in ("localhost", "localhost:8080", "127.0.0.1:5000", "[::1]:8080", "192.168.1.5:8080", "LOCALHOST."):
        assert client.get("/api/evaluate/answers.csv", headers={"Host": host}).status_code == 200, host


def test_trusted_hosts_names_the_servers_own_names(tmp_path):
    client = _app(tmp_path, TRUSTED_HOSTS="timl.example.org, Other.Example.org").test_client()
    for host in ("timl.example.org", "timl.example.org:443", "other.example.org", "localhost:8080"):
        assert client.get("/api/ping", headers={"Host": host}).status_code == 200, host
    assert client.get("/api/ping", headers={"Host": "evil.example"}).status_code == 400
    # behind a TLS proxy: the page's Origin is https, the request reaching the server http, under the same name
    stored = client.post("/api/evaluate/answers", json=ANSWER,
                         headers={"Host": "timl.example.org", "Origin": "https://timl.example.org"})
    assert stored.status_code == 201


def test_cross_origin_writes_are_refused_and_same_origin_ones_pass(tmp_path):
    client = _app(tmp_path).test_client()
    for origin in ("https://evil.example", "http://127.0.0.1:9999", "http://localhost:5000", "null", "file://"):
        answer = client.post("/api/evaluate/answers", json=ANSWER, headers={"Origin": origin})
        assert answer.status_code == 403, origin
        assert f"Origin={origin!r}" in answer.get_json()["error"] and "TRUSTED_HOSTS" in answer.get_json()["error"]
    upload = {"file": (io.BytesIO(encoded()), "a.png")}
    assert client.post("/api/classify", data=upload, headers={"Origin": "https://evil.example"}).status_code == 403
    assert client.get("/api/evaluate/answers.csv").text.count("\n") == 1  # nothing stored
    # a read from another origin is answered: the browser keeps the answer from the other site's page
    assert client.get("/api/info", headers={"Origin": "https://evil.example"}).status_code == 200
    for origin in ("http://localhost", None):  # the page's own origin; no Origin (timl.client, curl)
        headers = {"Origin": origin} if origin else {}
        assert client.post("/api/evaluate/answers", json=ANSWER, headers=headers).status_code == 201, origin
    own = client.post("/api/evaluate/answers", json=ANSWER,
                      headers={"Host": "127.0.0.1:8080", "Origin": "http://127.0.0.1:8080"})
    assert own.status_code == 201


def test_with_tokens_the_name_checks_apply_only_with_trusted_hosts(tmp_path):
    """With API tokens a rebinding page has no token: the Host and Origin checks stay off (token deployments
    behind a proxy keep working) unless TRUSTED_HOSTS is set."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({TOKEN: "Dr. A"}))
    authorised = {"Authorization": f"Bearer {TOKEN}", "Host": "proxy.example"}
    plain = _app(tmp_path, API_TOKENS_FILE=str(tokens)).test_client()
    assert plain.get("/api/info", headers={"Host": "proxy.example"}).status_code == 401
    assert plain.get("/api/info", headers=authorised).status_code == 200
    assert plain.post("/api/evaluate/answers", json=ANSWER,
                      headers=authorised | {"Origin": "https://proxy.example"}).status_code == 201
    named = _app(tmp_path, API_TOKENS_FILE=str(tokens), TRUSTED_HOSTS=["timl.example.org"]).test_client()
    assert named.get("/api/info", headers=authorised).status_code == 400
    assert named.get("/api/info", headers=authorised | {"Host": "timl.example.org"}).status_code == 200


@pytest.mark.parametrize("value, expected", [
    ("", ()), (None, ()), ("timl.example.org", ("timl.example.org",)),
    ("A.example, b.example.", ("a.example", "b.example")), (["timl.example.org"], ("timl.example.org",))])
def test_trusted_hosts_values(value, expected):
    from timl.serving.config import SAMPLE, ServerConfig

    config = ServerConfig.from_mapping({"CLASSIFICATION_MODEL": "m.h5", "TRUSTED_HOSTS": value})
    assert config.trusted_hosts == expected
    assert config.as_mapping()["TRUSTED_HOSTS"] == list(expected)
    assert "TRUSTED_HOSTS_description" in SAMPLE


@pytest.mark.parametrize("value", ["*", "https://timl.example.org", "timl.example.org:443", "a b", 3, {"a": 1}])
def test_bad_trusted_hosts_are_named(value):
    from timl.errors import ConfigError
    from timl.serving.config import ServerConfig

    with pytest.raises(ConfigError, match="TRUSTED_HOSTS") as error:
        ServerConfig.from_mapping({"CLASSIFICATION_MODEL": "m.h5", "TRUSTED_HOSTS": value})
    assert "Received: TRUSTED_HOSTS=" in str(error.value)


@pytest.mark.slow
def test_a_real_server_refuses_a_forged_host_and_origin(tmp_path):
    """timl.serve on 127.0.0.1: a request naming another host (what a DNS-rebinding page sends) and a post from
    another origin are refused; the same requests without them are served."""
    import requests

    config, port, log = _folder(tmp_path), free_port(), tmp_path / "server.log"
    command = [sys.executable, "-m", "timl.serve", "--config", str(config), "--bind", f"127.0.0.1:{port}",
               "--workers", "1"]
    with _serving(command, _environment(config), log, port) as base:
        forged = requests.get(f"{base}/api/evaluate/answers.csv", headers={"Host": "evil.example"}, timeout=30)
        assert forged.status_code == 400 and "Host='evil.example'" in forged.json()["error"]
        image = requests.get(f"{base}/api/evaluate/images/a.png", headers={"Host": f"evil.example:{port}"}, timeout=30)
        assert image.status_code == 400
        cross = _call(base, "POST", "/api/evaluate/answers", headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403 and "Origin='https://evil.example'" in cross.json()["error"]
        same = _call(base, "POST", "/api/evaluate/answers", headers={"Origin": base})
        assert same.status_code == 201
        assert requests.get(f"{base}/api/evaluate/images/a.png", timeout=30).status_code == 200


#: In the page: read the answers and post one as the page's own origin; the two statuses.
READ_AND_POST = """
const done = arguments[arguments.length - 1];
const answer = {image: "a.png", evaluator: arguments[0], agree: true, label: "", predicted: "A"};
Promise.all([fetch("/api/evaluate/answers.csv").then(r => r.status),
             fetch("/api/evaluate/answers", {method: "POST", headers: {"Content-Type": "application/json"},
                                             body: JSON.stringify(answer)}).then(r => r.status)])
  .then(done, error => done(String(error)));
"""

#: In the page: what a form on another site may post anywhere (a "simple" request, sent without asking).
CROSS_SITE_POST = """
const done = arguments[arguments.length - 1];
const form = new FormData();
form.append("file", new Blob([new Uint8Array(8)], {type: "image/png"}), "x.png");
fetch(arguments[0], {method: "POST", mode: "no-cors", body: form})
  .then(() => done("sent"), error => done(String(error)));
"""


@pytest.mark.slow
@pytest.mark.component("chromium")
def test_in_chromium_a_rebinding_page_and_another_origin_are_refused(tmp_path):
    """The attacks in a real browser: a page under another name that resolves to this server (Chromium's
    host-resolver-rules map rebind.example to 127.0.0.1, the rebinding done) can neither read the answers nor post
    one; a page of another origin (localhost) posting to 127.0.0.1 is refused; the page's own origin posts."""
    import threading

    from werkzeug.serving import make_server

    from helpers import CHROMIUM_FLAGS, chromium

    app = _app(tmp_path)
    seen = []  # (method, path, Origin, status) of each request answered
    inner = app.wsgi_app

    def recording(environ, start_response):
        def start(status, headers, exc_info=None):
            seen.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("HTTP_ORIGIN"), int(status[:3])))
            return start_response(status, headers, exc_info)
        return inner(environ, start)

    app.wsgi_app = recording
    http = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    port = http.server_port
    browser = chromium(tmp_path / "profile", CHROMIUM_FLAGS + ("--host-resolver-rules=MAP rebind.example 127.0.0.1",))
    try:
        browser.get(f"http://rebind.example:{port}/static/evaluate.html")
        assert browser.execute_async_script(READ_AND_POST, "Dr. Rebinding") == [400, 400]
        browser.get(f"http://localhost:{port}/static/evaluate.html")
        assert browser.execute_async_script(CROSS_SITE_POST, f"http://127.0.0.1:{port}/api/classify") == "sent"
        browser.get(f"http://127.0.0.1:{port}/static/evaluate.html")
        assert browser.execute_async_script(READ_AND_POST, "Dr. Own") == [200, 201]
    finally:
        browser.quit()
        http.shutdown()
    assert ("POST", "/api/classify", f"http://localhost:{port}", 403) in seen
    assert ("POST", "/api/evaluate/answers", f"http://127.0.0.1:{port}", 201) in seen  # Chromium sends Origin
    rows = list(csv.DictReader(io.StringIO(_app(tmp_path).test_client().get("/api/evaluate/answers.csv").text)))
    assert [row["evaluator"] for row in rows] == ["Dr. Own"]
