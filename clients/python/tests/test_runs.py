"""Runs: tags through contextvars, nesting, final states, heartbeats,
Crashed when the process dies."""

from __future__ import annotations

import asyncio
import threading
import time
import unittest

import allot

from .support import eventually, name, need_server, python_child


class Runs(unittest.TestCase):
    def setUp(self) -> None:
        need_server(self)
        self.c = allot.Client()
        self.addCleanup(self.c.close)

    def test_tags_flow_through_context(self) -> None:
        a, b = name("tag"), name("tag")
        with allot.tags(a, b):
            self.assertEqual(allot.current_tags(), tuple(sorted([a, b])))
            with self.c.task_run("t", tags=["extra"]) as run:
                self.assertEqual(run.tags, sorted([a, b, "extra"]))
                self.assertEqual(allot.current_run_id(), run.id)
            with allot.without_tags(a):
                with self.c.task_run("t2") as run2:
                    self.assertEqual(run2.tags, [b])
        self.assertEqual(allot.current_tags(), ())
        self.assertIsNone(allot.current_run_id())
        self.assertEqual(self.c.get_run(run.id).state, allot.RunState.COMPLETED)

    def test_limit_holds_other_runs(self) -> None:
        tag = name("tag")
        self.c.create_tag_limit(tag, 1)
        order: list[str] = []
        with self.c.task_run("first", tags=[tag]) as first:
            def second() -> None:
                with self.c.task_run("second", tags=[tag]):
                    order.append("second")

            t = threading.Thread(target=second)
            t.start()
            eventually(lambda: self.c.get_tag_limit(tag).waiting == 1, what="second run waits")
            order.append("first")
        t.join(10)
        self.assertEqual(order, ["first", "second"])
        self.assertEqual(self.c.get_run(first.id).state, "Completed")

    def test_nesting_shares_the_parent_slot(self) -> None:
        tag = name("tag")
        self.c.create_tag_limit(tag, 1)
        with allot.tags(tag):
            with self.c.task_run("parent") as parent:
                with self.c.task_run("child") as child:
                    self.assertEqual(child.parent_id, parent.id)
                    with self.c.task_run("grandchild") as gc:
                        self.assertEqual(gc.parent_id, child.id)

    def test_decorators(self) -> None:
        tag = name("tag")

        @self.c.task_run(tags=[tag])
        def work(x: int) -> int:
            rid = allot.current_run_id()
            assert rid is not None
            ids.append(rid)
            return x * 2

        ids: list[str] = []
        self.assertEqual(work(21), 42)
        run = self.c.get_run(ids[0])
        self.assertEqual((run.name, run.state, run.tags), ("work", "Completed", [tag]))

        @self.c.flow_run("my-flow")
        def fails() -> None:
            ids.append(allot.current_run_id() or "")
            raise ValueError("boom")

        with self.assertRaises(ValueError):
            fails()
        run = self.c.get_run(ids[1])
        self.assertEqual((run.kind, run.name, run.state), ("flow", "my-flow", "Failed"))
        self.assertEqual(run.message, "ValueError: boom")

    def test_crashed_on_keyboard_interrupt(self) -> None:
        with self.assertRaises(KeyboardInterrupt):
            with self.c.task_run("k") as run:
                raise KeyboardInterrupt
        self.assertEqual(self.c.get_run(run.id).state, "Crashed")

    def test_not_started(self) -> None:
        tag = name("tag")
        self.c.create_tag_limit(tag, 0)
        with self.assertRaises(allot.RunNotStartedError) as cm:
            with self.c.task_run("zero", tags=[tag]):
                self.fail("ran without its slot")
        self.assertEqual(cm.exception.state, "Failed")
        self.assertIn("is 0 and will deadlock", cm.exception.message)
        full = name("tag")
        self.c.create_tag_limit(full, 1)
        with self.c.concurrency("tag:" + full):  # held outside any run: no sharing
            with self.assertRaises(allot.RunNotStartedError) as cm:
                with self.c.task_run("cancel", tags=[full], cancel_new=True):
                    self.fail("ran without its slot")
        self.assertEqual(cm.exception.state, "Cancelled")

    def test_heartbeats_keep_a_short_run_alive(self) -> None:
        with self.c.task_run("hb", lease_duration=1.5) as run:
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertEqual(self.c.get_run(run.id).state, "Running")
        self.assertEqual(self.c.get_run(run.id).state, "Completed")

    def test_reset_interrupts_the_run(self) -> None:
        tag = name("tag")
        self.c.create_tag_limit(tag, 1)
        finished = False
        with self.assertLogs("allot", level="WARNING"):
            with self.assertRaises(allot.LeaseLostError):
                with self.c.task_run("revoked", tags=[tag], lease_duration=1.5) as run:
                    self.c.reset_tag_limit(tag)
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline:
                        time.sleep(0.01)
                    finished = True
        self.assertFalse(finished)
        got = self.c.get_run(run.id)
        self.assertEqual((got.state, got.message), ("Crashed", "slot revoked by reset"))

    def test_crashed_when_the_process_dies(self) -> None:
        tag = name("tag")
        self.c.create_tag_limit(tag, 1)
        child = python_child(
            "import os, allot\n"
            f"with allot.task_run('doomed', tags=['{tag}'], lease_duration=1) as run:\n"
            "    print(run.id, flush=True)\n"
            "    os._exit(3)\n")
        assert child.stdout is not None
        run_id = child.stdout.readline().strip()
        child.wait(10)
        child.stdout.close()
        self.assertEqual(child.returncode, 3)
        eventually(lambda: self.c.get_run(run_id).state == "Crashed", timeout=15, what="run Crashed")
        self.assertIn("lease expired", self.c.get_run(run_id).message)
        with self.c.task_run("next", tags=[tag]):
            pass


