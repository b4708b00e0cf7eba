"""Prefect's ``prefect.concurrency.asyncio`` over allot.

As ``allot.concurrency.sync``, awaited. The requests go over
asyncio.open_connection, so cancelling a waiting task closes its connection
and the server drops it from the line at once. The lease is renewed from a
daemon thread, so a blocked event loop cannot lose it. When the lease is
lost and renewal failures raise (``strict`` or
``raise_on_lease_renewal_failure``), the task is cancelled and the block
raises LeaseLostError.
"""

from __future__ import annotations

from typing import Any

from .._lease import Lease
from .._ops import names_list
from ..aio import AsyncClient, _AsyncConcurrency
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


class _PrefectAsyncConcurrency:
    def __init__(self, inner: _AsyncConcurrency, names: list[str]) -> None:
        self._inner, self._names = inner, names

    async def __aenter__(self) -> Lease:
        try:
            return await self._inner.__aenter__()
        except (AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError):
            raise
        except Exception as exc:
            raise ConcurrencySlotAcquisitionError(
                f"Unable to acquire concurrency slots on {self._names!r}") from exc

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        return await self._inner.__aexit__(exc_type, exc, tb)


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
    client: AsyncClient | None = None,
) -> _PrefectAsyncConcurrency:
    """``async with concurrency(...) as lease:`` — see
    allot.concurrency.sync.concurrency for the arguments. Without ``client``
    it uses an AsyncClient of its own, configured from the environment and
    closed when the block ends."""
    names_ = names_list(names)
    own = client is None
    c = client or AsyncClient()
    inner = _AsyncConcurrency(c, names_, occupy, timeout_seconds, max_retries, lease_duration, strict,
                              holder, raise_on_lease_renewal_failure, close_client=own)
    return _PrefectAsyncConcurrency(inner, names_)


async def rate_limit(
    names: str | list[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    strict: bool = False,
    *,
    client: AsyncClient | None = None,
) -> list[LimitRef]:
    """Wait until ``occupy`` slots of each rate limit ``names`` are acquired;
    see allot.concurrency.sync.rate_limit."""
    names_ = names_list(names)
    c = client or AsyncClient()
    try:
        return await c.rate_limit(names_, occupy, timeout_seconds, strict)
    except (AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError):
        raise
    except Exception as exc:
        raise ConcurrencySlotAcquisitionError(f"Unable to acquire concurrency slots on {names_!r}") from exc
    finally:
        if client is None:
            await c.aclose()
