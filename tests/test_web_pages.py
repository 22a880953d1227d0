"""The web pages in a real headless Chromium: classify, classify (tablet) and evaluate, against a real server."""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import threading
from pathlib import Path

import pytest
import requests

from helpers import chromium, encoded, tiny_classifier, wait_until

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are "
                                 "not installed (.ci/run installs them: apt-get install chromium chromium-driver)")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from timl.serving import create_app

    folder = tmp_path_factory.mktemp("web")
    (folder / "review").mkdir()
    (folder / "review" / "lesion-1.png").write_bytes(encoded(size=(60, 40)))
    (folder / "review" / "lesion-2.jpg").write_bytes(encoded(size=(50, 50), format_name="JPEG"))
    (folder / "upload.png").write_bytes(encoded(size=(64, 48)))
    (folder / "broken.png").write_bytes(b"not an image at all")
    app = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "EVALUATION_IMAGES_DIR": str(folder / "review"),
                      "EVALUATION_DB": str(folder / "answers.db")}, classifier=tiny_classifier())
    with _serving(app) as url:
        yield {"url": url, "folder": folder}


@contextlib.contextmanager
def _serving(app):
    """A real HTTP server for ``app`` on a free port, in a background thread."""
    from werkzeug.serving import make_server

    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}"
    finally:
        http.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def _wait(browser, condition, timeout=60):
    return wait_until(browser, condition, timeout)


def _classify_and_explain(browser, server, page: str, tmp_path: Path, pages: str = "/static") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(f"{server['url']}{pages}/{page}")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#method option")) == 5)
    browser.find_element(By.ID, "file").send_keys(str(server["folder"] / "upload.png"))
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 3)
    names = [element.text for element in browser.find_elements(By.CSS_SELECTOR, "#bars .bar .name")]
    assert names == ["A", "B", "C"]
    assert all(value.text.endswith("%") for value in browser.find_elements(By.CSS_SELECTOR, "#bars .value"))
    assert browser.find_element(By.ID, "predicted").text in names
    Select(browser.find_element(By.ID, "method")).select_by_value("gradcam")
    browser.find_element(By.ID, "explainButton").click()
    _wait(browser, lambda d: d.execute_script(
        "const i = document.getElementById('composite'); return !i.hidden && i.complete && i.naturalWidth > 0;"))
    for image in ("heatmap", "composite"):
        width = browser.execute_script(f"return document.getElementById('{image}').naturalWidth;")
        assert width == 64  # the original image's width, not the model's 16 px
        assert browser.find_element(By.ID, image).get_attribute("src").startswith("data:image/png;base64,")
    browser.save_screenshot(str(tmp_path / f"{page}.png"))


def test_classify_page(browser, server, tmp_path):
    _classify_and_explain(browser, server, "classify.html", tmp_path)


def test_classify_touch_page(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    _classify_and_explain(browser, server, "classifytouch.html", tmp_path)
    file_input = browser.find_element(By.ID, "file")
    assert file_input.get_attribute("capture") == "environment"
    button = browser.find_element(By.ID, "explainButton").size
    assert button["height"] >= 44  # a touch target


def test_classify_page_shows_server_errors(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(f"{server['url']}/static/classify.html")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#method option")) == 5)
    browser.find_element(By.ID, "file").send_keys(str(server["folder"] / "broken.png"))
    _wait(browser, lambda d: "error" in d.find_element(By.ID, "status").get_attribute("class"))
    assert browser.find_element(By.ID, "status").text  # the server's JSON message, shown to the user
    assert not browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    assert not browser.find_element(By.ID, "explainButton").is_enabled()


def test_evaluate_page_records_answers_and_downloads_csv(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(f"{server['url']}/static/evaluate.html")
    browser.find_element(By.ID, "evaluator").send_keys("Dr. Test")
    for choice in ("agreeYes", "agreeNo"):
        _wait(browser, lambda d: d.find_element(By.ID, "submit").is_enabled())
        assert browser.find_element(By.ID, "predicted").text in ("A", "B", "C")
        assert browser.execute_script("return document.getElementById('composite').naturalWidth;") > 0
        assert browser.find_element(By.ID, "methodShown").text == "gradcam"
        browser.find_element(By.ID, choice).click()
        if choice == "agreeNo":
            Select(browser.find_element(By.ID, "label")).select_by_value("C")
            browser.find_element(By.ID, "comment").send_keys("border irregular")
        browser.save_screenshot(str(tmp_path / f"evaluate-{choice}.png"))
        shown = browser.find_element(By.ID, "imageName").text
        browser.find_element(By.ID, "submit").click()
        _wait(browser, lambda d: d.find_element(By.ID, "imageName").text != shown
              or "All images" in d.find_element(By.ID, "status").text)
    _wait(browser, lambda d: "All images reviewed" in d.find_element(By.ID, "status").text)
    link = browser.find_element(By.ID, "download").get_attribute("href")
    answer = requests.get(link, timeout=30)
    assert answer.status_code == 200 and "attachment" in answer.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [row["image"] for row in rows] == ["lesion-1.png", "lesion-2.jpg"]
    assert [row["agree"] for row in rows] == ["1", "0"]
    assert rows[1]["label"] == "C" and rows[1]["comment"] == "border irregular"
    assert {row["evaluator"] for row in rows} == {"Dr. Test"}


def test_pages_follow_a_configured_rest_prefix(browser, server):
    from selenium.webdriver.common.by import By

    from timl.serving import create_app

    app = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "REST_API_URL_PREFIX": "/v2/timl",
                      "STATIC_PAGES_URL_PREFIX": "/pages"}, classifier=tiny_classifier())
    with _serving(app) as url:
        browser.get(f"{url}/pages/classify.html?rest=/v2/timl")
        _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#method option")) == 5)
        browser.find_element(By.ID, "file").send_keys(str(server["folder"] / "upload.png"))
        _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 3)
        browser.find_element(By.LINK_TEXT, "Evaluate").click()  # the link keeps ?rest=
        # no evaluation folder configured: the page says which key to set
        _wait(browser, lambda d: "EVALUATION_IMAGES_DIR" in d.find_element(By.ID, "status").text)


