"""Several replicas' URLs: the client moves on from one that does not
answer or answers 503, and goes to the one an answer names as the leader."""

from __future__ import annotations

import unittest

import allot

from .support import URL, Proxy, free_port, name, need_server


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/api"


class SyncReplicas(unittest.TestCase):
    def setUp(self) -> None:
        need_server(self)

    def test_moves_on_from_a_dead_url(self) -> None:
        c = allot.Client(api_url=f"{dead_url()}, {URL}", backoff=0.01)
        self.addCleanup(c.close)
        n = name()
        c.create_limit(n, 1)
        self.assertEqual(c.get_limit(n).limit, 1)

    def test_passes_dead_urls_at_once(self) -> None:
        c = allot.Client(api_url=f"{dead_url()},{dead_url()},{URL}", retries=0)
        self.addCleanup(c.close)
        c.create_limit(name(), 1)

    def test_moves_on_from_a_503(self) -> None:
        p = Proxy()
        self.addCleanup(p.close)
        p.fail = [503]
        c = allot.Client(api_url=f"{p.url},{URL}", backoff=0.01)
        self.addCleanup(c.close)
        n = name()
        c.create_limit(n, 1)
        c.get_limit(n)
        self.assertEqual(len(p.requests), 1, p.paths())

    def test_goes_to_the_leader_named(self) -> None:
        p = Proxy()
        self.addCleanup(p.close)
        p.leader = URL.split("/")[2]
        c = allot.Client(api_url=f"{p.url},{URL}")
        self.addCleanup(c.close)
        n = name()
        c.create_limit(n, 1)
        for _ in range(3):
            c.get_limit(n)
        self.assertEqual(len(p.requests), 1, p.paths())

    def test_bad_second_url(self) -> None:
        with self.assertRaises(ValueError):
            allot.Client(api_url=f"{URL},127.0.0.1:1/api")


class AsyncReplicas(unittest.IsolatedAsyncioTestCase):
    def setUp(self) -> None:
        need_server(self)

    async def test_passes_dead_urls_at_once(self) -> None:
        async with allot.AsyncClient(api_url=f"{dead_url()},{dead_url()},{URL}", retries=0) as c:
            await c.create_limit(name(), 1)

    async def test_moves_on_and_goes_to_the_leader(self) -> None:
        p = Proxy()
        self.addCleanup(p.close)
        p.leader = URL.split("/")[2]
        async with allot.AsyncClient(api_url=f"{dead_url()},{p.url},{URL}", backoff=0.01) as c:
            n = name()
            await c.create_limit(n, 1)
            for _ in range(3):
                await c.get_limit(n)
        self.assertEqual(len(p.requests), 1, p.paths())
