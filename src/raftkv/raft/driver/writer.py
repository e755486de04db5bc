"""`Writer`: the node's storage writes (a Ready's entries and hard state, our own
snapshots), run one at a time in the order they were submitted.

Invariants:
- writes run in submission order, one at a time: a snapshot write never overtakes the
  Ready write submitted before it, so the log it compacts is durable;
- with a thread (`NodeSettings.persist_in_thread`) the write runs off the event loop and
  its end wakes the loop; without one (deterministic simulations) it runs inline, at
  submission, and the returned future is already done;
- `submit_inline` runs a write on the loop, at once, only when no write is under way:
  nothing is ahead of it, so the order above still holds;
- a write's failure is its future's exception: the loop that awaits it decides (a failed
  write is fatal to the node).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Writer:
    def __init__(self, *, threaded: bool, name: str, wake: Callable[[], None]) -> None:
        # No thread starts before the first write.
        self._executor: concurrent.futures.Executor | None = (
            concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
            if threaded
            else None
        )
        self._wake = wake
        # Writes handed to the thread whose end the loop has not seen yet (0 when idle).
        self._under_way = 0

    @property
    def threaded(self) -> bool:
        """Whether writes run on a thread of their own (False: inline, as in simulations)."""
        return self._executor is not None

    @property
    def idle(self) -> bool:
        """No write is under way: one submitted now runs next."""
        return self._under_way == 0

    def submit(
        self, function: Callable[..., T], *arguments: Any, **keywords: Any
    ) -> asyncio.Future[tuple[T, float]]:
        """Run `function` after every write submitted before it. The future's result is
        the function's with the seconds the call itself took."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[T, float]] = loop.create_future()
        if self._executor is None:
            _run_into(future, function, arguments, keywords)
            return future

        def finished(result: tuple[T, float] | None, error: BaseException | None) -> None:
            # On the loop: the future's result and the loop's wake in one turn (not a
            # callback of a callback, as run_in_executor's future would be).
            self._under_way -= 1
            if not future.done():
                if error is not None:
                    future.set_exception(error)
                else:
                    assert result is not None
                    future.set_result(result)
            self._wake()

        def run() -> None:
            # On the writer thread.
            try:
                started = time.perf_counter()
                value = function(*arguments, **keywords)
                outcome = (value, time.perf_counter() - started)
            except BaseException as error:  # handed to the loop, which decides
                loop.call_soon_threadsafe(finished, None, error)
                return
            loop.call_soon_threadsafe(finished, outcome, None)

        self._under_way += 1
        self._executor.submit(run)
        return future

    def submit_inline(
        self, function: Callable[..., T], *arguments: Any, **keywords: Any
    ) -> asyncio.Future[tuple[T, float]]:
        """As `submit`, but with no write under way it runs at once on the caller's thread
        (the loop), which keeps the order and saves the thread round trip: the node uses it
        where that round trip is on the path of a write and the thread overlaps nothing
        with the loop (Node._start_ready, docs/performance.md)."""
        if self._executor is None or not self.idle:
            return self.submit(function, *arguments, **keywords)
        future: asyncio.Future[tuple[T, float]] = asyncio.get_running_loop().create_future()
        _run_into(future, function, arguments, keywords)
        return future

    def shutdown(self) -> None:
        """Wait for the write under way, if any, and end the thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)


def _run_into(
    future: asyncio.Future[tuple[T, float]],
    function: Callable[..., T],
    arguments: tuple[Any, ...],
    keywords: dict[str, Any],
) -> None:
    """Run `function` here and now; its result (with the seconds it took) or its error
    becomes `future`'s."""
    started = time.perf_counter()
    try:
        value = function(*arguments, **keywords)
    except Exception as error:
        future.set_exception(error)
        return
    future.set_result((value, time.perf_counter() - started))
