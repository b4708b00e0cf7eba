"""Client and AsyncClient: configuration, auth, retries, TLS, limits, tag and
label limits, holders."""

from __future__ import annotations

import base64
import os
import sys
import threading
import time
import types
import unittest
from typing import Any
from unittest import mock

import allot
from allot.concurrency.sync import concurrency

from .support import URL, Proxy, eventually, name, need_server, raw


class Config(unittest.TestCase):
    def setUp(self) -> None:
        need_server(self)
        self.p = Proxy()
        self.addCleanup(self.p.close)

    def auth_sent(self, env: dict[str, str], **kw: Any) -> str | None:
        with mock.patch.dict(os.environ, env):
            c = allot.Client(**kw)
            try:
                c.list_limits(0, 1)
            finally:
                c.close()
        return self.p.requests[-1].headers.get("Authorization")

    def test_env_url_and_auth(self) -> None:
        u = self.p.url
        clear = {"ALLOT_API_URL": "", "ALLOT_API_KEY": "", "PREFECT_API_URL": "", "PREFECT_API_KEY": "",
                 "PREFECT_API_AUTH_STRING": ""}
        self.assertIsNone(self.auth_sent({**clear, "ALLOT_API_URL": u}))
        self.assertEqual(self.auth_sent({**clear, "ALLOT_API_URL": u, "ALLOT_API_KEY": "k1"}), "Bearer k1")
        self.assertEqual(self.auth_sent({**clear, "PREFECT_API_URL": u, "PREFECT_API_KEY": "pk"}), "Bearer pk")
        basic = "Basic " + base64.b64encode(b"admin:s3cret").decode()
        self.assertEqual(self.auth_sent({**clear, "PREFECT_API_URL": u, "PREFECT_API_AUTH_STRING": "admin:s3cret"}),
                         basic)
        # ALLOT_* wins over PREFECT_*; arguments win over both.
        self.assertEqual(self.auth_sent({**clear, "ALLOT_API_URL": u, "ALLOT_API_KEY": "a",
                                         "PREFECT_API_KEY": "p"}), "Bearer a")
        self.assertEqual(self.auth_sent({**clear, "ALLOT_API_URL": "http://127.0.0.1:1/api", "ALLOT_API_KEY": "a"},
                                        api_url=u, api_key="arg"), "Bearer arg")
        self.assertEqual(self.auth_sent(clear, api_url=u, auth_string="u:p"),
                         "Basic " + base64.b64encode(b"u:p").decode())

    def test_bad_url(self) -> None:
        for bad in ("ftp://x/api", "http:///api", "http://h/api?x=1", "http://u:p@h/api"):
            with self.assertRaises(ValueError, msg=bad):
                allot.Client(bad)

    def test_retries_5xx_and_dropped_connections(self) -> None:
        c = allot.Client(self.p.url, backoff=0.01)
        self.addCleanup(c.close)
        self.p.fail = [503, 0, 502]
        self.assertIsInstance(c.list_limits(), list)
        self.assertEqual(len(self.p.requests), 4)
        ids = {r.headers["X-Request-Id"] for r in self.p.requests}
        self.assertEqual(len(ids), 1, "one request id across the retries")

    def test_gives_up_after_retries(self) -> None:
        c = allot.Client(self.p.url, retries=2, backoff=0.01)
        self.addCleanup(c.close)
        self.p.fail = [503, 503, 503, 503]
        with self.assertRaises(allot.UnavailableError) as cm:
            c.list_limits()
        self.assertEqual(cm.exception.status, 503)
        self.assertEqual(len(self.p.requests), 3)

    def test_4xx_never_retried(self) -> None:
        c = allot.Client(self.p.url, backoff=0.01)
        self.addCleanup(c.close)
        with self.assertRaises(allot.LimitNotFoundError) as cm:
            c.get_limit(name("nope"))
        self.assertEqual(len(self.p.requests), 1)
        self.assertEqual(cm.exception.request_id, self.p.requests[0].headers["X-Request-Id"])
        self.assertIsInstance(cm.exception, allot.NotFoundError)

    def test_connection_refused(self) -> None:
        c = allot.Client("http://127.0.0.1:1/api", retries=1, backoff=0.01)
        with self.assertRaises(allot.AllotConnectionError):
            c.list_limits()

    def test_server_that_does_not_wait(self) -> None:
        # Against a server that answers 423 at once (Prefect's), the client
        # sleeps Retry-After and asks again.
        direct = allot.Client()
        self.addCleanup(direct.close)
        nm = name()
        direct.create_limit(nm, 1)
        self.p.no_wait = True
        c = allot.Client(self.p.url)
        self.addCleanup(c.close)
        holder = direct.acquire(nm)
        threading.Timer(0.5, direct.release, (holder,)).start()
        with concurrency(nm, timeout_seconds=30, client=c) as lease:
            self.assertTrue(lease.held)
        self.assertGreaterEqual(len([r for r in self.p.requests if r.path.endswith("increment-with-lease")]), 2)


