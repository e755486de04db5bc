"""The frames between a front and its member (raftkv.server.fronts.protocol): calls and
answers round-trip with raftkv's own KV values, and a frame over the limit, cut short or
not the message expected is refused rather than read past; the fronts' connection
counters add up in the member."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from raftkv.kv.commands import (
    MvccKeyValue,
    Put,
    Range,
    RangeResponse,
    ResponseHeader,
    Txn,
    TxnCompare,
)
from raftkv.raft.transport.tcp_framing import frame
from raftkv.server.fronts.gateway import FrontConnections
from raftkv.server.fronts.protocol import (
    FRAME_HEADER,
    FrameInvalid,
    FrontAnswer,
    FrontCall,
    FrontCounters,
    FrontError,
    FrontMessage,
    FrontObservation,
    FrontState,
    MemberMessage,
    max_frame_bytes,
    read_frame,
)

LIMIT = 1 << 16


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def _frames(data: bytes) -> list[bytes]:
    reader, found = _reader(data), []
    while (payload := await read_frame(reader, LIMIT)) is not None:
        found.append(payload)
    return found


def test_calls_answers_and_observations_round_trip_through_frames() -> None:
    call = FrontCall(
        call_id=7,
        request=Txn(
            compares=[TxnCompare(key=b"a", target="value", op="=", value=b"\x00\xff")],
            success=[Put(key=b"a", value=b"v", prev_kv=True)],
            failure=[Range(key=b"a", range_end=b"b", limit=3)],
        ),
        route="/v1/txn",
        http_method="POST",
        started=12.5,
        authorization="Bearer t",
        client_id="c",
        sequence=4,
    )
    observation = FrontObservation("/v1/kv/{key}", "PUT", 400, 0.002, "invalid_json")
    answer = FrontAnswer(
        call_id=7,
        leader=2,
        result=RangeResponse(
            ResponseHeader(5), [MvccKeyValue(b"a", b"v", 2, 5, 3, 0)], count=1, more=False
        ),
    )
    refusal = FrontAnswer(
        call_id=8, leader=0, error=FrontError(503, [("Content-Type", "application/json")], b"{}")
    )
    encoder = msgspec.msgpack.Encoder()
    counters = FrontCounters(3, 1, 0)
    stream = b"".join(frame(encoder.encode(item)) for item in (call, observation, counters))
    decoded = [
        msgspec.msgpack.decode(payload, type=FrontMessage)
        for payload in asyncio.run(_frames(stream))
    ]
    assert decoded == [call, observation, counters]
    state = FrontState(auth_enabled=True)
    stream = b"".join(frame(encoder.encode(item)) for item in (answer, state, refusal))
    decoded_answers = [
        msgspec.msgpack.decode(payload, type=MemberMessage)
        for payload in asyncio.run(_frames(stream))
    ]
    assert decoded_answers == [answer, state, refusal]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (FRAME_HEADER.pack(LIMIT + 1) + b"x", "over the limit"),
        (b"\x00\x00", "inside a frame header"),
        (FRAME_HEADER.pack(10) + b"short", "inside a frame of 10 bytes"),
    ],
)
def test_a_frame_over_the_limit_or_cut_short_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(FrameInvalid, match=message):
        asyncio.run(_frames(data))


def test_a_frame_that_is_not_a_call_does_not_decode_as_one() -> None:
    for payload in (b"\xc1", msgspec.msgpack.encode(["call", 1]), msgspec.msgpack.encode({"a": 1})):
        with pytest.raises(msgspec.DecodeError):
            msgspec.msgpack.decode(payload, type=FrontMessage)


def test_the_frame_limit_leaves_room_for_a_whole_request_body() -> None:
    body = 2 << 20
    assert max_frame_bytes(body) > 2 * body


def test_the_fronts_connection_counters_add_up_across_fronts_and_restarts() -> None:
    """`open` sums the live fronts' latest; refusals and accept errors only ever grow,
    a restarted front counting from zero again."""
    connections = FrontConnections()
    first, second, restarted = object(), object(), object()
    connections.update(first, FrontCounters(3, 1, 0))
    connections.update(second, FrontCounters(2, 0, 1))
    connections.update(first, FrontCounters(4, 2, 0))
    assert (connections.open, connections.refused, connections.accept_errors) == (6, 2, 1)
    connections.forget(first)
    connections.update(restarted, FrontCounters(1, 1, 0))
    assert (connections.open, connections.refused, connections.accept_errors) == (3, 3, 1)
