"""The client's two HTTP/1.1 transports, sync (plain sockets) and asyncio
(asyncio.open_connection), and what they share: headers, request ids,
retries with jittered backoff on connection errors and 5xx answers only,
and error answers turned into exceptions.

A request that waits in line on the server is a long poll: the socket is
given the time the server may hold it plus REQUEST_TIMEOUT. A waiter that
gives up (an asyncio task cancelled, a KeyboardInterrupt) closes its
connection, which makes the server drop it from the line.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from ._config import MAX_BACKOFF, REQUEST_TIMEOUT, USER_AGENT, Config, Endpoint
from .errors import AllotConnectionError, APIError, error_for

log = logging.getLogger("allot")

MAX_RESPONSE = 64 << 20
MAX_IDLE = 64

Hold = Callable[[], float]
"""Returns, per attempt, how long the server may keep the request in line
(its timeout_seconds), so that a retried long poll asks only for what is left."""


@dataclass
class Request:
    method: str
    path: str  # under the API's URL
    body: Any = None  # JSON value, or None for no body
    accept: tuple[int, ...] = (200,)
    hold: Hold | None = None  # sets body["timeout_seconds"] per attempt when given
    deadline: float | None = None  # time.monotonic() after which no retry starts
    wait: float = 0.0  # how long the server may hold the request, when hold does not say (a GET)
    once: float | None = None  # one try only, bounded by this many seconds


def attempt_timeout(r: Request, hold: float) -> float:
    """How long one attempt may take: the time the server may hold it plus
    REQUEST_TIMEOUT, but no later than the request's deadline (a renewal
    is of no use after its lease expired)."""
    t = REQUEST_TIMEOUT + hold
    if r.once is not None:
        t = min(t, r.once)
    if r.deadline is not None:
        t = min(t, max(r.deadline - time.monotonic(), 0.05))
    return t


def new_request_id() -> str:
    return uuid.uuid4().hex


def encode(cfg: Config, r: Request, rid: str,
           ep: Endpoint | None = None) -> tuple[bytes | None, float, dict[str, str]]:
    """The body, the hold and the headers of one attempt (to ep, by default
    cfg's first URL)."""
    hold = r.wait
    body = r.body
    if r.hold is not None:
        hold = max(r.hold(), 0.0)
        body = dict(body or {})
        body["timeout_seconds"] = round(hold, 3)
    data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
    headers = {
        "Host": (ep or cfg).host_header(),
        "Accept": "application/json, application/problem+json",
        "User-Agent": USER_AGENT,
        "X-Request-Id": rid,
    }
    if data is not None:
        headers["Content-Type"] = "application/json"
    if data is not None or r.method in ("POST", "PUT", "PATCH"):
        headers["Content-Length"] = str(len(data or b""))
    if cfg.authorization:
        headers["Authorization"] = cfg.authorization
    headers.update(cfg.headers)
    return data, hold, headers


def parse_retry_after(h: str | None) -> float | None:
    if not h:
        return None
    try:
        s = float(h)
        return s if 0 <= s < 1e9 else None
    except ValueError:
        pass
    try:
        t = email.utils.parsedate_to_datetime(h)
    except (TypeError, ValueError):
        return None
    return max(0.0, t.timestamp() - time.time())


def answer_error(status: int, headers: dict[str, str], data: bytes, r: Request, rid: str) -> APIError:
    """An error answer as an exception."""
    code = field = detail = ""
    limits: list[str] = []
    retry_after = parse_retry_after(headers.get("retry-after"))
    try:
        p = json.loads(data) if data else None
    except ValueError:
        p = None
    if isinstance(p, dict):
        c, f = p.get("code"), p.get("field")
        code = c if isinstance(c, str) else ""
        field = f if isinstance(f, str) else ""
        if isinstance(p.get("limits"), list):
            limits = [str(x) for x in p["limits"]]
        d = p.get("detail")
        if isinstance(d, str):
            detail = d
        elif d is None:
            em = p.get("exception_message")
            detail = em if isinstance(em, str) else ""
        else:
            detail = json.dumps(d)
        ra = p.get("retry_after")
        if retry_after is None and isinstance(ra, (int, float)) and 0 <= ra < 1e9:
            retry_after = float(ra)
    elif data:
        detail = data[:200].decode("utf-8", "replace").strip()
    cls = error_for(status, code)
    return cls(status, detail, code=code, field=field, limits=limits, request_id=rid,
               retry_after=retry_after, method=r.method, path=r.path)


def decode(data: bytes) -> Any:
    if not data.strip():
        return None
    return json.loads(data)


class _Retry:
    """The retry policy of one request."""

    def __init__(self, cfg: Config, r: Request, rid: str) -> None:
        self.cfg, self.r, self.rid = cfg, r, rid
        self.attempt = 0

    def next_pause(self, err: BaseException) -> float | None:
        """The pause before the next attempt, or None to give up with err."""
        if isinstance(err, APIError) and err.status < 500:
            return None
        if self.attempt >= self.cfg.retries or self.r.once is not None:
            return None
        pause = self.cfg.pause(self.attempt)
        if isinstance(err, APIError) and err.retry_after is not None:
            pause = max(pause, min(err.retry_after, MAX_BACKOFF))
        if self.r.deadline is not None and time.monotonic() + pause >= self.r.deadline:
            return None
        self.attempt += 1
        log.debug("allot: retrying %s %s (request %s, attempt %d) in %.2fs after %s",
                  self.r.method, self.r.path, self.rid, self.attempt, pause, err)
        return pause

    def give_up(self, err: BaseException) -> BaseException:
        if isinstance(err, APIError):
            return err
        e = AllotConnectionError(f"{self.r.method} {self.r.path} (request {self.rid}): {err}")
        e.__cause__ = err
        return e


_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
"""Errors of a reused idle connection the server closed meanwhile: the
request was not read, so it is sent again at once on a new connection."""


def message(cfg: Config, r: Request, rid: str, ep: Endpoint | None = None) -> tuple[bytes, float]:
    """The bytes of one attempt of r, and how long the server may hold it."""
    data, hold, headers = encode(cfg, r, rid, ep)
    head = f"{r.method} {(ep or cfg).prefix + r.path} HTTP/1.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("latin-1") + (data or b""), hold


LEADER_HEADER = "allot-leader"
"""Names, on a replica's answers, the replica that leads (host:port)."""


class Replicas:
    """Which of a client's URLs requests go to. It moves on from one that
    does not answer, or answers 502, 503 or 504, to the next; and to the
    one an answer names as the leader, if it is among them. Safe for use
    from many threads."""

    def __init__(self, cfg: Config) -> None:
        self.endpoints = cfg.endpoints or (Endpoint(cfg.url, cfg.scheme, cfg.host, cfg.port, cfg.prefix,
                                                    cfg.ssl_context),)
        self._cur = 0
        self._lock = threading.Lock()

    def pick(self) -> tuple[int, Endpoint]:
        with self._lock:
            return self._cur, self.endpoints[self._cur]

    def failed(self, i: int) -> None:
        with self._lock:
            if self._cur == i:
                self._cur = (i + 1) % len(self.endpoints)

    def answered(self, i: int, status: int, headers: dict[str, str]) -> None:
        if status in (502, 503, 504):
            self.failed(i)
        leader = headers.get(LEADER_HEADER)
        if leader and len(self.endpoints) > 1:
            for j, ep in enumerate(self.endpoints):
                if ep.address() == leader:
                    with self._lock:
                        self._cur = j
                    return


class _Refused(Exception):
    """A replica refused the connection: the request never left."""

    def __init__(self, err: OSError) -> None:
        super().__init__(str(err))
        self.err = err


class _SyncConn:
    def __init__(self, sock: socket.socket, replica: int = 0) -> None:
        self.sock = sock
        self.rfile = sock.makefile("rb")
        self.replica = replica  # the index of the URL it is connected to

    def close(self) -> None:
        try:
            self.rfile.close()
        finally:
            self.sock.close()


class SyncTransport:
    """Requests over plain sockets (a small HTTP/1.1 client, as the asyncio
    one), with a pool of idle keep-alive connections. Safe for use from many
    threads."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.replicas = Replicas(cfg)
        self._idle: list[_SyncConn] = []
        self._lock = threading.Lock()
        self._closed = False

    def _new(self, timeout: float, i: int, c: Endpoint) -> _SyncConn:
        sock = socket.create_connection((c.host, c.port), timeout=min(timeout, REQUEST_TIMEOUT))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if c.ssl_context is not None:
                sock = c.ssl_context.wrap_socket(sock, server_hostname=c.host)
        except BaseException:
            sock.close()
            raise
        return _SyncConn(sock, i)

    def _get(self, i: int) -> _SyncConn | None:
        with self._lock:
            for k in range(len(self._idle) - 1, -1, -1):
                if self._idle[k].replica == i:
                    return self._idle.pop(k)
            return None

    def _put(self, conn: _SyncConn) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Closes the idle connections, and from now on each connection when
        its request is done (one still in use, e.g. a lease watch, is closed
        when it returns). The transport remains usable."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()

    def request(self, r: Request) -> Any:
        """Sends r (with retries) and returns the decoded JSON of the answer."""
        rid = new_request_id()
        retry = _Retry(self.cfg, r, rid)
        while True:
            try:
                return decode(self._attempt(r, rid))
            except (OSError, _BadAnswer, APIError) as err:
                pause = retry.next_pause(err)
                if pause is None:
                    raise retry.give_up(err) from (err if not isinstance(err, APIError) else None)
                time.sleep(pause)

    def _attempt(self, r: Request, rid: str) -> bytes:
        # A replica that refuses the connection never saw the request: the
        # next URL gets it at once, each at most once per attempt.
        n = len(self.replicas.endpoints)
        for k in range(n):
            try:
                return self._attempt_one(r, rid)
            except _Refused as e:
                if k == n - 1:
                    raise e.err from None
        raise AssertionError("unreachable")

    def _attempt_one(self, r: Request, rid: str) -> bytes:
        i, ep = self.replicas.pick()
        msg, hold = message(self.cfg, r, rid, ep)
        timeout = attempt_timeout(r, hold)
        for fresh in (False, True):
            conn = None if fresh else self._get(i)
            reused = conn is not None
            ok = False
            try:
                if conn is None:
                    try:
                        conn = self._new(timeout, i, ep)
                    except ConnectionRefusedError as e:
                        self.replicas.failed(i)
                        raise _Refused(e) from e
                    except OSError:
                        self.replicas.failed(i)
                        raise
                conn.sock.settimeout(timeout)
                try:
                    conn.sock.sendall(msg)
                    status, rh, body, keep = _read_answer_sync(conn.rfile, r.method, reused)
                except (_Stale, *_STALE):
                    if reused:
                        continue
                    self.replicas.failed(i)
                    raise
                except OSError:
                    self.replicas.failed(i)
                    raise
                ok = keep
                self.replicas.answered(i, status, rh)
            finally:
                # A failed or interrupted request (KeyboardInterrupt while in
                # line) closes its connection: the server drops the waiter.
                if conn is not None:
                    if ok:
                        self._put(conn)
                    else:
                        conn.close()
            if status in r.accept:
                return body
            raise answer_error(status, rh, body, r, rid)
        raise AssertionError("unreachable")


def _read_answer_sync(f: Any, method: str, reused: bool) -> tuple[int, dict[str, str], bytes, bool]:
    line = f.readline(65537)
    if not line:
        if reused:
            raise _Stale()
        raise ConnectionResetError("the server closed the connection without answering")
    status, version = _status_line(line)
    headers: dict[str, str] = {}
    while True:
        h = f.readline(65537)
        if h in (b"\r\n", b"\n"):
            break
        if not h:
            raise ConnectionResetError("the answer's headers were cut off")
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, headers, b"", keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        total = 0
        while True:
            size = _chunk_size(f.readline(1024))
            if size == 0:
                while f.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            total += size
            if total > MAX_RESPONSE:
                raise _BadAnswer("answer too large")
            chunks.append(_exactly(f, size))
            _exactly(f, 2)
        return status, headers, b"".join(chunks), keep
    if "content-length" in headers:
        return status, headers, _exactly(f, _length(headers)), keep
    return status, headers, f.read(MAX_RESPONSE), False


def _exactly(f: Any, n: int) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise ConnectionResetError("the answer was cut off")
    return b  # type: ignore[no-any-return]


def _status_line(line: bytes) -> tuple[int, str]:
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise _BadAnswer(f"not an HTTP/1.1 answer: {line[:80]!r}")
    try:
        return int(parts[1]), parts[0]
    except ValueError:
        raise _BadAnswer(f"bad status line: {line[:80]!r}") from None


def _chunk_size(line: bytes) -> int:
    try:
        return int(line.split(b";", 1)[0].strip(), 16)
    except ValueError:
        raise _BadAnswer(f"bad chunk size: {line[:40]!r}") from None


def _length(headers: dict[str, str]) -> int:
    try:
        n = int(headers["content-length"])
    except ValueError:
        raise _BadAnswer("bad Content-Length") from None
    if n < 0 or n > MAX_RESPONSE:
        raise _BadAnswer("bad Content-Length")
    return n


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replica: int = 0) -> None:
        self.reader, self.writer = reader, writer
        self.loop = asyncio.get_running_loop()
        self.replica = replica  # the index of the URL it is connected to

    def close(self) -> None:
        try:
            self.writer.close()
        except RuntimeError:  # its loop is closed
            pass


class _Stale(Exception):
    pass


class AsyncTransport:
    """Requests over asyncio.open_connection: a small HTTP/1.1 client
    (Content-Length and chunked answers) whose connections are closed the
    moment the task using them is cancelled."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.replicas = Replicas(cfg)
        self._idle: list[_Conn] = []

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for c in idle:
            c.close()
        for c in idle:
            try:
                await c.writer.wait_closed()
            except (OSError, RuntimeError):
                pass

    async def _new(self, i: int, c: Endpoint) -> _Conn:
        reader, writer = await asyncio.open_connection(
            c.host, c.port, ssl=c.ssl_context, server_hostname=c.host if c.ssl_context else None,
            limit=1 << 20)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        return _Conn(reader, writer, i)

    def _get(self, i: int) -> _Conn | None:
        loop = asyncio.get_running_loop()
        keep: list[_Conn] = []
        found = None
        while self._idle:
            c = self._idle.pop()
            if c.loop is not loop or c.writer.is_closing():
                c.close()
            elif c.replica != i:
                keep.append(c)
            else:
                found = c
                break
        self._idle.extend(reversed(keep))
        return found

    async def request(self, r: Request) -> Any:
        rid = new_request_id()
        retry = _Retry(self.cfg, r, rid)
        while True:
            try:
                return decode(await self._attempt(r, rid))
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError,
                    APIError) as err:
                if isinstance(err, ValueError) and not isinstance(err, _BadAnswer):
                    raise
                pause = retry.next_pause(err)
                if pause is None:
                    raise retry.give_up(err) from (err if not isinstance(err, APIError) else None)
                await asyncio.sleep(pause)

    async def _attempt(self, r: Request, rid: str) -> bytes:
        n = len(self.replicas.endpoints)
        for k in range(n):
            try:
                return await self._attempt_one(r, rid)
            except _Refused as e:
                if k == n - 1:
                    raise e.err from None
        raise AssertionError("unreachable")

    async def _attempt_one(self, r: Request, rid: str) -> bytes:
        i, ep = self.replicas.pick()
        msg, hold = message(self.cfg, r, rid, ep)
        for fresh in (False, True):
            conn = None if fresh else self._get(i)
            reused = conn is not None
            ok = False
            try:
                if conn is None:
                    try:
                        conn = await asyncio.wait_for(self._new(i, ep), REQUEST_TIMEOUT)
                    except ConnectionRefusedError as e:
                        self.replicas.failed(i)
                        raise _Refused(e) from e
                    except (OSError, asyncio.TimeoutError):
                        self.replicas.failed(i)
                        raise
                conn.writer.write(msg)
                try:
                    status, rh, body, keep = await asyncio.wait_for(
                        _read_answer(conn.reader, r.method, reused), attempt_timeout(r, hold))
                except _Stale:
                    continue
                except (OSError, asyncio.IncompleteReadError):
                    self.replicas.failed(i)
                    raise
                ok = keep
                self.replicas.answered(i, status, rh)
            finally:
                if conn is not None:
                    if ok:
                        self._idle.append(conn)
                    else:
                        conn.close()
            if status in r.accept:
                return body
            raise answer_error(status, rh, body, r, rid)
        raise AssertionError("unreachable")


class _BadAnswer(ValueError):
    """The server's answer was not HTTP/1.1 as expected."""


async def _read_answer(reader: asyncio.StreamReader, method: str, reused: bool
                       ) -> tuple[int, dict[str, str], bytes, bool]:
    line = await reader.readline()
    if not line:
        if reused:
            raise _Stale()
        raise ConnectionResetError("the server closed the connection without answering")
    status, version = _status_line(line)
    headers: dict[str, str] = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n"):
            break
        if not h:
            raise asyncio.IncompleteReadError(b"", None)
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, headers, b"", keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        total = 0
        while True:
            size = _chunk_size(await reader.readline())
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            total += size
            if total > MAX_RESPONSE:
                raise _BadAnswer("answer too large")
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return status, headers, b"".join(chunks), keep
    if "content-length" in headers:
        return status, headers, await reader.readexactly(_length(headers)), keep
    return status, headers, await reader.read(MAX_RESPONSE), False
