"""A server that stops while a lease is held: the lease is lost, and the
caller is interrupted (strict) or warned. These tests run their own server
(the built binary), since they kill it."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import unittest

import allot
from allot.concurrency import asyncio as aconcurrency
from allot.concurrency.sync import concurrency

from .support import OwnServer, eventually, name


class ServerStoppedSync(unittest.TestCase):
    def setUp(self) -> None:
        self.srv = OwnServer()
        self.addCleanup(self.srv.close)
        self.c = allot.Client(self.srv.url, retries=1, backoff=0.05)
        self.addCleanup(self.c.close)

    def test_strict_interrupts_the_caller(self) -> None:
        nm = name()
        self.c.create_limit(nm, 1)
        finished = False
        start = time.monotonic()
        with self.assertLogs("allot", level="WARNING"):
            with self.assertRaises(allot.LeaseLostError):
                with concurrency(nm, lease_duration=3, strict=True, client=self.c) as lease:
                    self.srv.stop()
                    while time.monotonic() - start < 15:
                        time.sleep(0.01)
                    finished = True
        self.assertFalse(finished, "the block went on after its lease was lost")
        self.assertTrue(lease.lost.is_set())
        self.assertLess(time.monotonic() - start, 4, "strict: lost at the first failed renewal")

    def test_not_strict_warns_at_expiry(self) -> None:
        nm = name()
        self.c.create_limit(nm, 1)
        with self.assertLogs("allot", level="WARNING") as logs:
            with concurrency(nm, lease_duration=3, client=self.c) as lease:
                self.srv.stop()
                self.assertTrue(lease.lost.wait(8))
                # Not interrupted: the block goes on, warned.
        self.assertTrue(any("Execution will continue, but concurrency limits may be exceeded." in line
                            for line in logs.output), logs.output)
        self.assertTrue(any("will try again" in line for line in logs.output), "renewals retried first")


class ServerRestarted(unittest.TestCase):
    def test_waiters_keep_their_places_across_a_restart(self) -> None:
        srv = OwnServer()
        self.addCleanup(srv.close)
        c = allot.Client(srv.url, retries=1, backoff=0.05)
        self.addCleanup(c.close)
        # The first waiter comes back slowly, the second at once: without
        # tickets the second would be first in line after the restart.
        slow = allot.Client(srv.url, retries=0, backoff=1.5)
        self.addCleanup(slow.close)
        nm = name()
        c.create_limit(nm, 1)
        holder = c.acquire(nm, lease_duration=60)
        order: list[str] = []
        errors: list[BaseException] = []

        def waiter(who: str, client: allot.Client) -> None:
            try:
                with concurrency(nm, timeout_seconds=60, client=client):
                    order.append(who)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        first = threading.Thread(target=waiter, args=("first", slow))
        first.start()
        eventually(lambda: c.get_limit(nm).waiting == 1, what="first waiter in line")
        second = threading.Thread(target=waiter, args=("second", c))
        second.start()
        eventually(lambda: c.get_limit(nm).waiting == 2, what="second waiter in line")
        with self.assertLogs("allot", level="WARNING") as logs:
            srv.stop()
            srv.start()
            eventually(lambda: any("reconnecting to keep the place" in line for line in logs.output),
                       what="the slow waiter reconnects")
            c.release(holder)
            first.join(15)
            second.join(15)
        self.assertEqual(errors, [])
        self.assertEqual(order, ["first", "second"], "the first kept its place")


    def test_waiting_run_rides_out_a_restart(self) -> None:
        srv = OwnServer()
        self.addCleanup(srv.close)
        c = allot.Client(srv.url, retries=0, backoff=0.2)
        self.addCleanup(c.close)
        tag = name("tag")
        c.create_tag_limit(tag, 1)
        release = threading.Event()
        ran: list[str] = []
        errors: list[BaseException] = []

        def holder() -> None:
            with c.task_run("holder", tags=[tag]):
                release.wait(30)

        def waiter() -> None:
            try:
                with c.task_run("waiter", tags=[tag]) as run:
                    ran.append(run.id)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        h = threading.Thread(target=holder)
        h.start()
        eventually(lambda: len(c.get_tag_limit(tag).active_slots) == 1, what="holder running")
        w = threading.Thread(target=waiter)
        w.start()
        eventually(lambda: c.get_tag_limit(tag).waiting == 1, what="run waiting")
        with self.assertLogs("allot", level="WARNING") as logs:
            srv.stop()
            srv.start()
            eventually(lambda: any("reconnecting" in line for line in logs.output), what="the run reconnects")
            release.set()
            h.join(15)
            w.join(15)
        self.assertEqual(errors, [])
        self.assertEqual(len(ran), 1)
        self.assertEqual(c.get_run(ran[0]).state, "Completed")


class ServerHung(unittest.TestCase):
    def test_lost_at_expiry_not_after_the_request_timeout(self) -> None:
        srv = OwnServer()
        self.addCleanup(srv.close)
        c = allot.Client(srv.url, retries=1, backoff=0.05)
        self.addCleanup(c.close)
        nm = name()
        c.create_limit(nm, 1)
        with self.assertLogs("allot", level="WARNING"):
            with concurrency(nm, lease_duration=3, client=c) as lease:
                start = time.monotonic()
                srv.proc.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
                try:
                    self.assertTrue(lease.lost.wait(8), "lost by its expiry")
                    self.assertLess(time.monotonic() - start, 5)
                finally:
                    srv.proc.send_signal(signal.SIGCONT)


class ServerStoppedAsync(unittest.IsolatedAsyncioTestCase):
    async def test_strict_cancels_the_task(self) -> None:
        asyncio.get_running_loop().slow_callback_duration = 5  # stopping the server blocks briefly
        srv = OwnServer()
        self.addCleanup(srv.close)
        async with allot.AsyncClient(srv.url, retries=1, backoff=0.05) as c:
            nm = name()
            await c.create_limit(nm, 1)
            finished = False
            with self.assertLogs("allot", level="WARNING"):
                with self.assertRaises(allot.LeaseLostError):
                    async with aconcurrency.concurrency(nm, lease_duration=3, strict=True, client=c) as lease:
                        srv.stop()
                        await asyncio.sleep(15)
                        finished = True
            self.assertFalse(finished)
            self.assertTrue(lease.lost.is_set())


if __name__ == "__main__":
    unittest.main()
