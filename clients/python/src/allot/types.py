"""The server's objects, as the client returns them."""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = [
    "Holder",
    "LimitRef",
    "Limit",
    "Holding",
    "Waiter",
    "TagLimit",
    "LabelLimit",
    "ResetResult",
    "StateEntry",
    "Run",
    "RunState",
    "FINAL_STATES",
]

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def parse_time(v: Any) -> _dt.datetime | None:
    """Reads an RFC 3339 timestamp as the server writes it (UTC, nanoseconds)."""
    if not isinstance(v, str) or not v:
        return None
    m = _STAMP.match(v)
    if m is None:
        return None
    base, frac, zone = m.groups()
    t = _dt.datetime.fromisoformat(base)
    if frac:
        t = t.replace(microsecond=int(frac[:6].ljust(6, "0")))
    if zone in (None, "Z"):
        return t.replace(tzinfo=_dt.timezone.utc)
    sign = 1 if zone[0] == "+" else -1
    off = _dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return t.replace(tzinfo=_dt.timezone(sign * off))


def _s(d: Mapping[str, Any], k: str) -> str:
    v = d.get(k)
    return v if isinstance(v, str) else ""


def _i(d: Mapping[str, Any], k: str) -> int:
    v = d.get(k)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def _f(d: Mapping[str, Any], k: str) -> float:
    v = d.get(k)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0


def _list(d: Mapping[str, Any], k: str) -> list[Any]:
    v = d.get(k)
    return v if isinstance(v, list) else []


@dataclass(frozen=True)
class Holder:
    """Who holds a lease or waits for one: a ``type`` ("process", "task_run",
    "flow_run", "deployment"), an ``id``, and free-form metadata. Prefect's
    ``ConcurrencyLeaseHolder`` (anything with ``type`` and ``id``) is accepted
    wherever a Holder is."""

    type: str
    id: str
    metadata: Mapping[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "id": self.id}
        if self.metadata:
            d["metadata"] = dict(self.metadata)
        return d

    @classmethod
    def coerce(cls, v: Any) -> Holder:
        """A Holder from a Holder, a mapping or an object with type and id."""
        if isinstance(v, Holder):
            return v
        if isinstance(v, Mapping):
            return cls(str(v["type"]), str(v["id"]), v.get("metadata"))
        t, i = getattr(v, "type", None), getattr(v, "id", None)
        if t is None or i is None:
            raise TypeError(f"holder must have a type and an id, not {v!r}")
        return cls(str(getattr(t, "value", t)), str(i), getattr(v, "metadata", None))

    @classmethod
    def from_json(cls, d: Any) -> Holder | None:
        if not isinstance(d, Mapping):
            return None
        md = d.get("metadata")
        return cls(_s(d, "type"), _s(d, "id"), dict(md) if isinstance(md, Mapping) else None)


@dataclass(frozen=True)
class LimitRef:
    """A limit a request named that exists."""

    id: str
    name: str
    limit: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LimitRef:
        return cls(_s(d, "id"), _s(d, "name"), _i(d, "limit"))


@dataclass(frozen=True)
class Holding:
    """A lease holding slots of a limit."""

    lease_id: str
    holder: Holder | None
    slots: int
    since: _dt.datetime | None
    expires: _dt.datetime | None
    fencing_token: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Holding:
        return cls(_s(d, "lease_id"), Holder.from_json(d.get("holder")), _i(d, "slots"),
                   parse_time(d.get("since")), parse_time(d.get("expires")), _i(d, "fencing_token"))


@dataclass(frozen=True)
class Waiter:
    """A request in line for slots of a limit (position 1 is next)."""

    position: int
    slots: int
    mode: str
    holder: Holder | None
    waiting_since: _dt.datetime | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Waiter:
        return cls(_i(d, "position"), _i(d, "slots"), _s(d, "mode"), Holder.from_json(d.get("holder")),
                   parse_time(d.get("waiting_since")))


