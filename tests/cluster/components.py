"""Real components for the scale-out tests: PostgreSQL, an mlflow server on it, and a two-node Ray cluster.

Each runs as the real program (Debian's PostgreSQL binaries, ``mlflow server``, ``ray start``) on loopback.
They are meant to run inside a network namespace with loopback only (see tests/test_cluster.py): Ray binds to
the machine's network address when it has one, and no test may send traffic anywhere but loopback.
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import http.server
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (initdb, pg_ctl), None when PostgreSQL is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def wait_for_url(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.time() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout} s")
        time.sleep(0.5)


class Postgres:
    """A PostgreSQL server in a temporary folder under /tmp, run by the ``postgres`` user, on 127.0.0.1:port."""

    def __init__(self, port: int):
        self.port = port
        self.bin = postgres_bin()
        self.folder = Path(tempfile.mkdtemp(prefix="timl-pg-", dir="/tmp"))
        self.folder.chmod(0o755)  # the postgres user must enter it
        shutil.chown(self.folder, "postgres")
        self.data = self.folder / "data"

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, stdout=subprocess.DEVNULL,
                       cwd=self.folder)

    def start(self) -> str:
        """Creates the cluster and a database ``mlflow``; returns the SQLAlchemy URI of that database."""
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E",
                          "UTF8")
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "log"), "-w",
                          "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1", "start")
        return self.create_database("mlflow")

    def create_database(self, name: str) -> str:
        """Creates a database; returns its SQLAlchemy URI (the psycopg2 driver of the ``postgres`` extra)."""
        self._as_postgres(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                          name)
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.data.is_dir():
            subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D", str(self.data),
                            "-m", "fast", "-w", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           cwd=self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)


class TrackingServer:
    """``mlflow server`` on a backend store with proxied artifacts in a folder; its own process group."""

    def __init__(self, backend: str, artifacts: Path, port: int, log: Path):
        self.command = [str(BIN / "mlflow"), "server", "--backend-store-uri", backend, "--artifacts-destination",
                        str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        self.uri = f"http://127.0.0.1:{port}"
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> str:
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        with self.log.open("a") as log:
            self.process = subprocess.Popen(self.command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_for_url(f"{self.uri}/health", timeout)
        return self.uri

    def stop(self) -> None:
        """Stops the server and its workers (its process group), by the pid it was started with."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


class RayCluster:
    """A head node (``cpus`` CPUs, ``gpus`` GPU resource) and a worker node (``worker_cpus`` CPUs) on 127.0.0.1."""

    def __init__(self, port: int, temp: Path, *, cpus: int = 1, gpus: int = 1, worker_cpus: int = 1):
        self.address = f"127.0.0.1:{port}"
        self.port, self.temp = port, temp
        self.cpus, self.gpus, self.worker_cpus = cpus, gpus, worker_cpus
        (temp / "ray").mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_TMPDIR=str(temp), RAY_USAGE_STATS_ENABLED="0")

    def start(self) -> None:
        common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        subprocess.run([str(BIN / "ray"), "start", "--head", f"--port={self.port}", f"--num-cpus={self.cpus}",
                        f"--num-gpus={self.gpus}", "--include-dashboard=false", *common], env=self.env, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([str(BIN / "ray"), "start", f"--address={self.address}", f"--num-cpus={self.worker_cpus}",
                        *common], env=self.env, check=True, stdout=subprocess.DEVNULL)

    def nodes(self) -> list[dict]:
        """The cluster's live nodes: ``{"id", "resources"}`` each (a driver connects for a moment)."""
        code = ("import json, ray\nray.init(address=%r, log_to_driver=False)\n"
                "print(json.dumps([{'id': n['NodeID'], 'resources': n['Resources']} for n in ray.nodes() "
                "if n['Alive']]))\nray.shutdown()\n" % self.address)
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


class FaultyProxy:
    """An HTTP proxy on 127.0.0.1:port in front of a tracking server that misbehaves on demand, request by
    request (a kept-alive connection sees the change too).

    Modes: ``"pass"`` forwards each request; ``"503"`` answers 503 Service Unavailable without forwarding;
    ``"hold"`` reads the request and never answers, until the client gives up (its timeout) or the mode changes,
    then closes the connection; :meth:`refuse` closes the listening socket and every open connection, so a client
    gets "connection refused" until :meth:`listen`. ``counts`` says how many requests each mode met and how many
    held clients gave up by themselves (``"timed_out"``).
    """

    HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "server",
                  "date"}

    def __init__(self, port: int, backend_port: int):
        self.port, self.backend_port = port, backend_port
        self.uri = f"http://127.0.0.1:{port}"
        self.mode = "pass"
        self.counts = {"pass": 0, "503": 0, "hold": 0, "timed_out": 0}
        self.server = None
        self.in_flight = 0  # requests being answered now
        self.connections: set = set()
        self.lock = threading.Lock()

    def listen(self) -> None:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with proxy.lock:
                    proxy.connections.add(self.connection)

            def finish(self) -> None:
                with proxy.lock:
                    proxy.connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def _any(self) -> None:
                proxy.handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def refuse(self, timeout: float = 30) -> None:
        """Stops listening, lets the requests being answered end, then drops every open connection: every request
        from now on is refused."""
        self.server.shutdown()
        self.server.server_close()
        deadline = time.time() + timeout
        while self.in_flight and time.time() < deadline:
            time.sleep(0.02)
        with self.lock:
            for connection in list(self.connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def handle(self, handler) -> None:
        with self.lock:
            self.in_flight += 1
        try:
            self._answer(handler, self._body(handler))
        finally:
            with self.lock:
                self.in_flight -= 1

    def _answer(self, handler, body: bytes) -> None:
        mode = self.mode
        with self.lock:
            self.counts[mode] += 1
        if mode == "503":
            handler.send_response(503)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        elif mode == "hold":
            handler.close_connection = True
            while self.mode == "hold":
                readable, _, _ = select.select([handler.connection], [], [], 0.1)
                if readable and not handler.connection.recv(1, socket.MSG_PEEK):
                    with self.lock:
                        self.counts["timed_out"] += 1
                    return
        else:
            self._forward(handler, body)

    @staticmethod
    def _body(handler) -> bytes:
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                chunks.append(handler.rfile.read(size))
                handler.rfile.readline()
                if size == 0:
                    return b"".join(chunks)
        return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))

    def _forward(self, handler, body: bytes) -> None:
        headers = {key: value for key, value in handler.headers.items() if key.lower() not in self.HOP_BY_HOP}
        backend = http.client.HTTPConnection("127.0.0.1", self.backend_port, timeout=120)
        try:
            backend.request(handler.command, handler.path, body=body, headers=headers)
            response = backend.getresponse()
            payload = response.read()
            status, answer = response.status, [(k, v) for k, v in response.getheaders()
                                                if k.lower() not in self.HOP_BY_HOP]
        except OSError:
            status, answer, payload = 502, [], b""
        finally:
            backend.close()
        handler.send_response(status)
        for key, value in answer:
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(payload)