class TLS(unittest.TestCase):
    def test_tls_with_test_ca(self) -> None:
        url, ca = os.environ.get("ALLOT_TEST_TLS_URL"), os.environ.get("ALLOT_TEST_CA_FILE")
        if not url or not ca:
            self.skipTest("ALLOT_TEST_TLS_URL / ALLOT_TEST_CA_FILE not set (the Go test sets them)")
        with allot.Client(url, ca_file=ca) as c:
            self.assertIsInstance(c.list_limits(0, 1), list)
        with mock.patch.dict(os.environ, {"ALLOT_CA_FILE": ca}):
            with allot.Client(url) as c:
                nm = name()
                c.create_limit(nm, 1)
                with c.concurrency(nm) as lease:
                    self.assertTrue(lease.held)
        with allot.Client(url, retries=0) as c:
            with self.assertRaises(allot.AllotConnectionError):
                c.list_limits()  # the system's roots do not know the test CA


class TLSAsync(unittest.IsolatedAsyncioTestCase):
    async def test_tls_with_test_ca(self) -> None:
        url, ca = os.environ.get("ALLOT_TEST_TLS_URL"), os.environ.get("ALLOT_TEST_CA_FILE")
        if not url or not ca:
            self.skipTest("ALLOT_TEST_TLS_URL / ALLOT_TEST_CA_FILE not set (the Go test sets them)")
        async with allot.AsyncClient(url, ca_file=ca) as c:
            nm = name()
            await c.create_limit(nm, 1)
            async with c.concurrency(nm) as lease:
                self.assertTrue(lease.held)


