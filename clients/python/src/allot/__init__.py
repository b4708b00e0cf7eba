"""allot: a dependency-free Python client of the allot concurrency-limit server.

- ``allot.concurrency.sync`` / ``allot.concurrency.asyncio``: Prefect's
  ``concurrency`` and ``rate_limit``, with server-side waiting, leases and
  fencing tokens.
- :class:`Client` / :class:`AsyncClient`: every call of the API: leases,
  limits, tag and label limits, runs.
- :func:`tags`, :func:`without_tags`, :func:`task_run`, :func:`flow_run`:
  runs whose tags the server limits.

Logging goes to ``logging.getLogger("allot")``, with no handlers added.
"""

from __future__ import annotations

from typing import Iterable

from ._lease import Lease
from ._ops import DEFAULT_LEASE_DURATION, DEFAULT_RUN_LEASE_DURATION
from ._runs import RunScope, current_run_id, current_tags, tags, without_tags
from ._version import __version__
from .aio import AsyncClient
from .client import Client, default_client
from .errors import (
    AcquireConcurrencySlotTimeoutError,
    AllotConnectionError,
    AllotError,
    APIError,
    ConcurrencySlotAcquisitionError,
    ConflictError,
    InvalidError,
    LeaseLostError,
    LeaseNotFoundError,
    LimitNotFoundError,
    LockedError,
    NotFoundError,
    RunNotStartedError,
    UnavailableError,
)
from .types import (
    Holder,
    Holding,
    LabelLimit,
    Limit,
    LimitRef,
    ResetResult,
    Run,
    RunState,
    StateEntry,
    TagLimit,
    Waiter,
)


__all__ = [
    "__version__",
    "Client",
    "AsyncClient",
    "default_client",
    "Lease",
    "RunScope",
    "task_run",
    "flow_run",
    "tags",
    "without_tags",
    "current_tags",
    "current_run_id",
    "DEFAULT_LEASE_DURATION",
    "DEFAULT_RUN_LEASE_DURATION",
    "AllotError",
    "APIError",
    "NotFoundError",
    "LimitNotFoundError",
    "LeaseNotFoundError",
    "LockedError",
    "ConflictError",
    "InvalidError",
    "UnavailableError",
    "AllotConnectionError",
    "LeaseLostError",
    "RunNotStartedError",
    "ConcurrencySlotAcquisitionError",
    "AcquireConcurrencySlotTimeoutError",
    "Holder",
    "Holding",
    "LimitRef",
    "Limit",
    "Waiter",
    "TagLimit",
    "LabelLimit",
    "ResetResult",
    "Run",
    "RunState",
    "StateEntry",
]


def task_run(name: str | None = None, tags: Iterable[str] | str = (), *, cancel_new: bool = False,
             lease_duration: float = DEFAULT_RUN_LEASE_DURATION) -> RunScope:
    """Runs a block (``with`` or ``async with``) or a decorated function (sync
    or async) as a task run, with the process's default client; see
    Client.task_run."""
    return RunScope("task", name, tags, cancel_new, lease_duration, None, None)


def flow_run(name: str | None = None, tags: Iterable[str] | str = (), *, cancel_new: bool = False,
             lease_duration: float = DEFAULT_RUN_LEASE_DURATION) -> RunScope:
    """``task_run`` for a flow run (its tags are labels)."""
    return RunScope("flow", name, tags, cancel_new, lease_duration, None, None)
