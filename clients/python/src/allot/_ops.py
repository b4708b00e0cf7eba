"""The client's calls, written once as generators that yield the requests
(and pauses) they need and receive the answers: Client runs them with the
sync transport, AsyncClient with the asyncio one."""

from __future__ import annotations

import logging
import math
import random
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any, Generator, Iterable, Sequence, TypeVar, Union

from ._config import Config, default_holder
from ._transport import Request
from .errors import (
    AcquireConcurrencySlotTimeoutError,
    AllotConnectionError,
    APIError,
    ConcurrencySlotAcquisitionError,
    ConflictError,
    LimitNotFoundError,
    LockedError,
)
from .types import Holder, LabelLimit, Limit, LimitRef, ResetResult, Run, TagLimit

log = logging.getLogger("allot")

T = TypeVar("T")


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Union[Request, Sleep]
Op = Generator[Step, Any, T]

V2 = "/v2/concurrency_limits"
MAX_PAGE = 200
ENSURE_TRIES = 5
DEFAULT_LEASE_DURATION = 300.0
DEFAULT_RUN_LEASE_DURATION = 60.0
MAX_STATE_MESSAGE = 2048


def names_list(names: str | Iterable[str] | None) -> list[str]:
    """Prefect's rule: a single string is one name."""
    if not names:
        return []
    if isinstance(names, str):
        return [names]
    return [str(n) for n in names]


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def check_acquire_args(occupy: int, lease_duration: float) -> None:
    if not isinstance(occupy, int) or occupy < 1:
        raise ValueError(f"occupy={occupy!r}: slots must be at least 1")
    if not (lease_duration > 0 and math.isfinite(lease_duration)):
        raise ValueError(f"lease_duration={lease_duration!r} must be positive")


@dataclass
class Grant:
    lease_id: str | None
    limits: list[LimitRef]
    fencing_token: int
    granted_at: float  # time.monotonic() from which the lease's duration counts


CANCEL_TICKET_TIMEOUT = 2.0


def new_ticket() -> str:
    """An acquisition's idempotency key: the same on every retry and
    reconnection of one call."""
    return uuid.uuid4().hex


def transient(err: BaseException) -> bool:
    """A server that cannot be reached now: a connection error (after the
    transport's retries), or 502, 503, 504."""
    if isinstance(err, APIError):
        return err.status in (502, 503, 504)
    return isinstance(err, AllotConnectionError)


def wait_in_line(cfg: Config, path: str, body: dict[str, Any], timeout_seconds: float | None,
                 max_retries: int | None, try_: bool, sent: list[float]) -> Op[Any]:
    """Sends body to path until granted, refused with anything but 423, or
    time runs out. The request waits in line on the server for what is left
    of timeout_seconds (at most the long poll); a server that answers 423 at
    once (one that does not let requests wait, like Prefect's) is asked again
    after its Retry-After. A server that cannot be reached while the request
    waits is asked again with jittered backoff until it answers or time runs
    out: body's ticket takes the old place in line again. A caller that gives
    up (time out, cancelled, interrupted) cancels the ticket, so that its
    place is let go at once. Appends the monotonic time each attempt was sent
    to sent."""
    deadline = None if timeout_seconds is None else time.monotonic() + max(timeout_seconds, 0)
    fail_fast = try_ or (max_retries is not None and max_retries <= 0 and timeout_seconds is None)
    ticket = body.get("ticket")

    def hold() -> float:
        if fail_fast:
            return 0.0
        h = cfg.long_poll
        if deadline is not None:
            h = min(h, deadline - time.monotonic())
        return max(h, 0.0)

    def timed_out(cause: BaseException) -> AcquireConcurrencySlotTimeoutError:
        e = AcquireConcurrencySlotTimeoutError(
            f"Attempt to acquire concurrency slots timed out after {timeout_seconds} second(s)")
        e.__cause__ = cause
        return e

    retries = 0
    reconnects = 0
    try:
        while True:
            start = time.monotonic()
            asked = hold()
            sent.append(start)
            try:
                return (yield Request("POST", path, body, (200,), hold=hold))
            except LockedError as locked:
                now = time.monotonic()
                if try_:
                    raise
                if deadline is not None and now >= deadline:
                    raise timed_out(locked) from locked
                if max_retries is not None and retries >= max_retries:
                    raise
                retries += 1
                reconnects = 0
                if now - start < asked / 2 or asked == 0:
                    # Not kept in line: wait as the server says.
                    pause = max(locked.retry_after or 0.0, 0.01)
                    if deadline is not None:
                        pause = min(pause, max(deadline - now, 0.0))
                    log.debug("allot: unable to acquire concurrency slot; retrying in %.3f second(s)", pause)
                    yield Sleep(pause)
            except (AllotConnectionError, APIError) as err:
                if try_ or not transient(err):
                    raise
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise timed_out(err) from err
                reconnects += 1
                pause = _reconnect_pause(cfg, reconnects)
                if deadline is not None:
                    pause = min(pause, max(deadline - now, 0.0))
                log.warning("allot: server unreachable while waiting in line; reconnecting to keep the place "
                            "(reconnect %d, in %.2fs): %s", reconnects, pause, err)
                yield Sleep(pause)
    except GeneratorExit:
        raise
    except BaseException as e:
        gave_up = not isinstance(e, Exception) or isinstance(e, AcquireConcurrencySlotTimeoutError) or transient(e)
        if ticket and not try_ and gave_up:
            try:
                yield Request("DELETE", f"{V2}/tickets/{q(str(ticket))}", None, (200, 204),
                              once=CANCEL_TICKET_TIMEOUT)
            except Exception as ce:  # noqa: BLE001
                log.debug("allot: cancel of a given-up acquisition failed; the server lets its place go "
                          "after its grace: %s", ce)
        raise


