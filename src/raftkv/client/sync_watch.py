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
from raftkv.client.watching import LineSplitter, Reconnect, Retry, WatchStream

__all__ = ["SyncWatcher"]


class SyncWatcher:
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
        self._stream = stream
        self._http = http
        self._sleep = sleep
        self._clock = clock
        self._request_timeout_s = request_timeout_s
        self._generator: Generator[WatchBatch, None, None] | None = None

    @property
    def revision(self) -> int | None:
        """The watermark (see `Watcher.revision`)."""
        return self._stream.watermark

    @property
    def reconnections(self) -> int:
        """How many times a connection ended or failed and the watch moved on."""
        return self._stream.reconnections

    def batches(self) -> Iterator[WatchBatch]:
        if self._generator is not None:
            raise RuntimeError("a SyncWatcher is iterated once")
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
        timeout = httpx.Timeout(self._request_timeout_s, read=stream.read_timeout_s)
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
                        lines = LineSplitter(endpoint)
                        for chunk in response.iter_bytes():
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
            self._sleep(retry.seconds)
