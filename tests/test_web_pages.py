"""The web pages in a real headless Chromium: classify, classify (tablet) and evaluate, against a real server."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import requests

from helpers import chromium, dicom_bytes, encoded, serving_in_thread, tiny_classifier, wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.component("chromium")]


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
    with serving_in_thread(app) as url:
        yield {"url": url, "folder": folder}


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
    assert browser.find_element(By.ID, "model").text == "Model: tiny · 3 classes"  # a name, never a server path
    browser.find_element(By.ID, "file").send_keys(str(server["folder"] / "upload.png"))
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 3)
    names = [element.text for element in browser.find_elements(By.CSS_SELECTOR, "#bars .bar .name")]
    assert sorted(names) == ["A", "B", "C"]
    values = [float(value.text.rstrip(" %")) for value in browser.find_elements(By.CSS_SELECTOR, "#bars .value")]
    assert values == sorted(values, reverse=True)  # highest probability first
    assert browser.find_element(By.ID, "predicted").text == names[0]
    Select(browser.find_element(By.ID, "method")).select_by_value("gradcam")
    browser.find_element(By.ID, "explainButton").click()
    heatmap = "document.querySelector('#viewer [data-part=heatmap]')"
    _wait(browser, lambda d: d.execute_script(f"const i = {heatmap}; return !i.hidden && i.complete && i.naturalWidth > 0;"))
    assert browser.execute_script(f"return {heatmap}.naturalWidth;") == 64  # the image's width, not the model's 16 px
    assert browser.execute_script(f"return {heatmap}.dataset.image;") == "upload.png"
    assert "upload.png" in browser.find_element(By.CSS_SELECTOR, "#viewer figcaption").text
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


def test_pages_follow_a_configured_rest_prefix(browser, server):
    from selenium.webdriver.common.by import By

    from timl.serving import create_app

    app = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "REST_API_URL_PREFIX": "/v2/timl",
                      "STATIC_PAGES_URL_PREFIX": "/pages"}, classifier=tiny_classifier())
    with serving_in_thread(app) as url:
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
    with serving_in_thread(app) as url:
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
    with serving_in_thread(app) as url:
        browser.get(f"{url}/static/evaluate.html")
        for typed in ("a-wrong-token-0123456789", token):  # the wrong one is refused (401), then asked again
            prompt = wait_until(browser, expected_conditions.alert_is_present(), timeout=60)
            assert "token" in prompt.text
            prompt.send_keys(typed)
            prompt.accept()
        browser.find_element(By.ID, "evaluator").clear()
        browser.find_element(By.ID, "evaluator").send_keys("typed name")
        browser.find_element(By.ID, "start").click()
        _wait(browser, lambda d: d.find_element(By.ID, "submit").is_enabled())
        browser.find_element(By.ID, "agreeYes").click()
        browser.find_element(By.ID, "submit").click()
        _wait(browser, lambda d: "All 1 images have your answer" in d.find_element(By.ID, "summaryText").text)
        assert requests.get(f"{url}/api/evaluate/answers.csv", timeout=30).status_code == 401
        answer = requests.get(f"{url}/api/evaluate/answers.csv", headers={"Authorization": f"Bearer {token}"},
                              timeout=30)
        rows = list(csv.DictReader(io.StringIO(answer.text)))
        assert [(row["evaluator"], row["user"]) for row in rows] == [("typed name", "Dr. B")]
    browser.execute_script("sessionStorage.clear(); localStorage.clear();")


HEATMAP = "document.querySelector('#viewer [data-part=heatmap]')"
PREVIEW = "document.querySelector('#viewer [data-part=image]')"


def _shown(browser, script: str) -> bool:
    """Whether an element is rendered (not display:none) with a picture in it."""
    return browser.execute_script(f"const e = {script}; return getComputedStyle(e).display !== 'none' && "
                                  "Boolean(e.getAttribute('src'));")


def test_a_new_image_or_a_failed_upload_leaves_no_trace_of_the_previous_one(browser, server):
    """The safety case: after an explanation, a new image (or a file the server refuses) must not show the
    previous image's heatmap, bars or name anywhere on the rendered page."""
    import shutil as files

    from selenium.webdriver.common.by import By

    folder = server["folder"]
    files.copy(folder / "upload.png", folder / "second.png")
    browser.get(f"{server['url']}/static/classify.html")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#method option")) == 5)
    assert not _shown(browser, PREVIEW) and not _shown(browser, HEATMAP)  # no placeholders before any upload

    def explain(name: str):
        browser.find_element(By.ID, "file").send_keys(str(folder / name))
        _wait(browser, lambda d: d.find_element(By.ID, "explainButton").is_enabled())
        browser.find_element(By.ID, "explainButton").click()
        _wait(browser, lambda d: _shown(d, HEATMAP))

    explain("upload.png")
    browser.find_element(By.ID, "file").send_keys(str(folder / "second.png"))
    _wait(browser, lambda d: "second.png" in d.find_element(By.ID, "status").text)
    assert not _shown(browser, HEATMAP)  # the old heatmap is gone, not merely covered
    assert browser.execute_script("return document.querySelectorAll('[data-image=\"upload.png\"]').length;") == 0
    assert "upload.png" not in browser.find_element(By.TAG_NAME, "main").text

    explain("second.png")
    browser.find_element(By.ID, "file").send_keys(str(folder / "broken.png"))  # bytes that are not an image
    _wait(browser, lambda d: "error" in d.find_element(By.ID, "status").get_attribute("class"))
    message = browser.find_element(By.ID, "status").text
    assert "not an image file" in message and "BytesIO" not in message and "0x" not in message
    assert not _shown(browser, HEATMAP) and not _shown(browser, PREVIEW)
    assert not browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    assert browser.find_element(By.ID, "predicted").text == "–"
    assert "second.png" not in browser.find_element(By.TAG_NAME, "main").text

    (folder / "notes.txt").write_text("not an image")  # refused in the browser, before any upload
    browser.find_element(By.ID, "file").send_keys(str(folder / "notes.txt"))
    _wait(browser, lambda d: "not an image TIML can read" in d.find_element(By.ID, "status").text)

    # a DICOM upload (issue 28) is classified and shown: the server draws it as a PNG (no browser draws DICOM)
    (folder / "scan.dcm").write_bytes(dicom_bytes(np.full((24, 32, 3), 90, np.uint8), "RGB"))
    browser.find_element(By.ID, "file").send_keys(str(folder / "scan.dcm"))
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 3)
    assert "error" not in browser.find_element(By.ID, "status").get_attribute("class")
    _wait(browser, lambda d: _shown(d, PREVIEW) and d.execute_script(f"return {PREVIEW}.naturalWidth;") == 32)
    browser.find_element(By.ID, "file").send_keys(str(folder / "notes.txt"))  # the next file clears it
    _wait(browser, lambda d: "not an image TIML can read" in d.find_element(By.ID, "status").text)
    assert not _shown(browser, PREVIEW)


