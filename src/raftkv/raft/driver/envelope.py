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
  once every member reads it (log_formats.py).
- A format declaration (format version 3): a member says which entry formats it reads
  (log_formats.py): the proposal header, then the newest format it reads, the index it had
  applied and the members whose declarations it knew then. Applied by the driver, never
  passed to the state machine.
- A membership change's context: the request id and the peer addresses it introduces, so
  every node learns how to reach a new member from the log itself.
- A snapshot: the peer addresses, removed ids and format declarations known at that point,
  and the state machine's bytes.

Entries and snapshots are read back on every node and after restarts, so decoding is
strict: an unknown version or a malformed envelope is an error, never a guess. A snapshot
received from a peer is decoded before any of it is persisted (Node.check_snapshot), so
a node never stores one it cannot read back.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

import msgspec

from raftkv.raft.core.types import ConfChange, Entry, EntryKind, NodeId

PROPOSAL_VERSION = 1
BATCH_VERSION = 2
DECLARATION_VERSION = 3
_HEADER = struct.Struct(">BQQQ")
HEADER_SIZE = _HEADER.size
_BATCH_HEADER = struct.Struct(">BI")
_BATCH_ITEM = struct.Struct(">QQQI")
_BATCH_PREFIX = bytes([BATCH_VERSION])
# A batch entry's size: BATCH_HEADER_BYTES, then BATCH_ITEM_HEADER_BYTES and the bytes of
# each command.
BATCH_HEADER_BYTES = _BATCH_HEADER.size
BATCH_ITEM_HEADER_BYTES = _BATCH_ITEM.size
# The most commands one batch entry carries (Requests makes them; a peer's entry with more
# is refused on arrival, like any malformed one).
MAX_BATCH_COMMANDS = 4096
_DECLARATION = struct.Struct(">BQH")
_KNOWN_ID = struct.Struct(">Q")
# The most member ids a declaration names (a cluster has a handful of members).
MAX_DECLARED_MEMBERS = 1024


class EnvelopeError(ValueError):
    """Bytes in the log or a snapshot are not a valid envelope of a known version."""


class RequestId(msgspec.Struct, frozen=True, gc=False):
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
    if data[:1] != _BATCH_PREFIX:
        return [decode_proposal(data)]
    size = len(data)
    if size < _BATCH_HEADER.size:
        raise EnvelopeError(f"batch of {size} bytes is shorter than its header")
    _, count = _BATCH_HEADER.unpack_from(data)
    if not 2 <= count <= MAX_BATCH_COMMANDS:
        raise EnvelopeError(f"batch of {count} commands (2 to {MAX_BATCH_COMMANDS})")
    proposals: list[tuple[RequestId, bytes]] = []
    append, unpack_item, item_size = proposals.append, _BATCH_ITEM.unpack_from, _BATCH_ITEM.size
    position = _BATCH_HEADER.size
    # Once per entry on every member: locals and plain slices (one copy) keep it short.
    for number in range(count):
        if size - position < item_size:
            raise EnvelopeError(f"batch command {number} is cut short in its header")
        origin, incarnation, sequence, length = unpack_item(data, position)
        position += item_size
        end = position + length
        if end > size:
            raise EnvelopeError(
                f"batch command {number} of {length} bytes runs past the entry's end"
            )
        # NodeId is a NewType: at run time the int itself.
        append((RequestId(origin, incarnation, sequence), data[position:end]))
        position = end
    if position != size:
        raise EnvelopeError(f"batch has {size - position} bytes after its last command")
    return proposals


@dataclass(frozen=True, slots=True)
class Declaration:
    """A member's format declaration (log_formats.py): `request.origin` reads entry formats
    up to `reads`; it had applied `applied` and knew the declarations of `known` then."""

    request: RequestId
    reads: int
    applied: int
    known: frozenset[NodeId]


def is_declaration(data: bytes) -> bool:
    return data[:1] == bytes([DECLARATION_VERSION])


def encode_declaration(declaration: Declaration) -> bytes:
    if len(declaration.known) > MAX_DECLARED_MEMBERS:
        raise ValueError(f"a declaration names at most {MAX_DECLARED_MEMBERS} members")
    request = declaration.request
    parts = [
        _HEADER.pack(DECLARATION_VERSION, request.origin, request.incarnation, request.sequence),
        _DECLARATION.pack(declaration.reads, declaration.applied, len(declaration.known)),
    ]
    parts.extend(_KNOWN_ID.pack(member) for member in sorted(declaration.known))
    return b"".join(parts)


