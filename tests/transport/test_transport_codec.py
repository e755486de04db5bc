"""codec.py: every field round-trips, and nothing a peer sends escapes as anything but
MalformedMessage. (Snapshot transfers: test_snapshot_transfer.py.)"""

from __future__ import annotations

import contextlib
import dataclasses

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.raft.core.errors import InvalidArgument, MalformedMessage
from raftkv.raft.core.types import (
    LOCAL_MESSAGE_TYPES,
    MAX_INDEX,
    MAX_TERM,
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
indexes = st.integers(min_value=0, max_value=MAX_INDEX)
small = st.integers(min_value=0, max_value=2**20)
node_ids = st.builds(NodeId, st.integers(min_value=1, max_value=U64))
node_sets = st.frozensets(node_ids, max_size=5)

# Any ConfState (a snapshot's on a message other than MsgSnap is not checked).
conf_states = st.builds(
    ConfState,
    voters=node_sets,
    learners=node_sets,
    voters_outgoing=node_sets,
    learners_next=node_sets,
    auto_leave=st.booleans(),
)


@st.composite
def valid_conf_states(draw: st.DrawFn) -> ConfState:
    """A configuration some sequence of changes could produce (what MsgSnap may carry)."""
    voters = draw(st.frozensets(node_ids, min_size=1, max_size=5))
    outgoing = draw(node_sets)
    learners = draw(node_sets) - voters - outgoing
    learners_next = frozenset(node for node in outgoing - voters if draw(st.booleans()))
    return ConfState(
        voters, learners, outgoing, learners_next, bool(outgoing) and draw(st.booleans())
    )


def snapshots(
    max_term: int = U64, conf_state: st.SearchStrategy[ConfState] = conf_states
) -> st.SearchStrategy[Snapshot]:
    return st.builds(
        Snapshot,
        metadata=st.builds(
            SnapshotMetadata,
            index=st.integers(min_value=1, max_value=MAX_INDEX),
            term=st.integers(min_value=1, max_value=max_term),
            conf_state=conf_state,
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
    # Forwarded requests carry no term; everything else does.
    termless = message_type in (MessageType.PROPOSE, MessageType.READ_INDEX)
    term = 0 if termless else draw(st.integers(min_value=1, max_value=2**20))
    log_term = draw(st.integers(min_value=0, max_value=term))
    index = draw(small)
    if message_type is MessageType.APPEND:
        # Contiguous indexes after `index`, terms non-decreasing from log_term up to term.
        terms = sorted(draw(st.lists(st.integers(max(log_term, 1), term), max_size=6)))
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
    snapshot_strategy = (
        snapshots(max_term=term, conf_state=valid_conf_states())
        if message_type is MessageType.SNAPSHOT
        else st.none() | snapshots()
    )
    from_node = sender if sender is not None else draw(node_ids)
    return Message(
        type=message_type,
        to=draw(node_ids.filter(lambda node: node != from_node)),
        sender=from_node,
        term=term,
        log_term=log_term,
        index=index,
        entries=message_entries,
        commit=draw(indexes),
        snapshot=draw(snapshot_strategy),
        reject=draw(st.booleans()),
        reject_hint=draw(indexes),
        context=draw(st.binary(max_size=32)),
    )


def through_the_wire(message: Message) -> Message:
    return decode_message(wire.Message.FromString(encode_message(message).SerializeToString()))


# -- round trips -------------------------------------------------------------------------------


def test_the_strategy_covers_every_message_field() -> None:
    # A field added to Message must be added to the schema, the codec and peer_messages.
    assert list(Message.__struct_fields__) == [
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


BATCHED_TYPES = WIRE_MESSAGE_TYPES - {MessageType.SNAPSHOT}


@given(st.integers(1, U64), node_ids, st.data())
def test_a_batch_round_trips(cluster_id: int, sender: NodeId, data: st.DataObject) -> None:
    messages = data.draw(
        st.lists(peer_messages(sender=sender, message_types=BATCHED_TYPES), min_size=1, max_size=5)
    )
    frame = encode_batch(cluster_id, messages).SerializeToString()
    assert decode_batch(frame, cluster_id) == messages
    assert len(frame) <= FRAME_OVERHEAD_BYTES + sum(map(encoded_size_bound, messages))


def largest_append(top_term: int, top_index: int) -> Message:
    top = NodeId(U64)
    members = frozenset(NodeId(U64 - offset) for offset in range(3))
    return Message(
        type=MessageType.APPEND,
        to=top,
        sender=NodeId(U64 - 1),
        term=top_term,
        log_term=top_term,
        index=top_index - 3,
        entries=tuple(
            Entry(top_term, top_index - offset, EntryKind.CONF_CHANGE, b"d" * 300)
            for offset in (2, 1, 0)
        ),
        commit=top_index,
        snapshot=Snapshot(
            SnapshotMetadata(
                top_index, top_term, ConfState(members, members, members, members, True)
            ),
            b"s" * 200,
        ),
        reject=True,
        reject_hint=top_index,
        context=b"c" * 200,
    )


def test_the_size_bound_holds_for_the_largest_numbers() -> None:
    message = largest_append(U64, U64)
    frame = encode_batch(U64, [message]).SerializeToString()
    assert len(frame) <= FRAME_OVERHEAD_BYTES + encoded_size_bound(message)


def test_the_largest_accepted_numbers_round_trip() -> None:
    message = largest_append(MAX_TERM, MAX_INDEX)
    assert through_the_wire(message) == message


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
        removed=st.lists(node_ids, max_size=4).map(tuple),
    )
)
def test_a_member_response_round_trips(response: MemberResponse) -> None:
    assert {field.name for field in dataclasses.fields(MemberResponse)} == {
        "ok", "error", "message", "leader_id", "leader_address", "members", "removed",
    }  # fmt: skip
    data = encode_member_response(response).SerializeToString()
    assert decode_member_response(wire.MemberResponse.FromString(data)) == response


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (wire.MemberResponse(ok=True, removed=[0]), "node 0"),
        (wire.MemberResponse(ok=True, removed=list(range(1, 10_002))), "naming 10001 nodes"),
        (
            wire.MemberResponse(
                ok=True, members=[wire.MemberAddress(node_id=2, address="h" * 301)]
            ),
            "address too long",
        ),
    ],
)
def test_a_member_answer_no_member_gives_is_refused(
    answer: wire.MemberResponse, reason: str
) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        decode_member_response(answer)


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


