"""What the tests share: the server they run against (set by the Go test
clients/python/python_test.go), unique names, polling with a deadline, and a
recording proxy that sits between the client and the real server."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request
import uuid
from typing import Any, Callable

URL = os.environ.get("ALLOT_TEST_URL", "")
BIN = os.environ.get("ALLOT_TEST_BIN", "")

# The tests must not pick up a developer's settings.
for _k in ("ALLOT_API_URL", "ALLOT_API_KEY", "PREFECT_API_URL", "PREFECT_API_KEY",
           "PREFECT_API_AUTH_STRING", "ALLOT_CA_FILE"):
    os.environ.pop(_k, None)
if URL:
    os.environ["ALLOT_API_URL"] = URL


def need_server(case: unittest.TestCase) -> None:
    if not URL:
        raise unittest.SkipTest("ALLOT_TEST_URL is not set: run these tests through `go test ./clients/python/`")


def name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def eventually(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Polls cond until it returns something true, or fails after timeout.

    The timeout is generous: a condition met quickly returns at once, and a
    loaded CI machine must not fail a correct client.
    """
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.02)


def raw(method: str, path: str, body: Any = None, url: str | None = None) -> tuple[int, Any]:
    """One request to the server without the client under test."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request((url or URL) + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            b = resp.read()
            return resp.status, json.loads(b) if b.strip() else None
    except urllib.error.HTTPError as e:
        b = e.read()
        e.close()
        return e.code, json.loads(b) if b.strip() else None


class Recorded:
    def __init__(self, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        self.method, self.path, self.headers, self.body = method, path, headers, body

    def __repr__(self) -> str:
        return f"{self.method} {self.path} {self.body!r}"


class Proxy:
    """A recording HTTP proxy in front of the real server. It can fail the
    next requests (a status, or a dropped connection) and can play a server
    that never lets requests wait (it strips timeout_seconds, as Prefect's
    server ignores it)."""

    def __init__(self, upstream: str = "") -> None:
        up = urllib.parse.urlsplit(upstream or URL)
        self.up_host, self.up_port, self.up_prefix = up.hostname, up.port, up.path.rstrip("/")
        self.requests: list[Recorded] = []
        self.fail: list[int] = []  # statuses to answer next; 0 drops the connection, -1 drops the answer
        self.no_wait = False
        self.no_watch = False  # answers the lease watch 404, as a server without it does
        self.leader = ""  # host:port to name in Allot-Leader, as a replica's answers do
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n) if n else b""
                body = json.loads(data) if data else None
                with proxy.lock:
                    proxy.requests.append(Recorded(self.command, self.path, dict(self.headers), body))
                    fail = proxy.fail.pop(0) if proxy.fail else None
                if fail == 0 or fail == -1 and proxy._forward_only(self.command, self.path, data):
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fail is None and proxy.no_watch and "/watch" in self.path:
                    fail = 404
                if fail is not None:
                    b = json.dumps({"detail": "injected", "code": "unavailable"}).encode()
                    self.send_response(fail)
                    self.send_header("Content-Type", "application/problem+json")
                    self.send_header("Content-Length", str(len(b)))
                    self.end_headers()
                    self.wfile.write(b)
                    return
                if proxy.no_wait and isinstance(body, dict):
                    body.pop("timeout_seconds", None)
                    data = json.dumps(body).encode()
                c = http.client.HTTPConnection(proxy.up_host, proxy.up_port, timeout=120)
                try:
                    hdrs = {"Content-Type": "application/json"} if data else {}
                    c.request(self.command, proxy.up_prefix + self.path[len("/api"):], body=data or None,
                              headers=hdrs)
                    r = c.getresponse()
                    rb = r.read()
                    self.send_response(r.status)
                    for k, v in r.getheaders():
                        if k.lower() not in ("content-length", "connection", "transfer-encoding", "date"):
                            self.send_header(k, v)
                    if proxy.leader:
                        self.send_header("Allot-Leader", proxy.leader)
                    self.send_header("Content-Length", str(len(rb)))
                    self.end_headers()
                    self.wfile.write(rb)
                finally:
                    c.close()

            do_GET = do_POST = do_PATCH = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _forward_only(self, method: str, path: str, data: bytes) -> bool:
        """Sends the request to the server and throws its answer away."""
        c = http.client.HTTPConnection(self.up_host, self.up_port, timeout=120)
        try:
            c.request(method, self.up_prefix + path[len("/api"):], body=data or None,
                      headers={"Content-Type": "application/json"} if data else {})
            c.getresponse().read()
        finally:
            c.close()
        return True

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths(self) -> list[str]:
        with self.lock:
            return [f"{r.method} {r.path}" for r in self.requests]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


class OwnServer:
    """An allot server of the test's own (the built binary), for the cases
    that stop it."""

    def __init__(self) -> None:
        if not BIN:
            raise unittest.SkipTest("ALLOT_TEST_BIN is not set: run these tests through `go test ./clients/python/`")
        self.dir = tempfile.TemporaryDirectory()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.log = open(os.path.join(self.dir.name, "server.log"), "wb")
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([BIN, "server", "--addr", f"127.0.0.1:{self.port}", "--data-dir",
                                      os.path.join(self.dir.name, "data"), "--log-level", "warn"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        eventually(self._up, 15, "server up")

    def _up(self) -> bool:
        try:
            return raw("GET", "/health", url=self.url)[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.stop()
        self.log.close()
        self.dir.cleanup()


def python_child(code: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    e = dict(os.environ)
    e["PYTHONPATH"] = src
    e.update(env or {})
    return subprocess.Popen([sys.executable, "-c", code], env=e, stdout=subprocess.PIPE, text=True)


import urllib.parse  # noqa: E402  (used by Proxy)
