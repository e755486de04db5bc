"""`GET /v1/watch`: a watch as a stream of newline-delimited JSON (NDJSON).

Query: `key` (required unless `prefix=true`; with `prefix=true` an empty key watches every
key), `range_end` (etcd's convention) or `prefix=true`, `start_revision` (0: the next
revision of this node), `prev_kv`, `no_put`, `no_delete`, `progress_notify` (with
`progress_interval_s`, default the server's `watch_progress_interval_s`), `encoding=base64`.

Answer: 200 `application/x-ndjson`, one `WatchMessage` (`raftkv.server.api`) per line:
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
for `watch_send_timeout_s` (the client stopped reading)
is ended with `too_slow`: the line is queued and the connection closed, rather than letting
the watch hold the server's memory. A client that disconnects is noticed within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math

import msgspec
from aiohttp import web

from raftkv.kv.events import Event
from raftkv.kv.service import KvService
from raftkv.kv.watch import (
    TooManyWatches,
    Watch,
    WatchBatch,
    WatchCanceled,
    WatchOutcome,
    WatchProgress,
    WatchSpec,
)
from raftkv.server.api import (
    ErrorDetail,
    Header,
    WatchCreated,
    WatchEventAnswer,
    WatchEvents,
    WatchMessage,
)
from raftkv.server.api import WatchCanceled as WatchCanceledAnswer
from raftkv.server.api import WatchProgress as WatchProgressAnswer
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


class _TooSlow(Exception):
    pass


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

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/watch", self.watch, allow_head=False)]

    async def watch(self, request: web.Request) -> web.StreamResponse:
        codec = Codec.of(request)
        spec = self._spec(request, codec)
        start_revision = int_query(request, "start_revision")
        progress = self._progress_interval(request)
        hub = self.service.machine.watch_hub
        if hub.closed:
            raise ApiError(503, "stopped", "the node is stopping; watch through another member")
        try:
            watch = hub.open(spec, start_revision)
        except TooManyWatches as error:
            raise ApiError(503, TooManyWatches.code, str(error)) from error
        try:
            refused = watch.check_start()
            if refused is not None:
                assert refused.compact_revision is not None
                raise ApiError(
                    410,
                    "compacted",
                    refused.message,
                    compact_revision=refused.compact_revision,
                    oldest_revision=refused.compact_revision + 1,
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
        node = self.service.node
        created = WatchCreated(
            revision=watch.watermark,
            start_revision=watch.next_revision,
            header=Header(
                revision=self.service.machine.current_revision(), leader=int(node.leader_id)
            ),
        )
        try:
            await self._send(response, created)
            while True:
                outcome = await self._next(request, watch, progress)
                try:
                    message = self._message(outcome, codec)
                except ApiError as error:  # a value that is not UTF-8, asked without base64
                    outcome = WatchCanceled(watch.watermark, error.code, error.message)
                    message = self._message(outcome, codec)
                await self._send(response, message)
                if isinstance(outcome, WatchCanceled):
                    self.canceled[outcome.code] = self.canceled.get(outcome.code, 0) + 1
                    return
        except _ClientGone:
            return
        except _TooSlow:
            self.canceled["too_slow"] = self.canceled.get("too_slow", 0) + 1
            canceled = WatchCanceledAnswer(
                revision=watch.watermark,
                error=ErrorDetail(
                    code="too_slow",
                    message=f"the watch's writes were blocked for {self.send_timeout_s} s "
                    "(watch_send_timeout_s); resume from revision + 1",
                ),
            )
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    response.write(_ENCODER.encode(canceled) + b"\n"), _LAST_WORDS_S
                )
            if request.transport is not None:
                request.transport.close()

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
        return bool(timeout) and self.service.node.leaderless_seconds() >= timeout

    async def _send(self, response: web.StreamResponse, message: WatchMessage) -> None:
        line = _ENCODER.encode(message) + b"\n"
        try:
            await asyncio.wait_for(response.write(line), self.send_timeout_s)
        except TimeoutError as error:
            raise _TooSlow from error
        except (ConnectionError, RuntimeError) as error:
            # RuntimeError: aiohttp's "Cannot write to closing transport".
            raise _ClientGone from error
        self.messages_sent += 1
        if isinstance(message, WatchEvents):
            self.events_sent += len(message.events)

    def _message(self, outcome: WatchOutcome, codec: Codec) -> WatchMessage:
        match outcome:
            case WatchBatch():
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