def test_the_explanation_view_has_a_scale_an_opacity_control_and_zoom(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(f"{server['url']}/static/classify.html")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#method option")) == 5)
    assert browser.find_element(By.CSS_SELECTOR, ".note").text.startswith("Decision support, not a diagnosis")
    assert not browser.find_element(By.ID, "layer").is_displayed()  # the layer is an advanced setting
    browser.find_element(By.ID, "file").send_keys(str(server["folder"] / "upload.png"))
    _wait(browser, lambda d: d.find_element(By.ID, "explainButton").is_enabled())
    browser.find_element(By.ID, "explainButton").click()
    _wait(browser, lambda d: _shown(d, HEATMAP))
    assert browser.find_element(By.CSS_SELECTOR, "#viewer .scale").is_displayed()
    slider = browser.find_element(By.CSS_SELECTOR, "#viewer [data-part=opacity]")
    browser.execute_script("arguments[0].value = 80; arguments[0].dispatchEvent(new Event('input'));", slider)
    assert browser.execute_script(f"return {HEATMAP}.style.opacity;") == "0.8"
    browser.find_element(By.CSS_SELECTOR, "#viewer [data-part=zoomButton]").click()
    dialog = browser.find_element(By.CSS_SELECTOR, "#viewer dialog")
    _wait(browser, lambda d: dialog.is_displayed())
    zoomed = browser.execute_script("return document.querySelector('#viewer [data-part=zoomImage]').clientWidth;")
    assert zoomed >= 2 * browser.execute_script(f"return {PREVIEW}.clientWidth;") - 1
    browser.find_element(By.CSS_SELECTOR, "#viewer [data-part=zoomClose]").click()
    # RISE explains the input, not a layer: the status never names one
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "method")).select_by_value("rise")
    browser.find_element(By.ID, "explainButton").click()
    _wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith("RISE explanation"))
    assert "conv" not in browser.find_element(By.ID, "status").text
    assert requests.get(f"{server['url']}/favicon.ico", timeout=30).status_code == 200


def test_tablet_page_scrolls_to_its_results_with_large_touch_targets(browser, server):
    from selenium.webdriver.common.by import By

    browser.set_window_size(820, 1180)
    try:
        browser.get(f"{server['url']}/static/classifytouch.html")
        _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#method option")) == 5)
        assert [h.text for h in browser.find_elements(By.CSS_SELECTOR, "main h2")][:2] == ["Photo", "Classification"]
        targets = browser.find_elements(By.CSS_SELECTOR, "header nav a, button:not([hidden]), select, label.pick")
        small = [(t.tag_name, t.text, t.size["height"]) for t in targets if t.is_displayed() and t.size["height"] < 44]
        assert not small, small
        browser.find_element(By.ID, "file").send_keys(str(server["folder"] / "upload.png"))
        _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 3)
        _wait(browser, lambda d: d.execute_script(
            "const r = document.getElementById('results').getBoundingClientRect(); "
            "return r.top >= -1 && r.top < window.innerHeight / 2;"))  # the results are in view
    finally:
        browser.set_window_size(1400, 1000)


