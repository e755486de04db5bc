"""`Watcher`: an asyncio watch, as an async iterator that reconnects and resumes by itself
(the rules are `watching.WatchStream`'s; this is only its I/O).

    async with client.watch(b"app/", prefix=True) as watcher:
        async for event in watcher:          # WatchEvent, one at a time
            ...
    # or: async for batch in watcher.batches():   # WatchBatch: whole revisions

No async generators: leaving `async for event in client.watch(...)` with `break` (no
`async with`) leaves the watch to the garbage collector, and the event loop would then
close an async generator of ours and httpx's own at the same time ("aclose(): asynchronous
generator is already running"). The iterators here are plain objects; only httpx's
generators are left to the loop, which closes them one by one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from types import TracebackType

import httpx

from raftkv.client.results import WatchBatch, WatchEvent
from raftkv.client.watching import BatchReader, Reconnect, Retry, WatcherBase, WatchStream

__all__ = ["Watcher"]


class Watcher(WatcherBase):
    """Iterate it for events, or `batches()` for whole messages; once. End it with
    `aclose()` or by leaving `async with` (or just `break`: the connection is then closed
    when the watcher is collected). Raises Compacted when the history it needs is gone,
    Unavailable after `deadline_s` without any endpoint serving it, another ClientError
    when refused. `revision` and `reconnections`: see `WatcherBase`."""

    def __init__(
        self,
        stream: WatchStream,
        http: httpx.AsyncClient,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        request_timeout_s: float,
    ) -> None:
        super().__init__(stream, request_timeout_s)
        self._batches = _Batches(stream, http, sleep, clock, stream.timeout(request_timeout_s))

    def batches(self) -> AsyncIterator[WatchBatch]:
        self._claim()
        return self._batches

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return _Events(self.batches())

    async def aclose(self) -> None:
        await self._batches.aclose()

    async def __aenter__(self) -> Watcher:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class _Batches:
    """The watch's batches over the network: connect, read the stream, and on any end
    connect again where `WatchStream` says, after the wait it says."""

    def __init__(
        self,
        stream: WatchStream,
        http: httpx.AsyncClient,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        timeout: httpx.Timeout,
    ) -> None:
        self._stream = stream
        self._http = http
        self._sleep = sleep
        self._clock = clock
        self._timeout = timeout
        self._pending: deque[WatchBatch] = deque()
        # The open connection (None between connections), its endpoint and reader.
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._reader: BatchReader | None = None
        self._endpoint = ""
        self._closed = False

    def __aiter__(self) -> _Batches:
        return self

    async def __anext__(self) -> WatchBatch:
        try:
            while not self._pending:
                if self._closed:
                    raise StopAsyncIteration
                retry = await self._step()
                if retry is not None:
                    await self._sleep(retry.seconds)
        except BaseException:
            # The watch failed (a ClientError), or its caller was cancelled: it is over.
            await self.aclose()
            raise
        return self._pending.popleft()

    async def _step(self) -> Retry | None:
        """Read one chunk, connecting first if needed; a Retry when the connection ended."""
        stream = self._stream
        try:
            if self._chunks is None:
                self._endpoint = stream.connect_to()
                request = self._http.build_request(
                    "GET",
                    self._endpoint + "/v1/watch",
                    params=stream.params(),
                    timeout=self._timeout,
                )
                response = await self._http.send(request, stream=True)
                if response.status_code != 200:
                    content = await response.aread()
                    await response.aclose()
                    return stream.refused(
                        self._endpoint, response.status_code, content, self._clock()
                    )
                self._response = response
                self._chunks = response.aiter_bytes()
                self._reader = stream.reader(self._endpoint)
            assert self._reader is not None
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                await self._disconnect()
                return stream.lost(self._endpoint, "the stream ended", self._clock())
            self._pending.extend(self._reader.feed(chunk))
            return None
        except (Reconnect, httpx.TransportError) as error:
            await self._disconnect()
            return stream.interrupted(self._endpoint, error, self._clock())

    async def _disconnect(self) -> None:
        chunks, response = self._chunks, self._response
        self._chunks = self._response = self._reader = None
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()
        if response is not None:
            await response.aclose()

    async def aclose(self) -> None:
        self._closed = True
        self._pending.clear()
        await self._disconnect()


class _Events:
    """The events of a watch's batches, one at a time. A plain iterator, not an async
    generator: leaving `async for` with `break` leaves nothing of its own to finalize, so
    the event loop closes only the batches generator (an async generator wrapping another
    would have both closed at once by the loop's finalizer: "aclose(): asynchronous
    generator is already running")."""

    def __init__(self, batches: AsyncIterator[WatchBatch]) -> None:
        self._batches = batches
        self._pending: deque[WatchEvent] = deque()

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._pending:
            batch = await anext(self._batches)
            self._pending.extend(batch.events)
        return self._pending.popleft()