class Limits(unittest.TestCase):
    def setUp(self) -> None:
        need_server(self)
        self.c = allot.Client()
        self.addCleanup(self.c.close)

    def test_crud(self) -> None:
        nm = name()
        lim = self.c.create_limit(nm, 2, slot_decay_per_second=0.5)
        self.assertEqual((lim.name, lim.limit, lim.active, lim.slot_decay_per_second), (nm, 2, True, 0.5))
        with self.assertRaises(allot.ConflictError):
            self.c.create_limit(nm, 2)
        self.assertEqual(self.c.get_limit(lim.id).name, nm)
        self.c.update_limit(nm, limit=4, active=False)
        got = self.c.get_limit(nm)
        self.assertEqual((got.limit, got.active), (4, False))
        self.assertIn(nm, [x.name for x in self.c.iter_limits()])
        self.c.delete_limit(nm)
        with self.assertRaises(allot.LimitNotFoundError):
            self.c.get_limit(nm)

    def test_holders_and_waiters(self) -> None:
        nm = name()
        self.c.create_limit(nm, 1)
        lease = self.c.acquire(nm, holder={"type": "deployment", "id": "d1"})
        self.addCleanup(self.c.release, lease)
        t = threading.Thread(target=lambda: self.c.release(self.c.acquire(nm, holder=allot.Holder("process", "w"))))
        t.start()
        eventually(lambda: self.c.get_limit(nm).waiting == 1, what="waiter")
        got = self.c.get_limit(nm)
        self.assertEqual([(h.lease_id, h.holder) for h in got.holders], [(lease.lease_id, allot.Holder("deployment", "d1"))])
        self.assertEqual([(w.position, w.holder) for w in got.waiters], [(1, allot.Holder("process", "w"))])
        self.c.release(lease)
        t.join(5)

    def test_tag_and_label_limits(self) -> None:
        tag = name("tag")
        tl = self.c.create_tag_limit(tag, 2)
        self.assertEqual((tl.tag, tl.concurrency_limit, tl.active_slots), (tag, 2, []))
        self.assertEqual(self.c.get_limit("tag:" + tag).limit, 2)
        with self.c.task_run("t", tags=[tag]) as run:
            self.assertEqual(self.c.get_tag_limit(tag).active_slots, [run.id])
        self.assertIn(tag, [x.tag for x in self.c.list_tag_limits()])
        res = self.c.reset_tag_limit(tag, ["3c90c3cc-0d44-4b50-8888-8dd25736052a"])
        self.assertEqual(res.granted, ["3c90c3cc-0d44-4b50-8888-8dd25736052a"])
        self.c.delete_tag_limit(tag)
        with self.assertRaises(allot.NotFoundError):
            self.c.get_tag_limit(tag)
        label = name("label")
        ll = self.c.create_label_limit(label, 1)
        self.assertEqual((ll.label, ll.concurrency_limit), (label, 1))
        with self.c.flow_run("f", tags=[label]) as run:
            self.assertEqual(self.c.get_label_limit(label).active_slots, [run.id])
        self.assertIn(label, [x.label for x in self.c.list_label_limits()])
        self.assertEqual(self.c.reset_label_limit(label).revoked, 0)
        self.c.delete_label_limit(label)

    def test_prefect_task_run_is_the_holder(self) -> None:
        run_id = "0b6f1b8e-1f0e-4c57-9a1c-6a4c3f1f7c11"
        ctx = types.ModuleType("prefect.context")

        class TaskRunContext:
            @staticmethod
            def get() -> Any:
                return types.SimpleNamespace(task_run=types.SimpleNamespace(id=run_id))

        class FlowRunContext:
            @staticmethod
            def get() -> Any:
                return None

        ctx.TaskRunContext = TaskRunContext  # type: ignore[attr-defined]
        ctx.FlowRunContext = FlowRunContext  # type: ignore[attr-defined]
        nm = name()
        self.c.create_limit(nm, 1)
        with mock.patch.dict(sys.modules, {"prefect.context": ctx}):
            with concurrency(nm):
                holders = self.c.get_limit(nm).holders
        self.assertEqual([h.holder for h in holders], [allot.Holder("task_run", run_id)])

    def test_lease_api(self) -> None:
        nm = name()
        self.c.create_limit(nm, 1)
        lease = self.c.acquire(nm, lease_duration=60)
        before = lease.expires_at
        time.sleep(0.01)
        lease.renew()
        self.assertGreater(lease.expires_at, before)
        self.c.release(lease)
        self.c.release(lease)  # twice is fine
        self.assertFalse(lease.held)
        self.assertEqual(raw("GET", f"/v2/concurrency_limits/leases/{lease.lease_id}")[0], 410)


class AsyncLimits(unittest.IsolatedAsyncioTestCase):
    async def test_calls(self) -> None:
        need_server(self)
        async with allot.AsyncClient() as c:
            nm = name()
            await c.create_limit(nm, 1)
            self.assertEqual((await c.ensure_limit(nm, 3)).limit, 3)
            lease = await c.acquire(nm)
            self.assertEqual((await c.get_limit(nm)).holders[0].lease_id, lease.lease_id)
            with self.assertRaises(allot.LockedError):
                await c.try_acquire(nm, occupy=3)
            await c.release(lease)
            await c.update_limit(nm, limit=2)
            self.assertIn(nm, [x.name async for x in c.iter_limits()])
            tag = name("tag")
            await c.create_tag_limit(tag, 1)
            self.assertEqual((await c.get_tag_limit(tag)).concurrency_limit, 1)
            await c.delete_tag_limit(tag)
            await c.delete_limit(nm)
            with self.assertRaises(allot.LimitNotFoundError):
                await c.get_limit(nm)


_ = URL

if __name__ == "__main__":
    unittest.main()