def test_two_reviewers_resume_go_back_skip_and_change_answers(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from timl.serving import create_app

    (tmp_path / "review").mkdir()
    for index in range(3):
        (tmp_path / "review" / f"lesion-{index + 1}.png").write_bytes(encoded(size=(60 + index, 40)))
    app = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "EVALUATION_IMAGES_DIR": str(tmp_path / "review"),
                      "EVALUATION_DB": str(tmp_path / "answers.db")}, classifier=tiny_classifier())

    def text(element_id):
        return browser.find_element(By.ID, element_id).text

    def start(name):
        browser.find_element(By.ID, "evaluator").clear()
        browser.find_element(By.ID, "evaluator").send_keys(name)
        browser.find_element(By.ID, "start").click()

    def on(image):
        _wait(browser, lambda d: image in text("imageName") and d.find_element(By.ID, "submit").is_enabled())

    def answer(agree, label=""):
        browser.find_element(By.ID, "agreeYes" if agree else "agreeNo").click()
        if label:
            Select(browser.find_element(By.ID, "label")).select_by_value(label)
        browser.find_element(By.ID, "submit").click()

    with serving_in_thread(app) as url:
        browser.get(f"{url}/static/evaluate.html")
        browser.execute_script("localStorage.clear();")
        browser.get(f"{url}/static/evaluate.html")
        _wait(browser, lambda d: "3 images to review" in text("progress"))
        start("Dr. One")
        on("lesion-1.png")
        answer(True)
        on("lesion-2.png")
        assert text("saved").startswith("Saved: lesion-1.png — agree")  # the confirmation stays
        browser.find_element(By.ID, "skip").click()
        on("lesion-3.png")
        assert "Saved: lesion-2.png — skipped" in text("saved")

        browser.refresh()  # a reload resumes where Dr. One stopped, with the done and skipped images marked
        on("lesion-3.png")
        states = [item.find_element(By.CSS_SELECTOR, ".state").text for item in browser.find_elements(By.CSS_SELECTOR, "#queue li")]
        assert states == ["✓ done", "skipped", "to do"]
        browser.find_element(By.ID, "back").click()  # back to the skipped image, answered now
        on("lesion-2.png")
        answer(False, "C")
        on("lesion-3.png")
        answer(True)
        _wait(browser, lambda d: d.find_element(By.ID, "summary").is_displayed())
        assert text("summaryText") == "All 3 images have your answer: 3 answered, 0 skipped."
        browser.find_elements(By.CSS_SELECTOR, "#queue li button")[0].click()  # change the first answer
        on("lesion-1.png")
        assert browser.find_element(By.ID, "agreeYes").is_selected()  # the earlier answer is shown
        answer(False, "B")
        _wait(browser, lambda d: "Saved: lesion-1.png — disagree: B" in text("saved"))

        start("Dr. Two")  # a second reviewer starts at the first image and skips everything
        on("lesion-1.png")
        for image in ("lesion-2.png", "lesion-3.png", None):
            browser.find_element(By.ID, "skip").click()
            if image:
                on(image)
        _wait(browser, lambda d: d.find_element(By.ID, "summary").is_displayed())
        assert text("summaryText") == "All 3 images have your answer: 0 answered, 3 skipped."

        rows = list(csv.DictReader(io.StringIO(requests.get(f"{url}/api/evaluate/answers.csv", timeout=30).text)))
        mine = {(row["reviewer"], row["image"]): row for row in rows}
        assert len(rows) == 6 and len(mine) == 6  # one current answer per reviewer and image
        assert (mine["Dr. One", "lesion-1.png"]["agree"], mine["Dr. One", "lesion-1.png"]["label"]) == ("0", "B")
        assert (mine["Dr. One", "lesion-2.png"]["agree"], mine["Dr. One", "lesion-2.png"]["label"]) == ("0", "C")
        assert all(mine["Dr. Two", f"lesion-{i}.png"]["skipped"] == "1" for i in (1, 2, 3))
        first = mine["Dr. One", "lesion-3.png"]
        assert first["model"] == "tiny.h5" and first["method"] == "gradcam" and first["predicted"] in "ABC"
        assert 0 < float(first["confidence"]) <= 1 and first["updated"] and first["classes"] == '["A", "B", "C"]'
    browser.execute_script("localStorage.clear();")
