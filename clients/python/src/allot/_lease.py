"""Leases: slots held on one or more limits, renewed by a daemon thread of
their own every third of the lease, so that neither a busy thread nor a
blocked event loop can keep a lease from being renewed."""

from __future__ import annotations

import ctypes
import heapq
import datetime as _dt
import logging
import threading
import time
from typing import Callable

from .errors import AllotError, APIError, LeaseLostError, LeaseNotFoundError
from .types import LimitRef

log = logging.getLogger("allot")

RENEWAL_FAILED_STRICT = (
    "Concurrency lease renewal failed - slots are no longer reserved. "
    "Terminating execution to prevent over-allocation."
)
RENEWAL_FAILED_WARN = (
    "Concurrency lease renewal failed - slots are no longer reserved. "
    "Execution will continue, but concurrency limits may be exceeded."
)

RenewFn = Callable[[str, float, float], None]
"""renew(lease_id, lease_duration, deadline): one renewal with the client's
retries, giving up at deadline (time.monotonic()). Raises on failure."""

WatchFn = Callable[[str], "tuple[str, str] | None"]
"""watch(lease_id): one long poll of the server's lease watch; returns
(state, reason), or None when the server has no watch (404). Raises on
other failures."""

WATCH_AFTER = 1.0
"""A lease held this long (or a third of its duration, if shorter) gets a
watch: one long poll the server answers the moment the lease ends, so that a
revoked, expired or foreign-released lease is lost at once rather than at the
next renewal. Shorter holds never pay for one."""


