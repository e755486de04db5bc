"""A front's end of its member's gateway: `MemberChannel` (one Unix connection, calls
multiplexed by id) and `RemoteKvService` (the part of `KvService` the KV handlers call,
each call sent through the channel).

The request a call stands for is the current one: a front middleware sets it in
`CURRENT_REQUEST` (its route, method, start and Authorization header), and
`RemoteKvService` reads it there, so `raftkv.server.kv_api.KvHandlers` runs unchanged.

A call the member does not answer within the request timeout plus `_ANSWER_MARGIN_S` (up
to `_EXPIRY_INTERVAL_S` more) is a 504 `timeout` (the member bounds its own work by the
same timeout, so this only trips when it is stalled). If the connection ends, every call
waiting on it is a 503 `member_unavailable`, and the front stops: its supervisor in the member
starts another.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from raftkv.kv.commands import (
    Compact,
    CompactResponse,
    DeleteRange,
    DeleteRangeResponse,
    Put,
    PutResponse,
    Range,
    RangeResponse,
    Txn,
    TxnResponse,
)
from raftkv.raft.core.types import NodeId
from raftkv.raft.tasks import cancel_and_wait
from raftkv.server.fronts.protocol import (
    MAX_ANSWER_BYTES,
    FrameInvalid,
    FrameSender,
    FrontAnswer,
    FrontCall,
    FrontCounters,
    FrontError,
    FrontObservation,
    FrontState,
    KvRequest,
    KvResult,
    MemberMessage,
    read_message,
)
from raftkv.server.http_common import ApiError

__all__ = [
    "CURRENT_REQUEST",
    "CurrentRequest",
    "MemberChannel",
    "MemberRefusal",
    "RemoteKvService",
]

logger = logging.getLogger(__name__)

_ResultT = TypeVar("_ResultT", bound=KvResult)
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(MemberMessage)
# How much longer than the request timeout a call waits for the member's answer, and how
# often overdue calls are looked for.
_ANSWER_MARGIN_S = 5.0
_EXPIRY_INTERVAL_S = 1.0


@dataclass(slots=True)
class CurrentRequest:
    """The HTTP request being served, as its calls to the member name it.
    `counted_by_member` is set once a call or a forward carried it to the member, which
    then counts it in its metrics."""

    route: str
    http_method: str
    started: float
    authorization: str
    counted_by_member: bool = False


CURRENT_REQUEST: contextvars.ContextVar[CurrentRequest] = contextvars.ContextVar(
    "raftkv_front_request"
)


class MemberRefusal(Exception):
    """The member's answer to a call was an error: `answer` is the HTTP answer it gives
    for it, which the front sends as it is."""

    def __init__(self, answer: FrontError) -> None:
        super().__init__(f"the member answered {answer.status}")
        self.answer = answer


class MemberChannel:
    """The connection to the member's gateway. `call` sends one call and waits for its
    answer; `observe` sends one observation. `closed` is set once the connection ended
    (then every call fails and `on_lost` has been called)."""

    def __init__(self, path: str, max_frame_bytes: int, on_lost: Callable[[str], None]) -> None:
        self.path = path
        self.max_frame_bytes = max_frame_bytes
        self.on_lost = on_lost
        self.leader = 0
        # Whether auth is enabled on the member, as its last FrontState said.
        self.auth_enabled = False
        self.closed = asyncio.Event()
        self._call_ids = itertools.count(1)
        # Call id -> (its answer, when to give up on it: a loop time).
        self._waiting: dict[int, tuple[asyncio.Future[FrontAnswer], float]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._sender: FrameSender | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(self.path)
        self._sender = FrameSender(self._writer)
        self._tasks = [
            asyncio.create_task(self._read(reader), name="raftkv-front-answers"),
            asyncio.create_task(self._expire(), name="raftkv-front-deadlines"),
        ]

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        for task in self._tasks:
            await cancel_and_wait(task)

    async def call(self, call: FrontCall, timeout: float) -> FrontAnswer:
        if self.closed.is_set() or self._sender is None:
            raise _unavailable()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[FrontAnswer] = loop.create_future()
        self._waiting[call.call_id] = (future, loop.time() + timeout + _ANSWER_MARGIN_S)
        try:
            self._sender.send(_ENCODER.encode(call))
            return await future
        finally:
            self._waiting.pop(call.call_id, None)

    def observe(self, observation: FrontObservation | FrontCounters) -> None:
        if self._sender is not None and not self.closed.is_set():
            self._sender.send(_ENCODER.encode(observation))

    async def _expire(self) -> None:
        """Fail each call past its deadline (a sweep a second, not a timer per call)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_EXPIRY_INTERVAL_S)
            now = loop.time()
            for future, deadline in list(self._waiting.values()):
                if deadline <= now and not future.done():
                    future.set_exception(
                        ApiError(
                            504,
                            "timeout",
                            "the node did not answer in time; the outcome is unknown",
                        )
                    )

    def next_call_id(self) -> int:
        return next(self._call_ids)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        reason = "the node closed the connection"
        try:
            while True:
                answer = await read_message(reader, MAX_ANSWER_BYTES, _DECODER)
                if answer is None:
                    break
                if isinstance(answer, FrontState):
                    self.auth_enabled = answer.auth_enabled
                    continue
                self.leader = answer.leader
                waiting = self._waiting.get(answer.call_id)
                if waiting is not None and not waiting[0].done():
                    waiting[0].set_result(answer)
        except FrameInvalid as error:
            reason = str(error)
        except ConnectionError as error:
            reason = f"the connection failed: {error}"
        finally:
            self.closed.set()
            for future, _ in self._waiting.values():
                if not future.done():
                    future.set_exception(_unavailable())
            self.on_lost(reason)