def test_a_snapshot_is_never_batched_nor_accepted_in_a_frame() -> None:
    """Snapshots travel over SnapshotTransfer, where the receiver checks them before
    delivering (issue 12 A5); one in a Send frame would skip that check."""
    snapshot = Message(
        MessageType.SNAPSHOT,
        to=NodeId(2),
        sender=NodeId(1),
        term=3,
        snapshot=Snapshot(SnapshotMetadata(5, 2, ONE_TWO), b"state"),
    )
    with pytest.raises(InvalidArgument, match="SnapshotTransfer"):
        encode_batch(CLUSTER, [snapshot])
    with pytest.raises(MalformedMessage, match="MsgSnap in a Send frame"):
        decode_batch(frame(encode_message(snapshot)), CLUSTER)


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
                    to=2,
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
                    type=wire.MSG_APPEND,
                    to=2,
                    sender=1,
                    term=2,
                    entries=[wire.Entry(term=3, index=1)],
                )
            ),
            "MsgApp entries out of order",
        ),
        (
            frame(
                wire.Message(
                    type=wire.MSG_APPEND,
                    to=2,
                    sender=1,
                    term=2,
                    entries=[wire.Entry(term=0, index=1)],
                )
            ),
            "MsgApp entries out of order",
        ),
        (frame(wire.Message(type=wire.MSG_PROPOSE, to=2, sender=1)), "MsgProp without entries"),
        (
            frame(wire.Message(type=wire.MSG_SNAPSHOT, to=2, sender=1, term=1)),
            "MsgSnap without a snapshot",
        ),
        (frame(wire.Message(type=wire.MSG_READ_INDEX, to=2, sender=1)), "exactly one non-empty"),
        (
            frame(wire.Message(type=wire.MSG_HEARTBEAT, to=3, sender=2, term=1)),
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


def heartbeat_message() -> Message:
    return Message(type=MessageType.HEARTBEAT, to=NodeId(2), sender=NodeId(1), term=1)


def snapshot_of(index: int, term: int, conf_state: ConfState) -> Message:
    return Message(
        MessageType.SNAPSHOT,
        to=NodeId(2),
        sender=NodeId(1),
        term=3,
        snapshot=Snapshot(SnapshotMetadata(index, term, conf_state), b"state"),
    )


ONE_TWO = ConfState(voters=frozenset({NodeId(1), NodeId(2)}))


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (msgspec.structs.replace(heartbeat_message(), term=MAX_TERM + 1), "out of range"),
        (msgspec.structs.replace(heartbeat_message(), term=U64), "out of range"),
        (msgspec.structs.replace(heartbeat_message(), log_term=MAX_TERM + 1), "out of range"),
        (msgspec.structs.replace(heartbeat_message(), index=MAX_INDEX + 1), "out of range"),
        (msgspec.structs.replace(heartbeat_message(), commit=U64), "out of range"),
        (msgspec.structs.replace(heartbeat_message(), reject_hint=U64), "out of range"),
        (msgspec.structs.replace(heartbeat_message(), sender=NodeId(0)), "invalid node ids"),
        (msgspec.structs.replace(heartbeat_message(), to=NodeId(0)), "invalid node ids"),
        (msgspec.structs.replace(heartbeat_message(), to=NodeId(1)), "invalid node ids"),
        (msgspec.structs.replace(heartbeat_message(), term=0), "MsgHeartbeat with term 0"),
        (
            Message(
                MessageType.PROPOSE,
                to=NodeId(2),
                sender=NodeId(1),
                term=3,
                entries=(Entry(0, 0, data=b"x"),),
            ),
            "MsgProp with term 3",
        ),
        (
            Message(
                MessageType.APPEND,
                to=NodeId(2),
                sender=NodeId(1),
                term=2,
                log_term=2,
                index=MAX_INDEX,
                entries=(Entry(2, MAX_INDEX + 1),),
            ),
            "beyond index",
        ),
        (snapshot_of(5, 4, ONE_TWO), "MsgSnap of term 3 with snapshot 4/5"),
        (snapshot_of(MAX_INDEX + 1, 2, ONE_TWO), "MsgSnap of term 3"),
        (snapshot_of(5, 2, ConfState()), "impossible configuration: a configuration without"),
        (
            snapshot_of(5, 2, ConfState(voters=frozenset({NodeId(0), NodeId(1)}))),
            "invalid node id 0",
        ),
        (
            snapshot_of(5, 2, ConfState(voters=ONE_TWO.voters, learners=frozenset({NodeId(1)}))),
            "both a voter and a learner",
        ),
        (snapshot_of(5, 2, ConfState(voters=ONE_TWO.voters, auto_leave=True)), "outside a joint"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_number_or_shape_no_correct_peer_sends_is_rejected(message: Message, reason: str) -> None:
    """Terms and indexes are bounded (MAX_TERM, MAX_INDEX) so that whatever a peer makes a
    node adopt can still be incremented and encoded; a snapshot's configuration must be
    one that changes could produce."""
    with pytest.raises(MalformedMessage, match=reason):
        through_the_wire(message)


def test_a_frame_names_its_sender_and_where_it_listens() -> None:
    data = encode_batch(CLUSTER, [heartbeat_message()], "127.0.0.1:7001").SerializeToString()
    assert decode_frame(data, CLUSTER) == (1, "127.0.0.1:7001", [heartbeat_message()])


def test_an_oversize_sender_address_is_rejected() -> None:
    batch = encode_batch(CLUSTER, [heartbeat_message()], "h" * (MAX_ADDRESS_LENGTH + 1))
    with pytest.raises(MalformedMessage, match="sender address"):
        decode_frame(batch.SerializeToString(), CLUSTER)


def test_one_bad_message_rejects_the_whole_frame() -> None:
    good = wire.Message(type=wire.MSG_HEARTBEAT, to=2, sender=1, term=1)
    assert decode_batch(frame(good), CLUSTER)
    with pytest.raises(MalformedMessage):
        decode_batch(frame(good, good, wire.Message(type=42, sender=1)), CLUSTER)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_malformed(data: bytes) -> None:
    try:
        messages = decode_batch(data, CLUSTER)
    except MalformedMessage:
        return
    assert all(isinstance(message, Message) for message in messages)


@given(peer_messages(sender=NodeId(1), message_types=BATCHED_TYPES), st.data())
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
