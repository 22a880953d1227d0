"""Multipart uploads read by python-multipart into Werkzeug's own form objects.

Werkzeug's multipart parser compiles two regular expressions from each request's boundary, and clients choose a new
random boundary for every request, so every upload paid for compiling them: about 0.5 ms of CPU in a quiet process
and 1.2-1.9 ms per request on a loaded 2-core server (a 165 KB JPEG), more than Flask's own dispatch. python-multipart,
the parser of Starlette and FastAPI, finds the boundary with ``bytes.find``. What the routes see is unchanged:
``request.files`` holds Werkzeug ``FileStorage`` objects, ``request.form`` the text fields, under the same limits
(``MAX_CONTENT_LENGTH`` and Flask's ``MAX_FORM_MEMORY_SIZE`` and ``MAX_FORM_PARTS``: 413), and a malformed body
leaves both empty, as Werkzeug's parser does (the route then says which field it needs). A body python-multipart
refuses goes to Werkzeug's parser when it is at most 1 MiB (``REREAD``): Werkzeug also reads a preamble before the
first boundary, bare LF line breaks, and its own test client's empty file part, whose closing boundary follows its
headers without a line break of its own.
"""

from __future__ import annotations

import logging
from typing import IO

from flask import Request
from python_multipart import MultipartParser
from werkzeug.datastructures import FileStorage, Headers
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser, MultiPartParser
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import File

#: Bytes read from the request at a time (as Werkzeug's parser reads).
CHUNK = 64 * 1024

#: The largest body read again by Werkzeug's parser when python-multipart refuses it (a larger one: an empty form).
REREAD = 1024 * 1024

# A malformed body is answered 400 by the route; python-multipart would also log a warning per such request.
logging.getLogger("python_multipart").setLevel(logging.ERROR)


class FormParser(FormDataParser):
    """Werkzeug's form parser with python-multipart reading ``multipart/form-data`` bodies (URL-encoded forms are
    Werkzeug's as before)."""

    def _parse_multipart(self, stream: IO[bytes], mimetype: str, content_length: int | None, options: dict):
        boundary = options.get("boundary", "").encode("ascii")  # a non-ASCII boundary: ValueError, an empty form
        if not boundary:
            raise ValueError("Missing boundary")
        parts = _Parts(self, content_length, boundary)
        kept: list[bytes] | None = []  # the body read so far, while it is small enough to be read again
        size = 0
        try:
            parser = MultipartParser(boundary, parts.callbacks())  # a boundary over 256 bytes: ValueError
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                kept = kept + [chunk] if kept is not None and size <= REREAD else None
                parser.write(chunk)
            parser.finalize()
            if not parts.ended:
                raise ValueError("The multipart body ends before its closing boundary.")
        except ValueError:
            if kept is None:
                raise
            return super()._parse_multipart(_Replay(b"".join(kept), stream), mimetype, content_length, options)
        return stream, self.cls(parts.fields), self.cls(parts.files)


class UploadRequest(Request):
    """Flask's request, its multipart forms read by :class:`FormParser` (the server's ``app.request_class``)."""

    form_data_parser_class = FormParser


class _Replay:
    """A stream whose first ``head`` bytes were read already: they come back first."""

    def __init__(self, head: bytes, rest: IO[bytes]):
        self.head, self.rest = head, rest

    def read(self, size: int = -1) -> bytes:
        if self.head:
            head, self.head = self.head, b""
            return head
        return self.rest.read(size)


class _Parts:
    """One body's parts as python-multipart reports them: each part's headers, then its data into a text field or
    a file (a part whose Content-Disposition names a ``filename``), as Werkzeug's parser sorts them.

    A part whose data begins with the boundary is refused (ValueError): Werkzeug's test client writes an empty file
    with no line break before the next boundary, which python-multipart would read as that file's data (Werkzeug's
    parser reads it as an empty file, and :class:`FormParser` hands such a body to it).
    """

    def __init__(self, parser: FormDataParser, content_length: int | None, boundary: bytes):
        self.parser, self.content_length, self.boundary = parser, content_length, b"--" + boundary
        # Werkzeug's own choices of a file's container and a text field's charset
        self.werkzeug = MultiPartParser(parser.stream_factory, parser.max_form_memory_size, parser.cls,
                                        max_form_parts=parser.max_form_parts)
        self.fields: list[tuple[str, str]] = []
        self.files: list[tuple[str, FileStorage]] = []
        self.ended, self.count = False, 0
        self._headers: list[tuple[str, str]] = []
        self._name, self._value = bytearray(), bytearray()
        self._part = None  # (name, filename or None, headers, container)
        self._size = 0
        self._head: bytearray | None = None  # a part's first bytes, until they cannot be the boundary

    def callbacks(self) -> dict:
        return {"on_part_begin": self._begin, "on_header_field": self._header_name,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._data, "on_part_end": self._end,
                "on_end": self._body_end}

    def _begin(self) -> None:
        self._headers, self._part, self._size, self._head = [], None, 0, bytearray()

    def _header_name(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:  # UTF-8 as Werkzeug decodes them (a bad byte: ValueError, an empty form)
        self._headers.append((self._name.decode().strip(" \t"), self._value.decode().strip(" \t")))
        self._name, self._value = bytearray(), bytearray()

    def _headers_finished(self) -> None:
        headers = Headers(self._headers)
        if "content-disposition" not in headers:
            raise ValueError("Missing Content-Disposition header")
        self.count += 1
        if self.parser.max_form_parts is not None and self.count > self.parser.max_form_parts:
            raise RequestEntityTooLarge()
        _, extra = parse_options_header(headers["content-disposition"])
        name, filename = extra.get("name"), extra.get("filename")
        if filename is None:
            container = []
        else:
            container = self.werkzeug.start_file_streaming(File(name, filename, headers), self.content_length)
        self._part = (name, filename, headers, container)

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._head is None:
            self._write(data[start:end])
            return
        self._head += data[start:end]
        if len(self._head) >= len(self.boundary):
            self._check_head()

    def _check_head(self) -> None:
        head, self._head = bytes(self._head), None
        if head.startswith(self.boundary):
            raise ValueError("A part's data begins with the boundary (no line break before it).")
        self._write(head)

    def _write(self, data: bytes) -> None:
        name, filename, headers, container = self._part
        if filename is None:
            self._size += len(data)
            if self.parser.max_form_memory_size is not None and self._size > self.parser.max_form_memory_size:
                raise RequestEntityTooLarge()
            container.append(data)
        else:
            container.write(data)

    def _end(self) -> None:
        if self._head is not None:
            self._check_head()
        name, filename, headers, container = self._part
        if filename is None:
            self.fields.append((name, b"".join(container).decode(self.werkzeug.get_part_charset(headers), "replace")))
        else:
            container.seek(0)
            self.files.append((name, FileStorage(container, filename, name, headers=headers)))

    def _body_end(self) -> None:
        self.ended = True
