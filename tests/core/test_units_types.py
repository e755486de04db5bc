"""Value types (`raftkv.raft.core.types`) and `Config` validation (`raftkv.raft.core.config`).

The ConfChange codec is what a CONF_CHANGE entry stores, so a peer's bytes reach `decode`:
it must return a ConfChange or raise ValueError, never anything else.
"""

from __future__ import annotations

import random
import struct
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.raft.core.config import Config
from raftkv.raft.core.errors import ConfigInvalid
from raftkv.raft.core.types import (
    EMPTY_HARD_STATE,
    EMPTY_SNAPSHOT,
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    Entry,
    HardState,
    MessageType,
    NodeId,
    ReadOnlyOption,
    Snapshot,
    SnapshotMetadata,
    vote_response_type,
)

# The wire values of the codec, restated: a silent renumbering would corrupt stored logs.
TRANSITION_CODES = {
    ConfChangeTransition.AUTO: 0,
    ConfChangeTransition.JOINT_IMPLICIT: 1,
    ConfChangeTransition.JOINT_EXPLICIT: 2,
}
TYPE_CODES = {
    ConfChangeType.ADD_NODE: 0,
    ConfChangeType.ADD_LEARNER_NODE: 1,
    ConfChangeType.REMOVE_NODE: 2,
    ConfChangeType.UPDATE_NODE: 3,
}

singles = st.builds(
    ConfChangeSingle,
    st.sampled_from(list(ConfChangeType)),
    st.integers(min_value=1, max_value=2**64 - 1).map(NodeId),
)
conf_changes = st.builds(
    ConfChange,
    st.lists(singles, max_size=8).map(tuple),
    st.sampled_from(list(ConfChangeTransition)),
    st.binary(max_size=32),
)


def header(version: int = 1, transition: int = 0, count: int = 0) -> bytes:
    return struct.pack(">BBH", version, transition, count)


def single(kind: int, node_id: int) -> bytes:
    return struct.pack(">BQ", kind, node_id)


# -- ConfChange codec ------------------------------------------------------------------------


@given(conf_changes)
def test_conf_change_round_trip(change: ConfChange) -> None:
    assert ConfChange.decode(change.encode()) == change


@given(conf_changes)
def test_conf_change_encoding_layout(change: ConfChange) -> None:
    data = change.encode()
    assert data[:4] == header(1, TRANSITION_CODES[change.transition], len(change.changes))
    body = b"".join(single(TYPE_CODES[c.type], c.node_id) for c in change.changes)
    assert data[4:] == body + change.context