class Lease:
    """Slots held on one or more limits. The ``with`` blocks of
    ``concurrency`` yield it.

    - ``lease_id``: the server's id of the lease, or None for a lease that
      holds nothing (none of the named limits exist).
    - ``fencing_token``: grows with every grant, across all limits and server
      restarts; a resource that remembers the highest it saw can refuse a
      holder whose lease lapsed. 0 for a lease that holds nothing.
    - ``expires_at``: when the lease expires unless renewed, by this
      machine's clock, on the safe side.
    - ``limits``: the limits held (the named ones that exist).
    - ``lost``: a threading.Event set when the lease is lost; ``error``
      says why.
    """

    def __init__(
        self,
        lease_id: str | None,
        limits: list[LimitRef],
        fencing_token: int,
        lease_duration: float,
        granted_at: float,
        renew: RenewFn | None,
        strict: bool = False,
        watch: WatchFn | None = None,
    ) -> None:
        self.lease_id = lease_id
        self.limits = list(limits)
        self.fencing_token = fencing_token
        self.lease_duration = lease_duration
        self.strict = strict
        self.lost = threading.Event()
        self.error: LeaseLostError | None = None
        self._renew_fn = renew
        self._watch_fn = watch
        self._lock = threading.Lock()
        self._renewed_at = granted_at  # time.monotonic() the last successful renewal was sent
        self._released = False
        self._stop = threading.Event()
        self._on_lost: list[Callable[[LeaseLostError], None]] = []
        self._failures = 0
        self._last: BaseException | None = None
        self._idle = threading.Event()  # set while no step is under way
        self._idle.set()

    def __repr__(self) -> str:
        return (f"Lease(lease_id={self.lease_id!r}, fencing_token={self.fencing_token}, "
                f"limits={[lr.name for lr in self.limits]!r}, lost={self.lost.is_set()})")

    @property
    def expires_at(self) -> _dt.datetime:
        """The expiry by this machine's clock (UTC)."""
        left = self._expires_mono() - time.monotonic()
        return _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=left)

    def _expires_mono(self) -> float:
        with self._lock:
            return self._renewed_at + self.lease_duration

    @property
    def held(self) -> bool:
        """True while the lease holds slots: not lost nor released."""
        return self.lease_id is not None and not self.lost.is_set() and not self._released

    def on_lost(self, fn: Callable[[LeaseLostError], None]) -> None:
        """Calls fn (in the renewal thread) when the lease is lost."""
        with self._lock:
            self._on_lost.append(fn)

    def start(self) -> None:
        """Starts the renewals (no-op for a lease that holds nothing)."""
        if self.lease_id is None or self._renew_fn is None:
            return
        r = _renewer()
        r.schedule(self, self._due())
        if self._watch_fn is not None:
            with self._lock:
                at = self._renewed_at + min(WATCH_AFTER, self.lease_duration / 3)
            r.schedule(self, at, self._watch)

    def _watch(self) -> None:
        """Keeps one long poll open on the lease's watch until the lease
        ends; loses the lease when the server says it ended and it was not
        this process that released it. Never decides on its own failures:
        the renewals do."""
        assert self._watch_fn is not None and self.lease_id is not None
        failures = 0
        while not self._stop.is_set():
            try:
                got = self._watch_fn(self.lease_id)
            except Exception as e:  # noqa: BLE001
                failures += 1
                log.debug("allot: lease %s watch failed; will try again: %s", self.lease_id, e)
                if self._stop.wait(min(0.2 * 2 ** min(failures, 6), 10.0)):
                    return
                continue
            if got is None:
                log.debug("allot: the server has no lease watch; renewals alone will find a lost lease")
                return
            state, reason = got
            if state == "held":
                failures = 0
                continue
            with self._lock:
                ours = self._released and state == "released"
            if not ours:
                self._lose(None, _ended(self.lease_id, state, reason))
            return

    def stop(self, wait: bool = True) -> None:
        """Stops the renewals; when wait, waits (briefly) for one under way."""
        self._stop.set()
        if wait:
            self._idle.wait(2)

    def renew(self) -> None:
        """Renews the lease now. A lease the server no longer has is lost:
        LeaseLostError."""
        if self.error is not None:
            raise self.error
        if self.lease_id is None or self._renew_fn is None:
            return
        try:
            self._renew_once()
        except LeaseNotFoundError as e:
            self._lose(e)
            assert self.error is not None
            raise self.error from e

    def _renew_once(self) -> None:
        assert self.lease_id is not None and self._renew_fn is not None
        sent = time.monotonic()
        self._renew_fn(self.lease_id, self.lease_duration, self._expires_mono())
        with self._lock:
            if sent > self._renewed_at:
                self._renewed_at = sent

    def _due(self) -> float:
        """When the next step is due: a renewal every third of the lease (a
        failed one is tried again a third later, so two can fail before the
        lease expires), or, when it is too late for another try, the expiry."""
        interval = self.lease_duration / 3
        with self._lock:
            base, failures = self._renewed_at, self._failures
        expires = base + self.lease_duration
        nxt = base + (failures + 1) * interval
        return expires if expires - nxt < interval / 2 else nxt

    def _step(self) -> None:
        """One step of the renewals, in a thread of its own: renew, or at
        expiry find the lease lost. Schedules the next step."""
        self._idle.clear()
        try:
            if self._stop.is_set():
                return
            interval = self.lease_duration / 3
            with self._lock:
                base, failures = self._renewed_at, self._failures
            expires = base + self.lease_duration
            if expires - (base + (failures + 1) * interval) < interval / 2:
                if self._expires_mono() > time.monotonic():  # renewed meanwhile
                    with self._lock:
                        self._failures = 0
                else:
                    self._lose(self._last, "not renewed before it expired")
                    return
            else:
                try:
                    self._renew_once()
                    with self._lock:
                        self._failures = 0
                except Exception as e:  # noqa: BLE001 - every failure is handled below
                    if self._stop.is_set():
                        return
                    if isinstance(e, LeaseNotFoundError) or self.strict:
                        self._lose(e)
                        return
                    with self._lock:
                        self._failures += 1
                    self._last = e
                    log.warning("allot: lease %s renewal failed; will try again: %s", self.lease_id, e)
            if not self._stop.is_set():
                _renewer().schedule(self, self._due())
        finally:
            self._idle.set()

    def _lose(self, cause: BaseException | None, why: str = "") -> None:
        with self._lock:
            if self.error is not None or self._released:
                return
            reason = why or (f"renewal refused: {cause}" if isinstance(cause, APIError) else f"renewal failed: {cause}")
            if why and cause is not None:
                reason += f": {cause}"
            err = LeaseLostError(f"lease {self.lease_id} lost ({reason}); its slots may be held by others now")
            err.__cause__ = cause
            self.error = err
            callbacks = list(self._on_lost)
        log.warning("allot: lease %s lost: %s", self.lease_id, reason)
        for fn in callbacks:
            try:
                fn(err)
            except Exception:  # noqa: BLE001
                log.exception("allot: lease-lost callback failed")
        self.lost.set()  # after the callbacks: whoever waits for it sees their effects

    def _mark_released(self) -> bool:
        """Marks the lease released; False if it already was. Returns whether
        the server still may have it (so a release request is worth sending)."""
        with self._lock:
            if self._released:
                return False
            self._released = True
            gone = isinstance(self.error, LeaseLostError) and isinstance(self.error.__cause__, LeaseNotFoundError)
        self.stop(wait=False)
        return self.lease_id is not None and not gone


