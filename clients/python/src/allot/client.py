"""The synchronous client."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any, Iterable, Iterator, Sequence, TypeVar

from . import _ops
from ._config import DEFAULT_BACKOFF, DEFAULT_RETRIES, MAX_LONG_POLL, Config, resolve
from ._lease import RENEWAL_FAILED_STRICT, RENEWAL_FAILED_WARN, Lease, ThreadInterrupter, _LeaseInterrupt
from ._ops import DEFAULT_LEASE_DURATION, DEFAULT_RUN_LEASE_DURATION, Op, Sleep
from ._runs import RunScope
from ._transport import SyncTransport
from .errors import LeaseLostError, NotFoundError
from .types import LabelLimit, Limit, LimitRef, ResetResult, Run, TagLimit

log = logging.getLogger("allot")

T = Any
_R = TypeVar("_R")

__all__ = ["Client", "default_client"]


class Client:
    """Talks to an allot server. Safe for use from many threads: create one
    and share it (it keeps a pool of keep-alive connections).

    Unless arguments say otherwise it talks to ``ALLOT_API_URL`` (else
    ``PREFECT_API_URL``, else http://127.0.0.1:4200/api) with the key in
    ``ALLOT_API_KEY`` (else ``PREFECT_API_KEY``, both sent as Bearer, else
    ``PREFECT_API_AUTH_STRING`` sent as Basic). HTTPS uses the system's
    roots, or ``ca_file`` / ``ALLOT_CA_FILE`` / ``SSL_CERT_FILE``.
    Connection errors and 5xx answers are retried ``retries`` times with
    jittered exponential backoff from ``backoff`` seconds; other answers
    never are.
    """

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
        self._t = SyncTransport(self._cfg)

    @property
    def api_url(self) -> str:
        return self._cfg.url

    def close(self) -> None:
        """Closes the idle connections, and each one in use when its request
        is done. The client remains usable, without keeping connections."""
        self._t.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _run(self, op: Op[_R]) -> _R:
        try:
            step = next(op)
            while True:
                try:
                    if isinstance(step, Sleep):
                        time.sleep(step.seconds)
                        val: Any = None
                    else:
                        val = self._t.request(step)
                except BaseException as e:  # thrown into the call, which may handle it
                    step = op.throw(e)
                else:
                    step = op.send(val)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        finally:
            op.close()

    def _watch(self, lease_id: str) -> tuple[str, str] | None:
        try:
            got = self._t.request(_ops.watch_request(lease_id, _ops.WATCH_POLL))
        except NotFoundError:
            return None  # a server without the watch (Prefect's, an older allot)
        got = got if isinstance(got, dict) else {}
        return str(got.get("state") or "not_found"), str(got.get("reason") or "")

    def _renew(self, lease_id: str, lease_duration: float, deadline: float) -> None:
        self._t.request(_ops.renew_request(lease_id, lease_duration, deadline))

    # Leases.

    def acquire(
        self,
        names: str | Iterable[str],
        occupy: int = 1,
        *,
        timeout_seconds: float | None = None,
        max_retries: int | None = None,
        lease_duration: float = DEFAULT_LEASE_DURATION,
        holder: Any = None,
        strict: bool = False,
    ) -> Lease:
        """Takes ``occupy`` slots of every named limit, all at once or none,
        and returns the Lease holding them, renewed in the background until
        ``release``. If the slots are taken it waits in line on the server,
        first in first out, for up to ``timeout_seconds`` (None: for ever),
        then raises AcquireConcurrencySlotTimeoutError. ``max_retries``
        bounds how often it asks again (0: fail at the first refusal with
        LockedError). If none of the limits exist it logs Prefect's warning
        and returns a lease that holds nothing, or with ``strict`` raises
        ConcurrencySlotAcquisitionError."""
        names_ = _ops.names_list(names)
        g = self._run(_ops.acquire(self._cfg, names_, occupy, timeout_seconds, max_retries,
                                   lease_duration, holder, strict))
        return self._lease(g, lease_duration, strict)

    def try_acquire(
        self,
        names: str | Iterable[str],
        occupy: int = 1,
        *,
        lease_duration: float = DEFAULT_LEASE_DURATION,
        holder: Any = None,
        strict: bool = False,
    ) -> Lease:
        """``acquire`` without waiting: raises LockedError (with the server's
        ``retry_after``) if the slots are not free now."""
        names_ = _ops.names_list(names)
        g = self._run(_ops.acquire(self._cfg, names_, occupy, None, None, lease_duration, holder,
                                   strict, try_=True))
        return self._lease(g, lease_duration, strict)

    def _lease(self, g: _ops.Grant, lease_duration: float, strict: bool) -> Lease:
        lease = Lease(g.lease_id, g.limits, g.fencing_token, lease_duration, g.granted_at,
                      self._renew if g.lease_id else None, strict, self._watch)
        lease.start()
        return lease

    def release(self, lease: Lease) -> None:
        """Gives the lease's slots back and stops its renewals. Safe to call
        more than once, and after the lease was lost."""
        if lease._mark_released() and lease.lease_id is not None:
            self._run(_ops.release(lease.lease_id))

    def concurrency(
        self,
        names: str | Iterable[str],
        occupy: int = 1,
        timeout_seconds: float | None = None,
        max_retries: int | None = None,
        lease_duration: float = DEFAULT_LEASE_DURATION,
        strict: bool = False,
        holder: Any = None,
        raise_on_lease_renewal_failure: bool | None = None,
    ) -> _Concurrency:
        """A context manager holding the slots while its block runs; yields
        the Lease. See allot.concurrency.sync.concurrency."""
        return _Concurrency(self, _ops.names_list(names), occupy, timeout_seconds, max_retries,
                            lease_duration, strict, holder, raise_on_lease_renewal_failure)

    def rate_limit(
        self,
        names: str | Iterable[str],
        occupy: int = 1,
        timeout_seconds: float | None = None,
        strict: bool = False,
        *,
        max_retries: int | None = None,
    ) -> list[LimitRef]:
        """Takes ``occupy`` slots of every named rate limit (a limit with
        ``slot_decay_per_second``), all at once; they are never given back but
        decay, so calls are admitted at the limits' rate. Waits in line until
        admitted. A limit without decay raises InvalidError (code no_decay)."""
        return self._run(_ops.rate_limit(self._cfg, _ops.names_list(names), occupy, timeout_seconds,
                                         max_retries, strict))

    # Limits.

    def create_limit(self, name: str, limit: int, *, active: bool = True,
                     slot_decay_per_second: float = 0.0, active_slots: int = 0,
                     denied_slots: int = 0) -> Limit:
        """Creates a limit. A taken name raises ConflictError (ensure_limit
        tolerates it). A name with ``*`` makes a template."""
        return self._run(_ops.create_limit(name, limit, active, slot_decay_per_second, active_slots,
                                           denied_slots))

    def get_limit(self, name_or_id: str) -> Limit:
        """A limit by name or id, with its holders and waiters. A missing one
        raises LimitNotFoundError."""
        return self._run(_ops.get_limit(name_or_id))

    def list_limits(self, offset: int = 0, limit: int = _ops.MAX_PAGE) -> list[Limit]:
        """Up to ``limit`` limits (at most 200) by name, from the offset-th on."""
        return self._run(_ops.list_limits(offset, limit))

    def iter_limits(self) -> Iterator[Limit]:
        """Every limit, by name, a page at a time."""
        offset = 0
        while True:
            page = self.list_limits(offset, _ops.MAX_PAGE)
            yield from page
            if len(page) < _ops.MAX_PAGE:
                return
            offset += _ops.MAX_PAGE

    def update_limit(self, name_or_id: str, *, name: str | None = None, limit: int | None = None,
                     active: bool | None = None, active_slots: int | None = None,
                     denied_slots: int | None = None, slot_decay_per_second: float | None = None) -> None:
        """Changes the fields given. Lowering a limit never revokes held
        leases; ``active_slots=0`` resets a rate limit's bucket."""
        self._run(_ops.update_limit(name_or_id, dict(
            name=name, limit=limit, active=active, active_slots=active_slots,
            denied_slots=denied_slots, slot_decay_per_second=slot_decay_per_second)))

    def delete_limit(self, name_or_id: str) -> None:
        """Deletes a limit. Leases holding it keep their other limits."""
        self._run(_ops.delete_limit(name_or_id))

    def ensure_limit(self, name: str, limit: int) -> Limit:
        """Makes sure a limit named ``name`` exists with ``limit`` slots:
        creates it, or brings an existing one to ``limit`` (leaving the rest
        as it is). Many processes may call it at once."""
        return self._run(_ops.ensure_limit(name, limit))

    # Tag and label limits.

    def create_tag_limit(self, tag: str, concurrency_limit: int) -> TagLimit:
        """Creates the limit of a tag, or sets its number of slots."""
        return self._run(_ops.keyed_create(_ops.TAGS, tag, concurrency_limit))  # type: ignore[no-any-return]

    def get_tag_limit(self, tag: str) -> TagLimit:
        """The limit of a tag, with the task runs holding it (``active_slots``)."""
        return self._run(_ops.keyed_get(_ops.TAGS, tag))  # type: ignore[no-any-return]

    def list_tag_limits(self, offset: int = 0, limit: int = _ops.MAX_PAGE) -> list[TagLimit]:
        return self._run(_ops.keyed_list(_ops.TAGS, offset, limit))

    def reset_tag_limit(self, tag: str, slot_override: Sequence[str] | None = None) -> ResetResult:
        """Revokes every lease on the tag's limit (their runs are Crashed), lets
        the runs in line in, then gives ``slot_override`` ids a slot while one
        is free."""
        return self._run(_ops.keyed_reset(_ops.TAGS, tag, slot_override))

    def delete_tag_limit(self, tag: str) -> None:
        self._run(_ops.keyed_delete(_ops.TAGS, tag))

    def create_label_limit(self, label: str, concurrency_limit: int) -> LabelLimit:
        return self._run(_ops.keyed_create(_ops.LABELS, label, concurrency_limit))  # type: ignore[no-any-return]

    def get_label_limit(self, label: str) -> LabelLimit:
        return self._run(_ops.keyed_get(_ops.LABELS, label))  # type: ignore[no-any-return]

    def list_label_limits(self, offset: int = 0, limit: int = _ops.MAX_PAGE) -> list[LabelLimit]:
        return self._run(_ops.keyed_list(_ops.LABELS, offset, limit))

    def reset_label_limit(self, label: str, slot_override: Sequence[str] | None = None) -> ResetResult:
        return self._run(_ops.keyed_reset(_ops.LABELS, label, slot_override))

    def delete_label_limit(self, label: str) -> None:
        self._run(_ops.keyed_delete(_ops.LABELS, label))

    # Runs.

    def task_run(self, name: str | None = None, tags: Iterable[str] | str = (), *,
                 cancel_new: bool = False, lease_duration: float = DEFAULT_RUN_LEASE_DURATION) -> RunScope:
        """Runs a ``with`` block, or (as a decorator) a function, as a task run
        of the server: it starts when every limited tag (the tags in effect,
        see ``allot.tags``, plus ``tags``) has a slot, all at once, waiting in
        line until then (or, with ``cancel_new``, raising RunNotStartedError
        at once). Nested runs share their ancestors' slots. While it runs it
        heartbeats every third of ``lease_duration``; it ends Completed,
        Failed (an exception, with its text), Cancelled (asyncio
        cancellation) or Crashed (KeyboardInterrupt, SystemExit; or by the
        server when the process dies)."""
        return RunScope("task", name, tags, cancel_new, lease_duration, self, None)

    def flow_run(self, name: str | None = None, tags: Iterable[str] | str = (), *,
                 cancel_new: bool = False, lease_duration: float = DEFAULT_RUN_LEASE_DURATION) -> RunScope:
        """``task_run`` for a flow run, whose tags are labels, limited by label limits."""
        return RunScope("flow", name, tags, cancel_new, lease_duration, self, None)

    def get_run(self, run_id: str) -> Run:
        """A run: name, kind, tags, parent, state and its history."""
        return self._run(_ops.get_run(run_id))


class _Concurrency:
    """``with client.concurrency(...) as lease:``"""

    def __init__(self, client: Client, names: list[str], occupy: int, timeout_seconds: float | None,
                 max_retries: int | None, lease_duration: float, strict: bool, holder: Any,
                 raise_on_lease_renewal_failure: bool | None) -> None:
        self._c = client
        self._args = (names, occupy, timeout_seconds, max_retries, lease_duration, holder, strict)
        self._raise = strict if raise_on_lease_renewal_failure is None else raise_on_lease_renewal_failure
        self.lease: Lease | None = None
        self._interrupter: ThreadInterrupter | None = None

    def __enter__(self) -> Lease:
        names, occupy, timeout_seconds, max_retries, lease_duration, holder, strict = self._args
        g = self._c._run(_ops.acquire(self._c._cfg, names, occupy, timeout_seconds, max_retries,
                                      lease_duration, holder, strict))
        lease = Lease(g.lease_id, g.limits, g.fencing_token, lease_duration, g.granted_at,
                      self._c._renew if g.lease_id else None, self._raise,
                      self._c._watch)
        if self._raise:
            self._interrupter = ThreadInterrupter()
            lease.on_lost(self._interrupter.interrupt)
        else:
            lease.on_lost(_warn_lost)
        self.lease = lease
        lease.start()
        return lease

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        lease = self.lease
        assert lease is not None
        if self._interrupter is not None:
            self._interrupter.leave()
        rel_err: Exception | None = None
        try:
            self._c.release(lease)
        except Exception as e:  # noqa: BLE001
            rel_err = e
            (log.debug if lease.error is not None else log.warning)("allot: release of lease %s failed; it expires in at most %ss: %s",
                        lease.lease_id, lease.lease_duration, e)
        if lease.error is not None and self._raise:
            log.error(RENEWAL_FAILED_STRICT, exc_info=lease.error)
            raise LeaseLostError(f"{RENEWAL_FAILED_STRICT} ({lease.error})") from lease.error
        if isinstance(exc, _LeaseInterrupt):  # cannot happen without a loss; be safe
            raise LeaseLostError(RENEWAL_FAILED_STRICT) from None
        if rel_err is not None and exc is None and lease.error is None:
            raise rel_err
        return False


def _warn_lost(err: LeaseLostError) -> None:
    log.warning(RENEWAL_FAILED_WARN, exc_info=err)


_default_lock = threading.Lock()
_default: tuple[tuple[str | None, ...], Client] | None = None
_ENV = ("ALLOT_API_URL", "ALLOT_API_KEY", "PREFECT_API_URL", "PREFECT_API_KEY",
        "PREFECT_API_AUTH_STRING", "ALLOT_CA_FILE", "SSL_CERT_FILE")


def default_client() -> Client:
    """The process's shared Client for the environment's settings (made again
    when they change), used by allot.concurrency.sync and allot.task_run."""
    global _default
    key = tuple(os.environ.get(k) for k in _ENV)
    with _default_lock:
        if _default is None or _default[0] != key:
            if _default is not None:
                _default[1].close()
            _default = (key, Client())
        return _default[1]


@atexit.register
def _close_default() -> None:
    with _default_lock:
        if _default is not None:
            _default[1].close()
