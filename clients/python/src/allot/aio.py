"""The asyncio client. Its requests go over asyncio.open_connection, so a
cancelled task closes its connection and a waiter leaves the line at once.
Leases are renewed, and runs heartbeat, from daemon threads, so a blocked
event loop cannot lose them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Iterable, Sequence, TypeVar

from . import _ops
from ._config import DEFAULT_BACKOFF, DEFAULT_RETRIES, MAX_LONG_POLL, Config, resolve
from ._lease import RENEWAL_FAILED_STRICT, RENEWAL_FAILED_WARN, Lease
from ._ops import DEFAULT_LEASE_DURATION, DEFAULT_RUN_LEASE_DURATION, Op, Sleep
from ._runs import RunScope
from ._transport import AsyncTransport, SyncTransport
from .errors import LeaseLostError, NotFoundError
from .types import LabelLimit, Limit, LimitRef, ResetResult, Run, TagLimit

log = logging.getLogger("allot")

_R = TypeVar("_R")

__all__ = ["AsyncClient"]


class AsyncClient:
    """Client for asyncio: the same calls, awaited. Use it within one event
    loop, and close it (``await client.aclose()`` or ``async with``)."""

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        auth_string: str | None = None,
        ca_file: str | None = None,
        ssl_context: Any = None,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        long_poll: float = MAX_LONG_POLL,
        holder: Any = None,
    ) -> None:
        self._cfg: Config = resolve(api_url, api_key, auth_string=auth_string, ca_file=ca_file,
                                    ssl_context=ssl_context, retries=retries, backoff=backoff,
                                    long_poll=long_poll, holder=holder)
        self._t = AsyncTransport(self._cfg)
        self._sync = SyncTransport(self._cfg)  # renewals and heartbeats, from threads

    @property
    def api_url(self) -> str:
        return self._cfg.url

    async def aclose(self) -> None:
        await self._t.aclose()
        self._sync.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _run(self, op: Op[_R]) -> _R:
        try:
            step = next(op)
            while True:
                try:
                    if isinstance(step, Sleep):
                        await asyncio.sleep(step.seconds)
                        val: Any = None
                    else:
                        val = await self._t.request(step)
                except BaseException as e:
                    step = op.throw(e)
                else:
                    step = op.send(val)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        finally:
            op.close()

    def _watch(self, lease_id: str) -> tuple[str, str] | None:
        try:
            got = self._sync.request(_ops.watch_request(lease_id, _ops.WATCH_POLL))
        except NotFoundError:
            return None  # a server without the watch (Prefect's, an older allot)
        got = got if isinstance(got, dict) else {}
        return str(got.get("state") or "not_found"), str(got.get("reason") or "")

    def _renew(self, lease_id: str, lease_duration: float, deadline: float) -> None:
        self._sync.request(_ops.renew_request(lease_id, lease_duration, deadline))

    async def acquire(self, names: str | Iterable[str], occupy: int = 1, *,
                      timeout_seconds: float | None = None, max_retries: int | None = None,
                      lease_duration: float = DEFAULT_LEASE_DURATION, holder: Any = None,
                      strict: bool = False) -> Lease:
        """See Client.acquire."""
        g = await self._run(_ops.acquire(self._cfg, _ops.names_list(names), occupy, timeout_seconds,
                                         max_retries, lease_duration, holder, strict))
        return self._lease(g, lease_duration, strict)

    async def try_acquire(self, names: str | Iterable[str], occupy: int = 1, *,
                          lease_duration: float = DEFAULT_LEASE_DURATION, holder: Any = None,
                          strict: bool = False) -> Lease:
        """See Client.try_acquire."""
        g = await self._run(_ops.acquire(self._cfg, _ops.names_list(names), occupy, None, None,
                                         lease_duration, holder, strict, try_=True))
        return self._lease(g, lease_duration, strict)

    def _lease(self, g: _ops.Grant, lease_duration: float, strict: bool) -> Lease:
        lease = Lease(g.lease_id, g.limits, g.fencing_token, lease_duration, g.granted_at,
                      self._renew if g.lease_id else None, strict, self._watch)
        lease.start()
        return lease

    async def release(self, lease: Lease) -> None:
        """See Client.release."""
        if lease._mark_released() and lease.lease_id is not None:
            await self._run(_ops.release(lease.lease_id))

    def concurrency(self, names: str | Iterable[str], occupy: int = 1,
                    timeout_seconds: float | None = None, max_retries: int | None = None,
                    lease_duration: float = DEFAULT_LEASE_DURATION, strict: bool = False,
                    holder: Any = None, raise_on_lease_renewal_failure: bool | None = None
                    ) -> _AsyncConcurrency:
        """``async with client.concurrency(...) as lease:``; see
        allot.concurrency.asyncio.concurrency."""
        return _AsyncConcurrency(self, _ops.names_list(names), occupy, timeout_seconds, max_retries,
                                 lease_duration, strict, holder, raise_on_lease_renewal_failure)

    async def rate_limit(self, names: str | Iterable[str], occupy: int = 1,
                         timeout_seconds: float | None = None, strict: bool = False, *,
                         max_retries: int | None = None) -> list[LimitRef]:
        """See Client.rate_limit."""
        return await self._run(_ops.rate_limit(self._cfg, _ops.names_list(names), occupy,
                                               timeout_seconds, max_retries, strict))

    async def create_limit(self, name: str, limit: int, *, active: bool = True,
                           slot_decay_per_second: float = 0.0, active_slots: int = 0,
                           denied_slots: int = 0) -> Limit:
        return await self._run(_ops.create_limit(name, limit, active, slot_decay_per_second,
                                                 active_slots, denied_slots))

    async def get_limit(self, name_or_id: str) -> Limit:
        return await self._run(_ops.get_limit(name_or_id))

    async def list_limits(self, offset: int = 0, limit: int = _ops.MAX_PAGE) -> list[Limit]:
        return await self._run(_ops.list_limits(offset, limit))

    async def iter_limits(self) -> AsyncIterator[Limit]:
        offset = 0
        while True:
            page = await self.list_limits(offset, _ops.MAX_PAGE)
            for lim in page:
                yield lim
            if len(page) < _ops.MAX_PAGE:
                return
            offset += _ops.MAX_PAGE

    async def update_limit(self, name_or_id: str, *, name: str | None = None, limit: int | None = None,
                           active: bool | None = None, active_slots: int | None = None,
                           denied_slots: int | None = None,
                           slot_decay_per_second: float | None = None) -> None:
        await self._run(_ops.update_limit(name_or_id, dict(
            name=name, limit=limit, active=active, active_slots=active_slots,
            denied_slots=denied_slots, slot_decay_per_second=slot_decay_per_second)))

    async def delete_limit(self, name_or_id: str) -> None:
        await self._run(_ops.delete_limit(name_or_id))

    async def ensure_limit(self, name: str, limit: int) -> Limit:
        return await self._run(_ops.ensure_limit(name, limit))

    async def create_tag_limit(self, tag: str, concurrency_limit: int) -> TagLimit:
        return await self._run(_ops.keyed_create(_ops.TAGS, tag, concurrency_limit))  # type: ignore[no-any-return]

    async def get_tag_limit(self, tag: str) -> TagLimit:
        return await self._run(_ops.keyed_get(_ops.TAGS, tag))  # type: ignore[no-any-return]

    async def list_tag_limits(self, offset: int = 0, limit: int = _ops.MAX_PAGE) -> list[TagLimit]:
        return await self._run(_ops.keyed_list(_ops.TAGS, offset, limit))

    async def reset_tag_limit(self, tag: str, slot_override: Sequence[str] | None = None) -> ResetResult:
        return await self._run(_ops.keyed_reset(_ops.TAGS, tag, slot_override))

    async def delete_tag_limit(self, tag: str) -> None:
        await self._run(_ops.keyed_delete(_ops.TAGS, tag))

    async def create_label_limit(self, label: str, concurrency_limit: int) -> LabelLimit:
        return await self._run(_ops.keyed_create(_ops.LABELS, label, concurrency_limit))  # type: ignore[no-any-return]

    async def get_label_limit(self, label: str) -> LabelLimit:
        return await self._run(_ops.keyed_get(_ops.LABELS, label))  # type: ignore[no-any-return]

    async def list_label_limits(self, offset: int = 0, limit: int = _ops.MAX_PAGE) -> list[LabelLimit]:
        return await self._run(_ops.keyed_list(_ops.LABELS, offset, limit))

    async def reset_label_limit(self, label: str, slot_override: Sequence[str] | None = None) -> ResetResult:
        return await self._run(_ops.keyed_reset(_ops.LABELS, label, slot_override))

    async def delete_label_limit(self, label: str) -> None:
        await self._run(_ops.keyed_delete(_ops.LABELS, label))

    def task_run(self, name: str | None = None, tags: Iterable[str] | str = (), *,
                 cancel_new: bool = False, lease_duration: float = DEFAULT_RUN_LEASE_DURATION) -> RunScope:
        """``async with client.task_run(...)``; see Client.task_run."""
        return RunScope("task", name, tags, cancel_new, lease_duration, None, self)

    def flow_run(self, name: str | None = None, tags: Iterable[str] | str = (), *,
                 cancel_new: bool = False, lease_duration: float = DEFAULT_RUN_LEASE_DURATION) -> RunScope:
        return RunScope("flow", name, tags, cancel_new, lease_duration, None, self)

    async def get_run(self, run_id: str) -> Run:
        return await self._run(_ops.get_run(run_id))


class _AsyncConcurrency:
    """``async with client.concurrency(...) as lease:``. On a lost lease with
    raise_on_lease_renewal_failure (default: strict) the task is cancelled and
    LeaseLostError raised at the block's end."""

    def __init__(self, client: AsyncClient, names: list[str], occupy: int,
                 timeout_seconds: float | None, max_retries: int | None, lease_duration: float,
                 strict: bool, holder: Any, raise_on_lease_renewal_failure: bool | None,
                 close_client: bool = False) -> None:
        self._c = client
        self._args = (names, occupy, timeout_seconds, max_retries, lease_duration, holder, strict)
        self._raise = strict if raise_on_lease_renewal_failure is None else raise_on_lease_renewal_failure
        self._close_client = close_client
        self.lease: Lease | None = None
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inside = False
        self._cancelled_by_us = False

    async def __aenter__(self) -> Lease:
        names, occupy, timeout_seconds, max_retries, lease_duration, holder, strict = self._args
        try:
            g = await self._c._run(_ops.acquire(self._c._cfg, names, occupy, timeout_seconds,
                                                max_retries, lease_duration, holder, strict))
        except BaseException:
            if self._close_client:
                await self._c.aclose()
            raise
        lease = Lease(g.lease_id, g.limits, g.fencing_token, lease_duration, g.granted_at,
                      self._c._renew if g.lease_id else None, self._raise,
                      self._c._watch)
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._inside = True
        lease.on_lost(self._lost if self._raise else _warn_lost)
        self.lease = lease
        lease.start()
        return lease

    def _lost(self, err: LeaseLostError) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        if self._inside and self._task is not None:
            self._cancelled_by_us = True
            self._task.cancel()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        lease = self.lease
        assert lease is not None
        self._inside = False
        rel_err: Exception | None = None
        try:
            try:
                await asyncio.shield(self._c.release(lease))
            except Exception as e:  # noqa: BLE001
                rel_err = e
                (log.debug if lease.error is not None else log.warning)("allot: release of lease %s failed; it expires in at most %ss: %s",
                            lease.lease_id, lease.lease_duration, e)
        finally:
            if self._close_client:
                await self._c.aclose()
        if lease.error is not None and self._raise:
            if self._cancelled_by_us and self._task is not None:
                _uncancel(self._task)
            log.error(RENEWAL_FAILED_STRICT, exc_info=lease.error)
            raise LeaseLostError(f"{RENEWAL_FAILED_STRICT} ({lease.error})") from lease.error
        if rel_err is not None and exc is None and lease.error is None:
            raise rel_err
        return False


def _warn_lost(err: LeaseLostError) -> None:
    log.warning(RENEWAL_FAILED_WARN, exc_info=err)


def _uncancel(task: "asyncio.Task[Any]") -> None:
    """Takes back the cancellation the lease's loss asked for (3.11+), so the
    task is not left cancelling once LeaseLostError replaces it."""
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()