class _Renewer:
    """The process's lease renewals: one daemon thread that sleeps until the
    next lease is due and runs its step in a thread of its own (so that a
    slow renewal, retrying against a server that is down, delays no other
    lease). A lease costs no thread until its first renewal is due, a third
    of its duration after it was granted."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Lease, Callable[[], None] | None]] = []
        self._seq = 0
        self._thread = threading.Thread(target=self._loop, daemon=True, name="allot-lease-renewals")
        self._thread.start()

    def schedule(self, lease: Lease, due: float, fn: Callable[[], None] | None = None) -> None:
        """Runs fn (default: the lease's next renewal step) at due, in a
        thread of its own, unless the lease stopped meanwhile."""
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (due, self._seq, lease, fn))
            if len(self._heap) > 1024:
                live = [e for e in self._heap if not e[2]._stop.is_set()]
                if len(live) < len(self._heap) // 2:
                    heapq.heapify(live)
                    self._heap = live
            if self._heap[0][1] == self._seq:
                self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][2]._stop.is_set():
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                _, _, lease, fn = heapq.heappop(self._heap)
            threading.Thread(target=fn or lease._step, daemon=True,
                             name=f"allot-lease-{'watch' if fn else 'renewal'}-{lease.lease_id}").start()


_renewer_lock = threading.Lock()
_renewer_instance: _Renewer | None = None


def _renewer() -> _Renewer:
    global _renewer_instance
    with _renewer_lock:
        if _renewer_instance is None:
            _renewer_instance = _Renewer()
        return _renewer_instance


def _ended(lease_id: str | None, state: str, reason: str) -> str:
    s = {"revoked": "revoked", "expired": "expired", "released": "released by someone else"}.get(
        state, "no longer held by the server")
    return s + (f" ({reason})" if reason else "")


class _LeaseInterrupt(BaseException):
    """Raised in the caller's thread when its lease is lost (strict). A
    BaseException so that `except Exception` in user code does not swallow it;
    the with block turns it into LeaseLostError."""


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = [ctypes.c_ulong, ctypes.py_object]
_set_async_exc.restype = ctypes.c_int


class ThreadInterrupter:
    """Interrupts a thread running a with block when its lease is lost: raises
    _LeaseInterrupt in it (at its next Python instruction; a thread blocked in
    a long C call gets it when the call returns), and undoes a pending one
    when the block ends first."""

    def __init__(self) -> None:
        self.ident = threading.get_ident()
        self._lock = threading.Lock()
        self._inside = True
        self.sent = False

    def interrupt(self, _err: AllotError) -> None:
        with self._lock:
            if not self._inside:
                return
            self.sent = True
            _set_async_exc(self.ident, _LeaseInterrupt)

    def leave(self) -> None:
        """Ends the block: no interruption from now on, and one still pending
        is cleared. Must be called in the interrupted thread."""
        while True:
            try:
                with self._lock:
                    self._inside = False
                    if self.sent:
                        _set_async_exc(self.ident, ctypes.py_object())
                return
            except _LeaseInterrupt:
                continue  # delivered before it could be cleared
