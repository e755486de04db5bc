"""What the driver wraps around the application's bytes in the log and in snapshots.

- A proposal entry: a fixed 25-byte header (format version 1, origin node id, the origin's
  incarnation, a sequence number) and the command. The header lets the node that accepted
  the proposal recognise it when it applies it, wherever it was proposed from.
- A batch entry (format version 2, NodeSettings.batch_proposals): several proposals of one
  node in one entry, so that followers append, fsync and apply them as one: a 5-byte
  header (version, count) and per command a 28-byte header (origin, incarnation, sequence,
  length) and its bytes. Its commands apply in order, in one `apply` call, each with its
  own request id and result; they share the entry's index and term. A raftkv older than
  this format skips such an entry (the error below), so a cluster turns batching on only
  once every member reads it.
- A membership change's context: the request id and the peer addresses it introduces, so
  every node learns how to reach a new member from the log itself.
- A snapshot: the peer addresses known at that point and the state machine's bytes.

Entries and snapshots are read back on every node and after restarts, so decoding is
strict: an unknown version or a malformed envelope is an error, never a guess. A snapshot
received from a peer is decoded before any of it is persisted (Node.check_snapshot), so
a node never stores one it cannot read back.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated

import msgspec

from raftkv.raft.core.types import ConfChange, Entry, EntryKind, NodeId

PROPOSAL_VERSION = 1
BATCH_VERSION = 2
_HEADER = struct.Struct(">BQQQ")
HEADER_SIZE = _HEADER.size
_BATCH_HEADER = struct.Struct(">BI")
_BATCH_ITEM = struct.Struct(">QQQI")
# A batch entry's size: BATCH_HEADER_BYTES, then BATCH_ITEM_HEADER_BYTES and the bytes of
# each command.
BATCH_HEADER_BYTES = _BATCH_HEADER.size
BATCH_ITEM_HEADER_BYTES = _BATCH_ITEM.size
# The most commands one batch entry carries (Requests makes them; a peer's entry with more
# is refused on arrival, like any malformed one).
MAX_BATCH_COMMANDS = 4096


class EnvelopeError(ValueError):
    """Bytes in the log or a snapshot are not a valid envelope of a known version."""


@dataclass(frozen=True, slots=True)
class RequestId:
    """Unique across the cluster's life: a node id, a random 64-bit incarnation drawn at
    each start, and a counter."""

    origin: NodeId
    incarnation: int
    sequence: int


def encode_proposal(request: RequestId, command: bytes) -> bytes:
    return (
        _HEADER.pack(PROPOSAL_VERSION, request.origin, request.incarnation, request.sequence)
        + command
    )


def decode_proposal(data: bytes) -> tuple[RequestId, bytes]:
    if len(data) < HEADER_SIZE:
        raise EnvelopeError(f"proposal of {len(data)} bytes is shorter than its header")
    version, origin, incarnation, sequence = _HEADER.unpack_from(data)
    if version != PROPOSAL_VERSION:
        raise EnvelopeError(f"proposal format version {version} is unknown")
    return RequestId(NodeId(origin), incarnation, sequence), data[HEADER_SIZE:]


def encode_batch(proposals: Sequence[tuple[RequestId, bytes]]) -> bytes:
    """One entry carrying `proposals` (2 to MAX_BATCH_COMMANDS), applied in this order."""
    if not 2 <= len(proposals) <= MAX_BATCH_COMMANDS:
        raise ValueError(
            f"a batch carries 2 to {MAX_BATCH_COMMANDS} commands, not {len(proposals)}"
        )
    parts = [_BATCH_HEADER.pack(BATCH_VERSION, len(proposals))]
    for request, command in proposals:
        parts.append(
            _BATCH_ITEM.pack(request.origin, request.incarnation, request.sequence, len(command))
        )
        parts.append(command)
    return b"".join(parts)


def decode_proposals(data: bytes) -> list[tuple[RequestId, bytes]]:
    """The proposals an entry carries, in order: one (version 1) or a batch (version 2).
    EnvelopeError if it is neither, or a batch is malformed (a count of 0 or 1 or over
    MAX_BATCH_COMMANDS, a length past the end, bytes after the last command)."""
    if data[:1] != bytes([BATCH_VERSION]):
        return [decode_proposal(data)]
    if len(data) < _BATCH_HEADER.size:
        raise EnvelopeError(f"batch of {len(data)} bytes is shorter than its header")
    _, count = _BATCH_HEADER.unpack_from(data)
    if not 2 <= count <= MAX_BATCH_COMMANDS:
        raise EnvelopeError(f"batch of {count} commands (2 to {MAX_BATCH_COMMANDS})")
    proposals: list[tuple[RequestId, bytes]] = []
    position = _BATCH_HEADER.size
    view = memoryview(data)
    for number in range(count):
        if len(data) - position < _BATCH_ITEM.size:
            raise EnvelopeError(f"batch command {number} is cut short in its header")
        origin, incarnation, sequence, length = _BATCH_ITEM.unpack_from(data, position)
        position += _BATCH_ITEM.size
        if len(data) - position < length:
            raise EnvelopeError(
                f"batch command {number} of {length} bytes runs past the entry's end"
            )
        command = bytes(view[position : position + length])
        position += length
        proposals.append((RequestId(NodeId(origin), incarnation, sequence), command))
    if position != len(data):
        raise EnvelopeError(f"batch has {len(data) - position} bytes after its last command")
    return proposals


class _ConfChangeContext(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    version: int
    request: tuple[int, int, int] | None
    peers: dict[int, str]


# The snapshot envelope is a msgpack array whose first element is its version (the tag) and
# whose last is the application's bytes (so a chunked container the application wrote
# stays readable from the end of the whole snapshot: raftkv.raft.snapshot_chunks).
# Node ids are positive (decoding refuses anything else: a snapshot can come from a peer,
# and its ids become transport peers and membership checks). MessagePack integers stop at
# 2**64 - 1 (MAX_NODE_ID) by themselves.
_NodeIdField = Annotated[int, msgspec.Meta(gt=0)]


class _SnapshotEnvelopeV1(
    msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag=1, tag_field="version"
):
    peers: dict[_NodeIdField, str]
    app: bytes


class _SnapshotEnvelopeV2(
    msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag=2, tag_field="version"
):
    peers: dict[_NodeIdField, str]
    # Ids removed from the cluster up to the snapshot: never members again (see
    # Node._removed).
    removed: list[_NodeIdField]
    app: bytes


_CONTEXT_DECODER = msgspec.msgpack.Decoder(_ConfChangeContext)
_SNAPSHOT_DECODER = msgspec.msgpack.Decoder(_SnapshotEnvelopeV1 | _SnapshotEnvelopeV2)
_ENCODER = msgspec.msgpack.Encoder()


def encode_conf_change_context(request: RequestId | None, peers: dict[NodeId, str]) -> bytes:
    request_tuple = (
        None if request is None else (request.origin, request.incarnation, request.sequence)
    )
    return _ENCODER.encode(
        _ConfChangeContext(version=1, request=request_tuple, peers=dict(peers.items()))
    )


def decode_conf_change_context(data: bytes) -> tuple[RequestId | None, dict[NodeId, str]]:
    if not data:
        return None, {}
    try:
        context = _CONTEXT_DECODER.decode(data)
    except msgspec.DecodeError as error:
        raise EnvelopeError(f"membership change context is malformed: {error}") from error
    if context.version != 1:
        raise EnvelopeError(f"membership change context version {context.version} is unknown")
    request = None
    if context.request is not None:
        origin, incarnation, sequence = context.request
        request = RequestId(NodeId(origin), incarnation, sequence)
    return request, {NodeId(peer): address for peer, address in context.peers.items()}


def encode_snapshot(peers: dict[NodeId, str], app: bytes, removed: Iterable[NodeId] = ()) -> bytes:
    envelope = _SnapshotEnvelopeV2(peers=dict(peers.items()), removed=sorted(removed), app=app)
    return _ENCODER.encode(envelope)


def encode_snapshot_head(
    peers: dict[NodeId, str], app_bytes: int, removed: Iterable[NodeId] = ()
) -> bytes:
    """What `encode_snapshot(peers, app, removed)` writes before `app`, for an `app` of
    `app_bytes` bytes: the snapshot is this head, then `app` (its last field), so a
    snapshot too large to hold in memory can be written a piece at a time."""
    empty = encode_snapshot(peers, b"", removed)
    if not empty.endswith(_EMPTY_BIN):
        raise AssertionError("the snapshot envelope's last field is not its app bytes")
    return empty[: -len(_EMPTY_BIN)] + _bin_header(app_bytes)


# MessagePack's bin formats, as msgspec picks them: the smallest that holds the length.
_EMPTY_BIN = b"\xc4\x00"


def _bin_header(length: int) -> bytes:
    for marker, size in ((0xC4, 1), (0xC5, 2), (0xC6, 4)):
        if length < 1 << (8 * size):
            return bytes([marker]) + length.to_bytes(size, "big")
    raise ValueError(f"a snapshot's app bytes stop at 2**32 - 1, not {length}")


def decode_snapshot(data: bytes) -> tuple[dict[NodeId, str], bytes]:
    """The peers and the application's bytes of a snapshot's data."""
    peers, _, app = decode_snapshot_envelope(data)
    return peers, app


def decode_snapshot_envelope(data: bytes) -> tuple[dict[NodeId, str], frozenset[NodeId], bytes]:
    """The peers, the removed ids and the application's bytes of a snapshot's data."""
    try:
        envelope = _SNAPSHOT_DECODER.decode(data)
    except msgspec.DecodeError as error:
        # msgspec names an unknown tag ("Invalid value 3 - at `$[0]`").
        raise EnvelopeError(f"snapshot envelope is malformed: {error}") from error
    peers = {NodeId(peer): address for peer, address in envelope.peers.items()}
    removed = (
        frozenset(NodeId(peer) for peer in envelope.removed)
        if isinstance(envelope, _SnapshotEnvelopeV2)
        else frozenset()
    )
    return peers, removed, envelope.app


def check_forwarded_entries(entries: Sequence[Entry]) -> None:
    """Raise EnvelopeError unless every entry a peer forwards for the log is one this
    version can apply: a command envelope or a membership change with a valid context."""
    for entry in entries:
        if entry.kind is EntryKind.CONF_CHANGE:
            try:
                change = ConfChange.decode(entry.data)
            except ValueError as error:
                raise EnvelopeError(f"forwarded membership change: {error}") from error
            decode_conf_change_context(change.context)
        else:
            decode_proposals(entry.data)