def test_pages_know_the_manuals_rest_prefix_without_a_query(browser, server, tmp_path):
    """The original manual's prefixes: pages at /web/, REST API at /rest/; no ?rest= in the URL."""
    from selenium.webdriver.common.by import By

    from timl.serving import create_app

    app = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "REST_API_URL_PREFIX": "rest",
                      "STATIC_PAGES_URL_PREFIX": "web", "STATIC_PAGES_DIR": str(tmp_path / "html")},
                     classifier=tiny_classifier())
    with _serving(app) as url:
        _classify_and_explain(browser, {"url": url, "folder": server["folder"]}, "classify.html", tmp_path, "/web")
        assert browser.execute_script("return TIML.rest;") == "/rest"
        browser.find_element(By.LINK_TEXT, "Evaluate").click()
        assert "?rest=" not in browser.current_url
        # no evaluation folder configured: /rest/evaluate answers which key to set
        _wait(browser, lambda d: "EVALUATION_IMAGES_DIR" in d.find_element(By.ID, "status").text)


def test_pages_ask_for_the_api_token_and_answers_record_its_user(browser, tmp_path):
    """With API_TOKENS_FILE the evaluate page asks for the token once (a refused one again), sends it with every
    call, and the stored answers carry the token's user."""
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions

    from timl.serving import create_app

    token = "token-of-dr-b-0123456789abcdef"
    (tmp_path / "review").mkdir()
    (tmp_path / "review" / "lesion-1.png").write_bytes(encoded(size=(60, 40)))
    (tmp_path / "tokens.json").write_text(json.dumps({token: "Dr. B"}))
    app = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "EVALUATION_IMAGES_DIR": str(tmp_path / "review"),
                      "EVALUATION_DB": str(tmp_path / "answers.db"), "API_TOKENS_FILE": str(tmp_path / "tokens.json")},
                     classifier=tiny_classifier())
    with _serving(app) as url:
        browser.get(f"{url}/static/evaluate.html")
        for typed in ("a-wrong-token-0123456789", token):  # the wrong one is refused (401), then asked again
            prompt = wait_until(browser, expected_conditions.alert_is_present(), timeout=60)
            assert "token" in prompt.text
            prompt.send_keys(typed)
            prompt.accept()
        browser.find_element(By.ID, "evaluator").send_keys("typed name")
        _wait(browser, lambda d: d.find_element(By.ID, "submit").is_enabled())
        browser.find_element(By.ID, "agreeYes").click()
        browser.find_element(By.ID, "submit").click()
        _wait(browser, lambda d: "All images reviewed" in d.find_element(By.ID, "status").text)
        assert requests.get(f"{url}/api/evaluate/answers.csv", timeout=30).status_code == 401
        answer = requests.get(f"{url}/api/evaluate/answers.csv", headers={"Authorization": f"Bearer {token}"},
                              timeout=30)
        rows = list(csv.DictReader(io.StringIO(answer.text)))
        assert [(row["evaluator"], row["user"]) for row in rows] == [("typed name", "Dr. B")]
    browser.execute_script("sessionStorage.clear();")
