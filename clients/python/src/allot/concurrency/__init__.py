"""Prefect's ``prefect.concurrency`` API over allot: replace
``from prefect.concurrency.sync import concurrency, rate_limit`` with
``from allot.concurrency.sync import concurrency, rate_limit`` (and
``.asyncio`` for the async versions)."""

from ..errors import AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError, LeaseLostError

__all__ = ["AcquireConcurrencySlotTimeoutError", "ConcurrencySlotAcquisitionError", "LeaseLostError"]
