"""Fewer messages per Ready: appends and acknowledgements that later ones make redundant.

A leader queues an APPEND to a follower whenever it has something to tell it: new entries
when a proposal arrives, and an empty APPEND carrying the new commit index whenever an
acknowledgement advances it (etcd-io/raft's `bcastAppend` after `maybeCommit`). Between two
Readies a busy leader does both, so a follower got an empty APPEND and an APPEND with
entries back to back, stepped each, and acknowledged each. Followers, likewise, queue one
acknowledgement per APPEND stepped in a Ready.

Rules (applied to one Ready's messages, before the caller sees them):
- Only messages of one term to one peer are compared; everything else passes unchanged.
- APPENDs: an empty one is dropped when a later APPEND to the same peer is in the batch
  (sent later, it reflects the leader's newer view of that peer, and commit indexes only
  grow), or when it continues the APPEND with entries just before it (its `index` and
  `log_term` are that APPEND's last entry: the commit broadcast after new entries).
  The last APPEND kept carries the highest commit index of them all. An APPEND with
  entries is never dropped, nor an empty one that probes elsewhere with nothing after it
  (a probe after a rejection). A follower caps a received commit at the last entry it
  knows it shares with the leader, so a higher commit on a kept message tells it nothing
  false; and a follower that rejects the APPEND an empty one continued would have
  rejected that one too (Log Matching).
- APPEND_RESPONSEs that accept (no `reject`): when none of the batch's responses to that
  peer rejects, only the one with the highest `index` is kept, at the place of the last:
  the leader's `maybe_update` keeps the highest match it hears anyway.
- Order among the kept messages is unchanged.

Why this is safe: Raft tolerates the loss of any message, so dropping one can only cost
progress, never safety; and each dropped message's effect (a commit index, a consistency
check, a match index) reaches the peer through the kept one in the same batch, so progress
is not lost either. The leader's flow control needs no change: an empty APPEND adds no
in-flight entry, and the response to a kept APPEND frees the window as far as the dropped
one's would have.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from raftkv.raft.core.types import Message, MessageType, NodeId

# (peer, term): the messages compared with each other.
_Key = tuple[NodeId, int]


def coalesce(messages: Sequence[Message]) -> Sequence[Message]:
    """`messages` without the APPENDs and acknowledgements later ones make redundant (see
    the module's rules). Returns `messages` itself when nothing can go."""
    appends: dict[_Key, list[int]] = {}
    acks: dict[_Key, list[int]] = {}
    rejecting: set[_Key] = set()
    for position, message in enumerate(messages):
        if message.type is MessageType.APPEND:
            appends.setdefault((message.to, message.term), []).append(position)
        elif message.type is MessageType.APPEND_RESPONSE:
            key = (message.to, message.term)
            if message.reject:
                rejecting.add(key)
            else:
                acks.setdefault(key, []).append(position)
    replaced: dict[int, Message | None] = {}
    for positions in appends.values():
        if len(positions) > 1:
            _coalesce_appends(messages, positions, replaced)
    for key, positions in acks.items():
        if len(positions) > 1 and key not in rejecting:
            _coalesce_acks(messages, positions, replaced)
    if not replaced:
        return messages
    kept = []
    for position, message in enumerate(messages):
        if position in replaced:
            replacement = replaced[position]
            if replacement is not None:
                kept.append(replacement)
        else:
            kept.append(message)
    return kept


def _coalesce_appends(
    messages: Sequence[Message], positions: list[int], replaced: dict[int, Message | None]
) -> None:
    last = positions[-1]
    for number, position in enumerate(positions):
        message = messages[position]
        if message.entries:
            continue
        superseded = position != last
        if superseded or (number > 0 and _continues(messages[positions[number - 1]], message)):
            replaced[position] = None
    # Never empty: the last APPEND is dropped only for the one with entries before it.
    kept = [position for position in positions if position not in replaced]
    commit = max(messages[position].commit for position in positions)
    carrier = messages[kept[-1]]
    if carrier.commit < commit:
        replaced[kept[-1]] = msgspec.structs.replace(carrier, commit=commit)


def _continues(previous: Message, empty: Message) -> bool:
    """Whether `empty` checks exactly the last entry `previous` carries."""
    if not previous.entries:
        return False
    last = previous.entries[-1]
    return empty.index == last.index and empty.log_term == last.term


def _coalesce_acks(
    messages: Sequence[Message], positions: list[int], replaced: dict[int, Message | None]
) -> None:
    highest = max(positions, key=lambda position: messages[position].index)
    for position in positions[:-1]:
        replaced[position] = None
    if highest != positions[-1]:
        replaced[positions[-1]] = messages[highest]
