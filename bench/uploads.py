"""What reading one multipart upload costs: Werkzeug's parser (the server's before) against python-multipart's
(``timl/serving/uploads.py``), on the body ``requests`` sends for the serving benches' 600x450 JPEG and for a 20 KB
and a 2 MB file; CPU per parse (median of ``--repeats``, alternately in one process), and the ratio. Then the step
before it: the same bodies read off a connection through gunicorn's request body (the server's before) and through
``timl.serving.connections.WholeReads``, 64 KB at a time as the parser asks.

    python bench/uploads.py [--repeats 300]

Why: Werkzeug compiles two regular expressions from each request's boundary, and every client picks a new boundary
per request, so every upload paid for compiling them; gunicorn's body reads any size 1 KB at a time.
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import threading
import time

import requests
from serve_load import image_bytes
from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_options_header

from timl.serving.connections import WholeReads
from timl.serving.uploads import CHUNK, FormParser


def parse_seconds(parser_class, body: bytes, content_type: str) -> float:
    """CPU seconds of one parse of ``body``, its file read back."""
    mimetype, options = parse_options_header(content_type)
    start = time.process_time()
    _, _, files = parser_class().parse(io.BytesIO(body), mimetype, len(body), options)
    files["file"].read()
    return time.process_time() - start


def read_seconds(wrap, body: bytes) -> float:
    """CPU seconds of reading ``body``, sent with its length over a real socket, through gunicorn's request (its
    parser and body) with ``wrap`` around the body, ``CHUNK`` bytes at a time as the upload parser reads it."""
    from gunicorn.config import Config
    from gunicorn.http.parser import RequestParser

    server, client = socket.socketpair()
    sender = threading.Thread(target=client.sendall, args=(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
                                                            b"%d\r\n\r\n%s" % (len(body), body),))
    sender.start()
    try:
        request = next(RequestParser(Config(), server, ("127.0.0.1", 1)))
        stream, read = wrap(request.body), 0
        start = time.process_time()
        while piece := stream.read(CHUNK):
            read += len(piece)
        seconds = time.process_time() - start
    finally:
        sender.join()
        server.close()
        client.close()
    assert read == len(body)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    print("| upload | body (KB) | Werkzeug (ms) | python-multipart (ms) | Werkzeug / python-multipart |")
    print("| --- | --- | --- | --- | --- |")
    uploads = []
    for label, content in (("the serving benches' JPEG", image_bytes()), ("20 KB", bytes(20_000)),
                           ("2 MB", bytes(range(256)) * 8192)):
        prepared = requests.Request("POST", "http://127.0.0.1/", files={"file": ("x.jpg", content)}).prepare()
        uploads.append((label, prepared.body))
        seconds = {FormDataParser: [], FormParser: []}
        for _ in range(args.repeats):
            for parser_class, found in seconds.items():
                found.append(parse_seconds(parser_class, prepared.body, prepared.headers["Content-Type"]))
        before, after = (statistics.median(seconds[parser_class]) for parser_class in (FormDataParser, FormParser))
        print(f"| {label} | {len(prepared.body) / 1000:.0f} | {before * 1000:.3f} | {after * 1000:.3f} | "
              f"{before / after:.1f}x |")
    print()
    print("| upload | body (KB) | gunicorn's body (ms) | whole reads (ms) | gunicorn's / whole reads |")
    print("| --- | --- | --- | --- | --- |")
    for label, content in uploads:
        seconds = {"gunicorn": [], "whole": []}
        for _ in range(args.repeats):
            seconds["gunicorn"].append(read_seconds(lambda body: body, content))
            seconds["whole"].append(read_seconds(WholeReads, content))
        before, after = (statistics.median(seconds[kind]) for kind in ("gunicorn", "whole"))
        print(f"| {label} | {len(content) / 1000:.0f} | {before * 1000:.3f} | {after * 1000:.3f} | "
              f"{before / after:.1f}x |")


if __name__ == "__main__":
    main()