def test_empty_conf_change_encoding() -> None:
    # The "leave joint" change: header only.
    assert ConfChange().encode() == b"\x01\x00\x00\x00"
    assert ConfChange.decode(b"\x01\x00\x00\x00").leave_joint()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated header"),
        (b"\x01\x00\x00", "truncated header"),
        (header(version=0), "unknown version"),
        (header(version=2), "unknown version"),
        (header(version=255), "unknown version"),
        (header(transition=3), "unknown transition"),
        (header(transition=255), "unknown transition"),
        (header(count=1), "truncated changes"),
        (header(count=1) + single(0, 7)[:-1], "truncated changes"),
        (header(count=2) + single(0, 7), "truncated changes"),
        (header(count=1) + single(4, 7), "unknown change type"),
        (header(count=1) + single(255, 7), "unknown change type"),
        (header(count=1) + single(0, 0), "node id 0"),
        (header(count=2) + single(0, 5) + single(2, 0), "node id 0"),
    ],
)
def test_conf_change_decode_rejects_malformed_bytes(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConfChange.decode(data)


@pytest.mark.parametrize("cut", range(1, 23))
def test_conf_change_decode_rejects_every_truncation_of_the_changes(cut: int) -> None:
    data = ConfChange(
        (
            ConfChangeSingle(ConfChangeType.ADD_NODE, NodeId(1)),
            ConfChangeSingle(ConfChangeType.REMOVE_NODE, NodeId(2)),
        )
    ).encode()
    assert len(data) == 22
    with pytest.raises(ValueError, match="truncated"):
        ConfChange.decode(data[: len(data) - cut])


@given(st.binary(max_size=64))
def test_conf_change_decode_fuzz_returns_or_raises_value_error(data: bytes) -> None:
    try:
        decoded = ConfChange.decode(data)
    except ValueError:
        return
    assert isinstance(decoded, ConfChange)
    # Whatever decodes is canonical: encoding it gives back the same bytes.
    assert decoded.encode() == data


@given(
    st.builds(
        lambda transition, count, body, context: header(1, transition, count) + body + context,
        st.integers(min_value=0, max_value=3),
        st.integers(min_value=0, max_value=4),
        st.binary(max_size=45),
        st.binary(max_size=8),
    )
)
def test_conf_change_decode_fuzz_near_valid_headers(data: bytes) -> None:
    # Random bytes rarely pass the version check; these always do.
    try:
        decoded = ConfChange.decode(data)
    except ValueError:
        return
    assert decoded.encode() == data


# -- ConfChange semantics --------------------------------------------------------------------

ADD_2 = ConfChangeSingle(ConfChangeType.ADD_NODE, NodeId(2))
ADD_3 = ConfChangeSingle(ConfChangeType.ADD_NODE, NodeId(3))


@pytest.mark.parametrize(
    ("change", "leave", "enters"),
    [
        (ConfChange(), True, (False, False)),
        (ConfChange((ADD_2,)), False, (False, False)),
        (ConfChange((ADD_2, ADD_3)), False, (True, True)),
        (ConfChange((ADD_2,), ConfChangeTransition.JOINT_IMPLICIT), False, (True, True)),
        (ConfChange((ADD_2,), ConfChangeTransition.JOINT_EXPLICIT), False, (True, False)),
        (ConfChange((), ConfChangeTransition.JOINT_EXPLICIT), False, (True, False)),
    ],
)
def test_conf_change_kind(change: ConfChange, leave: bool, enters: tuple[bool, bool]) -> None:
    assert change.leave_joint() is leave
    assert change.enters_joint() == enters


# -- small value helpers ---------------------------------------------------------------------


def test_empty_values() -> None:
    assert EMPTY_HARD_STATE.is_empty()
    assert not HardState(term=1).is_empty()
    assert not HardState(commit=1).is_empty()
    assert EMPTY_SNAPSHOT.is_empty()
    assert not Snapshot(SnapshotMetadata(index=1, term=1)).is_empty()


def test_conf_state_members_and_joint() -> None:
    conf_state = ConfState(
        voters=frozenset({NodeId(1), NodeId(2)}),
        learners=frozenset({NodeId(4)}),
        voters_outgoing=frozenset({NodeId(1), NodeId(3)}),
        learners_next=frozenset({NodeId(3)}),
    )
    assert conf_state.is_joint()
    assert conf_state.members() == {NodeId(1), NodeId(2), NodeId(3), NodeId(4)}
    assert not ConfState(voters=frozenset({NodeId(1)})).is_joint()


def test_entry_payload_size() -> None:
    assert Entry(term=1, index=1).payload_size == 0
    assert Entry(term=1, index=1, data=b"abc").payload_size == 3


def test_vote_response_type() -> None:
    assert vote_response_type(MessageType.VOTE) is MessageType.VOTE_RESPONSE
    assert vote_response_type(MessageType.PRE_VOTE) is MessageType.PRE_VOTE_RESPONSE
    with pytest.raises(ValueError):
        vote_response_type(MessageType.APPEND)


# -- Config validation -----------------------------------------------------------------------


def test_default_config_is_valid() -> None:
    config = Config(id=NodeId(1))
    assert config.election_tick > config.heartbeat_tick > 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"id": NodeId(0)}, "id"),
        ({"id": NodeId(-3)}, "id"),
        ({"heartbeat_tick": 0}, "heartbeat_tick"),
        ({"heartbeat_tick": -1, "election_tick": 10}, "heartbeat_tick"),
        ({"election_tick": 1, "heartbeat_tick": 1}, "election_tick"),
        ({"election_tick": 3, "heartbeat_tick": 5}, "election_tick"),
        ({"applied": -1}, "applied"),
        ({"max_size_per_message": 0}, "max_size_per_message"),
        ({"max_committed_size_per_ready": 0}, "max_committed_size_per_ready"),
        ({"max_committed_size_per_ready": -5}, "max_committed_size_per_ready"),
        ({"max_uncommitted_entries_size": 0}, "max_uncommitted_entries_size"),
        ({"max_inflight_messages": 0}, "max_inflight_messages"),
        ({"max_inflight_messages": -1}, "max_inflight_messages"),
        ({"max_inflight_bytes": -1}, "max_inflight_bytes"),
        ({"max_inflight_bytes": 100, "max_size_per_message": 101}, "max_inflight_bytes"),
        ({"max_inflight_entries": -1}, "max_inflight_entries"),
        (
            {"read_only_option": ReadOnlyOption.LEASE_BASED, "check_quorum": False},
            "check_quorum",
        ),
    ],
)
def test_invalid_config_field_raises_naming_it(overrides: dict[str, Any], field: str) -> None:
    settings: dict[str, Any] = {"id": NodeId(1), **overrides}
    with pytest.raises(ConfigInvalid, match=rf"\b{field}\b"):
        Config(**settings)


