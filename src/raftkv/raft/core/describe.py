"""One canonical text rendering of every core type (etcd-io/raft's `util.go` style).

Logs, golden interaction tests and simulator traces all use these functions, so a change in
rendering shows up everywhere at once.
"""

from __future__ import annotations

from collections.abc import Iterable

from raftkv.raft.core.ready import Ready
from raftkv.raft.core.types import (
    NO_NODE,
    ConfChange,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    NodeId,
    ReadState,
    Snapshot,
    SoftState,
)

# How a change's type is written ("v2": add voter 2); the interaction scripts read it back.
CHANGE_PREFIXES = {
    ConfChangeType.ADD_NODE: "v",
    ConfChangeType.ADD_LEARNER_NODE: "l",
    ConfChangeType.REMOVE_NODE: "r",
    ConfChangeType.UPDATE_NODE: "u",
}


def describe_node(node_id: NodeId) -> str:
    return "None" if node_id == NO_NODE else str(node_id)


def describe_data(data: bytes) -> str:
    """Printable ASCII as a quoted string, anything else as hex."""
    if all(32 <= byte < 127 and byte != 34 for byte in data):
        return f'"{data.decode("ascii")}"'
    return f"0x{data.hex()}"


def describe_conf_change(change: ConfChange) -> str:
    parts = [f"{CHANGE_PREFIXES[item.type]}{item.node_id}" for item in change.changes]
    if change.transition is not ConfChangeTransition.AUTO:
        parts.insert(0, change.transition.value)
    return " ".join(parts) if parts else "leave-joint"


def describe_entry(entry: Entry) -> str:
    if entry.kind is EntryKind.CONF_CHANGE:
        try:
            body = describe_conf_change(ConfChange.decode(entry.data))
        except ValueError:
            body = f"<malformed {describe_data(entry.data)}>"
        return f"{entry.term}/{entry.index} EntryConfChange {body}"
    return f"{entry.term}/{entry.index} EntryNormal {describe_data(entry.data)}"


def _ids(ids: Iterable[NodeId]) -> str:
    return "(" + " ".join(str(node_id) for node_id in sorted(ids)) + ")"


def describe_conf_state(conf_state: ConfState) -> str:
    text = f"Voters:{_ids(conf_state.voters)}"
    if conf_state.voters_outgoing:
        text += f"&&{_ids(conf_state.voters_outgoing)}"
    text += f" Learners:{_ids(conf_state.learners)}"
    if conf_state.learners_next:
        text += f" LearnersNext:{_ids(conf_state.learners_next)}"
    if conf_state.auto_leave:
        text += " AutoLeave:true"
    return text


def describe_snapshot(snapshot: Snapshot) -> str:
    metadata = snapshot.metadata
    return (
        f"Index:{metadata.index} Term:{metadata.term} "
        f"ConfState:{describe_conf_state(metadata.conf_state)}"
    )


def describe_hard_state(hard_state: HardState) -> str:
    return (
        f"Term:{hard_state.term} Vote:{describe_node(hard_state.vote)} Commit:{hard_state.commit}"
    )


def describe_soft_state(soft_state: SoftState) -> str:
    return f"Lead:{describe_node(soft_state.leader_id)} State:{soft_state.role.value}"


def describe_read_state(read_state: ReadState) -> str:
    return f"Index:{read_state.index} Context:{describe_data(read_state.request_context)}"


def describe_message(message: Message) -> str:
    text = (
        f"{describe_node(message.sender)}->{describe_node(message.to)} "
        f"{message.type.value} Term:{message.term} Log:{message.log_term}/{message.index}"
    )
    if message.reject:
        text += f" Rejected (Hint: {message.reject_hint})"
    if message.commit:
        text += f" Commit:{message.commit}"
    if message.entries:
        text += " Entries:[" + ", ".join(describe_entry(e) for e in message.entries) + "]"
    if message.snapshot is not None and not message.snapshot.is_empty():
        text += f" Snapshot: {describe_snapshot(message.snapshot)}"
    if message.context:
        text += f" Context:{describe_data(message.context)}"
    return text


def describe_ready(ready: Ready) -> str:
    """A multi-line rendering; empty sections are left out."""
    lines = [f"Ready {ready.number} MustSync={str(ready.must_sync).lower()}:"]
    if ready.soft_state is not None:
        lines.append(describe_soft_state(ready.soft_state))
    if ready.hard_state is not None:
        lines.append(f"HardState {describe_hard_state(ready.hard_state)}")
    if ready.read_states:
        lines.append("ReadStates:")
        lines.extend(describe_read_state(state) for state in ready.read_states)
    if ready.entries:
        lines.append("Entries:")
        lines.extend(describe_entry(entry) for entry in ready.entries)
    if ready.snapshot is not None:
        lines.append(f"Snapshot {describe_snapshot(ready.snapshot)}")
    if ready.committed_entries:
        lines.append("CommittedEntries:")
        lines.extend(describe_entry(entry) for entry in ready.committed_entries)
    if ready.messages:
        lines.append("Messages:")
        lines.extend(describe_message(message) for message in ready.messages)
    if ready.persisted_messages:
        lines.append("PersistedMessages:")
        lines.extend(describe_message(message) for message in ready.persisted_messages)
    return "\n".join(lines)
