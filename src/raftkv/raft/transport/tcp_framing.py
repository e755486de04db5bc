"""The TCP transport's wire: a greeting, then length-prefixed frames of `raft.proto`
messages.

A connection serves one purpose, named by its greeting (8 bytes, sent once by the side
that dialled): the magic `RKVT`, the framing version (1), the purpose, two zero bytes.

- MESSAGES: long-lived, one way. The listener accepts the greeting by sending it back
  (the dialler counts itself connected only then: with TLS 1.3 its handshake completes
  before the listener has checked its certificate; and a gRPC server, which greets every
  connection with HTTP/2 settings, is told apart), then the dialler sends `MessageBatch`
  frames; the listener writes nothing more, unless a frame is bad: then it answers one
  REFUSED reply saying why and closes the connection.
- SNAPSHOT: one snapshot transfer. The dialler sends `SnapshotUpload` frames, the listener
  answers `SnapshotReply` frames (the conversation of snapshot_transfer.py).
- MEMBER: one `MemberRequest` frame, one `MemberResponse` frame.

A frame is a 4-byte big-endian length, then that many bytes. The listener's frames start
with a status byte: OK and a protobuf message, or REFUSED and a UTF-8 reason, after which
the listener closes the connection.

Limits: a frame longer than the reader's limit is refused before any of it is read, so a
peer can make us buffer at most that limit per connection.
"""

from __future__ import annotations

import asyncio
import enum
import struct
from typing import Final

from raftkv.raft.core.errors import MalformedMessage

__all__ = [
    "GREETING_BYTES",
    "SAME_TRANSPORT_HINT",
    "Purpose",
    "Status",
    "frame",
    "greeting",
    "not_accepted",
    "read_frame",
    "read_greeting",
    "reply_frame",
    "split_reply",
]

_MAGIC: Final = b"RKVT"
_VERSION: Final = 1
GREETING_BYTES: Final = 8
_LENGTH = struct.Struct(">I")
# What an HTTP/2 client (gRPC) sends first; and the type of the frame an HTTP/2 server
# sends first (SETTINGS), at byte 3 of its 9-byte frame header.
_HTTP2_PREFACE_START: Final = b"PRI * HT"
_HTTP2_SETTINGS: Final = 4
SAME_TRANSPORT_HINT: Final = (
    "every member of a cluster must use the same peer_transport (a member set to grpc, "
    "or a raftkv older than the TCP transport, which spoke gRPC only?)"
)
# The longest reason a REFUSED reply carries (longer ones are cut).
_MAX_REASON_BYTES: Final = 1024


class Purpose(enum.IntEnum):
    MESSAGES = 1
    SNAPSHOT = 2
    MEMBER = 3


class Status(enum.IntEnum):
    OK = 0
    REFUSED = 1


def greeting(purpose: Purpose) -> bytes:
    return _MAGIC + bytes((_VERSION, purpose, 0, 0))


async def read_greeting(reader: asyncio.StreamReader) -> Purpose:
    """The purpose a dialler's greeting names. MalformedMessage for anything else (another
    protocol, another version); IncompleteReadError if the connection ends first."""
    data = await reader.readexactly(GREETING_BYTES)
    if data.startswith(_HTTP2_PREFACE_START):
        raise MalformedMessage(
            f"a gRPC client on the TCP peer port: {SAME_TRANSPORT_HINT} (this node: tcp)"
        )
    if data[:4] != _MAGIC:
        raise MalformedMessage(f"not a raftkv TCP transport greeting: {data!r}")
    if data[4] != _VERSION:
        raise MalformedMessage(
            f"TCP transport framing version {data[4]}, this node speaks {_VERSION}: upgrade "
            "the older node"
        )
    if data[6:] != b"\x00\x00":
        raise MalformedMessage(f"reserved greeting bytes set: {data!r}")
    try:
        return Purpose(data[5])
    except ValueError:
        raise MalformedMessage(f"unknown connection purpose {data[5]}") from None


def not_accepted(answer: bytes) -> str:
    """Why a listener's `answer` to a MESSAGES greeting is not the greeting sent back."""
    if len(answer) > 3 and answer[3] == _HTTP2_SETTINGS:
        return f"the peer speaks gRPC (HTTP/2): {SAME_TRANSPORT_HINT} (this node: tcp)"
    return f"the peer answered {answer!r} (not a raftkv node of this version)"


def frame(payload: bytes) -> bytes:
    """`payload` with its length in front."""
    return _LENGTH.pack(len(payload)) + payload


def reply_frame(status: Status, payload: bytes) -> bytes:
    """A listener's frame: the status byte, then the message (OK) or the reason (REFUSED)."""
    if status is Status.REFUSED:
        payload = payload[:_MAX_REASON_BYTES]
    return frame(bytes((status,)) + payload)


def split_reply(data: bytes) -> tuple[Status, bytes]:
    """(status, payload) of a listener's frame. MalformedMessage for an unknown status."""
    if not data:
        raise MalformedMessage("an empty reply frame")
    try:
        status = Status(data[0])
    except ValueError:
        raise MalformedMessage(f"unknown reply status {data[0]}") from None
    return status, data[1:]


async def read_frame(reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    """The next frame's payload. MalformedMessage for a frame announced longer than
    `max_bytes` (nothing of it is read); IncompleteReadError if the connection ends
    first."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if length > max_bytes:
        raise MalformedMessage(f"a frame of {length} bytes (at most {max_bytes} accepted)")
    return await reader.readexactly(length)
