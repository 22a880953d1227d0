"""The command-line client (``python -m timl.client``): what it sends, and where it never sends it."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading

import pytest

from helpers import encoded

TOKEN = "a-token-of-at-least-16-characters"


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every request with ``self.server.status`` (and a Location to ``self.server.location``) and keeps
    each request's path and headers in ``self.server.seen``."""

    def _answer(self):
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(self.server.status)
        if self.server.location:
            self.send_header("Location", self.server.location)
        body = b'{"prediction": [1.0]}'
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


def _server(status: int, location: str = ""):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.status, server.location, server.seen = status, location, []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_the_client_never_follows_a_redirect_with_the_token(tmp_path, status):
    """A redirect (to another host, or https to http) would carry the Authorization header and the image along:
    the client refuses it, says so and exits 2 (issue 21, finding 11)."""
    other = _server(200)
    redirector = _server(status, f"http://127.0.0.1:{other.server_address[1]}/api/classify")
    image = tmp_path / "x.png"
    image.write_bytes(encoded())
    try:
        url = f"http://127.0.0.1:{redirector.server_address[1]}/api/classify"
        result = subprocess.run([sys.executable, "-m", "timl.client", str(image), url],
                                env=dict(os.environ, TIML_API_TOKEN=TOKEN), capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "redirect" in result.stderr and "does not follow" in result.stderr
        assert TOKEN not in result.stdout + result.stderr
        assert [seen[2].get("Authorization") for seen in redirector.seen] == [f"Bearer {TOKEN}"]
        assert other.seen == []
    finally:
        for server in (other, redirector):
            server.shutdown()
            server.server_close()


def test_the_help_says_how_to_keep_the_token_out_of_ps():
    result = subprocess.run([sys.executable, "-m", "timl.client", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert "TIML_API_TOKEN" in result.stdout and "ps" in result.stdout
