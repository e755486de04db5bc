"""`SyncWatcher`: a blocking watch, as an iterator that reconnects and resumes by itself
(`async_watch.Watcher` without `await`; the rules are `watching.WatchStream`'s).

    with client.watch(b"app/", prefix=True) as watcher:
        for event in watcher:
            ...
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from types import TracebackType

import httpx

from raftkv.client.results import WatchBatch, WatchEvent
from raftkv.client.watching import Reconnect, Retry, WatcherBase, WatchStream

__all__ = ["SyncWatcher"]


class SyncWatcher(WatcherBase):
    """Iterate it for events, or `batches()` for whole messages; once. End it with
    `close()` or by leaving `with`."""

    def __init__(
        self,
        stream: WatchStream,
        http: httpx.Client,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        request_timeout_s: float,
    ) -> None:
        super().__init__(stream, request_timeout_s)
        self._http = http
        self._sleep = sleep
        self._clock = clock
        self._generator: Generator[WatchBatch, None, None] | None = None

    def batches(self) -> Iterator[WatchBatch]:
        self._claim()
        self._generator = self._run()
        return self._generator

    def __iter__(self) -> Iterator[WatchEvent]:
        for batch in self.batches():
            yield from batch.events

    def close(self) -> None:
        if self._generator is not None:
            self._generator.close()

    def __enter__(self) -> SyncWatcher:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self) -> Generator[WatchBatch, None, None]:
        stream = self._stream
        timeout = stream.timeout(self._request_timeout_s)
        while True:
            endpoint = stream.connect_to()
            retry: Retry
            try:
                with self._http.stream(
                    "GET", endpoint + "/v1/watch", params=stream.params(), timeout=timeout
                ) as response:
                    if response.status_code != 200:
                        content = response.read()
                        retry = stream.refused(
                            endpoint, response.status_code, content, self._clock()
                        )
                    else:
                        reader = stream.reader(endpoint)
                        for chunk in response.iter_bytes():
                            yield from reader.feed(chunk)
                        retry = stream.lost(endpoint, "the stream ended", self._clock())
            except (Reconnect, httpx.TransportError) as error:
                retry = stream.interrupted(endpoint, error, self._clock())
            self._sleep(retry.seconds)
