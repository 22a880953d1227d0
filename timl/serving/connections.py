"""gunicorn's threaded worker as the TIML server runs it: each closing connection waited for in its request's thread,
not in the main loop, and a request's body read in the sizes asked for, not 1 KB at a time.

gunicorn 26's ``gthread`` worker closes a connection it does not keep alive gracefully (RFC 9112 section 9.6): it
shuts its own side, then waits up to 2 s for the client to close the other. It does this in its main loop, the one
thread that accepts connections and hands finished requests on: while it waits, that worker serves nobody new. The
TIML server keeps no connection alive (``keepalive`` 0, :func:`timl.serve.gunicorn_settings`), so every request
ends this way: one client that reads its answer and holds its socket open (a script that keeps its response object,
a slow network) stalled every other client of that worker for 2 s, and under load the main loop waited for each
client's close in turn. :class:`ThreadWorker` does that wait in the request's own thread (each worker has
``--threads`` of them): the main loop's close then finds the connection already closed by the client, or shut both
ways after 2 s, and returns at once.

gunicorn's request body (``wsgi.input``) reads whatever size it is asked for 1 KB at a time, each step copying the
rest of the socket's 8 KB read-ahead twice: reading the 165 KB upload of a classification off its socket cost 1.12 ms
of CPU (19 % of a worker's GIL time under load, its largest Python cost after decoding), 0.24 ms when the body's
reader is asked for the whole piece (``bench/uploads.py``). :class:`WholeReads` asks it so, on gunicorn before 27
(the one MLflow's ``gunicorn<27`` allows); gunicorn 27's body asks its reader for what is missing itself.
"""

from __future__ import annotations

import contextlib
import socket

import gunicorn
from gunicorn.util import close_graceful
from gunicorn.workers.gthread import ThreadWorker as GthreadWorker

#: Whether gunicorn's request body reads 1 KB at a time whatever it is asked for (before gunicorn 27).
BODY_READS_1KB = gunicorn.version_info < (27,)


class ThreadWorker(GthreadWorker):
    """gunicorn's ``gthread`` worker, a connection that is not kept alive waited for (:func:`linger`) in the
    thread that answered its request, and each request's body read through :class:`WholeReads` where gunicorn's
    own reads 1 KB at a time (gunicorn's ``worker_class`` of the TIML server)."""

    def handle_request(self, req, conn):
        if BODY_READS_1KB and req.body is not None:
            req.body = WholeReads(req.body)
        return super().handle_request(req, conn)

    def handle(self, conn):
        kept = super().handle(conn)  # True: kept alive; gunicorn's "wait for data" marker: deferred; else closing
        if not kept:
            linger(conn.sock)
        return kept


def linger(sock: socket.socket) -> None:
    """gunicorn's own graceful close (it shuts the server's side, then waits up to 2 s for the client to close its
    own, dropping what it still sends), on a second descriptor of the connection so that ``sock`` stays open for
    gunicorn to close; then the reading side shut too, so that gunicorn's close in its main loop returns at once
    even when the client never closed."""
    with contextlib.suppress(OSError):  # the client is gone already, or no descriptor is left for the copy
        close_graceful(sock.dup())
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)


class WholeReads:
    """A gunicorn request body (``gunicorn.http.body.Body``) whose ``read(size)`` asks the body's reader (by length,
    chunked or to the end) for ``size`` bytes at once; lines, and what a line read left buffered, from the body
    itself."""

    def __init__(self, body):
        self.body = body

    def read(self, size: int | None = None) -> bytes:
        if self.body.buf.tell():  # a readline() left bytes in the body's own buffer: they come first
            return self.body.read(size)
        if size is None or size < 0:
            return b"".join(iter(lambda: self.body.reader.read(1 << 20), b""))
        return self.body.reader.read(size) if size else b""

    def readline(self, size: int | None = None) -> bytes:
        return self.body.readline(size)

    def readlines(self, size: int | None = None) -> list[bytes]:
        return self.body.readlines(size)

    def __iter__(self):
        return iter(self.body)
