"""What a front process and its member say to each other over the member's private Unix
socket: length-prefixed MessagePack frames, one `FrontCall` per KV request a front serves,
one `FrontAnswer` per call, in any order (answers name their call), and a
`FrontObservation` for each request the front answered itself and `FrontCounters` each
second, for the member's metrics, which the member answers with its `FrontState`.

Frame: a 4-byte big-endian length, then that many bytes of MessagePack (the peer
transport's framing, `raftkv.raft.transport.tcp_framing.frame`; read here by `read_frame`,
which tells a clean end of the stream from a cut frame). A frame longer than
the reader's limit, or one that does not decode as what the reader expects, ends the
connection (`FrameInvalid`): the socket is the member's own (in a directory of mode
0700), so such a frame is a bug or a foreign process, and nothing in the stream after
it can be trusted.

The values are raftkv's own: the KV requests and results are `raftkv.kv.commands`'
tagged Structs, so a call carries exactly what `KvService` takes and an answer what it
returns; an error travels as the HTTP answer the member's API would give for it (status,
headers, body), which the front sends on unchanged.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Final, TypeVar

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

__all__ = [
    "FRAME_HEADER",
    "MAX_ANSWER_BYTES",
    "FrameInvalid",
    "FrameSender",
    "FrontAnswer",
    "FrontCall",
    "FrontCounters",
    "FrontError",
    "FrontMessage",
    "FrontObservation",
    "FrontState",
    "KvRequest",
    "KvResult",
    "MemberMessage",
    "max_frame_bytes",
    "read_frame",
    "read_message",
]

FRAME_HEADER: Final = struct.Struct(">I")
_MessageT = TypeVar("_MessageT")

KvRequest = Put | DeleteRange | Range | Txn | Compact
KvResult = PutResponse | DeleteRangeResponse | RangeResponse | TxnResponse | CompactResponse


class FrontCall(
    msgspec.Struct, tag="call", frozen=True, forbid_unknown_fields=True, array_like=True
):
    """One KV request a front took on its HTTP port, for the member's `KvService`.

    `authorization` is the request's Authorization header ("" without one): the member
    names the caller from it, as its own auth guard does. `route` is the route template
    and `http_method` the request's method (the member's HTTP metrics count the request
    under them). `started` is `time.monotonic()` when the front began the request: that
    clock is the machine's, the same in both processes, so the member's request duration
    spans the front's share too."""

    call_id: int
    request: KvRequest
    route: str
    http_method: str
    started: float
    authorization: str = ""
    serializable: bool = False
    client_id: str = ""
    sequence: int = 0


class FrontObservation(
    msgspec.Struct, tag="observation", frozen=True, forbid_unknown_fields=True, array_like=True
):
    """A request the front answered without a call (refused before it reached the
    store: a malformed body, an unknown key encoding, a Host not allowed), for the member's
    HTTP metrics to count it as its own app counts every answer. `error_code` is the
    answer's API error code ("" if none)."""

    route: str
    http_method: str
    status: int
    elapsed_s: float
    error_code: str = ""


class FrontCounters(
    msgspec.Struct, tag="counters", frozen=True, forbid_unknown_fields=True, array_like=True
):
    """A front's client port, as its `ClientPort` counts it (each second): connections
    open now, and since the front started, connections refused over its cap and accepts
    that failed. The member's /metrics shows them summed over its fronts."""

    open_connections: int
    refused_connections: int
    accept_errors: int


FrontMessage = FrontCall | FrontObservation | FrontCounters


class FrontError(msgspec.Struct, frozen=True, forbid_unknown_fields=True, array_like=True):
    """The HTTP answer the member's API gives for the error a call ended with."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class FrontAnswer(
    msgspec.Struct, tag="answer", frozen=True, forbid_unknown_fields=True, array_like=True
):
    """A call's outcome: its result, or its error; and the leader the member knew then
    (every answer's header names it)."""

    call_id: int
    leader: int
    result: KvResult | None = None
    error: FrontError | None = None


class FrontState(
    msgspec.Struct, tag="state", frozen=True, forbid_unknown_fields=True, array_like=True
):
    """What a front must know of its member's state, sent in reply to each of the front's
    `FrontCounters` (each second): whether auth is enabled. While it is, a front forwards
    a KV request without credentials to the member's app, which refuses it (401) before
    reading its body, as it refuses any such request."""

    auth_enabled: bool


MemberMessage = FrontAnswer | FrontState


class FrameInvalid(Exception):
    """A frame over the limit, cut short, or not the message expected: the connection
    carrying it must end."""


def max_frame_bytes(max_body_bytes: int) -> int:
    """The largest call, observation or counters frame the node accepts: a call carries at
    most a request body's worth of keys and values (decoded from JSON, so no larger), plus
    framing."""
    return 2 * max_body_bytes + (1 << 20)


# The largest answer a front accepts, and the node sends. An answer is not bounded by the
# request: a delete with prev_kv answers every value it deleted, as the node's own app
# would (one of 6 values of 1 MB is over a request's limit). The node refuses to send a
# larger one (413 `answer_too_large`); a front that reads a larger length ends the
# connection, as for any broken frame.
MAX_ANSWER_BYTES: Final = 256 << 20


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """The next frame's payload; None at a clean end of the stream (between frames)."""
    try:
        header = await reader.readexactly(FRAME_HEADER.size)
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            return None
        raise FrameInvalid("the stream ended inside a frame header") from None
    (size,) = FRAME_HEADER.unpack(header)
    if size > limit:
        raise FrameInvalid(f"a frame of {size} bytes is over the limit of {limit}")
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise FrameInvalid(f"the stream ended inside a frame of {size} bytes") from None


class FrameSender:
    """Sends frames on `writer`, every frame queued in one loop turn in one write: a call
    or an answer costs no system call of its own under load (the peer's frames are read
    the same way, as many as one read brings)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._queued: list[bytes] = []

    def send(self, payload: bytes) -> None:
        if not self._queued:
            asyncio.get_running_loop().call_soon(self._flush)
        self._queued.append(FRAME_HEADER.pack(len(payload)))
        self._queued.append(payload)

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        if not self.writer.is_closing():
            self.writer.writelines(queued)


async def read_message(
    reader: asyncio.StreamReader, limit: int, decoder: msgspec.msgpack.Decoder[_MessageT]
) -> _MessageT | None:
    """The next frame, decoded; None at a clean end of the stream. FrameInvalid if it is
    not what `decoder` reads."""
    payload = await read_frame(reader, limit)
    if payload is None:
        return None
    try:
        return decoder.decode(payload)
    except msgspec.DecodeError as error:
        raise FrameInvalid(f"not the message expected: {error}") from None
