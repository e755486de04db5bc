"""`Watcher`: an asyncio watch, as an async iterator that reconnects and resumes by itself
(the rules are `watching.WatchStream`'s; this is only its I/O).

    async with client.watch(b"app/", prefix=True) as watcher:
        async for event in watcher:          # WatchEvent, one at a time
            ...
    # or: async for batch in watcher.batches():   # WatchBatch: whole revisions
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from types import TracebackType

import httpx

from raftkv.client.results import WatchBatch, WatchEvent
from raftkv.client.watching import LineSplitter, Reconnect, Retry, WatchStream

__all__ = ["Watcher"]


class Watcher:
    """Iterate it for events, or `batches()` for whole messages; once. End it with
    `aclose()` or by leaving `async with`. Raises Compacted when the history it needs is
    gone, Unavailable after `deadline_s` without any endpoint serving it, another
    ClientError when refused."""

    def __init__(
        self,
        stream: WatchStream,
        http: httpx.AsyncClient,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        request_timeout_s: float,
    ) -> None:
        self._stream = stream
        self._http = http
        self._sleep = sleep
        self._clock = clock
        self._request_timeout_s = request_timeout_s
        self._generator: AsyncGenerator[WatchBatch, None] | None = None

    @property
    def revision(self) -> int | None:
        """The watermark: every matching event at or below it was delivered (None before
        the watch started)."""
        return self._stream.watermark

    @property
    def reconnections(self) -> int:
        """How many times a connection ended or failed and the watch moved on."""
        return self._stream.reconnections

    def batches(self) -> AsyncIterator[WatchBatch]:
        if self._generator is not None:
            raise RuntimeError("a Watcher is iterated once")
        self._generator = self._run()
        return self._generator

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[WatchEvent]:
        async for batch in self.batches():
            for event in batch.events:
                yield event

    async def aclose(self) -> None:
        if self._generator is not None:
            await self._generator.aclose()

    async def __aenter__(self) -> Watcher:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[WatchBatch, None]:
        stream = self._stream
        timeout = httpx.Timeout(self._request_timeout_s, read=stream.read_timeout_s)
        while True:
            endpoint = stream.connect_to()
            retry: Retry
            try:
                async with self._http.stream(
                    "GET", endpoint + "/v1/watch", params=stream.params(), timeout=timeout
                ) as response:
                    if response.status_code != 200:
                        content = await response.aread()
                        retry = stream.refused(
                            endpoint, response.status_code, content, self._clock()
                        )
                    else:
                        lines = LineSplitter(endpoint)
                        async for chunk in response.aiter_bytes():
                            for line in lines.feed(chunk):
                                batch = stream.line(endpoint, line)
                                if batch is not None:
                                    yield batch
                        retry = stream.lost(endpoint, "the stream ended", self._clock())
            except Reconnect as reason:
                retry = stream.lost(endpoint, str(reason), self._clock())
            except httpx.TransportError as error:
                what = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                retry = stream.lost(endpoint, what, self._clock())
            await self._sleep(retry.seconds)
