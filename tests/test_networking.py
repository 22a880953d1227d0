"""The TIML server as the original manual starts it: ``FLASK_APP=timl.networking.__main__.py; python -m flask run``,
its sample configuration (prefixes ``rest`` and ``web``, a STATIC_PAGES_DIR that does not exist), where the
configuration is looked up, and what happens without one. Real processes on 127.0.0.1, stopped by their pid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from helpers import encoded, free_port, saved_model, wait_for_http

#: The sample configuration of the original manual (Docs/USERS.md), model file aside.
MANUAL_CONFIG = {
    "CLASSIFICATION_MODEL_description": "Path to the model file (.h5) for classification.",
    "CLASSIFICATION_MODEL": "tiny.h5",
    "REST_API_URL_PREFIX_description": "The URL prefix to access the REST-API.",
    "REST_API_URL_PREFIX": "rest",
    "STATIC_PAGES_DIR_description": "Path to the directory containing the static files.",
    "STATIC_PAGES_DIR": "html",
    "STATIC_PAGES_URL_PREFIX_description": "The URL prefix to access the static pages.",
    "STATIC_PAGES_URL_PREFIX": "web",
}


def _environment(home: Path) -> dict:
    env = {key: value for key, value in os.environ.items()
           if key != "TIML_SERVER_CONFIG" and not key.startswith("FLASK_")}
    return env | {"HOME": str(home), "FLASK_APP": "timl.networking.__main__.py"}


def _flask_run(cwd: Path, home: Path, port: int, log: Path) -> subprocess.Popen:
    """``python -m flask run`` exactly as the manual types it, with --host and --port."""
    with log.open("w") as stream:
        return subprocess.Popen([sys.executable, "-m", "flask", "run", "--host", "127.0.0.1", "--port", str(port)],
                                cwd=cwd, env=_environment(home), stdout=stream, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_flask_run_as_the_manual_says(tmp_path):
    import requests

    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".timl").mkdir(parents=True)
    work.mkdir()
    saved_model(home / ".timl")
    (home / ".timl" / "timl_server_config.json").write_text(json.dumps(MANUAL_CONFIG, indent=4))
    port, log = free_port(), tmp_path / "server.log"
    server = _flask_run(work, home, port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/rest/ping")
        assert requests.get(f"{base}/rest/ping", timeout=30).text == "pong"
        echo = requests.get(f"{base}/rest/echo/hello", timeout=30)
        assert echo.text == "You told me hello" and echo.headers["Content-Type"].startswith("text/plain")
        info = requests.get(f"{base}/rest/info", timeout=60).json()
        assert info["classification"]["model_file"] == "tiny.h5"  # its name, never the server's folders
        assert info["classes"] == ["A", "B", "C"] and info["layers"][:2] == ["conv_a", "conv_b"]
        image = tmp_path / "lesion.png"
        image.write_bytes(encoded(size=(40, 24)))
        classified = requests.post(f"{base}/rest/classify", files={"file": ("lesion.png", image.read_bytes())},
                                   timeout=60)
        assert classified.status_code == 200 and len(classified.json()["prediction"]) == 3
        client = subprocess.run([sys.executable, "-m", "timl.client", str(image), f"{base}/rest/explain/gradcam/conv_b",
                                 "--save-images", str(tmp_path / "saved")], capture_output=True, text=True, timeout=120)
        assert client.returncode == 0 and "status: 200" in client.stdout, client.stdout + client.stderr
        for kind in ("grey", "heatmap", "comp"):
            assert Image.open(tmp_path / "saved" / f"lesion-gradcam-{kind}.png").size == (40, 24)
        page = requests.get(f"{base}/web/classify.html", timeout=30)
        assert page.status_code == 200 and "timl-config.js" in page.text
        assert '"/rest"' in requests.get(f"{base}/web/timl-config.js", timeout=30).text
        assert requests.get(f"{base}/api/info", timeout=30).status_code == 404
    finally:
        server.terminate()
        server.wait(timeout=30)
    output = log.read_text()
    assert f"STATIC_PAGES_DIR {home / '.timl' / 'html'}" in output and "shipped" in output, output


def test_no_configuration_stops_the_server_with_a_sample(tmp_path):
    manual = subprocess.run([sys.executable, "-m", "flask", "run", "--host", "127.0.0.1", "--port", str(free_port())],
                            cwd=tmp_path, env=_environment(tmp_path), capture_output=True, text=True, timeout=120)
    assert manual.returncode != 0
    assert "No server configuration found" in manual.stderr and "CLASSIFICATION_MODEL_description" in manual.stderr
    assert str(tmp_path / ".timl" / "timl_server_config.json") in manual.stderr  # the original's place is listed
    module = subprocess.run([sys.executable, "-m", "timl.networking", "--port", str(free_port())], cwd=tmp_path,
                            env=_environment(tmp_path), capture_output=True, text=True, timeout=120)
    assert module.returncode == 2 and "REST_API_URL_PREFIX_description" in module.stderr


def test_configuration_lookup_order(tmp_path, monkeypatch):
    from timl.serving.config import find_config

    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".timl").mkdir(parents=True)
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    monkeypatch.delenv("TIML_SERVER_CONFIG", raising=False)
    places = [work / "timl_server_config.json", home / ".timl" / "timl_server_config.json",
              home / "timl_server_config.json"]
    for place in reversed(places):  # each place, then one that comes before it
        place.write_text("{}")
        assert find_config() == place
    monkeypatch.setenv("TIML_SERVER_CONFIG", str(tmp_path / "chosen.json"))
    (tmp_path / "chosen.json").write_text("{}")
    assert find_config() == tmp_path / "chosen.json"


def test_importing_the_package_reads_no_configuration(tmp_path):
    """No configuration here: importing succeeds (the app is built when asked for), and loads no TensorFlow."""
    code = ("import sys, timl.networking, timl.networking.__main__\n"
            "print('tensorflow' in sys.modules, hasattr(timl.networking, 'nope'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_environment(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.split() == ["False", "False"], result.stderr


def test_networking_help_has_an_example():
    from click.testing import CliRunner

    from timl.networking.__main__ import cli

    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and "Example" in result.output and "FLASK_APP=timl.networking.__main__.py" in result.output
