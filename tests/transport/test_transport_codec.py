"""codec.py: every field round-trips, and nothing a peer sends escapes as anything but
MalformedMessage. (Snapshot transfers: test_snapshot_transfer.py.)"""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.raft.core.errors import InvalidArgument, MalformedMessage
from raftkv.raft.core.types import (
    LOCAL_MESSAGE_TYPES,
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
from raftkv.raft.transport.codec import (
    FRAME_OVERHEAD_BYTES,
    MAX_ADDRESS_LENGTH,
    WIRE_MESSAGE_TYPES,
    decode_batch,
    decode_frame,
    decode_member_request,
    decode_member_response,
    decode_message,
    encode_batch,
    encode_member_request,
    encode_member_response,
    encode_message,
    encoded_size_bound,
)

CLUSTER = 5
U64 = 2**64 - 1

# -- strategies --------------------------------------------------------------------------------

uint64 = st.integers(min_value=0, max_value=U64)
small = st.integers(min_value=0, max_value=2**20)
node_ids = st.builds(NodeId, uint64)
node_sets = st.frozensets(node_ids, max_size=5)

conf_states = st.builds(
    ConfState,
    voters=node_sets,
    learners=node_sets,
    voters_outgoing=node_sets,
    learners_next=node_sets,
    auto_leave=st.booleans(),
)
snapshots = st.builds(
    Snapshot,
    metadata=st.builds(
        SnapshotMetadata,
        index=st.integers(min_value=1, max_value=U64),
        term=uint64,
        conf_state=conf_states,
    ),
    data=st.binary(max_size=300),
)
entries = st.builds(
    Entry, term=uint64, index=uint64, kind=st.sampled_from(EntryKind), data=st.binary(max_size=64)
)


@st.composite
def peer_messages(
    draw: st.DrawFn,
    sender: NodeId | None = None,
    message_types: frozenset[MessageType] = WIRE_MESSAGE_TYPES,
) -> Message:
    """Any message a correct peer may send: every field drawn, shaped per type as
    check_peer_message requires."""
    message_type = draw(st.sampled_from(sorted(message_types, key=lambda t: t.value)))
    term = draw(small)
    log_term = draw(st.integers(min_value=0, max_value=term))
    index = draw(small)
    if message_type is MessageType.APPEND:
        # Contiguous indexes after `index`, terms non-decreasing from log_term up to term.
        terms = sorted(draw(st.lists(st.integers(log_term, term), max_size=6)))
        message_entries = tuple(
            Entry(
                entry_term,
                index + 1 + offset,
                draw(st.sampled_from(EntryKind)),
                draw(st.binary(max_size=64)),
            )
            for offset, entry_term in enumerate(terms)
        )
    elif message_type in (MessageType.READ_INDEX, MessageType.READ_INDEX_RESPONSE):
        message_entries = (draw(entries.filter(lambda entry: bool(entry.data))),)
    else:
        minimum = 1 if message_type is MessageType.PROPOSE else 0
        message_entries = tuple(draw(st.lists(entries, min_size=minimum, max_size=4)))
    snapshot_strategy = snapshots if message_type is MessageType.SNAPSHOT else st.none() | snapshots
    return Message(
        type=message_type,
        to=draw(node_ids),
        sender=sender if sender is not None else draw(node_ids),
        term=term,
        log_term=log_term,
        index=index,
        entries=message_entries,
        commit=draw(uint64),
        snapshot=draw(snapshot_strategy),
        reject=draw(st.booleans()),
        reject_hint=draw(uint64),
        context=draw(st.binary(max_size=32)),
    )


def through_the_wire(message: Message) -> Message:
    return decode_message(wire.Message.FromString(encode_message(message).SerializeToString()))


# -- round trips -------------------------------------------------------------------------------


def test_the_strategy_covers_every_message_field() -> None:
    # A field added to Message must be added to the schema, the codec and peer_messages.
    assert [field.name for field in dataclasses.fields(Message)] == [
        "type", "to", "sender", "term", "log_term", "index", "entries", "commit", "snapshot",
        "reject", "reject_hint", "context",
    ]  # fmt: skip


def test_every_wire_type_and_kind_has_a_code_both_ways() -> None:
    assert set(MessageType) - LOCAL_MESSAGE_TYPES == WIRE_MESSAGE_TYPES
    codes = {encode_message(Message(type=t, snapshot=None)).type for t in WIRE_MESSAGE_TYPES}
    assert len(codes) == len(WIRE_MESSAGE_TYPES) and 0 not in codes
    assert {
        encode_message(Message(MessageType.HEARTBEAT, entries=(Entry(1, 1, kind),))).entries[0].kind
        for kind in EntryKind
    } == set(wire.EntryKind.values())


@given(peer_messages())
def test_a_message_round_trips(message: Message) -> None:
    assert through_the_wire(message) == message


@given(st.integers(1, U64), node_ids, st.data())
def test_a_batch_round_trips(cluster_id: int, sender: NodeId, data: st.DataObject) -> None:
    messages = data.draw(st.lists(peer_messages(sender=sender), min_size=1, max_size=5))
    frame = encode_batch(cluster_id, messages).SerializeToString()
    assert decode_batch(frame, cluster_id) == messages
    assert len(frame) <= FRAME_OVERHEAD_BYTES + sum(map(encoded_size_bound, messages))


def test_the_size_bound_holds_for_the_largest_numbers() -> None:
    top = NodeId(U64)
    members = frozenset(NodeId(U64 - offset) for offset in range(3))
    message = Message(
        type=MessageType.APPEND,
        to=top,
        sender=top,
        term=U64,
        log_term=U64,
        index=U64 - 3,
        entries=tuple(
            Entry(U64, U64 - offset, EntryKind.CONF_CHANGE, b"d" * 300) for offset in (2, 1, 0)
        ),
        commit=U64,
        snapshot=Snapshot(
            SnapshotMetadata(U64, U64, ConfState(members, members, members, members, True)),
            b"s" * 200,
        ),
        reject=True,
        reject_hint=U64,
        context=b"c" * 200,
    )
    frame = encode_batch(U64, [message]).SerializeToString()
    assert through_the_wire(message) == message
    assert len(frame) <= FRAME_OVERHEAD_BYTES + encoded_size_bound(message)


@given(st.sampled_from(MemberAction), node_ids, st.text(max_size=20))
def test_a_member_request_round_trips(action: MemberAction, node: NodeId, address: str) -> None:
    request = MemberRequest(action=action, node_id=node, address=address)
    data = encode_member_request(CLUSTER, request).SerializeToString()
    assert decode_member_request(data, CLUSTER) == request


@given(
    st.builds(
        MemberResponse,
        ok=st.booleans(),
        error=st.text(max_size=10),
        message=st.text(max_size=10),
        leader_id=node_ids,
        leader_address=st.text(max_size=10),
        members=st.lists(st.tuples(node_ids, st.text(max_size=10)), max_size=4).map(tuple),
    )
)
def test_a_member_response_round_trips(response: MemberResponse) -> None:
    assert {field.name for field in dataclasses.fields(MemberResponse)} == {
        "ok", "error", "message", "leader_id", "leader_address", "members",
    }  # fmt: skip
    data = encode_member_response(response).SerializeToString()
    assert decode_member_response(wire.MemberResponse.FromString(data)) == response


# -- local misuse ---------------------------------------------------------------------------


@pytest.mark.parametrize("message_type", sorted(LOCAL_MESSAGE_TYPES, key=lambda t: t.value))
def test_a_local_message_type_cannot_be_encoded(message_type: MessageType) -> None:
    with pytest.raises(InvalidArgument, match="local"):
        encode_message(Message(type=message_type))


@pytest.mark.parametrize(
    "message",
    [
        Message(MessageType.HEARTBEAT, term=-1),
        Message(MessageType.HEARTBEAT, to=NodeId(2**64)),
        Message(MessageType.APPEND, entries=(Entry(term=-1, index=1),)),
    ],
    ids=["negative term", "node id past u64", "negative entry term"],
)
def test_an_out_of_range_number_cannot_be_encoded(message: Message) -> None:
    with pytest.raises(InvalidArgument, match="cannot encode"):
        encode_message(message)


def test_a_batch_holds_one_sender() -> None:
    with pytest.raises(InvalidArgument, match="one sender"):
        encode_batch(
            CLUSTER,
            [
                Message(MessageType.HEARTBEAT, sender=NodeId(1)),
                Message(MessageType.HEARTBEAT, sender=NodeId(2)),
            ],
        )


# -- what a peer may send -------------------------------------------------------------------


def frame(*messages: wire.Message, cluster_id: int = CLUSTER, from_node: int = 1) -> bytes:
    return wire.MessageBatch(
        cluster_id=cluster_id, from_node=from_node, messages=messages
    ).SerializeToString()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xff\xff", "undecodable MessageBatch"),
        (frame(wire.Message(type=99, sender=1)), "unknown message type code 99"),
        (frame(wire.Message(type=0, sender=1)), "unknown message type code 0"),
        (
            frame(wire.Message(type=wire.MSG_HEARTBEAT, sender=1, entries=[wire.Entry(kind=7)])),
            "unknown entry kind code 7",
        ),
        (
            frame(
                wire.Message(
                    type=wire.MSG_APPEND,
                    sender=1,
                    term=2,
                    index=5,
                    entries=[wire.Entry(term=2, index=7)],
                )
            ),
            "MsgApp entries out of order",
        ),
        (
            frame(
                wire.Message(
                    type=wire.MSG_APPEND, sender=1, term=2, entries=[wire.Entry(term=3, index=1)]
                )
            ),
            "MsgApp entries out of order",
        ),
        (frame(wire.Message(type=wire.MSG_PROPOSE, sender=1)), "MsgProp without entries"),
        (frame(wire.Message(type=wire.MSG_SNAPSHOT, sender=1)), "MsgSnap without a snapshot"),
        (frame(wire.Message(type=wire.MSG_READ_INDEX, sender=1)), "exactly one non-empty"),
        (
            frame(wire.Message(type=wire.MSG_HEARTBEAT, sender=2)),
            "message from 2 in a batch from node 1",
        ),
        (frame(cluster_id=6), "cluster id 6 is not this cluster's"),
        (frame(cluster_id=0), "cluster id 0 is not this cluster's"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_malformed_frame_is_rejected(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        decode_batch(data, CLUSTER)


def test_a_frame_names_its_sender_and_where_it_listens() -> None:
    data = encode_batch(CLUSTER, [heartbeat_message()], "127.0.0.1:7001").SerializeToString()
    assert decode_frame(data, CLUSTER) == (1, "127.0.0.1:7001", [heartbeat_message()])


def test_an_oversize_sender_address_is_rejected() -> None:
    batch = encode_batch(CLUSTER, [heartbeat_message()], "h" * (MAX_ADDRESS_LENGTH + 1))
    with pytest.raises(MalformedMessage, match="sender address"):
        decode_frame(batch.SerializeToString(), CLUSTER)


def heartbeat_message() -> Message:
    return Message(type=MessageType.HEARTBEAT, to=NodeId(2), sender=NodeId(1), term=1)


def test_one_bad_message_rejects_the_whole_frame() -> None:
    good = wire.Message(type=wire.MSG_HEARTBEAT, sender=1)
    with pytest.raises(MalformedMessage):
        decode_batch(frame(good, good, wire.Message(type=42, sender=1)), CLUSTER)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_malformed(data: bytes) -> None:
    try:
        messages = decode_batch(data, CLUSTER)
    except MalformedMessage:
        return
    assert all(isinstance(message, Message) for message in messages)


@given(peer_messages(sender=NodeId(1)), st.data())
def test_a_corrupted_frame_decodes_or_raises_malformed(
    message: Message, data: st.DataObject
) -> None:
    encoded = bytearray(encode_batch(CLUSTER, [message]).SerializeToString())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.integers(0, 255))
    with contextlib.suppress(MalformedMessage):
        decode_batch(bytes(encoded), CLUSTER)


def test_a_member_request_with_an_unknown_action_or_cluster_is_rejected() -> None:
    with pytest.raises(MalformedMessage, match="unknown member action code 9"):
        decode_member_request(
            wire.MemberRequest(cluster_id=CLUSTER, action=9).SerializeToString(), CLUSTER
        )
    with pytest.raises(MalformedMessage, match="unknown member action code 0"):
        decode_member_request(wire.MemberRequest(cluster_id=CLUSTER).SerializeToString(), CLUSTER)
    with pytest.raises(MalformedMessage, match="cluster id 4"):
        decode_member_request(
            wire.MemberRequest(cluster_id=4, action=1).SerializeToString(), CLUSTER
        )
