"""etcd's JSON gateway's streams — `POST /v3/watch`, `/v3/lease/keepalive`,
`/v3/maintenance/snapshot` — as etcd's grpc-gateway (v1, in etcd 3.5) serves them, through
the same servicer methods as the gRPC port.

Theory of operation:
- Requests: a server stream's body (Snapshot) is one request message, an empty body the
  empty request. A bidirectional stream's body (Watch, LeaseKeepAlive) is a sequence of
  request messages, JSON values one after another (usually one): grpc-gateway sends each
  on the stream, then closes its sending side. The whole body is read first (bounded by
  the HTTP port's body limit) and every value checked before the call starts: a value
  that is not the route's request message answers 400 with the unary error body.
- The call: the servicer method runs with `_StreamCall` as its gRPC context: `read()` and
  the request iterator hand out the body's requests, then EOF (the client closed its
  side: a Watch stream's watches go on, a LeaseKeepAlive stream ends once it has answered
  each request); `write()` writes a line; `abort()` ends the call with a status;
  `invocation_metadata()` is grpc-gateway's `Grpc-Metadata-<key>` headers (a client
  asks for a leader with `Grpc-Metadata-hasleader: true`, as etcdctl's metadata does).
- Answer: 200 `application/json`, chunked, one line per response message:
  `{"result": <message>}` in etcd's gateway mapping (the .proto's field names, bytes in
  base64, 64-bit integers as strings). A call that ends with a status ends with one
  line `{"error": {...}}` (raftkv.etcd.gateway_errors); the status line is sent with the
  first line, so an error before any result answers the error's HTTP status.
- Ending: the call task is the handler's; it ends when the servicer returns, or is
  cancelled (awaited, so a Watch stream releases every watch) when the client goes away
  or the node's watch hub closes (the node is stopping or removed: the answer then ends
  with etcd's "server stopped"). Both are checked every `LIVENESS_CHECK_S` of the node's
  clock; a write to a gone client fails at once. Nothing outlives the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Final, NoReturn, cast

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from raftkv.etcd.calls import Context, status_for
from raftkv.etcd.errors import STOPPED
from raftkv.etcd.gateway_errors import HTTP_STATUS, Aborted, error_line, error_response
from raftkv.kv.service import KvService

# How often a stream checks that its client is still there and the node still serving.
LIVENESS_CHECK_S: Final = 1.0
# How long the last line (an error) may take to reach a client before the connection is
# dropped: a client that reads nothing must not hold the handler.
LAST_LINE_S: Final = 0.5
# grpc-gateway's prefix of the HTTP headers it passes on as gRPC metadata.
_METADATA_PREFIX: Final = "grpc-metadata-"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A servicer's streaming method: a coroutine that writes through its context (Watch) or
# an async generator of responses (LeaseKeepAlive, Snapshot).
StreamMethod = Callable[[Any, Context], Any]


class _BadBody(Exception):
    pass


class _StreamCall:
    """The gRPC context a streaming servicer method gets, over one HTTP request (see the
    module docstring)."""

    def __init__(self, request: web.Request, requests: list[Message]) -> None:
        self._request = request
        # Invariant: the body's requests not handed out yet, in order.
        self._pending = deque(requests)
        # Prepared (status line and headers sent) on the first write.
        self.response: web.StreamResponse | None = None
        # The code the call was ended with (OK until it is aborted).
        self._code = grpc.StatusCode.OK

    # -- what servicers call ---------------------------------------------------------------

    async def read(self) -> Message | object:
        return self._pending.popleft() if self._pending else grpc.aio.EOF

    async def requests(self) -> AsyncIterator[Message]:
        while self._pending:
            yield self._pending.popleft()

    async def write(self, message: Message) -> None:
        fields = json_format.MessageToDict(message, preserving_proto_field_name=True)
        await self.write_line(_line({"result": fields}))

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        self._code = code
        raise Aborted(code, details)

    def code(self) -> grpc.StatusCode:
        return self._code

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple(
            (name.lower()[len(_METADATA_PREFIX) :], value)
            for name, value in self._request.headers.items()
            if name.lower().startswith(_METADATA_PREFIX)
        )

    def time_remaining(self) -> float | None:
        return None  # the service applies the server's request timeout

    # What a generated servicer's method that is not implemented sets before it raises.
    def set_code(self, code: grpc.StatusCode) -> None:
        pass

    def set_details(self, details: str) -> None:
        pass

    # -- the handler's ---------------------------------------------------------------------

    async def start(self, status: int = 200) -> web.StreamResponse:
        """The response, its status line and headers sent (once: the first line's)."""
        if self.response is None:
            response = web.StreamResponse(status=status)
            response.content_type = "application/json"
            # One HTTP chunk per line, as grpc-gateway flushes them: clients such as
            # etcd3gw read a chunk as a line.
            response.enable_chunked_encoding()
            await response.prepare(self._request)
            self.response = response
        return self.response

    async def write_line(self, line: bytes, status: int = 200) -> None:
        response = await self.start(status)
        await response.write(line)

    def drop(self) -> None:
        """Abort the connection, with whatever it still holds."""
        transport = self._request.transport
        if transport is not None:
            transport.abort()

    def client_gone(self) -> bool:
        transport = self._request.transport
        return transport is None or transport.is_closing()


def stream_handler(
    method: StreamMethod, request_type: type[Message], *, bidirectional: bool, service: KvService
) -> Handler:
    """The handler of one streaming route (see the module docstring)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            requests = _parse(await request.read(), request_type, several=bidirectional)
        except _BadBody as error:
            return error_response(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        call = _StreamCall(request, requests)
        if bidirectional:
            argument: Any = call.requests()
        else:
            argument = requests[0] if requests else request_type()
        status = await _supervise(
            call, _drive(call, method(argument, cast(Context, call))), service
        )
        if call.client_gone():
            return call.response if call.response is not None else web.Response()
        if status is not None:
            await _last_line(call, *status)
        # Nothing written (a keep-alive body with no request): an empty 200.
        return await call.start()

    return handle


async def _drive(call: _StreamCall, result: Any) -> None:
    """Run the servicer method's call to its end, writing what a generator yields."""
    if isinstance(result, Coroutine):
        await result
        return
    responses = cast(AsyncIterator[Message], result)
    try:
        async for response in responses:
            await call.write(response)
    finally:
        aclose = getattr(responses, "aclose", None)
        if aclose is not None:
            await aclose()


async def _supervise(
    call: _StreamCall, work: Coroutine[Any, Any, None], service: KvService
) -> tuple[grpc.StatusCode, str] | None:
    """Run `work` to its end, or until the client goes away or the node stops serving
    (see the module docstring); the status the stream ends with (None: none)."""
    task = asyncio.ensure_future(work)
    clock = service.clock
    try:
        while not task.done():
            check = asyncio.ensure_future(clock.sleep(LIVENESS_CHECK_S))
            try:
                await asyncio.wait({task, check}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                check.cancel()
            if task.done():
                break
            if call.client_gone():
                return None
            if service.watch_hub.closed:
                return STOPPED
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return None
    error = task.exception()
    if error is None:
        return None
    if isinstance(error, Aborted):
        return (error.code, error.message)
    if isinstance(error, NotImplementedError):
        return (grpc.StatusCode.UNIMPLEMENTED, "raftkv: this method is not served yet")
    if isinstance(error, (ConnectionError, RuntimeError)) and call.client_gone():
        # A write to a client that is gone (aiohttp: "Cannot write to closing transport").
        return None
    if isinstance(error, Exception):
        return status_for(error)
    raise error


async def _last_line(call: _StreamCall, code: grpc.StatusCode, message: str) -> None:
    """Write the stream's error line, giving the client LAST_LINE_S to take it; one that
    has not by then is dropped (the connection aborted)."""
    write = asyncio.ensure_future(call.write_line(error_line(code, message), HTTP_STATUS[code]))
    done, _ = await asyncio.wait({write}, timeout=LAST_LINE_S)
    if not done:
        write.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await write
    elif write.exception() is None:
        return
    call.drop()


def _parse(body: bytes, request_type: type[Message], *, several: bool) -> list[Message]:
    """The body's request messages (see the module docstring); _BadBody if it holds
    anything else."""
    name = request_type.DESCRIPTOR.name
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _BadBody(f"invalid JSON for {name}: the body is not UTF-8") from None
    decoder = json.JSONDecoder()
    requests: list[Message] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return requests
        if requests and not several:
            raise _BadBody(f"invalid JSON for {name}: one request message only")
        try:
            _, end = decoder.raw_decode(text, position)
            message = request_type()
            json_format.Parse(text[position:end], message)
        except (json.JSONDecodeError, json_format.ParseError) as error:
            # protobuf's message goes on with the list of every field: its first line says it.
            reason = str(error).splitlines()[0] if str(error) else "not JSON"
            raise _BadBody(f"invalid JSON for {name}: {reason}") from None
        requests.append(message)
        position = end


def _line(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"
