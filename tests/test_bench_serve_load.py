"""``bench/serve_load.py``'s client (issue 28, item 5): each load test's request is built once and sent over a plain
socket, so that the bench's own CPU stays out of what it measures. Here: the prebuilt request is the upload a
form parser reads (Werkzeug's, as the server's), and an answer counts only when it is a 200 that arrived whole."""

from __future__ import annotations

import http.server
import threading
from urllib.parse import urlsplit

import pytest

from helpers import load_bench

IMAGE = bytes(range(256)) * 300  # stands in for the JPEG: every byte value, 76,800 bytes


@pytest.fixture(scope="module")
def bench():
    """bench/serve_load.py as a module."""
    return load_bench("serve_load")


@pytest.fixture
def server():
    """A loopback HTTP server whose answer the test sets (``answer``: status, body, Content-Length or None for the
    body's) and which keeps the uploads it parsed with Werkzeug's form parser (``uploads``: path, file field names,
    the field ``file``'s bytes, the other fields)."""
    from werkzeug.formparser import parse_form_data

    state = {"answer": (200, b'{"label": "A"}', None), "uploads": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            environ = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": self.headers["Content-Type"],
                       "CONTENT_LENGTH": self.headers["Content-Length"], "wsgi.input": self.rfile}
            _, form, files = parse_form_data(environ)
            state["uploads"].append((self.path, sorted(files), files["file"].read() if "file" in files else None,
                                     dict(form)))
            status, body, length = state["answer"]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{httpd.server_address[1]}/api/classify"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def test_the_prebuilt_request_is_the_upload_a_form_parser_reads(bench, server):
    state, url = server
    address, request = bench.classify_request(url, IMAGE)
    assert address == ("127.0.0.1", urlsplit(url).port)
    assert bench.post(address, request) and bench.post(address, request)  # the same bytes, sent twice
    assert state["uploads"] == [("/api/classify", ["file"], IMAGE, {})] * 2


def test_an_answer_counts_only_as_a_whole_200(bench, server):
    state, url = server
    address, request = bench.classify_request(url, IMAGE)
    state["answer"] = (503, b'{"error": "busy"}', None)
    assert not bench.post(address, request)
    state["answer"] = (200, b'{"label"', 40)  # the connection ended 32 bytes short of its Content-Length
    assert not bench.post(address, request)


def test_a_load_counts_requests_errors_and_its_own_cpu(bench, server):
    state, url = server
    found = bench.load(url, IMAGE, 2, 0.5)
    assert found["requests"] == len(state["uploads"]) > 0 and found["errors"] == 0
    assert found["rps"] > 0 and found["p50"] <= found["p99"] and 0 < found["client_cpu"] < 0.05
    state["answer"] = (500, b"", None)
    failed = bench.load(url, IMAGE, 2, 0.3)
    assert failed["errors"] == failed["requests"] > 0 and failed["rps"] == 0
