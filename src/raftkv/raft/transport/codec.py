"""Core values <-> protobuf (`raft.proto`), both directions, with validation.

Rules:
- This module, the snapshot modules (`snapshot_*.py`) and the network transports'
  (`grpc_*.py`, `tcp_*.py`, `raw_*.py`) are the only users of the generated `raft_pb2`;
  everything outside `raftkv.raft.transport` sees core values only.
- Decoding never trusts the peer. Every enum code is mapped through an explicit table (an
  unknown code is `MalformedMessage`, never a crash or a silent default), and every decoded
  message passes `check_peer_message`, so the core's own assertions only ever fire for our
  bugs. Node ids and indexes are `uint64` on the wire, hence always within [0, 2**64).
- Encoding a message the core should never send (a local type such as MsgHup, a negative
  term) is a local bug: `InvalidArgument`.
- Every field round-trips: `decode_message(encode_message(m)) == m` for every message that
  passes `check_peer_message`.
- Snapshot data travels apart from its MsgSnap, over its own stream
  (`snapshot_transfer.py`); `encode_message(..., with_snapshot_data=False)` leaves it out.

This is the hot path of replication (about 3 µs to encode and 6 µs to decode a one-entry
MsgApp): messages are built in place in their frame with keyword constructors, entries by
comprehension, and enum tables are looked up without hashing enum members.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

from google.protobuf.message import DecodeError

from raftkv.raft.core.errors import InvalidArgument, MalformedMessage
from raftkv.raft.core.rawnode import check_peer_message
from raftkv.raft.core.types import (
    NO_NODE,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    NodeId,
    Snapshot,
    SnapshotMetadata,
)
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport.base import MemberAction, MemberRequest, MemberResponse

# -- enum tables -------------------------------------------------------------------------------
# Explicit both ways: the wire numbers are a compatibility promise, the core's enum values
# are not. Local message types have no wire code on purpose.

_WIRE_MESSAGE_TYPE: dict[MessageType, wire.MessageType] = {
    MessageType.PROPOSE: wire.MSG_PROPOSE,
    MessageType.APPEND: wire.MSG_APPEND,
    MessageType.APPEND_RESPONSE: wire.MSG_APPEND_RESPONSE,
    MessageType.VOTE: wire.MSG_VOTE,
    MessageType.VOTE_RESPONSE: wire.MSG_VOTE_RESPONSE,
    MessageType.PRE_VOTE: wire.MSG_PRE_VOTE,
    MessageType.PRE_VOTE_RESPONSE: wire.MSG_PRE_VOTE_RESPONSE,
    MessageType.SNAPSHOT: wire.MSG_SNAPSHOT,
    MessageType.HEARTBEAT: wire.MSG_HEARTBEAT,
    MessageType.HEARTBEAT_RESPONSE: wire.MSG_HEARTBEAT_RESPONSE,
    MessageType.TRANSFER_LEADER: wire.MSG_TRANSFER_LEADER,
    MessageType.TIMEOUT_NOW: wire.MSG_TIMEOUT_NOW,
    MessageType.READ_INDEX: wire.MSG_READ_INDEX,
    MessageType.READ_INDEX_RESPONSE: wire.MSG_READ_INDEX_RESPONSE,
}
_CORE_MESSAGE_TYPE: dict[int, MessageType] = {
    code: message_type for message_type, code in _WIRE_MESSAGE_TYPE.items()
}
_WIRE_MESSAGE_TYPE_BY_VALUE: dict[str, wire.MessageType] = {
    message_type.value: code for message_type, code in _WIRE_MESSAGE_TYPE.items()
}

# The message types a transport can carry: everything but the core's local inputs.
WIRE_MESSAGE_TYPES = frozenset(_WIRE_MESSAGE_TYPE)

_WIRE_ENTRY_KIND: dict[EntryKind, wire.EntryKind] = {
    EntryKind.NORMAL: wire.ENTRY_KIND_NORMAL,
    EntryKind.CONF_CHANGE: wire.ENTRY_KIND_CONF_CHANGE,
}
_CORE_ENTRY_KIND: dict[int, EntryKind] = {code: kind for kind, code in _WIRE_ENTRY_KIND.items()}
_NORMAL = wire.ENTRY_KIND_NORMAL

_WIRE_MEMBER_ACTION: dict[MemberAction, wire.MemberAction] = {
    MemberAction.ADD_LEARNER: wire.MEMBER_ACTION_ADD_LEARNER,
    MemberAction.PROMOTE: wire.MEMBER_ACTION_PROMOTE,
    MemberAction.REMOVE: wire.MEMBER_ACTION_REMOVE,
    MemberAction.MEMBERS: wire.MEMBER_ACTION_MEMBERS,
    MemberAction.TRANSFER_LEADER: wire.MEMBER_ACTION_TRANSFER_LEADER,
    MemberAction.UPDATE: wire.MEMBER_ACTION_UPDATE,
}
_CORE_MEMBER_ACTION: dict[int, MemberAction] = {
    code: action for action, code in _WIRE_MEMBER_ACTION.items()
}

# -- size bounds ----------------------------------------------------------------------------
# Upper bounds on the protobuf overhead, so that a frame cut by `encoded_size_bound` never
# exceeds its byte limit. A scalar field costs at most 1 tag byte + 10 varint bytes; a
# nested message, bytes or packed repeated field at most 1 tag byte + 5 length bytes
# (payloads < 4 GiB) besides its content.
_MAX_VARINT_FIELD_BYTES = 11
_MAX_LENGTH_PREFIX_BYTES = 6
_NODE_ID_BYTES = 10
# Entry: its own prefix and data's; term, index, kind.
_ENTRY_OVERHEAD_BYTES = 2 * _MAX_LENGTH_PREFIX_BYTES + 3 * _MAX_VARINT_FIELD_BYTES
# Message: its own prefix and context's; type, to, sender, term, log_term, index, commit,
# reject, reject_hint.
_MESSAGE_OVERHEAD_BYTES = 2 * _MAX_LENGTH_PREFIX_BYTES + 9 * _MAX_VARINT_FIELD_BYTES
# Snapshot: prefixes of the snapshot, metadata, conf state, data and the four node lists;
# index, term, auto_leave.
_SNAPSHOT_OVERHEAD_BYTES = 8 * _MAX_LENGTH_PREFIX_BYTES + 3 * _MAX_VARINT_FIELD_BYTES
# MessageBatch: cluster_id, from_node.
FRAME_OVERHEAD_BYTES = 2 * _MAX_VARINT_FIELD_BYTES


def encoded_size_bound(message: Message) -> int:
    """An upper bound on the encoded size of `message` inside a MessageBatch frame (which
    adds FRAME_OVERHEAD_BYTES of its own)."""
    size = _MESSAGE_OVERHEAD_BYTES + len(message.context)
    for entry in message.entries:
        size += _ENTRY_OVERHEAD_BYTES + len(entry.data)
    snapshot = message.snapshot
    if snapshot is not None:
        conf_state = snapshot.metadata.conf_state
        members = (
            len(conf_state.voters)
            + len(conf_state.learners)
            + len(conf_state.voters_outgoing)
            + len(conf_state.learners_next)
        )
        size += _SNAPSHOT_OVERHEAD_BYTES + len(snapshot.data) + members * _NODE_ID_BYTES
    return size


# -- messages -----------------------------------------------------------------------------------


def _encode_snapshot(snapshot: Snapshot, *, with_data: bool = True) -> wire.Snapshot:
    metadata = snapshot.metadata
    conf_state = metadata.conf_state
    return wire.Snapshot(
        metadata=wire.SnapshotMetadata(
            index=metadata.index,
            term=metadata.term,
            # Sorted: the same snapshot always encodes to the same bytes.
            conf_state=wire.ConfState(
                voters=sorted(conf_state.voters),
                learners=sorted(conf_state.learners),
                voters_outgoing=sorted(conf_state.voters_outgoing),
                learners_next=sorted(conf_state.learners_next),
                auto_leave=conf_state.auto_leave,
            ),
        ),
        data=snapshot.data if with_data else b"",
    )


def _decode_snapshot(snapshot: wire.Snapshot) -> Snapshot:
    metadata = snapshot.metadata
    conf_state = metadata.conf_state
    return Snapshot(
        metadata=SnapshotMetadata(
            index=metadata.index,
            term=metadata.term,
            conf_state=ConfState(
                voters=frozenset(NodeId(node) for node in conf_state.voters),
                learners=frozenset(NodeId(node) for node in conf_state.learners),
                voters_outgoing=frozenset(NodeId(node) for node in conf_state.voters_outgoing),
                learners_next=frozenset(NodeId(node) for node in conf_state.learners_next),
                auto_leave=conf_state.auto_leave,
            ),
        ),
        data=snapshot.data,
    )


def encode_message(message: Message, *, with_snapshot_data: bool = True) -> wire.Message:
    """The wire form of `message`. Raises InvalidArgument for a message no node may send
    (a local type, a negative or oversized number)."""
    return _encode_into(wire.Message, message, with_snapshot_data=with_snapshot_data)


def _encode_into(
    construct: Callable[..., wire.Message], message: Message, *, with_snapshot_data: bool = True
) -> wire.Message:
    """Encode `message` with `construct`: the wire.Message class, or a batch's
    `messages.add`, which builds the message in place instead of copying it in (twice as
    fast for small messages)."""
    # Keyed by the enum's value: hashing a str is faster than the enum's Python __hash__.
    wire_type = _WIRE_MESSAGE_TYPE_BY_VALUE.get(message.type._value_)
    if wire_type is None:
        raise InvalidArgument(f"{message.type.value} is local and never sent to a peer")
    snapshot = message.snapshot
    try:
        encoded = construct(
            type=wire_type,
            to=message.to,
            sender=message.sender,
            term=message.term,
            log_term=message.log_term,
            index=message.index,
            commit=message.commit,
            snapshot=(
                None
                if snapshot is None
                else _encode_snapshot(snapshot, with_data=with_snapshot_data)
            ),
            reject=message.reject,
            reject_hint=message.reject_hint,
            context=message.context,
        )
        add_entry = encoded.entries.add
        for entry in message.entries:
            add_entry(
                term=entry.term,
                index=entry.index,
                kind=_NORMAL if entry.kind is EntryKind.NORMAL else _WIRE_ENTRY_KIND[entry.kind],
                data=entry.data,
            )
    except (ValueError, TypeError) as error:
        raise InvalidArgument(f"cannot encode {message.type.value}: {error}") from error
    return encoded


def decode_message(message: wire.Message) -> Message:
    """The core form of a received message. Raises MalformedMessage if it has an unknown
    code or a shape no correct peer sends."""
    message_type = _CORE_MESSAGE_TYPE.get(message.type)
    if message_type is None:
        raise MalformedMessage(f"unknown message type code {message.type}")
    wire_entries = message.entries
    try:
        entries = (
            tuple(
                [
                    Entry(entry.term, entry.index, _CORE_ENTRY_KIND[entry.kind], entry.data)
                    for entry in wire_entries
                ]
            )
            if wire_entries
            else ()
        )
    except KeyError as error:
        raise MalformedMessage(f"unknown entry kind code {error.args[0]}") from None
    # Positional, in Message's field order (pinned by a test), on the hottest line of
    # replication.
    decoded = Message(
        message_type,
        NodeId(message.to),
        NodeId(message.sender),
        message.term,
        message.log_term,
        message.index,
        entries,
        message.commit,
        _decode_snapshot(message.snapshot) if message.HasField("snapshot") else None,
        message.reject,
        message.reject_hint,
        message.context,
    )
    check_peer_message(decoded)
    return decoded


# -- Send frames --------------------------------------------------------------------------------


def encode_batch(
    cluster_id: int, messages: Sequence[Message], from_address: str = ""
) -> wire.MessageBatch:
    """One Send frame. Every message must have the same sender (the frame's `from_node`);
    `from_address` is where that sender listens."""
    if not messages:
        raise InvalidArgument("an empty batch is never sent")
    sender = messages[0].sender
    if any(message.sender != sender for message in messages):
        raise InvalidArgument("a batch carries the messages of one sender")
    if any(message.type is MessageType.SNAPSHOT for message in messages):
        raise InvalidArgument("MsgSnap travels over SnapshotTransfer, never in a batch")
    batch = wire.MessageBatch(cluster_id=cluster_id, from_node=sender, from_address=from_address)
    add_message = batch.messages.add
    for message in messages:
        _encode_into(add_message, message)
    return batch


def take_frame(queue: deque[Message], max_messages: int, max_bytes: int) -> list[Message]:
    """Pop the next Send frame's messages from a peer's queue (non-empty): at least one,
    then more while they share a sender and fit the limits. (A single message over
    max_bytes still goes alone.)"""
    first = queue.popleft()
    messages = [first]
    sender = first.sender
    size = FRAME_OVERHEAD_BYTES + encoded_size_bound(first)
    while queue and len(messages) < max_messages:
        following = queue[0]
        if following.sender != sender:
            break
        size += encoded_size_bound(following)
        if size > max_bytes:
            break
        messages.append(queue.popleft())
    return messages


def decode_batch(data: bytes, cluster_id: int) -> list[Message]:
    """The messages of one received Send frame (see `decode_frame`)."""
    return decode_frame(data, cluster_id)[2]


# Longest sender address accepted from a frame (host:port, with room for IPv6 and names).
MAX_ADDRESS_LENGTH = 300
# Most node ids one member answer may name, members and removed ids together.
MAX_MEMBER_IDS = 10_000


def decode_frame(data: bytes, cluster_id: int) -> tuple[NodeId, str, list[Message]]:
    """(from_node, from_address, messages) of one received Send frame, all or nothing.
    Raises MalformedMessage for undecodable bytes, another cluster's frame, a message
    whose sender is not the frame's `from_node`, a MsgSnap (snapshots travel over
    SnapshotTransfer, where the receiver checks them before delivering: one in a frame
    would skip that), an oversize address, or any malformed message."""
    batch = _parse(wire.MessageBatch, data)
    if len(batch.from_address) > MAX_ADDRESS_LENGTH:
        raise MalformedMessage(f"sender address of {len(batch.from_address)} characters")
    _check_cluster(batch.cluster_id, cluster_id)
    from_node = batch.from_node
    decoded = [decode_message(message) for message in batch.messages]
    for message in decoded:
        if message.sender != from_node:
            raise MalformedMessage(
                f"message from {message.sender} in a batch from node {from_node}"
            )
        if message.type is MessageType.SNAPSHOT:
            raise MalformedMessage("MsgSnap in a Send frame (snapshots use SnapshotTransfer)")
    return NodeId(from_node), batch.from_address, decoded


_Parsed = TypeVar("_Parsed", wire.MessageBatch, wire.MemberRequest)


def _parse(message_class: type[_Parsed], data: bytes) -> _Parsed:
    try:
        return message_class.FromString(data)
    except DecodeError as error:
        raise MalformedMessage(
            f"undecodable {message_class.DESCRIPTOR.name} ({len(data)} bytes): {error}"
        ) from None


def _check_cluster(received: int, expected: int) -> None:
    if received != expected:
        raise MalformedMessage(f"cluster id {received} is not this cluster's ({expected})")


# -- membership requests -----------------------------------------------------------------------


def encode_member_request(cluster_id: int, request: MemberRequest) -> wire.MemberRequest:
    try:
        return wire.MemberRequest(
            cluster_id=cluster_id,
            action=_WIRE_MEMBER_ACTION[request.action],
            node_id=request.node_id,
            address=request.address,
        )
    except ValueError as error:
        raise InvalidArgument(f"cannot encode {request}: {error}") from error


def decode_member_request(data: bytes, cluster_id: int) -> MemberRequest:
    request = _parse(wire.MemberRequest, data)
    _check_cluster(request.cluster_id, cluster_id)
    action = _CORE_MEMBER_ACTION.get(request.action)
    if action is None:
        raise MalformedMessage(f"unknown member action code {request.action}")
    return MemberRequest(action=action, node_id=NodeId(request.node_id), address=request.address)


def encode_member_response(response: MemberResponse) -> wire.MemberResponse:
    return wire.MemberResponse(
        ok=response.ok,
        error=response.error,
        message=response.message,
        leader_id=response.leader_id,
        leader_address=response.leader_address,
        members=[
            wire.MemberAddress(node_id=node_id, address=address)
            for node_id, address in response.members
        ],
        removed=list(response.removed),
    )


def decode_member_response(response: wire.MemberResponse) -> MemberResponse:
    """MalformedMessage for an answer no correct member gives: more ids than any cluster
    holds, an id of 0, an address over MAX_ADDRESS_LENGTH."""
    if len(response.members) + len(response.removed) > MAX_MEMBER_IDS:
        raise MalformedMessage(
            f"a member answer naming {len(response.members) + len(response.removed)} nodes"
        )
    ids = [member.node_id for member in response.members] + list(response.removed)
    if any(node_id == NO_NODE for node_id in ids):
        raise MalformedMessage("a member answer naming node 0")
    if any(len(member.address) > MAX_ADDRESS_LENGTH for member in response.members):
        raise MalformedMessage("a member answer with an address too long")
    return MemberResponse(
        ok=response.ok,
        error=response.error,
        message=response.message,
        leader_id=NodeId(response.leader_id),
        leader_address=response.leader_address,
        members=tuple((NodeId(member.node_id), member.address) for member in response.members),
        removed=tuple(NodeId(node_id) for node_id in response.removed),
    )