def decode_declaration(data: bytes) -> Declaration:
    """EnvelopeError unless `data` is exactly one well-formed declaration."""
    fixed = HEADER_SIZE + _DECLARATION.size
    if len(data) < fixed or not is_declaration(data):
        raise EnvelopeError(f"format declaration of {len(data)} bytes is malformed")
    _, origin, incarnation, sequence = _HEADER.unpack_from(data)
    reads, applied, count = _DECLARATION.unpack_from(data, HEADER_SIZE)
    if count > MAX_DECLARED_MEMBERS or len(data) != fixed + count * _KNOWN_ID.size:
        raise EnvelopeError(f"format declaration naming {count} members is malformed")
    known = frozenset(
        NodeId(_KNOWN_ID.unpack_from(data, fixed + number * _KNOWN_ID.size)[0])
        for number in range(count)
    )
    return Declaration(RequestId(NodeId(origin), incarnation, sequence), reads, applied, known)


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


_FormatField = Annotated[int, msgspec.Meta(ge=0, le=255)]
_IndexField = Annotated[int, msgspec.Meta(ge=0)]


class _SnapshotEnvelopeV3(
    msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag=3, tag_field="version"
):
    peers: dict[_NodeIdField, str]
    removed: list[_NodeIdField]
    # The members' format declarations (log_formats.py): id → (format read, index declared
    # at). Written only when there are any, so a cluster none of whose members declared
    # (an older raftkv) keeps reading its snapshots.
    formats: dict[_NodeIdField, tuple[_FormatField, _IndexField]]
    app: bytes


@dataclass(frozen=True, slots=True)
class SnapshotEnvelope:
    """What a snapshot's data holds besides the application's bytes, and those."""

    peers: dict[NodeId, str]
    removed: frozenset[NodeId]
    # Member id → (the newest entry format it reads, the index of its declaration).
    formats: dict[NodeId, tuple[int, int]]
    app: bytes


_CONTEXT_DECODER = msgspec.msgpack.Decoder(_ConfChangeContext)
_SNAPSHOT_DECODER = msgspec.msgpack.Decoder(
    _SnapshotEnvelopeV1 | _SnapshotEnvelopeV2 | _SnapshotEnvelopeV3
)
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


def encode_snapshot(
    peers: dict[NodeId, str],
    app: bytes,
    removed: Iterable[NodeId] = (),
    formats: Mapping[NodeId, tuple[int, int]] | None = None,
) -> bytes:
    envelope: _SnapshotEnvelopeV2 | _SnapshotEnvelopeV3
    if formats:
        envelope = _SnapshotEnvelopeV3(
            peers=dict(peers.items()),
            removed=sorted(removed),
            formats=dict(formats.items()),
            app=app,
        )
    else:
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
    envelope = decode_snapshot_envelope(data)
    return envelope.peers, envelope.app


def decode_snapshot_envelope(data: bytes) -> SnapshotEnvelope:
    """The peers, removed ids, format declarations and application's bytes of a
    snapshot's data."""
    try:
        envelope = _SNAPSHOT_DECODER.decode(data)
    except msgspec.DecodeError as error:
        # msgspec names an unknown tag ("Invalid value 4 - at `$[0]`").
        raise EnvelopeError(f"snapshot envelope is malformed: {error}") from error
    peers = {NodeId(peer): address for peer, address in envelope.peers.items()}
    removed = (
        frozenset()
        if isinstance(envelope, _SnapshotEnvelopeV1)
        else frozenset(NodeId(peer) for peer in envelope.removed)
    )
    formats = (
        {NodeId(peer): (reads, index) for peer, (reads, index) in envelope.formats.items()}
        if isinstance(envelope, _SnapshotEnvelopeV3)
        else {}
    )
    return SnapshotEnvelope(peers, removed, formats, envelope.app)


def check_forwarded_entries(entries: Sequence[Entry]) -> None:
    """Raise EnvelopeError unless every entry a peer forwards for the log is one this
    version can apply: a command envelope, a format declaration or a membership change
    with a valid context."""
    for entry in entries:
        if entry.kind is EntryKind.CONF_CHANGE:
            try:
                change = ConfChange.decode(entry.data)
            except ValueError as error:
                raise EnvelopeError(f"forwarded membership change: {error}") from error
            decode_conf_change_context(change.context)
        elif is_declaration(entry.data):
            decode_declaration(entry.data)
        else:
            decode_proposals(entry.data)
