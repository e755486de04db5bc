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
from raftkv.client.watching import Reconnect, Retry, WatcherBase, WatchStream

__all__ = ["Watcher"]


class Watcher(WatcherBase):
    """Iterate it for events, or `batches()` for whole messages; once. End it with
    `aclose()` or by leaving `async with`. Raises Compacted when the history it needs is
    gone, Unavailable after `deadline_s` without any endpoint serving it, another
    ClientError when refused. `revision` and `reconnections`: see `WatcherBase`."""

    def __init__(
        self,
        stream: WatchStream,
        http: httpx.AsyncClient,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        request_timeout_s: float,
    ) -> None:
        super().__init__(stream, request_timeout_s)
        self._http = http
        self._sleep = sleep
        self._clock = clock
        self._generator: AsyncGenerator[WatchBatch, None] | None = None

    def batches(self) -> AsyncIterator[WatchBatch]:
        self._claim()
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
        timeout = stream.timeout(self._request_timeout_s)
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
                        reader = stream.reader(endpoint)
                        async for chunk in response.aiter_bytes():
                            for batch in reader.feed(chunk):
                                yield batch
                        retry = stream.lost(endpoint, "the stream ended", self._clock())
            except (Reconnect, httpx.TransportError) as error:
                retry = stream.interrupted(endpoint, error, self._clock())
            await self._sleep(retry.seconds)
