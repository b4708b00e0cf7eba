"""The two HTTP/1.1 transports against canned answers from a raw socket
server: Content-Length, chunked and close-delimited bodies, keep-alive,
a reused connection the server closed, 5xx retried after Retry-After."""

from __future__ import annotations

import socket
import threading
import time
import unittest

import allot


class Canned:
    """Serves the given raw answers, one per request, in order, and records
    the requests; an answer of b"" closes the connection without one."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.conns = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/api"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            with conn:
                f = conn.makefile("rb")
                while self.answers:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = f.readline()
                        if not line:
                            break
                        head += line
                    if not head:
                        break
                    n = 0
                    for h in head.split(b"\r\n"):
                        if h.lower().startswith(b"content-length:"):
                            n = int(h.split(b":")[1])
                    self.requests.append(head + f.read(n))
                    a = self.answers.pop(0)
                    if not a:
                        break
                    conn.sendall(a)
                    if b"Connection: close" in a:
                        break
                f.close()

    def close(self) -> None:
        self.sock.close()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra + \
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


def chunked(parts: list[bytes]) -> bytes:
    out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    for i, p in enumerate(parts):
        ext = b";ext=1" if i == 1 else b""
        out += f"{len(p):x}".encode() + ext + b"\r\n" + p + b"\r\n"
    return out + b"0\r\n\r\n"


CHUNKED = chunked([b'[{"id', b'": "x", "name": "n", "limit', b'": 1', b"}]"])
CLOSE_DELIMITED = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n[]"
UNAVAILABLE = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0.3\r\nContent-Type: application/problem+json\r\n"
               b"Content-Length: 39\r\n\r\n{\"code\": \"unavailable\", \"detail\": \"ho\"}")


class SyncTransport(unittest.TestCase):
    def test_bodies_and_keep_alive(self) -> None:
        s = Canned([ok(b"[]"), CHUNKED, CLOSE_DELIMITED, ok(b"[]")])
        self.addCleanup(s.close)
        with allot.Client(s.url, retries=0) as c:
            self.assertEqual(c.list_limits(), [])
            got = c.list_limits()
            self.assertEqual([(x.id, x.name, x.limit) for x in got], [("x", "n", 1)])
            self.assertEqual(c.list_limits(), [])
            self.assertEqual(c.list_limits(), [])
        self.assertEqual(s.conns, 2, "kept alive until Connection: close")
        self.assertTrue(s.requests[0].startswith(b"POST /api/v2/concurrency_limits/filter HTTP/1.1\r\n"))

    def test_retry_after_on_5xx_and_stale_connection(self) -> None:
        s = Canned([ok(b"[]"), b"", UNAVAILABLE, ok(b"[]")])
        self.addCleanup(s.close)
        with allot.Client(s.url, retries=2, backoff=0.01) as c:
            c.list_limits()
            start = time.monotonic()
            c.list_limits()  # the kept connection is closed: resent at once; then 503, retried after 0.3 s
            self.assertGreaterEqual(time.monotonic() - start, 0.25)
        self.assertEqual(len(s.requests), 4)


class AsyncTransport(unittest.IsolatedAsyncioTestCase):
    async def test_bodies_and_keep_alive(self) -> None:
        s = Canned([ok(b"[]"), CHUNKED, CLOSE_DELIMITED, ok(b"[]")])
        self.addCleanup(s.close)
        async with allot.AsyncClient(s.url, retries=0) as c:
            self.assertEqual(await c.list_limits(), [])
            got = await c.list_limits()
            self.assertEqual([(x.id, x.name, x.limit) for x in got], [("x", "n", 1)])
            self.assertEqual(await c.list_limits(), [])
            self.assertEqual(await c.list_limits(), [])
        self.assertEqual(s.conns, 2)

    async def test_retry_after_on_5xx_and_stale_connection(self) -> None:
        s = Canned([ok(b"[]"), b"", UNAVAILABLE, ok(b"[]")])
        self.addCleanup(s.close)
        async with allot.AsyncClient(s.url, retries=2, backoff=0.01) as c:
            await c.list_limits()
            start = time.monotonic()
            await c.list_limits()
            self.assertGreaterEqual(time.monotonic() - start, 0.25)
        self.assertEqual(len(s.requests), 4)


if __name__ == "__main__":
    unittest.main()
