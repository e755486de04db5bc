"""The node's `Writer`: writes in submission order, and a write run inline (on the
loop) only when nothing is ahead of it. The thread is stood in for by an executor that
runs what it is given when the test says so: no sleeps, no timing."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

import pytest

from raftkv.raft.driver.writer import Writer


class ManualExecutor(concurrent.futures.Executor):
    """A one-thread writer stand-in: FIFO, runs a queued call only when `run_next` says."""

    def __init__(self) -> None:
        self.queue: collections.deque[Callable[[], Any]] = collections.deque()

    def submit(self, function: Any, /, *arguments: Any, **keywords: Any) -> Any:
        self.queue.append(lambda: function(*arguments, **keywords))
        return concurrent.futures.Future()

    def run_next(self) -> None:
        self.queue.popleft()()


def manual_writer() -> tuple[Writer, ManualExecutor, list[str]]:
    wakes: list[str] = []
    writer = Writer(threaded=True, name="test-writer", wake=lambda: wakes.append("wake"))
    executor = ManualExecutor()
    writer._executor = executor
    return writer, executor, wakes


async def next_turns() -> None:
    """Let the loop run what call_soon_threadsafe scheduled."""
    for _ in range(3):
        await asyncio.sleep(0)


def test_a_cheap_write_with_the_writer_idle_runs_at_once_on_the_callers_thread() -> None:
    async def scenario() -> None:
        writer, executor, wakes = manual_writer()
        threads: list[threading.Thread] = []
        future = writer.submit_inline(lambda: threads.append(threading.current_thread()) or 7)
        assert future.done()
        assert future.result()[0] == 7
        assert threads == [threading.current_thread()]
        assert not executor.queue
        assert wakes == []  # the caller goes on in the same turn: nothing to wake
        assert writer.idle

    asyncio.run(scenario())


def test_a_cheap_write_behind_a_write_under_way_waits_its_turn() -> None:
    """Order is the Writer's invariant: a commit-index move must not land before the
    entries write submitted ahead of it."""

    async def scenario() -> None:
        writer, executor, wakes = manual_writer()
        order: list[str] = []
        first = writer.submit(lambda: order.append("entries"))
        assert not writer.idle
        second = writer.submit_inline(lambda: order.append("commit"))
        assert not first.done() and not second.done()
        assert order == []
        executor.run_next()
        await next_turns()
        assert first.done() and not second.done()
        assert order == ["entries"]
        executor.run_next()
        await next_turns()
        assert second.done()
        assert order == ["entries", "commit"]
        assert wakes == ["wake", "wake"]
        assert writer.idle

    asyncio.run(scenario())


def test_the_loop_is_woken_only_once_the_result_is_set() -> None:
    async def scenario() -> None:
        seen: list[bool] = []
        future: asyncio.Future[Any] | None = None

        def wake() -> None:
            assert future is not None
            seen.append(future.done())

        writer = Writer(threaded=True, name="test-writer", wake=wake)
        executor = ManualExecutor()
        writer._executor = executor
        future = writer.submit(lambda: "written")
        executor.run_next()
        await next_turns()
        assert seen == [True]
        assert future.result()[0] == "written"

    asyncio.run(scenario())


def test_a_failed_write_is_its_futures_exception_inline_or_on_the_thread() -> None:
    def fail() -> None:
        raise OSError("disk gone")

    async def scenario() -> None:
        writer, executor, _ = manual_writer()
        inline = writer.submit_inline(fail)
        with pytest.raises(OSError, match="disk gone"):
            inline.result()
        threaded = writer.submit(fail)
        executor.run_next()
        await next_turns()
        with pytest.raises(OSError, match="disk gone"):
            threaded.result()
        assert writer.idle

    asyncio.run(scenario())


def test_a_real_writer_thread_keeps_submission_order() -> None:
    async def scenario() -> None:
        writer = Writer(threaded=True, name="test-writer", wake=lambda: None)
        order: list[int] = []
        futures = [writer.submit(order.append, number) for number in range(50)]
        cheap = writer.submit_inline(order.append, 50)
        await asyncio.gather(*futures, cheap)
        writer.shutdown()
        assert order == list(range(51))
        assert writer.idle

    asyncio.run(scenario())