def _reconnect_pause(cfg: Config, n: int) -> float:
    d = min(max(cfg.backoff, 0.05) * (2 ** min(n - 1, 30)), 10.0)
    return d / 2 + random.uniform(0, d / 2)


def missing(names: list[str], strict: bool) -> None:
    """An acquisition none of whose limits exist, as Prefect handles it."""
    if strict:
        raise ConcurrencySlotAcquisitionError(
            f"Concurrency limits {names!r} must be created before acquiring slots")
    log.warning(f"Concurrency limits {names!r} do not exist - skipping acquisition.")


def acquire(cfg: Config, names: list[str], occupy: int, timeout_seconds: float | None,
            max_retries: int | None, lease_duration: float, holder: Any, strict: bool,
            try_: bool = False) -> Op[Grant]:
    check_acquire_args(occupy, lease_duration)
    if not names:
        return Grant(None, [], 0, time.monotonic())
    h = Holder.coerce(holder) if holder is not None else (cfg.holder or default_holder())
    body = {"names": names, "slots": occupy, "lease_duration": lease_duration, "holder": h.to_json(),
            "ticket": new_ticket()}
    sent: list[float] = []
    g = yield from wait_in_line(cfg, V2 + "/increment-with-lease", body, timeout_seconds,
                                max_retries, try_, sent)
    limits = [LimitRef.from_json(x) for x in (g.get("limits") or [])]
    lease_id = g.get("lease_id") or None
    if not limits:
        if lease_id:
            # Nothing is held; give the empty lease back rather than leave it to expire.
            try:
                yield Request("POST", V2 + "/decrement-with-lease", {"lease_id": lease_id}, (200, 204))
            except Exception as e:  # noqa: BLE001
                log.debug("allot: release of an empty lease %s failed: %s", lease_id, e)
        missing(names, strict)
        return Grant(None, [], 0, time.monotonic())
    waited = g.get("waited_seconds") or 0.0
    return Grant(lease_id, limits, int(g.get("fencing_token") or 0), sent[-1] + float(waited))


def release(lease_id: str) -> Op[None]:
    yield Request("POST", V2 + "/decrement-with-lease", {"lease_id": lease_id}, (200, 204))


def renew_request(lease_id: str, lease_duration: float, deadline: float | None) -> Request:
    return Request("POST", f"{V2}/leases/{q(lease_id)}/renew", {"lease_duration": lease_duration},
                   (200, 204), deadline=deadline)


WATCH_POLL = 60.0


def watch_request(lease_id: str, wait: float) -> Request:
    return Request("GET", f"{V2}/leases/{q(lease_id)}/watch?timeout_seconds={wait:g}", wait=wait)


def rate_limit(cfg: Config, names: list[str], occupy: int, timeout_seconds: float | None,
               max_retries: int | None, strict: bool) -> Op[list[LimitRef]]:
    check_acquire_args(occupy, 1)
    if not names:
        return []
    got = yield from wait_in_line(cfg, V2 + "/increment",
                                  {"names": names, "slots": occupy, "mode": "rate_limit",
                                   "ticket": new_ticket()},
                                  timeout_seconds, max_retries, False, [])
    refs = [LimitRef.from_json(x) for x in (got or [])]
    if not refs:
        missing(names, strict)
    return refs


# Limits.

def create_limit(name: str, limit: int, active: bool, slot_decay_per_second: float,
                 active_slots: int, denied_slots: int) -> Op[Limit]:
    body: dict[str, Any] = {"name": name, "limit": limit, "active": active}
    if active_slots:
        body["active_slots"] = active_slots
    if denied_slots:
        body["denied_slots"] = denied_slots
    if slot_decay_per_second:
        body["slot_decay_per_second"] = slot_decay_per_second
    return Limit.from_json((yield Request("POST", V2 + "/", body, (200, 201))))


def get_limit(name_or_id: str) -> Op[Limit]:
    return Limit.from_json((yield Request("GET", f"{V2}/{q(name_or_id)}")))


def list_limits(offset: int, limit: int) -> Op[list[Limit]]:
    got = yield Request("POST", V2 + "/filter", {"offset": offset, "limit": limit})
    return [Limit.from_json(x) for x in got or []]