class RunsAsync(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        need_server(self)
        self.c = allot.AsyncClient()

    async def asyncTearDown(self) -> None:
        await self.c.aclose()

    async def test_async_runs(self) -> None:
        tag = name("tag")
        await self.c.create_tag_limit(tag, 1)
        with allot.tags(tag):
            async with self.c.task_run("parent") as parent:
                async with self.c.task_run("child") as child:
                    self.assertEqual((child.parent_id, child.tags), (parent.id, [tag]))

            @allot.task_run()
            async def deco() -> str:
                return allot.current_run_id() or ""

            rid = await deco()
        self.assertEqual((await self.c.get_run(rid)).state, "Completed")

    async def test_cancelled(self) -> None:
        started = asyncio.Event()
        ids: list[str] = []

        async def body() -> None:
            async with self.c.task_run("c") as run:
                ids.append(run.id)
                started.set()
                await asyncio.sleep(30)

        task = asyncio.create_task(body())
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        self.assertEqual((await self.c.get_run(ids[0])).state, "Cancelled")

    async def test_cancelled_while_waiting(self) -> None:
        tag = name("tag")
        await self.c.create_tag_limit(tag, 1)
        holding, done = asyncio.Event(), asyncio.Event()

        async def holder() -> None:
            async with self.c.task_run("holder", tags=[tag]):
                holding.set()
                await done.wait()

        ht = asyncio.create_task(holder())
        await asyncio.wait_for(holding.wait(), 10)
        # Created here, not inside the holder's block: not its child.
        task = asyncio.create_task(self._enter(tag))
        deadline = time.monotonic() + 5
        while (await self.c.get_tag_limit(tag)).waiting != 1:
            self.assertLess(time.monotonic(), deadline)
            await asyncio.sleep(0.02)
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        self.assertEqual((await self.c.get_tag_limit(tag)).waiting, 0)
        done.set()
        await ht

    async def _enter(self, tag: str) -> None:
        async with self.c.task_run("waiter", tags=[tag]):
            self.fail("ran without its slot")


if __name__ == "__main__":
    unittest.main()