@pytest.mark.parametrize(
    "overrides",
    [
        {"election_tick": 2, "heartbeat_tick": 1},
        {"applied": 0},
        {"max_inflight_bytes": 0},  # 0 disables the byte limit
        {"max_inflight_entries": 0},  # 0 disables the entry limit
        {"max_inflight_bytes": 1 << 20, "max_size_per_message": 1 << 20},
        {"read_only_option": ReadOnlyOption.LEASE_BASED, "check_quorum": True},
        {"check_quorum": False, "pre_vote": False},
    ],
)
def test_boundary_configs_are_valid(overrides: dict[str, Any]) -> None:
    settings: dict[str, Any] = {"id": NodeId(1), **overrides}
    config = Config(**settings)
    for name, value in overrides.items():
        assert getattr(config, name) == value


def test_config_random_source() -> None:
    rng = random.Random(42)
    assert Config(id=NodeId(1), rng=rng).random_source() is rng
    # Without one: deterministic per node, different between nodes.
    first = [Config(id=NodeId(1)).random_source().random() for _ in range(2)]
    assert first[0] == first[1]
    assert (
        Config(id=NodeId(1)).random_source().random()
        != Config(id=NodeId(2)).random_source().random()
    )


def test_values_are_immutable_hashable_and_compare_by_fields() -> None:
    """The core's values are msgspec Structs (built in C, see types.py): they must keep
    what frozen dataclasses promised, since the core shares them between its log, its
    messages and the caller's Ready."""
    from raftkv.raft.core.types import Message, Snapshot, SnapshotMetadata

    message = Message(
        MessageType.APPEND,
        to=NodeId(2),
        entries=(Entry(1, 1, data=b"x"),),
        snapshot=Snapshot(SnapshotMetadata(3, 1, ConfState(voters=frozenset({NodeId(1)})))),
    )
    values: list[Any] = [
        message,
        message.entries[0],
        HardState(1, NodeId(1), 1),
        ConfChange((ConfChangeSingle(ConfChangeType.ADD_NODE, NodeId(2)),)),
        EMPTY_SNAPSHOT,
    ]
    for value in values:
        with pytest.raises(AttributeError):
            setattr(value, type(value).__struct_fields__[0], None)
        assert hash(value) == hash(msgspec.structs.replace(value))
        assert value == msgspec.structs.replace(value)
    assert msgspec.structs.replace(message, term=2) != message
    assert msgspec.structs.replace(message, term=2).entries is message.entries
