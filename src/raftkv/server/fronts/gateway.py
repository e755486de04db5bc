"""`FrontGateway`: the member's end of its fronts' calls (`raftkv.server.fronts.protocol`).

Each call runs as the member's own HTTP app would run the request it stands for, in the
same order: the caller named from the Authorization header (the auth guard; a KV route is
never public, so without a caller while auth is enabled it is 401), the CORRUPT guard,
the removal guard, then `KvService`, acting as the caller. An error becomes the HTTP
answer the app gives for it (`raftkv.server.errors.error_answer`). The request is counted
in the app's HTTP metrics, under its route, method and status, with its duration from
when the front began it.

Limits: frames up to `max_frame_bytes`; at most `max_calls_in_flight` calls per front
connection run at once (a front takes no more requests than its connection cap, so this
only stops a broken one); a frame that is not a front's message (a call, an observation,
its counters) ends the connection, with one log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress

import msgspec
from aiohttp import hdrs, web

from raftkv.kv.callers import ANONYMOUS, Caller, acting_as, current_caller
from raftkv.kv.commands import Compact, DeleteRange, Put, Range, Txn
from raftkv.kv.service import KvService
from raftkv.raft.tasks import cancel_and_wait
from raftkv.server.auth_guard import token_caller
from raftkv.server.errors import error_answer
from raftkv.server.fronts.protocol import (
    MAX_ANSWER_BYTES,
    FrameInvalid,
    FrameSender,
    FrontAnswer,
    FrontCall,
    FrontCounters,
    FrontError,
    FrontMessage,
    FrontObservation,
    FrontState,
    KvResult,
    read_message,
)
from raftkv.server.http_common import ApiError, error_response
from raftkv.server.metrics import UNMATCHED_ROUTE, Metrics, error_code_of
from raftkv.server.node_api import corrupt_reason
from raftkv.server.removal import removed_message
from raftkv.server.routes import ROUTES

__all__ = ["FrontConnections", "FrontGateway"]

logger = logging.getLogger(__name__)

_DECODER = msgspec.msgpack.Decoder(FrontMessage)
_ENCODER = msgspec.msgpack.Encoder()
# The route templates a front may name (as aiohttp names them, the metrics' labels):
# the labels stay bounded by them.
_ROUTES = frozenset(web.UrlDispatcher().add_resource(route.path).canonical for route in ROUTES)


class FrontGateway:
    def __init__(
        self,
        service: KvService,
        metrics: Metrics,
        *,
        request_timeout_s: float,
        max_frame_bytes: int,
        max_calls_in_flight: int,
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.request_timeout_s = request_timeout_s
        self.max_frame_bytes = max_frame_bytes
        self.max_calls_in_flight = max_calls_in_flight
        self.connections = FrontConnections()
        # Fronts connected now (one connection each).
        self.fronts_connected = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one front's connection until it ends (an asyncio stream server's callback)."""
        calls: set[asyncio.Task[None]] = set()
        sender = FrameSender(writer)
        self.fronts_connected += 1
        room = asyncio.Semaphore(self.max_calls_in_flight)
        try:
            while True:
                message = await read_message(reader, self.max_frame_bytes, _DECODER)
                if message is None:
                    return
                if isinstance(message, FrontObservation):
                    self._observe_refusal(message)
                    continue
                if isinstance(message, FrontCounters):
                    self.connections.update(writer, message)
                    state = FrontState(auth_enabled=self.service.authorizer.enabled)
                    sender.send(_ENCODER.encode(state))
                    continue
                await room.acquire()
                task = asyncio.create_task(self._answer(message, sender))
                calls.add(task)
                task.add_done_callback(calls.discard)
                task.add_done_callback(lambda _: room.release())
        except FrameInvalid as error:
            logger.error("a front's connection ended: %s", error)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the front went away; its process supervisor says why
        finally:
            self.fronts_connected -= 1
            self.connections.forget(writer)
            for task in list(calls):
                await cancel_and_wait(task)
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, call: FrontCall, sender: FrameSender) -> None:
        result: KvResult | None = None
        failure: FrontError | None = None
        try:
            result = await self._run(call)
            status = 200
        except Exception as error:
            failure = _failure(_error_response(error, call))
            status = failure.status
        self.metrics.observe_answer(
            _known(call.route),
            call.http_method,
            status,
            max(0.0, time.monotonic() - call.started),
            error_code_of(failure.body) if failure is not None else "",
        )
        answer = FrontAnswer(call.call_id, int(self.service.leader_id), result, failure)
        try:
            encoded = _ENCODER.encode(answer)
        except (TypeError, ValueError) as error:  # a bug: still answer, never leave it waiting
            logger.exception("cannot encode the answer to a front's call", exc_info=error)
            refusal = error_response(500, "internal", f"internal error: {type(error).__name__}")
            encoded = _refusal(call, answer.leader, refusal)
        if len(encoded) > MAX_ANSWER_BYTES:
            refusal = error_response(
                413,
                "answer_too_large",
                f"the answer ({len(encoded)} bytes) is over the {MAX_ANSWER_BYTES} bytes a "
                "front process carries: narrow the request (or ask with http_workers 0)",
            )
            encoded = _refusal(call, answer.leader, refusal)
        sender.send(encoded)

    async def _run(self, call: FrontCall) -> KvResult:
        service = self.service
        caller = self._caller(call)
        alarm = service.corrupt_alarm()
        if alarm is not None:
            raise ApiError(503, "corrupt", corrupt_reason(service.member_id, alarm))
        if service.removed:
            raise ApiError(503, "removed", removed_message(service.member_id))
        if caller == current_caller():  # anonymous, while auth is disabled
            return await self._execute(call)
        with acting_as(caller):
            return await self._execute(call)

    def _caller(self, call: FrontCall) -> Caller:
        """The auth guard's verdict for a route that is not public (raftkv.server.auth_guard):
        the token's user, or no one; AuthRequired without one while auth is enabled."""
        authorizer = self.service.authorizer
        caller = token_caller(call.authorization, authorizer) or ANONYMOUS
        authorizer.user(caller)
        return caller

    async def _execute(self, call: FrontCall) -> KvResult:
        service, timeout = self.service, self.request_timeout_s
        request = call.request
        match request:
            case Put():
                return await service.put(
                    request.key,
                    request.value,
                    lease=request.lease,
                    prev_kv=request.prev_kv,
                    client_id=call.client_id,
                    sequence=call.sequence,
                    timeout=timeout,
                )
            case DeleteRange():
                return await service.delete_range(
                    request.key,
                    request.range_end,
                    prev_kv=request.prev_kv,
                    client_id=call.client_id,
                    sequence=call.sequence,
                    timeout=timeout,
                )
            case Range():
                return await service.range(request, serializable=call.serializable, timeout=timeout)
            case Txn():
                return await service.txn(
                    request,
                    serializable=call.serializable,
                    client_id=call.client_id,
                    sequence=call.sequence,
                    timeout=timeout,
                )
            case Compact():
                return await service.compact(request.revision, timeout=timeout)

    def _observe_refusal(self, observation: FrontObservation) -> None:
        self.metrics.observe_answer(
            _known(observation.route),
            observation.http_method,
            observation.status,
            observation.elapsed_s,
            observation.error_code,
        )


