"""allot.concurrency.sync against a real server: Prefect's behaviour, and
where allot does better (server-side waiting, FIFO, push, leases)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import statistics
import threading
import time
import unittest

import allot
from allot.concurrency.sync import (
    AcquireConcurrencySlotTimeoutError,
    ConcurrencySlotAcquisitionError,
    concurrency,
    rate_limit,
)

from .support import Proxy, eventually, name, need_server, raw


class ConcurrencySync(unittest.TestCase):
    def setUp(self) -> None:
        need_server(self)
        self.c = allot.Client()
        self.addCleanup(self.c.close)

    def limit(self, n: int = 1, **kw: object) -> str:
        nm = name()
        self.c.create_limit(nm, n, **kw)  # type: ignore[arg-type]
        return nm

    def test_request_sequence_and_bodies(self) -> None:
        nm = self.limit(3)
        p = Proxy()
        self.addCleanup(p.close)
        c = allot.Client(p.url)
        self.addCleanup(c.close)
        with concurrency(nm, occupy=2, lease_duration=30, client=c) as lease:
            self.assertIsInstance(lease, allot.Lease)
            self.assertEqual([lr.name for lr in lease.limits], [nm])
        self.assertEqual(p.paths(), ["POST /api/v2/concurrency_limits/increment-with-lease",
                                     "POST /api/v2/concurrency_limits/decrement-with-lease"])
        acq, rel = p.requests
        self.assertRegex(acq.body.pop("ticket"), r"^[0-9a-f]{32}$")
        self.assertEqual(acq.body, {"names": [nm], "slots": 2, "lease_duration": 30,
                                    "holder": {"type": "process", "id": f"{socket.gethostname()}:{os.getpid()}"},
                                    "timeout_seconds": 3600})
        self.assertEqual(rel.body, {"lease_id": lease.lease_id})
        self.assertRegex(acq.headers["X-Request-Id"], r"^[0-9a-f]{32}$")
        self.assertNotEqual(acq.headers["X-Request-Id"], rel.headers["X-Request-Id"])
        self.assertTrue(acq.headers["User-Agent"].startswith("allot-python/"))
        self.assertEqual(self.c.get_limit(nm).active_slots, 0)

    def test_timeout_seconds_is_sent_and_shrinks(self) -> None:
        nm = self.limit(1)
        p = Proxy()
        self.addCleanup(p.close)
        c = allot.Client(p.url)
        self.addCleanup(c.close)
        with concurrency(nm, client=c):
            with self.assertRaises(AcquireConcurrencySlotTimeoutError):
                with concurrency(nm, timeout_seconds=0.4, client=c):
                    pass
        waits = [r.body["timeout_seconds"] for r in p.requests if r.path.endswith("increment-with-lease")]
        self.assertEqual(len(waits), 2, "one long poll, not a poll loop")
        self.assertLessEqual(waits[1], 0.4)
        self.assertGreater(waits[1], 0.3)

    def test_lost_answer_is_not_a_second_lease(self) -> None:
        nm = self.limit(2)
        p = Proxy()
        self.addCleanup(p.close)
        c = allot.Client(p.url, backoff=0.01)
        self.addCleanup(c.close)
        p.fail = [-1]  # the server grants, the answer is lost; the retry carries the same ticket
        with concurrency(nm, client=c) as lease:
            holders = self.c.get_limit(nm).holders
            self.assertEqual([h.lease_id for h in holders], [lease.lease_id])
        acqs = [r for r in p.requests if r.path.endswith("increment-with-lease")]
        self.assertEqual(len(acqs), 2)
        self.assertEqual(acqs[0].body["ticket"], acqs[1].body["ticket"])
        self.assertEqual(self.c.get_limit(nm).active_slots, 0)

    def test_several_names_all_or_nothing(self) -> None:
        a, b = self.limit(1), self.limit(1)
        held = self.c.acquire(b)
        with self.assertRaises(allot.LockedError):
            self.c.try_acquire([a, b])
        self.assertEqual(self.c.get_limit(a).active_slots, 0, "nothing held of a")
        self.c.release(held)
        with concurrency([a, b]) as lease:
            self.assertEqual(sorted(lr.name for lr in lease.limits), sorted([a, b]))
            self.assertEqual(self.c.get_limit(a).active_slots, 1)
            self.assertEqual(self.c.get_limit(b).active_slots, 1)
        self.assertEqual(self.c.get_limit(a).active_slots, 0)

    def test_occupy(self) -> None:
        nm = self.limit(3)
        with concurrency(nm, occupy=2):
            self.assertEqual(self.c.get_limit(nm).active_slots, 2)
            with self.assertRaises(AcquireConcurrencySlotTimeoutError):
                with concurrency(nm, occupy=2, timeout_seconds=0.2):
                    pass
            with concurrency(nm, occupy=1, timeout_seconds=0.2):
                self.assertEqual(self.c.get_limit(nm).active_slots, 3)

    def test_timeout_error_and_message(self) -> None:
        nm = self.limit(1)
        with concurrency(nm):
            start = time.monotonic()
            with self.assertRaises(AcquireConcurrencySlotTimeoutError) as cm:
                with concurrency(nm, timeout_seconds=0.5):
                    self.fail("ran without its slot")
            self.assertGreaterEqual(time.monotonic() - start, 0.45)
        self.assertIsInstance(cm.exception, TimeoutError)
        self.assertEqual(str(cm.exception), "Attempt to acquire concurrency slots timed out after 0.5 second(s)")
        self.assertIsInstance(cm.exception.__cause__, allot.LockedError)
        self.assertEqual(self.c.get_limit(nm).waiting, 0)

    def test_max_retries_zero_fails_at_once(self) -> None:
        nm = self.limit(1)
        with concurrency(nm):
            start = time.monotonic()
            with self.assertRaises(ConcurrencySlotAcquisitionError) as cm:
                with concurrency(nm, max_retries=0):
                    self.fail("ran without its slot")
            self.assertLess(time.monotonic() - start, 3)
        self.assertEqual(str(cm.exception), f"Unable to acquire concurrency slots on {[nm]!r}")
        self.assertIsInstance(cm.exception.__cause__, allot.LockedError)

    def test_missing_limits_warn(self) -> None:
        nm = name("missing")
        ran = False
        with self.assertLogs("allot", level="WARNING") as logs:
            with concurrency(nm) as lease:
                ran = True
        self.assertTrue(ran)
        self.assertIsNone(lease.lease_id)
        self.assertIn(f"Concurrency limits {[nm]!r} do not exist - skipping acquisition.", logs.output[0])

    def test_missing_limits_strict(self) -> None:
        nm = name("missing")
        with self.assertRaises(ConcurrencySlotAcquisitionError) as cm:
            with concurrency(nm, strict=True):
                self.fail("ran without its slot")
        self.assertEqual(str(cm.exception), f"Concurrency limits {[nm]!r} must be created before acquiring slots")
        with self.assertRaises(ConcurrencySlotAcquisitionError):
            rate_limit(nm, strict=True)

    def test_validation_error(self) -> None:
        nm = self.limit(2)
        with self.assertRaises(ConcurrencySlotAcquisitionError) as cm:
            with concurrency(nm, occupy=3):
                self.fail("ran without its slot")
        self.assertEqual(str(cm.exception), f"Unable to acquire concurrency slots on {[nm]!r}")
        cause = cm.exception.__cause__
        self.assertIsInstance(cause, allot.InvalidError)
        assert isinstance(cause, allot.InvalidError)
        self.assertEqual((cause.status, cause.code), (422, allot.errors.CODE_SLOTS_EXCEED_LIMIT))
        self.assertTrue(str(cause).startswith("422 Unprocessable Entity (slots_exceed_limit): "), str(cause))
        self.assertEqual(cause.limits, [nm])

    def test_rate_limit_without_decay_fails(self) -> None:
        nm = self.limit(5)
        with self.assertRaises(ConcurrencySlotAcquisitionError) as cm:
            rate_limit(nm)
        self.assertIsInstance(cm.exception.__cause__, allot.InvalidError)
        self.assertEqual(cm.exception.__cause__.code, allot.errors.CODE_NO_DECAY)  # type: ignore[union-attr]

    def test_rate_is_kept_over_a_window(self) -> None:
        nm = self.limit(2, slot_decay_per_second=10.0)
        start = time.monotonic()
        for _ in range(12):
            rate_limit(nm)
        # A burst of 2, then 10 more at 10 per second: about a second.
        self.assertGreaterEqual(time.monotonic() - start, 0.8)

    def test_fifo(self) -> None:
        nm = self.limit(1)
        order: list[int] = []
        lock = threading.Lock()
        holder = self.c.acquire(nm)

        def worker(i: int) -> None:
            with concurrency(nm):
                with lock:
                    order.append(i)

        threads = []
        for i in range(5):
            t = threading.Thread(target=worker, args=(i,))
            t.start()
            threads.append(t)
            eventually(lambda: self.c.get_limit(nm).waiting == i + 1, what=f"waiter {i} in line")
        self.c.release(holder)
        for t in threads:
            t.join(10)
        self.assertEqual(order, [0, 1, 2, 3, 4])

    def test_push_hand_off(self) -> None:
        nm = self.limit(1)
        gaps = []
        for _ in range(5):
            holder = self.c.acquire(nm)
            got = threading.Event()
            granted = [0.0]

            def waiter() -> None:
                with concurrency(nm):
                    granted[0] = time.monotonic()
                    got.set()

            t = threading.Thread(target=waiter)
            t.start()
            eventually(lambda: self.c.get_limit(nm).waiting == 1, what="waiter in line")
            released = time.monotonic()
            self.c.release(holder)
            self.assertTrue(got.wait(5))
            t.join(5)
            gaps.append(granted[0] - released)
        # Pushed by the server, not polled: well under 50 ms on loopback.
        self.assertLess(statistics.median(gaps), 0.05, gaps)

    def test_short_lease_held_long_survives(self) -> None:
        nm = self.limit(1)
        with concurrency(nm, lease_duration=3) as lease:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                self.assertFalse(lease.lost.wait(0.5))
            holders = self.c.get_limit(nm).holders
            self.assertEqual([h.lease_id for h in holders], [lease.lease_id])
        self.assertFalse(lease.lost.is_set())

    def test_gone_lease_is_lost_at_once(self) -> None:
        # Without the lease watch (a server that has none), the renewal's
        # 410 loses the lease at once, not at its expiry.
        nm = self.limit(1)
        p = Proxy()
        p.no_watch = True
        self.addCleanup(p.close)
        c = allot.Client(p.url)
        self.addCleanup(c.close)
        lease = c.acquire(nm, lease_duration=3)
        self.addCleanup(c.release, lease)
        start = time.monotonic()
        self.assertEqual(raw("POST", "/v2/concurrency_limits/decrement-with-lease", {"lease_id": lease.lease_id})[0], 204)
        with self.assertLogs("allot", level="WARNING"):
            self.assertTrue(lease.lost.wait(5))
        self.assertLess(time.monotonic() - start, 2.5, "lost at the first renewal, not at expiry")
        self.assertIsInstance(lease.error, allot.LeaseLostError)
        self.assertIsInstance(lease.error.__cause__, allot.LeaseNotFoundError)  # type: ignore[union-attr]
        with self.assertRaises(allot.LeaseLostError):
            lease.renew()

    def test_watch_hears_a_foreign_release_at_once(self) -> None:
        # A 300 s lease is renewed every 100 s; the lease watch, not a
        # renewal, tells of its end.
        nm = self.limit(1)
        with self.assertLogs("allot", level="WARNING"):
            with concurrency(nm, lease_duration=300) as lease:
                eventually(lambda: any(t.name.startswith("allot-lease-watch-") for t in threading.enumerate()),
                           what="the watch")
                start = time.monotonic()
                raw("POST", "/v2/concurrency_limits/decrement-with-lease", {"lease_id": lease.lease_id})
                self.assertTrue(lease.lost.wait(3))
                self.assertLess(time.monotonic() - start, 3)
        self.assertIn("released by someone else", str(lease.error))

    def test_release_ends_the_watch(self) -> None:
        nm = self.limit(1)
        with concurrency(nm, lease_duration=300) as lease:
            eventually(lambda: any(t.name == f"allot-lease-watch-{lease.lease_id}" for t in threading.enumerate()),
                       what="the watch")
        eventually(lambda: not any(t.name == f"allot-lease-watch-{lease.lease_id}" for t in threading.enumerate()),
                   timeout=3, what="the watch ended by the release")
        self.assertFalse(lease.lost.is_set())

    def test_lost_lease_strict_interrupts_the_caller(self) -> None:
        nm = self.limit(1)
        finished = False
        with self.assertLogs("allot", level="WARNING") as logs:
            with self.assertRaises(allot.LeaseLostError) as cm:
                with concurrency(nm, lease_duration=3, strict=True) as lease:
                    raw("POST", "/v2/concurrency_limits/decrement-with-lease", {"lease_id": lease.lease_id})
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline:
                        time.sleep(0.01)
                    finished = True
        self.assertFalse(finished, "the block went on after its lease was lost")
        self.assertIn("Concurrency lease renewal failed - slots are no longer reserved. "
                      "Terminating execution to prevent over-allocation.", str(cm.exception))
        self.assertTrue(any("Terminating execution" in line for line in logs.output))

    def test_lost_lease_not_strict_warns(self) -> None:
        nm = self.limit(1)
        with self.assertLogs("allot", level="WARNING") as logs:
            with concurrency(nm, lease_duration=3) as lease:
                raw("POST", "/v2/concurrency_limits/decrement-with-lease", {"lease_id": lease.lease_id})
                self.assertTrue(lease.lost.wait(5))
        self.assertTrue(any("Concurrency lease renewal failed - slots are no longer reserved. "
                            "Execution will continue, but concurrency limits may be exceeded." in line
                            for line in logs.output), logs.output)

    def test_fencing_tokens_grow(self) -> None:
        a, b = self.limit(1), self.limit(1)
        tokens = []
        for nm in (a, b, a, b, a):
            with concurrency(nm) as lease:
                tokens.append(lease.fencing_token)
        self.assertEqual(tokens, sorted(set(tokens)), tokens)

    @unittest.skipUnless(threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_kill"),
                         "needs the main thread and pthread_kill")
    def test_keyboard_interrupt_leaves_the_line(self) -> None:
        nm = self.limit(1)
        holder = self.c.acquire(nm)
        self.addCleanup(self.c.release, holder)
        main = threading.main_thread().ident
        assert main is not None

        def interrupt() -> None:
            eventually(lambda: self.c.get_limit(nm).waiting == 1, what="waiter in line")
            signal.pthread_kill(main, signal.SIGINT)

        t = threading.Thread(target=interrupt)
        t.start()
        with self.assertRaises(KeyboardInterrupt):
            with concurrency(nm):
                self.fail("ran without its slot")
        t.join()
        eventually(lambda: self.c.get_limit(nm).waiting == 0, timeout=10, what="waiter gone")

    def test_ensure_limit_from_8_threads(self) -> None:
        nm = name("ensure")
        results: list[allot.Limit] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(8)

        def go() -> None:
            barrier.wait()
            try:
                results.append(self.c.ensure_limit(nm, 5))
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=go) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual(errors, [])
        self.assertEqual({(r.name, r.limit) for r in results}, {(nm, 5)})
        self.assertEqual(len({r.id for r in results}), 1)
        self.assertEqual(self.c.ensure_limit(nm, 7).limit, 7)


class Logging(unittest.TestCase):
    def test_no_handlers(self) -> None:
        self.assertEqual(logging.getLogger("allot").handlers, [])


if __name__ == "__main__":
    unittest.main()
