"""`Writer`: the node's storage writes (a Ready's entries and hard state, our own
snapshots), run one at a time in the order they were submitted.

Invariants:
- writes run in submission order, one at a time: a snapshot write never overtakes the
  Ready write submitted before it, so the log it compacts is durable;
- with a thread (`NodeSettings.persist_in_thread`) the write runs off the event loop and
  its end wakes the loop; without one (deterministic simulations) it runs inline, at
  submission, and the returned future is already done;
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

    @property
    def threaded(self) -> bool:
        """Whether writes run on a thread of their own (False: inline, as in simulations)."""
        return self._executor is not None

    def submit(
        self, function: Callable[..., T], *arguments: Any, **keywords: Any
    ) -> asyncio.Future[tuple[T, float]]:
        """Run `function` after every write submitted before it. The future's result is
        the function's with the seconds the call itself took."""

        def timed() -> tuple[T, float]:
            started = time.perf_counter()
            result = function(*arguments, **keywords)
            return result, time.perf_counter() - started

        loop = asyncio.get_running_loop()
        if self._executor is None:
            future: asyncio.Future[tuple[T, float]] = loop.create_future()
            try:
                future.set_result(timed())
            except Exception as error:
                future.set_exception(error)
            return future
        future = loop.run_in_executor(self._executor, timed)
        future.add_done_callback(lambda _: self._wake())
        return future

    def shutdown(self) -> None:
        """Wait for the write under way, if any, and end the thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
