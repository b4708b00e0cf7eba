"""Tags that flow through contextvars like Prefect's ``with tags(...)``, the
run a block belongs to, and the scope that runs a block or a function as a
task run or flow run."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar, cast

from . import _ops
from ._lease import ThreadInterrupter, _LeaseInterrupt
from ._transport import SyncTransport
from .errors import APIError, LeaseLostError, LeaseNotFoundError, NotFoundError, RunNotStartedError
from .types import Run, RunState

if TYPE_CHECKING:
    from .aio import AsyncClient
    from .client import Client

log = logging.getLogger("allot")

F = TypeVar("F", bound=Callable[..., Any])

_TAGS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("allot_tags", default=())
_RUN: contextvars.ContextVar[str | None] = contextvars.ContextVar("allot_run", default=None)


def _normal(tags: Any) -> tuple[str, ...]:
    return tuple(sorted({str(t) for t in tags if t}))


@contextmanager
def tags(*new_tags: str) -> Iterator[tuple[str, ...]]:
    """Adds tags to the runs started inside the block (and in tasks and
    threads started with a copy of its context), like Prefect's
    ``with tags(...)``. Yields the tags now in effect."""
    now = _normal(_TAGS.get() + new_tags)
    token = _TAGS.set(now)
    try:
        yield now
    finally:
        _TAGS.reset(token)


@contextmanager
def without_tags(*dropped: str) -> Iterator[tuple[str, ...]]:
    """Drops tags, which the block may have inherited, from the runs started
    inside it. Yields the tags now in effect."""
    now = tuple(t for t in _TAGS.get() if t not in dropped)
    token = _TAGS.set(now)
    try:
        yield now
    finally:
        _TAGS.reset(token)


def current_tags() -> tuple[str, ...]:
    """The tags in effect, sorted, without duplicates."""
    return _TAGS.get()


def current_run_id() -> str | None:
    """The id of the run whose block or function this is, if any."""
    return _RUN.get()


def _final_state(exc: BaseException | None) -> tuple[str, str]:
    if exc is None:
        return RunState.COMPLETED, ""
    if isinstance(exc, asyncio.CancelledError):
        return RunState.CANCELLED, f"cancelled: {exc}".rstrip(": ")
    if isinstance(exc, Exception):
        return RunState.FAILED, f"{type(exc).__name__}: {exc}"
    return RunState.CRASHED, f"interrupted by {type(exc).__name__}: {exc}".rstrip(": ")


class _Heartbeat:
    """Heartbeats a running run from a daemon thread every third of its lease.
    When the server answers that the run is over (410, 404), calls lost."""

    def __init__(self, transport: SyncTransport, run: Run, lease_duration: float,
                 lost: Callable[[LeaseLostError], None]) -> None:
        self.error: LeaseLostError | None = None
        self._t = transport
        self._run = run
        self._interval = lease_duration / 3
        self._lost = lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"allot-run-heartbeat-{run.id}")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._t.request(_ops.heartbeat_request(self._run.id))
            except (LeaseNotFoundError, NotFoundError) as e:
                if self._stop.is_set():
                    return
                err = LeaseLostError(f"run {self._run.id} is over on the server ({e}); its slots may be held by others now")
                err.__cause__ = e
                self.error = err
                log.warning("allot: run %s is over on the server; its slots may be held by others now: %s",
                            self._run.id, e)
                try:
                    self._lost(err)
                except Exception:  # noqa: BLE001
                    log.exception("allot: run-lost callback failed")
                return
            except Exception as e:  # noqa: BLE001
                log.warning("allot: run %s heartbeat failed; will try again: %s", self._run.id, e)


class RunScope:
    """Runs a ``with`` / ``async with`` block, or a decorated function, as a
    task run or flow run. See Client.task_run."""

    def __init__(self, kind: str, name: str | None, tags: Any, cancel_new: bool, lease_duration: float,
                 client: Client | None, aclient: AsyncClient | None) -> None:
        if not lease_duration > 0:
            raise ValueError(f"lease_duration={lease_duration!r} must be positive")
        if isinstance(tags, str):
            tags = (tags,)
        self.kind, self.name, self.tags = kind, name, tuple(tags or ())
        self.cancel_new, self.lease_duration = cancel_new, lease_duration
        self._client, self._aclient = client, aclient
        self._own_aclient: AsyncClient | None = None
        self.run: Run | None = None
        self._hb: _Heartbeat | None = None
        self._token: contextvars.Token[str | None] | None = None
        self._interrupter: ThreadInterrupter | None = None
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inside = False
        self._cancelled_by_us = False

    def _copy(self, name: str) -> RunScope:
        return RunScope(self.kind, self.name or name, self.tags, self.cancel_new, self.lease_duration,
                        self._client, self._aclient)

    def _sync_client(self) -> Client:
        if self._client is not None:
            return self._client
        from .client import default_client
        return default_client()

    def _body(self) -> tuple[str, list[str], str | None]:
        return (self.name or self.kind, list(_normal(_TAGS.get() + self.tags)), _RUN.get())

    # sync

    def __enter__(self) -> Run:
        c = self._sync_client()
        name, tags, parent = self._body()
        run = c._run(_ops.start_run(c._cfg, self.kind, name, tags, parent, self.cancel_new, self.lease_duration))
        try:
            run = c._run(_ops.ask_to_run(c._cfg, run))
        except BaseException as e:
            self._end(c, run.id, RunState.CANCELLED, f"interrupted while waiting: {type(e).__name__}")
            raise
        if run.state != RunState.RUNNING:
            raise RunNotStartedError(run.id, run.state, run.message)
        self.run = run
        self._token = _RUN.set(run.id)
        self._interrupter = ThreadInterrupter()
        self._hb = _Heartbeat(c._t, run, self.lease_duration, self._interrupter.interrupt)
        return run

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        assert self.run is not None and self._hb is not None and self._interrupter is not None
        self._interrupter.leave()
        self._hb.stop()
        if self._token is not None:
            _RUN.reset(self._token)
        if self._hb.error is not None:
            raise self._hb.error from (exc if not isinstance(exc, _LeaseInterrupt) else None)
        state, msg = _final_state(exc)
        self._end(self._sync_client(), self.run.id, state, msg)
        return False

    def _end(self, c: Client, run_id: str, state: str, msg: str) -> None:
        try:
            c._run(_ops.finish_run(run_id, state, msg))
        except APIError as e:
            log.warning("allot: could not end run %s as %s: %s", run_id, state, e)
        except Exception as e:  # noqa: BLE001
            log.warning("allot: could not end run %s as %s: %s", run_id, state, e)

    # async

    async def __aenter__(self) -> Run:
        ac = self._aclient
        if ac is None:
            from .aio import AsyncClient
            ac = self._own_aclient = AsyncClient()
        name, tags, parent = self._body()
        try:
            run = await ac._run(_ops.start_run(ac._cfg, self.kind, name, tags, parent, self.cancel_new,
                                               self.lease_duration))
            try:
                run = await ac._run(_ops.ask_to_run(ac._cfg, run))
            except BaseException as e:
                await asyncio.shield(self._aend(ac, run.id, RunState.CANCELLED,
                                                f"interrupted while waiting: {type(e).__name__}"))
                raise
            if run.state != RunState.RUNNING:
                raise RunNotStartedError(run.id, run.state, run.message)
        except BaseException:
            await self._close_own()
            raise
        self.run = run
        self._token = _RUN.set(run.id)
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._inside = True
        self._hb = _Heartbeat(ac._sync, run, self.lease_duration, self._lost_async)
        return run

    def _lost_async(self, err: LeaseLostError) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        if self._inside and self._task is not None:
            self._cancelled_by_us = True
            self._task.cancel()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        assert self.run is not None and self._hb is not None
        self._inside = False
        self._hb.stop()
        if self._token is not None:
            _RUN.reset(self._token)
        ac = self._aclient or self._own_aclient
        assert ac is not None
        try:
            if self._hb.error is not None:
                if self._cancelled_by_us and self._task is not None:
                    _uncancel(self._task)
                raise self._hb.error from (None if isinstance(exc, asyncio.CancelledError) else exc)
            state, msg = _final_state(exc)
            await asyncio.shield(self._aend(ac, self.run.id, state, msg))
        finally:
            await self._close_own()
        return False

    async def _aend(self, ac: AsyncClient, run_id: str, state: str, msg: str) -> None:
        try:
            await ac._run(_ops.finish_run(run_id, state, msg))
        except Exception as e:  # noqa: BLE001
            log.warning("allot: could not end run %s as %s: %s", run_id, state, e)

    async def _close_own(self) -> None:
        if self._own_aclient is not None:
            c, self._own_aclient = self._own_aclient, None
            await c.aclose()

    # decorator

    def __call__(self, fn: F) -> F:
        name = getattr(fn, "__name__", self.kind)
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                async with self._copy(name):
                    return await fn(*args, **kwargs)
            return cast(F, awrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._copy(name):
                return fn(*args, **kwargs)
        return cast(F, wrapper)


def _uncancel(task: "asyncio.Task[Any]") -> None:
    """Takes back the cancellation the lease's loss asked for (3.11+), so the
    task is not left cancelling once LeaseLostError replaces it."""
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()
