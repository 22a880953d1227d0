"""The pages talk to their own server only (issue 21, finding 1): a ``?rest=`` that names another host, ``//host``
or a ``javascript:`` URL is refused with a message on the page, in a real headless Chromium, while a second
loopback server plays the other host and records every request it receives."""

from __future__ import annotations

import http.server
import threading
from urllib.parse import urlencode

import pytest

from helpers import chromium, encoded, serving_in_thread, tiny_classifier, wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.component("chromium")]

#: ``?rest=`` values that must never be followed; OTHER is the other host's "host:port".
REFUSED = ("http://OTHER/api", "//OTHER/api", "javascript:alert(1)//", "/\\OTHER/api", "/.//OTHER/api",
           "/\t/OTHER/api")
#: Every URL a page links to or loads, with how it resolves (the page's origin is checked against it).
LINKS = "return Array.from(document.querySelectorAll('[href], [src]')).map((e) => e.href || e.src);"


class _Recorder(http.server.BaseHTTPRequestHandler):
    """The other host: answers every request as a cooperating attacker would (CORS allowed, JSON) and records it."""

    received: list = []

    def _answer(self):
        self.received.append((self.command, self.path, self.headers.get("Authorization")))
        body = b'{"classes": ["X"], "prediction": [1.0], "predicted_class": "X", "images": []}'
        self.send_response(200)
        for name, value in (("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Headers", "*"),
                            ("Access-Control-Allow-Methods", "*"), ("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))):
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_OPTIONS = do_PUT = _answer

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def other_host():
    recorder = type("Recorder", (_Recorder,), {"received": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"address": f"127.0.0.1:{server.server_port}", "received": recorder.received}
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from timl.serving import create_app

    folder = tmp_path_factory.mktemp("pages")
    (folder / "review").mkdir()
    (folder / "review" / "lesion-1.png").write_bytes(encoded(size=(60, 40)))
    (folder / "upload.png").write_bytes(encoded(size=(64, 48)))
    app = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "EVALUATION_IMAGES_DIR": str(folder / "review"),
                      "EVALUATION_DB": str(folder / "answers.db")}, classifier=tiny_classifier())
    with serving_in_thread(app) as url:
        yield {"url": url, "folder": folder}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def _open(browser, server, page: str, rest: str | None) -> None:
    query = "" if rest is None else "?" + urlencode({"rest": rest})
    browser.get(f"{server['url']}/static/{page}{query}")


def _classify(browser, server) -> None:
    """Uploads an image and waits for the own server's three classes."""
    from selenium.webdriver.common.by import By

    wait_until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#method option")) == 5)
    browser.find_element(By.ID, "file").send_keys(str(server["folder"] / "upload.png"))
    wait_until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 3)
    names = sorted(element.text for element in browser.find_elements(By.CSS_SELECTOR, "#bars .bar .name"))
    assert names == ["A", "B", "C"]  # the own server's classes, not the other host's "X"


def _forget_reviewer(browser, server) -> None:
    """A fresh evaluate page: no reviewer name kept from an earlier test (it would resume at once)."""
    browser.get(f"{server['url']}/health")
    browser.execute_script("localStorage.clear(); sessionStorage.clear();")


def _review(browser, reviewer: str) -> None:
    """Starts a review as ``reviewer``, agrees with the model on the one image and waits for the summary."""
    from selenium.webdriver.common.by import By

    wait_until(browser, lambda d: "1 images to review" in d.find_element(By.ID, "progress").text)
    browser.find_element(By.ID, "evaluator").clear()
    browser.find_element(By.ID, "evaluator").send_keys(reviewer)
    browser.find_element(By.ID, "start").click()
    wait_until(browser, lambda d: d.find_element(By.ID, "submit").is_enabled())
    browser.find_element(By.ID, "agreeYes").click()
    browser.find_element(By.ID, "submit").click()
    wait_until(browser, lambda d: "All 1 images have your answer" in d.find_element(By.ID, "summaryText").text)


def _links_stay_home(browser, server) -> list[str]:
    links = [link for link in browser.execute_script(LINKS) if link]
    assert not [link for link in links if link.lower().startswith("javascript:")], links
    home = (f"{server['url']}/", f"blob:{server['url']}/", "data:image/png;base64,")  # the page's own pictures
    assert all(link.startswith(home) for link in links), links
    return links


#: Each page with the plain other-host values; the normalisation tricks on classify.html (the pages share timl.js).
CASES = [(page, value) for value in REFUSED for page in ("classify.html", "classifytouch.html", "evaluate.html")
         if page == "classify.html" or value in REFUSED[:3]]


@pytest.mark.parametrize(("page", "value"), CASES)
def test_a_rest_parameter_naming_another_host_is_refused(browser, server, other_host, page, value):
    from selenium.webdriver.common.by import By

    rest = value.replace("OTHER", other_host["address"])
    other_host["received"].clear()
    _forget_reviewer(browser, server)
    _open(browser, server, page, rest)
    if page == "evaluate.html":
        _review(browser, f"Dr. {REFUSED.index(value)}")
        download = browser.find_element(By.ID, "download").get_attribute("href")
        assert download == f"{server['url']}/api/evaluate/answers.csv"
    else:
        _classify(browser, server)
    message = browser.find_element(By.ID, "restRefused")
    assert message.is_displayed() and message.text.startswith("The address parameter rest=")
    assert "was refused: only a path on this server is accepted" in message.text
    for link in browser.find_elements(By.CSS_SELECTOR, "nav a"):
        assert "rest=" not in link.get_attribute("href")  # a refused value is never carried to the next page
    _links_stay_home(browser, server)
    assert other_host["received"] == []


def test_a_rest_path_on_this_server_is_used_and_carried_by_the_links(browser, server, other_host):
    from selenium.webdriver.common.by import By

    other_host["received"].clear()
    _forget_reviewer(browser, server)
    _open(browser, server, "classify.html", "/api/")
    _classify(browser, server)
    assert not browser.find_elements(By.ID, "restRefused")
    assert browser.execute_script("return TIML.rest;") == "/api"
    links = [link.get_attribute("href") for link in browser.find_elements(By.CSS_SELECTOR, "nav a")]
    assert links and all(link.startswith(server["url"]) and link.endswith("?rest=%2Fapi") for link in links)
    browser.find_element(By.LINK_TEXT, "Evaluate").click()
    wait_until(browser, lambda d: "evaluate.html?rest=%2Fapi" in d.current_url)
    _review(browser, "Dr. Here")
    assert not browser.find_elements(By.ID, "restRefused")
    assert browser.find_element(By.ID, "download").get_attribute("href") == f"{server['url']}/api/evaluate/answers.csv"
    _links_stay_home(browser, server)
    assert other_host["received"] == []


def test_the_pages_never_call_another_origin_even_from_their_own_code(browser, server, other_host):
    """The last guard, under every REST call: an absolute URL of another host is refused before any token is
    asked for or sent."""
    other_host["received"].clear()
    _open(browser, server, "classify.html", None)
    wait_until(browser, lambda d: d.execute_script("return typeof TIML === 'object';"))
    outcome = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"TIML.call('http://{other_host['address']}/api/info').then(() => done('sent'), (e) => done(e.message));")
    assert outcome.startswith("Refused to contact another server")
    assert other_host["received"] == []
