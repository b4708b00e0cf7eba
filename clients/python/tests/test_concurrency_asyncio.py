"""allot.concurrency.asyncio against a real server."""

from __future__ import annotations

import asyncio
import time
import unittest

import allot
from allot.concurrency.asyncio import (
    AcquireConcurrencySlotTimeoutError,
    ConcurrencySlotAcquisitionError,
    concurrency,
    rate_limit,
)

from .support import name, need_server, raw


class ConcurrencyAsyncio(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        need_server(self)
        self.c = allot.AsyncClient()

    async def asyncTearDown(self) -> None:
        await self.c.aclose()

    async def limit(self, n: int = 1, **kw: object) -> str:
        nm = name()
        await self.c.create_limit(nm, n, **kw)  # type: ignore[arg-type]
        return nm

    async def eventually(self, cond, timeout: float = 30.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not await cond():
            if time.monotonic() > deadline:
                self.fail(f"{what} not reached within {timeout}s")
            await asyncio.sleep(0.02)

    async def test_acquire_and_release(self) -> None:
        nm = await self.limit(2)
        async with concurrency(nm, occupy=2) as lease:
            self.assertEqual((await self.c.get_limit(nm)).active_slots, 2)
            self.assertGreater(lease.fencing_token, 0)
        self.assertEqual((await self.c.get_limit(nm)).active_slots, 0)

    async def test_timeout(self) -> None:
        nm = await self.limit(1)
        async with concurrency(nm):
            with self.assertRaises(AcquireConcurrencySlotTimeoutError) as cm:
                async with concurrency(nm, timeout_seconds=0.3):
                    self.fail("ran without its slot")
        self.assertEqual(str(cm.exception), "Attempt to acquire concurrency slots timed out after 0.3 second(s)")

    async def test_missing_strict_and_not(self) -> None:
        nm = name("missing")
        with self.assertLogs("allot", level="WARNING") as logs:
            async with concurrency(nm):
                pass
        self.assertIn("do not exist - skipping acquisition.", logs.output[0])
        with self.assertRaises(ConcurrencySlotAcquisitionError) as cm:
            async with concurrency(nm, strict=True):
                pass
        self.assertIn("must be created before acquiring slots", str(cm.exception))

    async def test_rate_limit(self) -> None:
        nm = await self.limit(1, slot_decay_per_second=20.0)
        refs = await rate_limit(nm)
        self.assertEqual([r.name for r in refs], [nm])
        await rate_limit(nm, timeout_seconds=2)
        no_decay = await self.limit(1)
        with self.assertRaises(ConcurrencySlotAcquisitionError):
            await rate_limit(no_decay)

    async def test_cancelled_waiter_leaves_the_line(self) -> None:
        nm = await self.limit(1)
        holder = await self.c.acquire(nm)

        async def wait() -> None:
            async with concurrency(nm):
                self.fail("ran without its slot")

        task = asyncio.create_task(wait())

        async def waiting(n: int) -> bool:
            return (await self.c.get_limit(nm)).waiting == n

        await self.eventually(lambda: waiting(1), what="waiter in line")
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        await self.eventually(lambda: waiting(0), timeout=10, what="waiter gone")
        await self.c.release(holder)
        self.assertEqual((await self.c.get_limit(nm)).active_slots, 0, "no grant to the cancelled waiter")

    async def test_blocked_event_loop_still_renews(self) -> None:
        nm = await self.limit(1)
        asyncio.get_running_loop().slow_callback_duration = 60  # the block below is on purpose
        async with concurrency(nm, lease_duration=3) as lease:
            time.sleep(5)  # the event loop is blocked past the 3 s lease: only a thread can renew
            self.assertFalse(lease.lost.is_set())
            holders = (await self.c.get_limit(nm)).holders
            self.assertEqual([h.lease_id for h in holders], [lease.lease_id])

    async def test_lost_lease_strict_cancels_the_task(self) -> None:
        nm = await self.limit(1)
        finished = False
        with self.assertLogs("allot", level="WARNING"):
            with self.assertRaises(allot.LeaseLostError) as cm:
                async with concurrency(nm, lease_duration=3, strict=True) as lease:
                    raw("POST", "/v2/concurrency_limits/decrement-with-lease", {"lease_id": lease.lease_id})
                    await asyncio.sleep(10)
                    finished = True
        self.assertFalse(finished)
        self.assertIn("Terminating execution to prevent over-allocation", str(cm.exception))
        await asyncio.sleep(0)  # the task is not left cancelled
        task = asyncio.current_task()
        assert task is not None
        if hasattr(task, "cancelling"):
            self.assertEqual(task.cancelling(), 0)

    async def test_revoked_lease_strict_cancels_at_once(self) -> None:
        nm = await self.limit(1)
        finished = False
        with self.assertLogs("allot", level="WARNING"):
            with self.assertRaises(allot.LeaseLostError):
                async with concurrency(nm, lease_duration=300, strict=True) as lease:
                    await asyncio.sleep(1.5)  # the watch starts after a second
                    raw("POST", "/v2/concurrency_limits/decrement-with-lease", {"lease_id": lease.lease_id})
                    await asyncio.sleep(10)
                    finished = True
        self.assertFalse(finished)

    async def test_lost_lease_not_strict_warns(self) -> None:
        nm = await self.limit(1)
        with self.assertLogs("allot", level="WARNING") as logs:
            async with concurrency(nm, lease_duration=3) as lease:
                raw("POST", "/v2/concurrency_limits/decrement-with-lease", {"lease_id": lease.lease_id})
                deadline = time.monotonic() + 5
                while not lease.lost.is_set() and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                self.assertTrue(lease.lost.is_set())
        self.assertTrue(any("Execution will continue, but concurrency limits may be exceeded." in line
                            for line in logs.output))

    async def test_fifo(self) -> None:
        nm = await self.limit(1)
        holder = await self.c.acquire(nm)
        order: list[int] = []

        async def worker(i: int) -> None:
            async with concurrency(nm):
                order.append(i)

        tasks = []
        for i in range(4):
            tasks.append(asyncio.create_task(worker(i)))

            async def waiting(n: int = i + 1) -> bool:
                return (await self.c.get_limit(nm)).waiting == n

            await self.eventually(waiting, what=f"waiter {i}")
        await self.c.release(holder)
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        self.assertEqual(order, [0, 1, 2, 3])


if __name__ == "__main__":
    unittest.main()
