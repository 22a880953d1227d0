"""The server's multipart uploads (timl/serving/uploads.py): python-multipart reads what Werkzeug's parser read, the
same way, under the same limits, and faster."""

from __future__ import annotations

import io
import statistics
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_options_header
from werkzeug.test import EnvironBuilder

from timl.serving.uploads import REREAD, FormParser

from helpers import encoded


def parsed(parser_class, body: bytes, content_type: str, **limits) -> tuple[list, list]:
    """The text fields and the files (name, file name, content type, bytes) a form parser reads from a body."""
    mimetype, options = parse_options_header(content_type)
    _, form, files = parser_class(**limits).parse(io.BytesIO(body), mimetype, len(body), options)
    return (list(form.items(multi=True)),
            [(name, upload.filename, upload.content_type, upload.read()) for name, upload in files.items(multi=True)])


def requests_body(fields: dict, files: dict) -> tuple[bytes, str]:
    """The body and Content-Type that ``requests`` (TIML's client, most scripts) sends for a form."""
    prepared = requests.Request("POST", "http://127.0.0.1/", data=fields, files=files or None).prepare()
    body = prepared.body if isinstance(prepared.body, bytes) else (prepared.body or "").encode()
    return body, prepared.headers.get("Content-Type", "")


def werkzeug_body(fields: dict, files: dict) -> tuple[bytes, str]:
    """The body and Content-Type of Werkzeug's (and Flask's) test client for a form."""
    data = {**fields, **{name: (io.BytesIO(content), filename) for name, (filename, content) in files.items()}}
    environ = EnvironBuilder(method="POST", data=data, content_type="multipart/form-data").get_environ()
    return environ["wsgi.input"].read(), environ["CONTENT_TYPE"]


text = st.text(st.sampled_from(list("ab_ é\"ü;\r\n-")), max_size=20)
names = st.text(st.sampled_from(list("abc_é")), min_size=1, max_size=6)
contents = st.one_of(st.binary(max_size=3000), st.just(b""), st.just(b"\r\n--"), st.just(encoded()))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(fields=st.dictionaries(names, text, max_size=3),
       files=st.dictionaries(names.map(lambda name: "f" + name), st.tuples(text.filter(str.strip), contents), max_size=3),
       encoder=st.sampled_from([requests_body, werkzeug_body]), cut=st.one_of(st.none(), st.floats(0, 1)))
def test_every_form_reads_as_werkzeug_read_it_whole_or_cut_short(fields, files, encoder, cut):
    body, content_type = encoder(fields, files)
    if cut is not None:  # a client that stopped sending: both parsers give an empty form
        body = body[:int(len(body) * cut)]
    assert parsed(FormParser, body, content_type) == parsed(FormDataParser, body, content_type)


def test_a_clients_upload_is_read_by_python_multipart_alone(monkeypatch):
    """The speed is in python-multipart: a body from ``requests`` never goes to Werkzeug's parser."""
    def refused(*args, **kwargs):
        raise AssertionError("Werkzeug's multipart parser was used")

    monkeypatch.setattr(FormDataParser, "_parse_multipart", refused)
    image = encoded(size=(600, 450), format_name="JPEG")
    body, content_type = requests_body({"note": "x"}, {"file": ("lesion 1.jpg", image, "image/jpeg")})
    assert parsed(FormParser, body, content_type) == ([("note", "x")], [("file", "lesion 1.jpg", "image/jpeg", image)])


@pytest.mark.parametrize("name,body,expected", [
    ("a preamble before the first boundary", b"junk\r\n--XX\r\nContent-Disposition: form-data; name=\"file\"; "
     b"filename=\"a.jpg\"\r\n\r\nDATA\r\n--XX--\r\n", [("file", "a.jpg", None, b"DATA")]),
    ("bare LF line breaks", b"--XX\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\n\nDATA\n--XX--\n",
     [("file", "a.jpg", None, b"DATA")]),
    ("no Content-Disposition", b"--XX\r\nContent-Type: image/jpeg\r\n\r\nDATA\r\n--XX--\r\n", []),
    ("no closing boundary", b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\nDATA", []),
])
def test_bodies_only_werkzeug_read_are_read_and_broken_ones_are_an_empty_form(name, body, expected):
    content_type = "multipart/form-data; boundary=XX"
    assert parsed(FormParser, body, content_type) == ([], expected) == parsed(FormDataParser, body, content_type)


def test_a_broken_body_over_the_reread_limit_is_an_empty_form():
    body = b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\n" + b"x" * (REREAD + 10)
    assert parsed(FormParser, body, "multipart/form-data; boundary=XX") == ([], [])


def test_the_limits_hold_as_with_werkzeug():
    body, content_type = requests_body({"a": "1", "b": "2" * 100}, {"file": ("x.png", b"png")})
    for limits in ({"max_form_parts": 2}, {"max_form_memory_size": 50}):
        for parser_class in (FormParser, FormDataParser):
            with pytest.raises(RequestEntityTooLarge):
                parsed(parser_class, body, content_type, **limits)
    assert parsed(FormParser, body, content_type, max_form_parts=3, max_form_memory_size=100)[0] == [
        ("a", "1"), ("b", "2" * 100)]


def test_a_large_file_streams_to_a_temporary_file_as_with_werkzeug():
    content = bytes(range(256)) * 4096  # 1 MiB: over Werkzeug's 500 KB in memory
    body, content_type = requests_body({}, {"file": ("scan.dcm", content)})
    mimetype, options = parse_options_header(content_type)
    _, _, files = FormParser().parse(io.BytesIO(body), mimetype, len(body), options)
    upload: FileStorage = files["file"]
    assert not isinstance(upload.stream, io.BytesIO) and upload.read() == content


def test_python_multipart_reads_a_jpeg_upload_faster_than_werkzeug():
    """The point of the change: medians of 40 parses each, alternately, in one run; 2.5-2.8x on a quiet machine
    (bench/uploads.py), 1.5x asked here so that a busy one passes too (Werkzeug's parser alone would give 1.0)."""
    body, content_type = requests_body({}, {"file": ("x.jpg", encoded(size=(600, 450), format_name="JPEG"))})
    seconds = {FormParser: [], FormDataParser: []}
    for _ in range(40):
        for parser_class in seconds:
            start = time.process_time()
            parsed(parser_class, body, content_type)
            seconds[parser_class].append(time.process_time() - start)
    assert statistics.median(seconds[FormDataParser]) >= 1.5 * statistics.median(seconds[FormParser])