def _unavailable() -> ApiError:
    return ApiError(
        503, "member_unavailable", "the node is not answering: retry, or use another member"
    )


class RemoteKvService:
    """What `KvHandlers` calls on `KvService`, each call sent to the member."""

    def __init__(self, channel: MemberChannel) -> None:
        self.channel = channel

    @property
    def leader_id(self) -> NodeId:
        """The leader the member named in its last answer (0 before any)."""
        return NodeId(self.channel.leader)

    async def put(
        self,
        key: bytes,
        value: bytes,
        *,
        lease: int = 0,
        prev_kv: bool = False,
        client_id: str = "",
        sequence: int = 0,
        timeout: float = 10.0,
    ) -> PutResponse:
        request = Put(key=key, value=value, lease=lease, prev_kv=prev_kv)
        return await self._call(
            request, PutResponse, timeout, client_id=client_id, sequence=sequence
        )

    async def delete_range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        prev_kv: bool = False,
        client_id: str = "",
        sequence: int = 0,
        timeout: float = 10.0,
    ) -> DeleteRangeResponse:
        request = DeleteRange(key=key, range_end=range_end, prev_kv=prev_kv)
        return await self._call(
            request, DeleteRangeResponse, timeout, client_id=client_id, sequence=sequence
        )

    async def range(
        self, query: Range, *, serializable: bool = False, timeout: float = 10.0
    ) -> RangeResponse:
        return await self._call(query, RangeResponse, timeout, serializable=serializable)

    async def txn(
        self,
        txn: Txn,
        *,
        serializable: bool = False,
        client_id: str = "",
        sequence: int = 0,
        timeout: float = 10.0,
    ) -> TxnResponse:
        return await self._call(
            txn,
            TxnResponse,
            timeout,
            serializable=serializable,
            client_id=client_id,
            sequence=sequence,
        )

    async def compact(self, revision: int, *, timeout: float = 10.0) -> CompactResponse:
        return await self._call(Compact(revision=revision), CompactResponse, timeout)

    async def _call(
        self,
        request: KvRequest,
        kind: type[_ResultT],
        timeout: float,
        *,
        serializable: bool = False,
        client_id: str = "",
        sequence: int = 0,
    ) -> _ResultT:
        current = CURRENT_REQUEST.get()
        current.counted_by_member = True
        call = FrontCall(
            call_id=self.channel.next_call_id(),
            request=request,
            route=current.route,
            http_method=current.http_method,
            started=current.started,
            authorization=current.authorization,
            serializable=serializable,
            client_id=client_id,
            sequence=sequence,
        )
        answer = await self.channel.call(call, timeout)
        if answer.error is not None:
            raise MemberRefusal(answer.error)
        if not isinstance(answer.result, kind):
            raise ApiError(
                500,
                "internal",
                f"internal error: the node answered a {type(answer.result).__name__} to a "
                f"{kind.__name__} call",
            )
        return answer.result
