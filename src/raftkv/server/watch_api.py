"""`GET /v1/watch`: a watch as a stream of newline-delimited JSON (NDJSON).

Query: `key` (required unless `prefix=true`; with `prefix=true` an empty key watches every
key), `range_end` (etcd's convention) or `prefix=true`, `start_revision` (0: the next
revision of this node), `prev_kv`, `no_put`, `no_delete`, `progress_notify` (with
`progress_interval_s`, default the server's `watch_progress_interval_s`), `encoding=base64`.

Answer: 200 `application/x-ndjson`, one `WatchMessage` (`raftkv.api.watches`) per line:
`created` first, then `events` and `progress` messages, and `canceled` last if the server
ends the watch. Every message's `revision` is a watermark (everything matching at or below
it has been sent): resume with `start_revision = revision + 1`. Usable from curl:
`curl -N 'http://127.0.0.1:8080/v1/watch?key=app/&prefix=true'`.

Refusals before the stream starts are ordinary JSON errors: 410 `compacted` (with
`compact_revision` and `oldest_revision`), 400 `invalid_request`/`empty_key`, 503
`too_many_watches` or `stopped`.

A watch on a member that has had no leader for `watch_no_leader_timeout_s` (cut off from
the cluster: its state may be stale and its progress would say nothing true) is ended with
`no_leader`, so the client resumes on another member. A watch whose writes stay blocked
for `watch_send_timeout_s` (the client stopped reading), or that holds the most bytes when
the node's watches together hold more than `watch_max_total_buffered_bytes`
(`raftkv.kv.watch`), is ended with `too_slow`: the line is queued, and the connection
closed once the client has taken it, or dropped with what it still holds after a short
bound, rather than letting the watch hold the server's memory. A watch on a node that is
stopping, or was removed from the cluster, is ended at once (`stopping`, `removed`), even
in the middle of a write. A client that disconnects is noticed within a second.

Memory: a watch writes one message at a time and reads the next only once it is written;
while it waits, it holds nothing it has sent (see `_forward`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from asyncio import FIRST_COMPLETED
from typing import Any

import msgspec
from aiohttp import web

from raftkv.api.errors import ErrorDetail
from raftkv.api.keys import Header
from raftkv.api.watches import WatchCanceled as WatchCanceledAnswer
from raftkv.api.watches import WatchCreated, WatchEventAnswer, WatchEvents, WatchMessage
from raftkv.api.watches import WatchProgress as WatchProgressAnswer
from raftkv.kv.events import Event
from raftkv.kv.service import KvService
from raftkv.kv.watch import (
    EventBatch,
    TooManyWatches,
    Watch,
    WatchCanceled,
    WatchOutcome,
    WatchProgress,
    WatchSpec,
)
from raftkv.server.http_common import (
    ApiError,
    Codec,
    bool_query,
    int_query,
    key_range,
    key_value_answer,
)

logger = logging.getLogger(__name__)

_ENCODER = msgspec.json.Encoder()
# How often a waiting watch checks that its client is still connected (aiohttp does not
# cancel handlers when the client goes away).
_LIVENESS_CHECK_S = 1.0
# Bounds of a client-chosen progress interval.
_PROGRESS_INTERVAL_S = (0.05, 3600.0)
# How long the final `too_slow` line may take to queue before the connection is closed.
_LAST_WORDS_S = 0.5


class _ClientGone(Exception):
    pass


class _Interrupted(Exception):
    """The watch ended while a message was being written (too slow, or ended from outside:
    see `Watch.ended`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _ended(watch: Watch) -> _Interrupted:
    canceled = watch.ended().result()
    return _Interrupted(canceled.code, canceled.message)


class WatchHandlers:
    def __init__(
        self,
        service: KvService,
        send_timeout_s: float,
        progress_interval_s: float,
        *,
        no_leader_timeout_s: float = 0.0,
    ) -> None:
        self.service = service
        self.send_timeout_s = send_timeout_s
        self.progress_interval_s = progress_interval_s
        self.no_leader_timeout_s = no_leader_timeout_s
        # Messages and events sent, and watches ended by the server, by reason.
        self.messages_sent = 0
        self.events_sent = 0
        self.canceled: dict[str, int] = {}

    async def watch(self, request: web.Request) -> web.StreamResponse:
        codec = Codec.of(request)
        spec = self._spec(request, codec)
        start_revision = int_query(request, "start_revision")
        progress = self._progress_interval(request)
        hub = self.service.watch_hub
        if hub.closed:
            raise ApiError(503, "stopped", "the node is stopping; watch through another member")
        try:
            watch = self.service.open_watch(spec, start_revision)
        except TooManyWatches as error:
            raise ApiError(503, TooManyWatches.code, str(error)) from error
        try:
            refused = watch.check_start()
            if refused is not None:
                assert refused.compact_revision is not None
                assert refused.oldest_revision is not None
                raise ApiError(
                    410,
                    "compacted",
                    refused.message,
                    compact_revision=refused.compact_revision,
                    oldest_revision=refused.oldest_revision,
                )
            response = web.StreamResponse(
                headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"}
            )
            await response.prepare(request)
            await self._stream(request, response, watch, codec, progress)
            return response
        finally:
            watch.release()

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        watch: Watch,
        codec: Codec,
        progress: float | None,
    ) -> None:
        created = WatchCreated(
            revision=watch.watermark,
            start_revision=watch.next_revision,
            header=Header(
                revision=self.service.current_revision(), leader=int(self.service.leader_id)
            ),
        )
        # The watermark of the last message written in full: what an interrupted write's
        # cancel names (the message being written may or may not reach the client; the
        # client keeps the highest watermark it has seen, so naming less is safe).
        written = watch.watermark
        try:
            await self._send(response, _ENCODER.encode(created) + b"\n", watch)
            while True:
                revision = await self._forward(request, response, watch, codec, progress)
                if revision is None:
                    return
                written = revision
        except _ClientGone:
            return
        except _Interrupted as interrupted:
            await self._last_words(request, response, interrupted, written)

    async def _forward(
        self,
        request: web.Request,
        response: web.StreamResponse,
        watch: Watch,
        codec: Codec,
        progress: float | None,
    ) -> int | None:
        """Wait for the watch's next outcome and write it: its watermark, or None once the
        watch has ended. A frame of its own, so that nothing it wrote stays referenced while
        the watch waits for the next one (each idle watcher held its last message: 100
        watchers of 1 MB values held 100 MB for as long as the store stayed quiet)."""
        outcome = await self._next(request, watch, progress)
        line, outcome = self._encode(outcome, codec, watch)
        if isinstance(outcome, WatchCanceled):
            # The last line: not interrupted by the watch's own end.
            await self._send(response, line, None)
            self._count_canceled(outcome.code)
            return None
        await self._send(response, line, watch)
        del line  # written: not held while the watch waits
        if isinstance(outcome, EventBatch):
            self.events_sent += len(outcome.events)
            watch.written()
        return outcome.revision

    def _encode(
        self, outcome: WatchOutcome, codec: Codec, watch: Watch
    ) -> tuple[bytes, WatchOutcome]:
        """The outcome's line, and the outcome it stands for: a cancel if the outcome cannot
        be written (a value that is not UTF-8, asked without base64)."""
        try:
            message = self._message(outcome, codec)
        except ApiError as error:
            outcome = WatchCanceled(watch.watermark, error.code, error.message)
            message = self._message(outcome, codec)
        return _ENCODER.encode(message) + b"\n", outcome

    async def _last_words(
        self,
        request: web.Request,
        response: web.StreamResponse,
        interrupted: _Interrupted,
        written: int,
    ) -> None:
        """End a watch whose write was interrupted: queue its cancel line (naming the last
        watermark written in full), give the client `_LAST_WORDS_S` to take it, and close
        the connection; one whose client has not taken everything by then is dropped with
        what it holds (a close would keep that until the client reads: forever, for a
        client that is gone). A client that has not taken what it was already sent is
        dropped at once: the line would only queue behind that, and so would the memory,
        which the byte budget no longer counts (its cancels come in bursts)."""
        self._count_canceled(interrupted.code)
        transport = request.transport
        if transport is not None and transport.get_write_buffer_size():
            transport.abort()
            return
        answer = WatchCanceledAnswer(
            revision=written, error=ErrorDetail(code=interrupted.code, message=interrupted.message)
        )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(response.write(_ENCODER.encode(answer) + b"\n"), _LAST_WORDS_S)
        transport = request.transport
        if transport is None:
            return
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def _count_canceled(self, code: str) -> None:
        self.canceled[code] = self.canceled.get(code, 0) + 1

    async def _next(
        self, request: web.Request, watch: Watch, progress: float | None
    ) -> WatchOutcome:
        waiting = asyncio.ensure_future(watch.next(progress))
        try:
            while True:
                done, _ = await asyncio.wait([waiting], timeout=_LIVENESS_CHECK_S)
                if done:
                    return waiting.result()
                transport = request.transport
                if transport is None or transport.is_closing():
                    raise _ClientGone
                if self._leaderless_too_long():
                    # Ended like any other cancel (sent, counted by code).
                    return WatchCanceled(
                        watch.watermark,
                        "no_leader",
                        f"this member has had no leader for {self.no_leader_timeout_s:g} s "
                        "(cut off from the cluster?): resume on another member from "
                        "revision + 1",
                    )
        finally:
            if not waiting.done():
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting

    def _leaderless_too_long(self) -> bool:
        """Whether this member has known no leader for `no_leader_timeout_s` (its own
        clock); checked while a watch waits, every liveness check."""
        timeout = self.no_leader_timeout_s
        return bool(timeout) and self.service.leaderless_seconds() >= timeout

    async def _send(self, response: web.StreamResponse, line: bytes, watch: Watch | None) -> None:
        """Write `line`: _ClientGone if the connection is lost, _Interrupted if the write
        stays blocked for `send_timeout_s` or `watch` is ended meanwhile."""
        if watch is not None and watch.ended().done():
            raise _ended(watch)
        write = asyncio.ensure_future(response.write(line))
        waiting: set[asyncio.Future[Any]] = {write}
        if watch is not None:
            waiting.add(watch.ended())
        try:
            await asyncio.wait(waiting, timeout=self.send_timeout_s, return_when=FIRST_COMPLETED)
        finally:
            if not write.done():
                write.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
                    await write
        if write.done() and not write.cancelled():
            error = write.exception()
            if error is None:
                self.messages_sent += 1
                return
            if isinstance(error, (ConnectionError, RuntimeError)):
                # RuntimeError: aiohttp's "Cannot write to closing transport".
                raise _ClientGone from error
            raise error
        if watch is not None and watch.ended().done():
            raise _ended(watch)
        raise _Interrupted(
            "too_slow",
            f"the watch's writes were blocked for {self.send_timeout_s:g} s "
            "(watch_send_timeout_s); resume from revision + 1",
        )

    def _message(self, outcome: WatchOutcome, codec: Codec) -> WatchMessage:
        match outcome:
            case EventBatch():
                return WatchEvents(
                    revision=outcome.revision,
                    events=[self._event(event, codec) for event in outcome.events],
                )
            case WatchProgress():
                return WatchProgressAnswer(revision=outcome.revision)
            case WatchCanceled():
                return WatchCanceledAnswer(
                    revision=outcome.revision,
                    error=ErrorDetail(
                        code=outcome.code,
                        message=outcome.message,
                        compact_revision=outcome.compact_revision,
                        oldest_revision=outcome.oldest_revision,
                    ),
                )

    @staticmethod
    def _event(event: Event, codec: Codec) -> WatchEventAnswer:
        return WatchEventAnswer(
            type=event.type,
            kv=key_value_answer(event.kv, codec),
            prev_kv=None if event.prev_kv is None else key_value_answer(event.prev_kv, codec),
        )

    @staticmethod
    def _spec(request: web.Request, codec: Codec) -> WatchSpec:
        key = codec.decode(request.query.get("key", ""), "key")
        range_end = codec.decode(request.query.get("range_end", ""), "range_end")
        prefix = bool_query(request, "prefix")
        if not key and not prefix:
            raise ApiError(400, "empty_key", "watch: key is empty (prefix=true watches every key)")
        key, range_end = key_range(key, range_end, prefix)
        return WatchSpec(
            key=key,
            range_end=range_end,
            prev_kv=bool_query(request, "prev_kv"),
            no_put=bool_query(request, "no_put"),
            no_delete=bool_query(request, "no_delete"),
        )

    def _progress_interval(self, request: web.Request) -> float | None:
        if not bool_query(request, "progress_notify"):
            return None
        text = request.query.get("progress_interval_s")
        if text is None:
            return self.progress_interval_s
        low, high = _PROGRESS_INTERVAL_S
        try:
            interval = float(text)
        except ValueError:
            interval = math.nan
        if not low <= interval <= high:
            raise ApiError(
                400,
                "invalid_request",
                f"progress_interval_s must be a number in {low}..{high}, got {text!r}",
            )
        return interval
