"""Where the client talks to and how: URL, credentials, TLS, retries."""

from __future__ import annotations

import base64
import os
import random
import socket
import ssl
import sys
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Mapping

from ._version import __version__
from .types import Holder

DEFAULT_URL = "http://127.0.0.1:4200/api"
"""The API's address when neither an argument nor the environment says otherwise."""

DEFAULT_RETRIES = 4
DEFAULT_BACKOFF = 0.2
MAX_BACKOFF = 10.0
REQUEST_TIMEOUT = 30.0
"""Bounds one attempt of a request, beyond the time the server may keep it in line."""
MAX_LONG_POLL = 3600.0
"""The longest the server keeps a request in line (its timeout_seconds maximum)."""
USER_AGENT = f"allot-python/{__version__}"


@dataclass(frozen=True)
class Endpoint:
    """One URL of the API: a server, or one replica of several."""

    url: str
    scheme: str
    host: str
    port: int
    prefix: str  # the URL's path, without a trailing slash
    ssl_context: ssl.SSLContext | None

    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        h = f"[{self.host}]" if ":" in self.host else self.host
        return h if self.port == default else f"{h}:{self.port}"

    def address(self) -> str:
        """host:port, as a replica's Allot-Leader header names it."""
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"{h}:{self.port}"


@dataclass(frozen=True)
class Config:
    """A client's settings, resolved from arguments and the environment.
    url, scheme, host, port, prefix and ssl_context are the first of
    endpoints: several when the API's URL lists several replicas."""

    url: str
    scheme: str
    host: str
    port: int
    prefix: str  # the URL's path, without a trailing slash
    authorization: str | None
    ssl_context: ssl.SSLContext | None
    retries: int
    backoff: float
    long_poll: float
    holder: Holder | None  # None: default_holder() at each acquisition
    headers: Mapping[str, str] = field(default_factory=dict)
    endpoints: tuple[Endpoint, ...] = ()

    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        h = f"[{self.host}]" if ":" in self.host else self.host
        return h if self.port == default else f"{h}:{self.port}"

    def pause(self, attempt: int) -> float:
        """The jittered backoff before retry number attempt+1."""
        d = min(self.backoff * (2 ** min(attempt, 30)), MAX_BACKOFF)
        if d <= 0:
            return 0.0
        return d / 2 + random.uniform(0, d / 2)


def resolve(
    api_url: str | None = None,
    api_key: str | None = None,
    *,
    auth_string: str | None = None,
    ca_file: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    long_poll: float = MAX_LONG_POLL,
    holder: Any = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Resolves a Config. Arguments win over ALLOT_API_URL / ALLOT_API_KEY,
    which win over PREFECT_API_URL / PREFECT_API_KEY (Bearer) /
    PREFECT_API_AUTH_STRING (Basic). The URL may list several replicas'
    URLs separated by commas."""
    e = os.environ if env is None else env
    url = api_url or e.get("ALLOT_API_URL") or e.get("PREFECT_API_URL") or DEFAULT_URL
    authz: str | None = None
    if api_key is not None:
        authz = f"Bearer {api_key}" if api_key else None
    elif auth_string is not None:
        authz = _basic(auth_string) if auth_string else None
    elif e.get("ALLOT_API_KEY"):
        authz = f"Bearer {e['ALLOT_API_KEY']}"
    elif e.get("PREFECT_API_KEY"):
        authz = f"Bearer {e['PREFECT_API_KEY']}"
    elif e.get("PREFECT_API_AUTH_STRING"):
        authz = _basic(e["PREFECT_API_AUTH_STRING"])

    if retries < 0 or backoff < 0:
        raise ValueError("retries and backoff must not be negative")
    if not 0 < long_poll <= MAX_LONG_POLL:
        long_poll = MAX_LONG_POLL
    endpoints = tuple(_endpoint(one.strip(), ssl_context, ca_file, e) for one in url.split(","))
    first = endpoints[0]
    return Config(
        url=first.url,
        scheme=first.scheme,
        host=first.host,
        port=first.port,
        prefix=first.prefix,
        authorization=authz,
        ssl_context=first.ssl_context,
        retries=retries,
        backoff=backoff,
        long_poll=long_poll,
        holder=Holder.coerce(holder) if holder is not None else None,
        endpoints=endpoints,
    )


def _endpoint(url: str, ssl_context: ssl.SSLContext | None, ca_file: str | None,
              env: Mapping[str, str]) -> Endpoint:
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"api url {url!r} must be http:// or https:// with a host")
    if u.query or u.fragment:
        raise ValueError(f"api url {url!r} must have no query or fragment")
    if u.username or u.password:
        raise ValueError(f"api url {url!r} must not carry credentials; use api_key or auth_string")
    port = u.port or (443 if u.scheme == "https" else 80)
    ctx: ssl.SSLContext | None = None
    if u.scheme == "https":
        ctx = ssl_context or tls_context(ca_file, env)
    return Endpoint(url=url.rstrip("/"), scheme=u.scheme, host=u.hostname, port=port,
                    prefix=u.path.rstrip("/"), ssl_context=ctx)


def tls_context(ca_file: str | None, env: Mapping[str, str]) -> ssl.SSLContext:
    """The system's roots, or the CA file named by the argument, ALLOT_CA_FILE
    or SSL_CERT_FILE."""
    ca = ca_file or env.get("ALLOT_CA_FILE") or env.get("SSL_CERT_FILE") or None
    ctx = ssl.create_default_context(cafile=ca)
    return ctx


def _basic(auth_string: str) -> str:
    return "Basic " + base64.b64encode(auth_string.encode()).decode("ascii")


def default_holder() -> Holder:
    """This process: {"type": "process", "id": "hostname:pid"}; inside a
    running Prefect task or flow (only when prefect is already imported), its
    task-run or flow-run id."""
    h = _prefect_holder()
    if h is not None:
        return h
    host = socket.gethostname() or "unknown"
    return Holder("process", f"{host}:{os.getpid()}")


def _prefect_holder() -> Holder | None:
    if "prefect.context" not in sys.modules:
        return None
    try:
        ctx = sys.modules["prefect.context"]
        tr = ctx.TaskRunContext.get()
        if tr is not None and getattr(tr, "task_run", None) is not None:
            return Holder("task_run", str(tr.task_run.id))
        fr = ctx.FlowRunContext.get()
        if fr is not None and getattr(fr, "flow_run", None) is not None:
            return Holder("flow_run", str(fr.flow_run.id))
    except Exception:  # prefect's internals moved: fall back to the process
        return None
    return None