@dataclass(frozen=True)
class Limit:
    """A named counter of slots, as the server reports it. ``holders`` and
    ``waiters`` are filled by get_limit and create_limit, not by list_limits."""

    id: str
    name: str
    limit: int
    active: bool
    active_slots: int
    denied_slots: int
    slot_decay_per_second: float
    avg_slot_occupancy_seconds: float
    template: bool
    fencing_token: int
    waiting: int
    created: _dt.datetime | None
    updated: _dt.datetime | None
    holders: list[Holding] = field(default_factory=list)
    waiters: list[Waiter] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Limit:
        return cls(
            id=_s(d, "id"), name=_s(d, "name"), limit=_i(d, "limit"), active=bool(d.get("active")),
            active_slots=_i(d, "active_slots"), denied_slots=_i(d, "denied_slots"),
            slot_decay_per_second=_f(d, "slot_decay_per_second"),
            avg_slot_occupancy_seconds=_f(d, "avg_slot_occupancy_seconds"),
            template=bool(d.get("template")), fencing_token=_i(d, "fencing_token"),
            waiting=_i(d, "waiting"), created=parse_time(d.get("created")),
            updated=parse_time(d.get("updated")),
            holders=[Holding.from_json(h) for h in _list(d, "holders") if isinstance(h, Mapping)],
            waiters=[Waiter.from_json(w) for w in _list(d, "waiters") if isinstance(w, Mapping)],
        )


@dataclass(frozen=True)
class TagLimit:
    """The limit of a tag: how many task runs with the tag may run at once
    (the limit ``tag:{tag}``). ``active_slots`` are the holding task runs' ids."""

    id: str
    tag: str
    concurrency_limit: int
    active_slots: list[str]
    active: bool
    fencing_token: int
    waiting: int
    created: _dt.datetime | None
    updated: _dt.datetime | None
    holders: list[Holding] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TagLimit:
        return cls(_s(d, "id"), _s(d, "tag"), _i(d, "concurrency_limit"),
                   [str(x) for x in _list(d, "active_slots")], bool(d.get("active")),
                   _i(d, "fencing_token"), _i(d, "waiting"), parse_time(d.get("created")),
                   parse_time(d.get("updated")),
                   [Holding.from_json(h) for h in _list(d, "holders") if isinstance(h, Mapping)])


@dataclass(frozen=True)
class LabelLimit:
    """The limit of a label: how many flow runs with the label may run at
    once (the limit ``label:{label}``)."""

    id: str
    label: str
    concurrency_limit: int
    active_slots: list[str]
    active: bool
    fencing_token: int
    waiting: int
    created: _dt.datetime | None
    updated: _dt.datetime | None
    holders: list[Holding] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LabelLimit:
        return cls(_s(d, "id"), _s(d, "label"), _i(d, "concurrency_limit"),
                   [str(x) for x in _list(d, "active_slots")], bool(d.get("active")),
                   _i(d, "fencing_token"), _i(d, "waiting"), parse_time(d.get("created")),
                   parse_time(d.get("updated")),
                   [Holding.from_json(h) for h in _list(d, "holders") if isinstance(h, Mapping)])


@dataclass(frozen=True)
class ResetResult:
    """What resetting a tag or label limit did."""

    revoked: int
    granted: list[str]
    refused: list[str]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ResetResult:
        return cls(_i(d, "revoked"), [str(x) for x in _list(d, "granted")],
                   [str(x) for x in _list(d, "refused")])


class RunState:
    """Run states, as the server names them."""

    PENDING = "Pending"
    AWAITING_CONCURRENCY_SLOT = "AwaitingConcurrencySlot"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CRASHED = "Crashed"
    CANCELLED = "Cancelled"


FINAL_STATES = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CRASHED, RunState.CANCELLED})


@dataclass(frozen=True)
class StateEntry:
    """A state a run entered, with when and why."""

    state: str
    timestamp: _dt.datetime | None
    message: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> StateEntry:
        return cls(_s(d, "state"), parse_time(d.get("timestamp")), _s(d, "message"))


@dataclass(frozen=True)
class Run:
    """A task run or flow run."""

    id: str
    kind: str
    name: str
    tags: list[str]
    parent_id: str | None
    state: str
    state_history: list[StateEntry]
    lease_id: str | None
    fencing_token: int
    lease_duration: float

    @property
    def message(self) -> str:
        """The message of the run's latest state."""
        return self.state_history[-1].message if self.state_history else ""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Run:
        return cls(_s(d, "id"), _s(d, "kind"), _s(d, "name"), [str(t) for t in _list(d, "tags")],
                   d.get("parent_id") or None, _s(d, "state"),
                   [StateEntry.from_json(e) for e in _list(d, "state_history") if isinstance(e, Mapping)],
                   d.get("lease_id") or None, _i(d, "fencing_token"), _f(d, "lease_duration"))
