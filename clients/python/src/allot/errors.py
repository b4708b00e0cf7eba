"""Exceptions raised by the allot client.

Every error answer of the server (status 400 or more) is an :class:`APIError`,
or one of its subclasses chosen by the status and the server's stable
``code``. Prefect's two exceptions, :class:`ConcurrencySlotAcquisitionError`
and :class:`AcquireConcurrencySlotTimeoutError`, are raised by
``allot.concurrency`` exactly where Prefect raises them, with Prefect's texts.
"""

from __future__ import annotations

from typing import Any

__all__ = [
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
    "CODE_SLOTS_EXCEED_LIMIT",
    "CODE_NO_DECAY",
    "CODE_TEMPLATE_NOT_ACQUIRABLE",
    "CODE_NAME_TAKEN",
    "CODE_LIMIT_NOT_FOUND",
    "CODE_LEASE_NOT_FOUND",
    "CODE_INVALID_FIELD",
]

# Codes of the server's problem documents that callers may branch on.
CODE_SLOTS_EXCEED_LIMIT = "slots_exceed_limit"
CODE_NO_DECAY = "no_decay"
CODE_TEMPLATE_NOT_ACQUIRABLE = "template_not_acquirable"
CODE_NAME_TAKEN = "name_taken"
CODE_LIMIT_NOT_FOUND = "limit_not_found"
CODE_LEASE_NOT_FOUND = "lease_not_found"
CODE_INVALID_FIELD = "invalid_field"

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    410: "Gone",
    422: "Unprocessable Entity",
    423: "Locked",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class AllotError(Exception):
    """The base class of the client's own errors."""


class APIError(AllotError):
    """An error answer of the server: a problem document, or whatever else
    came back with a status of 400 or more."""

    def __init__(
        self,
        status: int,
        detail: str = "",
        *,
        code: str = "",
        field: str = "",
        limits: list[str] | None = None,
        request_id: str = "",
        retry_after: float | None = None,
        method: str = "",
        path: str = "",
    ) -> None:
        self.status = status
        """The HTTP status code."""
        self.code = code
        """The server's stable machine-readable code, e.g. ``limit_not_found``."""
        self.detail = detail or _REASONS.get(status, "")
        """What went wrong, for people."""
        self.field = field
        """The request field at fault, for validation errors."""
        self.limits = list(limits or [])
        """The limits at fault when a request can never be granted."""
        self.request_id = request_id
        """The X-Request-Id the client sent, to find the request in the server's log."""
        self.retry_after = retry_after
        """The server's Retry-After, in seconds, if it sent one."""
        self.method = method
        self.path = path
        super().__init__(str(self))

    def __str__(self) -> str:
        s = f"{self.status} {_REASONS.get(self.status, '')}".rstrip()
        if self.code:
            s += f" ({self.code})"
        if self.detail:
            s += f": {self.detail}"
        if self.field:
            s += f" (field {self.field})"
        return s

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.status, self.detail, self.__dict__.copy()))


def _rebuild(cls: type[APIError], status: int, detail: str, state: dict[str, Any]) -> APIError:
    e = cls.__new__(cls)
    e.__dict__.update(state)
    Exception.__init__(e, str(e))
    return e


class NotFoundError(APIError):
    """A 404 answer."""


class LimitNotFoundError(NotFoundError):
    """A limit that does not exist (404 ``limit_not_found``)."""


class LeaseNotFoundError(APIError):
    """A 410 answer: the lease expired or was released."""


class LockedError(APIError):
    """A 423 answer: the slots were not free. ``retry_after`` says when to
    try again."""


class ConflictError(APIError):
    """A 409 answer: the name is taken (or a run's state is final)."""


class InvalidError(APIError):
    """A 400 or 422 answer: a malformed or hopeless request
    (``slots_exceed_limit``, ``no_decay``, …)."""


class UnavailableError(APIError):
    """A 503 answer: the server cannot answer now."""


class AllotConnectionError(AllotError, ConnectionError):
    """The server could not be reached (after the client's retries)."""


class LeaseLostError(AllotError):
    """A lease (or a run's slots) ended without being released: the server
    answered a renewal with 410, or no renewal succeeded before the lease
    expired, or (strict) a renewal failed. Work that must not overlap with
    the next holder's has to stop."""


class RunNotStartedError(AllotError):
    """A run that reached a final state before it could run: ``Cancelled``
    (``cancel_new`` and its limits were full) or ``Failed`` (a limit of 0)."""

    def __init__(self, run_id: str, state: str, message: str = "") -> None:
        self.run_id = run_id
        self.state = state
        self.message = message
        text = f"run {run_id} not started: {state}"
        if message:
            text += f": {message}"
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id, self.state, self.message))


class ConcurrencySlotAcquisitionError(AllotError):
    """Raised when an unhandlable occurs while acquiring concurrency slots
    (Prefect's exception of the same name)."""


class AcquireConcurrencySlotTimeoutError(AllotError, TimeoutError):
    """Raised when acquiring a concurrency slot times out (Prefect's exception
    of the same name; a ``TimeoutError``)."""


def error_for(status: int, code: str) -> type[APIError]:
    """The APIError class of an answer."""
    if status == 404:
        return LimitNotFoundError if code == CODE_LIMIT_NOT_FOUND else NotFoundError
    if status == 410 or code == CODE_LEASE_NOT_FOUND:
        return LeaseNotFoundError
    if status == 423:
        return LockedError
    if status == 409:
        return ConflictError
    if status in (400, 422):
        return InvalidError
    if status == 503:
        return UnavailableError
    return APIError
