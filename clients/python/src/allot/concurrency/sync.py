"""Prefect's ``prefect.concurrency.sync`` over allot.

The wait happens on the server: what is left of ``timeout_seconds`` is sent
with the request, which stands in the limit's first-in-first-out line and is
answered the moment its slots are granted. The ``with`` block yields a
:class:`~allot.Lease` (``lease_id``, ``fencing_token``, ``expires_at``,
``limits``, ``lost``), renewed by a daemon thread every third of
``lease_duration``.
"""

from __future__ import annotations

from typing import Any

from .._lease import Lease
from .._ops import names_list
from ..client import Client, _Concurrency, default_client
from ..errors import (
    AcquireConcurrencySlotTimeoutError,
    ConcurrencySlotAcquisitionError,
    LeaseLostError,
)
from ..types import LimitRef

__all__ = [
    "concurrency",
    "rate_limit",
    "AcquireConcurrencySlotTimeoutError",
    "ConcurrencySlotAcquisitionError",
    "LeaseLostError",
]


class _PrefectConcurrency:
    def __init__(self, inner: _Concurrency, names: list[str]) -> None:
        self._inner, self._names = inner, names

    def __enter__(self) -> Lease:
        try:
            return self._inner.__enter__()
        except (AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError):
            raise
        except Exception as exc:
            raise ConcurrencySlotAcquisitionError(
                f"Unable to acquire concurrency slots on {self._names!r}") from exc

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        return self._inner.__exit__(exc_type, exc, tb)


def concurrency(
    names: str | list[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    max_retries: int | None = None,
    lease_duration: float = 300,
    strict: bool = False,
    holder: Any = None,
    raise_on_lease_renewal_failure: bool | None = None,
    *,
    client: Client | None = None,
) -> _PrefectConcurrency:
    """A context manager that acquires and releases concurrency slots from the
    given concurrency limits, and yields the Lease.

    Args:
        names: The names of the concurrency limits to acquire slots from.
        occupy: The number of slots to acquire and hold from each limit.
        timeout_seconds: How long to wait (in line, on the server) for the
            slots before raising AcquireConcurrencySlotTimeoutError; None
            waits indefinitely.
        max_retries: The maximum number of times to ask again after a
            refusal; 0 with no timeout fails at once if the slots are taken.
        lease_duration: Seconds the lease lives unless renewed (renewed every
            third of it while the block runs).
        strict: Raise ConcurrencySlotAcquisitionError if none of the limits
            exist, instead of logging a warning and running unprotected.
        holder: Who holds the lease (``{"type", "id"}``, an allot Holder or
            Prefect's ConcurrencyLeaseHolder); by default this process, or the
            running Prefect task or flow run.
        raise_on_lease_renewal_failure: When the lease is lost, interrupt the
            block (LeaseLostError raised in the caller's thread) instead of
            logging a warning and setting ``lease.lost``. Defaults to strict.
        client: The Client to use (default: one shared by the process,
            configured from the environment).

    Raises:
        AcquireConcurrencySlotTimeoutError: the slots were not acquired in time.
        ConcurrencySlotAcquisitionError: the limits do not exist (strict), or
            the acquisition failed.
        LeaseLostError: the lease was lost and renewal failures raise.
    """
    names_ = names_list(names)
    c = client or default_client()
    inner = c.concurrency(names_, occupy, timeout_seconds, max_retries, lease_duration, strict, holder,
                          raise_on_lease_renewal_failure)
    return _PrefectConcurrency(inner, names_)


def rate_limit(
    names: str | list[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    strict: bool = False,
    *,
    client: Client | None = None,
) -> list[LimitRef]:
    """Block execution until ``occupy`` slots of each of the limits ``names``
    are acquired. Requires that every limit has a slot decay
    (``slot_decay_per_second``); the slots are never released but decay.

    Raises:
        AcquireConcurrencySlotTimeoutError: not admitted within timeout_seconds.
        ConcurrencySlotAcquisitionError: a limit without decay, a missing limit
            (strict), or another failure.
    """
    names_ = names_list(names)
    c = client or default_client()
    try:
        return c.rate_limit(names_, occupy, timeout_seconds, strict)
    except (AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError):
        raise
    except Exception as exc:
        raise ConcurrencySlotAcquisitionError(f"Unable to acquire concurrency slots on {names_!r}") from exc