def _failure(response: web.Response) -> FrontError:
    """`response` (an API error answer) as a call's error."""
    headers = [
        (str(name), value)
        for name, value in response.headers.items()
        if name != hdrs.CONTENT_LENGTH
    ]
    body = response.body if isinstance(response.body, bytes) else b""
    return FrontError(response.status, headers, body)


def _refusal(call: FrontCall, leader: int, response: web.Response) -> bytes:
    """The encoded answer to `call` refusing it with `response` (an API error answer)."""
    return _ENCODER.encode(FrontAnswer(call.call_id, leader, None, _failure(response)))


def _known(route: str) -> str:
    return route if route in _ROUTES else UNMATCHED_ROUTE


class FrontConnections:
    """The fronts' client connections, from their `FrontCounters`: `open` sums what each
    live front has open; `refused` and `accept_errors` add up every front's, across its
    restarts too (each front counts from its own start).

    Invariant: `_last` holds the latest counters of each front still connected."""

    def __init__(self) -> None:
        self.refused = 0
        self.accept_errors = 0
        self._last: dict[object, FrontCounters] = {}

    @property
    def open(self) -> int:
        return sum(counters.open_connections for counters in self._last.values())

    def update(self, front: object, counters: FrontCounters) -> None:
        last = self._last.get(front, FrontCounters(0, 0, 0))
        self.refused += max(0, counters.refused_connections - last.refused_connections)
        self.accept_errors += max(0, counters.accept_errors - last.accept_errors)
        self._last[front] = counters

    def forget(self, front: object) -> None:
        self._last.pop(front, None)


def _error_response(error: Exception, call: FrontCall) -> web.Response:
    response = error_answer(error)  # a guard's refusal (ApiError) included
    if response is not None:
        return response
    logger.exception(
        "unexpected error serving %s %s for a front", call.http_method, call.route, exc_info=error
    )
    return error_response(500, "internal", f"internal error: {type(error).__name__}")