def update_limit(name_or_id: str, changes: dict[str, Any]) -> Op[None]:
    body = {k: v for k, v in changes.items() if v is not None}
    yield Request("PATCH", f"{V2}/{q(name_or_id)}", body, (200, 204))


def delete_limit(name_or_id: str) -> Op[None]:
    yield Request("DELETE", f"{V2}/{q(name_or_id)}", None, (200, 204))


def ensure_limit(name: str, limit: int) -> Op[Limit]:
    """Creates the limit, or brings an existing one to limit slots; safe when
    many processes race."""
    err: Exception | None = None
    for _ in range(ENSURE_TRIES):
        try:
            return (yield from create_limit(name, limit, True, 0, 0, 0))
        except ConflictError as e:
            err = e
        try:
            got = yield from get_limit(name)
            if got.limit == limit:
                return got
            yield from update_limit(name, {"limit": limit})
            return (yield from get_limit(name))
        except LimitNotFoundError as e:
            err = e  # deleted since: create it again
            continue
    assert err is not None
    raise err


# Tag and label limits.

@dataclass(frozen=True)
class Keyed:
    base: str
    field: str


TAGS = Keyed("/concurrency_limits", "tag")
LABELS = Keyed("/label_limits", "label")


def _keyed_parse(a: Keyed, d: Any) -> Any:
    return TagLimit.from_json(d) if a is TAGS else LabelLimit.from_json(d)


def keyed_create(a: Keyed, key: str, limit: int) -> Op[Any]:
    got = yield Request("POST", a.base + "/", {a.field: key, "concurrency_limit": limit}, (200, 201))
    return _keyed_parse(a, got)


def keyed_get(a: Keyed, key: str) -> Op[Any]:
    return _keyed_parse(a, (yield Request("GET", f"{a.base}/{a.field}/{q(key)}")))


def keyed_list(a: Keyed, offset: int, limit: int) -> Op[list[Any]]:
    got = yield Request("POST", a.base + "/filter", {"offset": offset, "limit": limit})
    return [_keyed_parse(a, x) for x in got or []]


def keyed_reset(a: Keyed, key: str, slot_override: Sequence[str] | None) -> Op[ResetResult]:
    got = yield Request("POST", f"{a.base}/{a.field}/{q(key)}/reset",
                        {"slot_override": list(slot_override or [])})
    return ResetResult.from_json(got or {})


def keyed_delete(a: Keyed, key: str) -> Op[None]:
    yield Request("DELETE", f"{a.base}/{a.field}/{q(key)}", None, (200, 204))


# Runs.

def get_run(run_id: str) -> Op[Run]:
    return Run.from_json((yield Request("GET", f"/runs/{q(run_id)}")))


def start_run(cfg: Config, kind: str, name: str, tags: list[str], parent_id: str | None,
              cancel_new: bool, lease_duration: float) -> Op[Run]:
    """Creates the run and asks it to run; returns it Running or final. The
    caller ends a run that is neither (it was interrupted) as Cancelled."""
    # The run's id is chosen here, so that a creation retried after a lost
    # answer names the same run (the server answers it again).
    body: dict[str, Any] = {"id": str(uuid.uuid4()), "kind": kind, "name": name, "tags": tags,
                            "lease_duration": lease_duration}
    if parent_id:
        body["parent_id"] = parent_id
    if cancel_new:
        body["collision_strategy"] = "cancel_new"
    run = Run.from_json((yield Request("POST", "/runs/", body, (200, 201))))
    return run


def ask_to_run(cfg: Config, run: Run) -> Op[Run]:
    run = Run.from_json((yield Request("POST", f"/runs/{q(run.id)}/set_state", {"state": "Running"})))
    reconnects = 0
    while run.state != "Running" and not run.final:
        hold = lambda: cfg.long_poll  # noqa: E731
        try:
            run = Run.from_json((yield Request("POST", f"/runs/{q(run.id)}/wait", {"state": "Running"},
                                               hold=hold)))
            reconnects = 0
        except (AllotConnectionError, APIError) as err:
            if not transient(err):
                raise
            # A waiting run is durable on the server: ask again until it answers.
            reconnects += 1
            pause = _reconnect_pause(cfg, reconnects)
            log.warning("allot: server unreachable while run %s waits for its slots; reconnecting "
                        "(reconnect %d, in %.2fs): %s", run.id, reconnects, pause, err)
            yield Sleep(pause)
    return run


def heartbeat_request(run_id: str) -> Request:
    return Request("POST", f"/runs/{q(run_id)}/heartbeat", None, (200, 204))


def finish_run(run_id: str, state: str, message: str) -> Op[None]:
    if len(message) > MAX_STATE_MESSAGE:
        message = message[: MAX_STATE_MESSAGE - 1] + "…"
    body: dict[str, Any] = {"state": state}
    if message:
        body["message"] = message
    yield Request("POST", f"/runs/{q(run_id)}/set_state", body)
