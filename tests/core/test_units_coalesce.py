"""`raftkv.raft.core.coalesce`: the appends and acknowledgements a Ready drops, and what it
keeps. The simulators and golden interaction scripts run with it on; these pin its rules."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from raftkv.raft.core.coalesce import coalesce
from raftkv.raft.core.types import Entry, Message, MessageType, NodeId

ONE, TWO, THREE = NodeId(1), NodeId(2), NodeId(3)


def append(to: NodeId, index: int, commit: int, *entries: int, term: int = 2) -> Message:
    return Message(
        MessageType.APPEND,
        to=to,
        sender=ONE,
        term=term,
        log_term=term,
        index=index,
        commit=commit,
        entries=tuple(Entry(term, entry) for entry in entries),
    )


def ack(index: int, *, to: NodeId = ONE, term: int = 2, reject: bool = False) -> Message:
    return Message(
        MessageType.APPEND_RESPONSE, to=to, sender=TWO, term=term, index=index, reject=reject
    )


def heartbeat(to: NodeId) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, sender=ONE, term=2, commit=1)


def test_nothing_to_drop_returns_the_same_sequence() -> None:
    messages = [append(TWO, 4, 3, 5), append(THREE, 4, 3, 5), ack(9, to=TWO), heartbeat(TWO)]
    assert coalesce(messages) is messages


def test_an_empty_append_goes_when_another_append_follows_it() -> None:
    # The commit broadcast, then new entries: one message.
    messages = [append(TWO, 5, 5), append(THREE, 5, 5), append(TWO, 5, 5, 6), heartbeat(THREE)]
    assert coalesce(messages) == [append(THREE, 5, 5), append(TWO, 5, 5, 6), heartbeat(THREE)]


def test_an_empty_append_continuing_the_entries_before_it_lends_them_its_commit() -> None:
    messages = [append(TWO, 4, 3, 5, 6), append(TWO, 6, 6)]
    assert coalesce(messages) == [append(TWO, 4, 6, 5, 6)]


def test_a_probe_after_entries_is_kept() -> None:
    # Entries at 9-10, then (a rejection came back) a probe at 5: it must reach the peer.
    messages = [append(TWO, 8, 3, 9, 10), append(TWO, 5, 3)]
    assert coalesce(messages) is messages


def test_appends_with_entries_are_all_kept_and_the_last_carries_the_commit() -> None:
    messages = [append(TWO, 4, 3, 5), append(TWO, 5, 4), append(TWO, 5, 4, 6)]
    assert coalesce(messages) == [append(TWO, 4, 3, 5), append(TWO, 5, 4, 6)]


def test_of_several_empty_appends_the_last_is_kept_with_the_highest_commit() -> None:
    messages = [append(TWO, 5, 5), heartbeat(TWO), append(TWO, 5, 4)]
    assert coalesce(messages) == [heartbeat(TWO), append(TWO, 5, 5)]


def test_appends_of_different_terms_are_not_compared() -> None:
    messages = [append(TWO, 5, 5, term=2), append(TWO, 5, 5, 6, term=3)]
    assert coalesce(messages) is messages


def test_acknowledgements_keep_the_highest_index_in_the_last_place() -> None:
    messages = [ack(5), heartbeat(THREE), ack(7), ack(6)]
    assert coalesce(messages) == [heartbeat(THREE), ack(7)]


def test_acknowledgements_are_all_kept_when_one_of_them_rejects() -> None:
    messages = [ack(5), ack(6, reject=True), ack(7)]
    assert coalesce(messages) is messages


def test_acknowledgements_to_different_peers_or_terms_are_not_compared() -> None:
    messages = [ack(5, to=ONE), ack(6, to=THREE), ack(7, to=ONE, term=3)]
    assert coalesce(messages) is messages


_MESSAGES = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from([TWO, THREE]),
            st.integers(1, 9),
            st.integers(0, 9),
            st.lists(st.integers(1, 9), max_size=2),
            st.integers(2, 3),
        ).map(lambda fields: append(*fields[:3], *fields[3], term=fields[4])),
        st.builds(
            ack,
            st.integers(1, 9),
            to=st.sampled_from([ONE, THREE]),
            term=st.integers(2, 3),
            reject=st.booleans(),
        ),
        st.builds(heartbeat, st.sampled_from([TWO, THREE])),
    ),
    max_size=12,
)


@given(_MESSAGES)
def test_what_a_peer_learns_from_a_batch_is_unchanged(messages: list[Message]) -> None:
    kept = list(coalesce(messages))
    # Every kept message is one of the batch's, at most with a higher commit, in order
    # (an acknowledgement may move later, to the place of the last one it replaces).
    assert len(kept) <= len(messages)
    unmatched = iter(m for m in messages if m.type is not MessageType.APPEND_RESPONSE)
    for message in (m for m in kept if m.type is not MessageType.APPEND_RESPONSE):
        assert any(
            candidate.commit <= message.commit
            and msgspec.structs.replace(message, commit=candidate.commit) == candidate
            for candidate in unmatched
        ), message
    keys = {(message.type, message.to, message.term) for message in messages}
    assert {(message.type, message.to, message.term) for message in kept} == keys
    for key in keys:
        before = [m for m in messages if (m.type, m.to, m.term) == key]
        after = [m for m in kept if (m.type, m.to, m.term) == key]
        message_type = key[0]
        if message_type is MessageType.APPEND:
            # The highest commit still reaches the peer, as do all the entries.
            assert max(m.commit for m in after) == max(m.commit for m in before)
            assert [m.entries for m in after if m.entries] == [
                m.entries for m in before if m.entries
            ]
        elif message_type is MessageType.APPEND_RESPONSE:
            assert max(m.index for m in after) == max(m.index for m in before)
            assert all(m in before for m in after)
            assert [m for m in after if m.reject] == [m for m in before if m.reject]
        else:
            assert after == before
