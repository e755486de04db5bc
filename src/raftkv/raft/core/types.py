"""Value types of the Raft core: entries, messages, hard state, snapshots, conf changes.

Every type here is a frozen msgspec Struct or an enum: values, never mutated after
construction, cheap to compare in tests. `describe.py` renders each one canonically.
Structs rather than frozen dataclasses because a frozen dataclass sets each field through
`object.__setattr__`: a Message took 3.3 µs to build, a Struct 0.2 µs (built in C), and a
member builds several per replicated entry. `gc=False` where a value can hold no cycle
(immutable fields only), so the garbage collector does not walk the millions of them a
busy member makes. `msgspec.structs.replace` is their `dataclasses.replace`.

Node ids are positive integers; `NO_NODE` (0) means "nobody" (no vote, no known leader).
"""

from __future__ import annotations

import enum
import struct
from typing import NewType

import msgspec

NodeId = NewType("NodeId", int)
NO_NODE = NodeId(0)
# Node ids travel as unsigned 64-bit integers.
MAX_NODE_ID = 2**64 - 1
# The largest term and index any node uses or accepts from a peer. Below 2**63, so every
# signed or unsigned 64-bit encoding holds it. A node at MAX_TERM cannot campaign (there is
# no next term): a cluster pushed there elects nobody until `raftkv recover
# --force-new-cluster` resets the term. No correct cluster comes near it (an election a
# millisecond for 290 million years); only a buggy or hostile peer could push a term there,
# and peers' larger values are refused as malformed (`rawnode.check_peer_message`).
MAX_TERM = 2**63 - 1
MAX_INDEX = 2**63 - 1


class EntryKind(enum.Enum):
    NORMAL = "normal"
    CONF_CHANGE = "conf_change"


class Entry(msgspec.Struct, frozen=True, gc=False):
    """One log entry. `data` is opaque to Raft except for CONF_CHANGE entries.

    An empty NORMAL entry is the no-op a new leader appends at the start of its term
    (Raft thesis §6.4: it lets the leader commit entries of earlier terms).
    """

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    @property
    def payload_size(self) -> int:
        """Bytes counted against size limits (message size, uncommitted bytes)."""
        return len(self.data)


class MessageType(enum.Enum):
    # Local messages: never sent on the wire; `step` rejects them from the network.
    HUP = "MsgHup"  # start an election
    BEAT = "MsgBeat"  # leader: send heartbeats
    CHECK_QUORUM = "MsgCheckQuorum"  # leader: step down unless a quorum was recently active
    UNREACHABLE = "MsgUnreachable"  # a peer could not be reached
    SNAPSHOT_STATUS = "MsgSnapStatus"  # result of sending a snapshot
    # Messages between nodes.
    PROPOSE = "MsgProp"
    APPEND = "MsgApp"
    APPEND_RESPONSE = "MsgAppResp"
    VOTE = "MsgVote"
    VOTE_RESPONSE = "MsgVoteResp"
    PRE_VOTE = "MsgPreVote"
    PRE_VOTE_RESPONSE = "MsgPreVoteResp"
    SNAPSHOT = "MsgSnap"
    HEARTBEAT = "MsgHeartbeat"
    HEARTBEAT_RESPONSE = "MsgHeartbeatResp"
    TRANSFER_LEADER = "MsgTransferLeader"
    TIMEOUT_NOW = "MsgTimeoutNow"
    READ_INDEX = "MsgReadIndex"
    READ_INDEX_RESPONSE = "MsgReadIndexResp"


LOCAL_MESSAGE_TYPES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.CHECK_QUORUM,
        MessageType.UNREACHABLE,
        MessageType.SNAPSHOT_STATUS,
    }
)

RESPONSE_MESSAGE_TYPES = frozenset(
    {
        MessageType.APPEND_RESPONSE,
        MessageType.VOTE_RESPONSE,
        MessageType.PRE_VOTE_RESPONSE,
        MessageType.HEARTBEAT_RESPONSE,
        MessageType.UNREACHABLE,
    }
)


def vote_response_type(message_type: MessageType) -> MessageType:
    """The response type that answers a VOTE or PRE_VOTE."""
    if message_type is MessageType.VOTE:
        return MessageType.VOTE_RESPONSE
    if message_type is MessageType.PRE_VOTE:
        return MessageType.PRE_VOTE_RESPONSE
    raise ValueError(f"not a vote request: {message_type}")


class ConfState(msgspec.Struct, frozen=True, gc=False):
    """The membership a log prefix describes.

    `voters_outgoing` is non-empty only in a joint configuration (Raft thesis §4.3).
    `learners_next` holds voters that are being demoted to learners: they stay voters in the
    outgoing half and become learners when the joint configuration is left.
    """

    voters: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()
    voters_outgoing: frozenset[NodeId] = frozenset()
    learners_next: frozenset[NodeId] = frozenset()
    auto_leave: bool = False

    def is_joint(self) -> bool:
        return bool(self.voters_outgoing)

    def members(self) -> frozenset[NodeId]:
        return self.voters | self.learners | self.voters_outgoing | self.learners_next


class SnapshotMetadata(msgspec.Struct, frozen=True, gc=False):
    index: int = 0
    term: int = 0
    conf_state: ConfState = msgspec.field(default_factory=ConfState)


class Snapshot(msgspec.Struct, frozen=True, gc=False):
    """A state machine image covering the log up to `metadata.index` (inclusive)."""

    metadata: SnapshotMetadata = msgspec.field(default_factory=SnapshotMetadata)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.metadata.index == 0


EMPTY_SNAPSHOT = Snapshot()


class Message(msgspec.Struct, frozen=True, gc=False):
    """A message between two Raft nodes (or a local input, see LOCAL_MESSAGE_TYPES).

    Field use by type (as in etcd-io/raft):
      APPEND: `log_term`/`index` identify the entry before `entries`; `commit` is the
        leader's commit index.
      APPEND_RESPONSE: `index` is the last index matched (or the rejected index when
        `reject`); `reject_hint`/`log_term` guide fast backtracking (thesis §5.3 extension).
      VOTE/PRE_VOTE: `log_term`/`index` are the candidate's last entry.
      VOTE_RESPONSE/PRE_VOTE_RESPONSE with `reject`: `commit` is the voter's commit index and
        `log_term` the term of its entry there.
      HEARTBEAT: `commit` is min(leader commit, follower match); `context` carries a
        ReadIndex request id when the heartbeat round confirms reads; with LEASE_BASED
        reads, `index` is the leader's tick count at sending.
      HEARTBEAT_RESPONSE: echoes the heartbeat's `context` and `index`; `commit` is the
        follower's commit index.
      READ_INDEX(_RESPONSE): `entries[0].data` is the request context; `index` the answer.
    """

    type: MessageType
    to: NodeId = NO_NODE
    sender: NodeId = NO_NODE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""


class HardState(msgspec.Struct, frozen=True, gc=False):
    """What must be durable before a node answers anyone: term, vote, commit."""

    term: int = 0
    vote: NodeId = NO_NODE
    commit: int = 0

    def is_empty(self) -> bool:
        return self == EMPTY_HARD_STATE


EMPTY_HARD_STATE = HardState()


class StateRole(enum.Enum):
    FOLLOWER = "StateFollower"
    PRE_CANDIDATE = "StatePreCandidate"
    CANDIDATE = "StateCandidate"
    LEADER = "StateLeader"


class SoftState(msgspec.Struct, frozen=True, gc=False):
    """Volatile state, useful to observe, never persisted."""

    leader_id: NodeId = NO_NODE
    role: StateRole = StateRole.FOLLOWER


class ReadState(msgspec.Struct, frozen=True, gc=False):
    """A read may be served once the state machine has applied `index`.

    `request_context` is the caller's id for the read, echoed back unchanged.
    """

    index: int
    request_context: bytes


class ReadOnlyOption(enum.Enum):
    # Confirm leadership with a heartbeat quorum started after the request (thesis §6.4).
    SAFE = "safe"
    # Serve from the leader's commit index while it holds a lease (thesis §6.4.1): a quorum
    # acknowledged a heartbeat sent less than election_tick - 1 ticks ago, so no other node
    # can have been elected since. Falls back to SAFE when no lease is held. Requires
    # CheckQuorum; holds under any message delay but assumes every node's ticks advance at
    # the same rate (bounded clock drift). Nodes refuse votes for one election timeout after
    # starting, to keep promises made before a crash.
    LEASE_BASED = "lease_based"


class ConfChangeType(enum.Enum):
    ADD_NODE = "add"  # add a voter (or promote a learner)
    ADD_LEARNER_NODE = "add_learner"  # add a learner (or demote a voter)
    REMOVE_NODE = "remove"
    # Change nothing of the configuration: the entry carries a member's new address in its
    # context, for the application (etcd's ConfChangeUpdateNode).
    UPDATE_NODE = "update"


class ConfChangeTransition(enum.Enum):
    # Simple change if possible (one voter added or removed), else joint consensus that the
    # leader leaves automatically once the joint configuration is committed.
    AUTO = "auto"
    # Always joint consensus; leave automatically.
    JOINT_IMPLICIT = "joint_implicit"
    # Always joint consensus; the application proposes an empty ConfChange to leave.
    JOINT_EXPLICIT = "joint_explicit"


class ConfChangeSingle(msgspec.Struct, frozen=True, gc=False):
    type: ConfChangeType
    node_id: NodeId

    def __post_init__(self) -> None:
        if self.node_id <= NO_NODE or self.node_id >= 2**64:
            raise ValueError(f"conf change: invalid node id {self.node_id}")


class ConfChange(msgspec.Struct, frozen=True, gc=False):
    """A membership change. An empty `changes` tuple means "leave the joint configuration"."""

    changes: tuple[ConfChangeSingle, ...] = ()
    transition: ConfChangeTransition = ConfChangeTransition.AUTO
    context: bytes = b""

    def leave_joint(self) -> bool:
        return not self.changes and self.transition is ConfChangeTransition.AUTO

    def enters_joint(self) -> tuple[bool, bool]:
        """(uses joint consensus, leaves it automatically)."""
        if self.transition is not ConfChangeTransition.AUTO or len(self.changes) > 1:
            auto_leave = self.transition in (
                ConfChangeTransition.AUTO,
                ConfChangeTransition.JOINT_IMPLICIT,
            )
            return True, auto_leave
        return False, False

    # -- codec: the bytes stored in a CONF_CHANGE entry ------------------------------------
    # Layout (big-endian): version u8 | transition u8 | count u16 | count × (type u8, id u64)
    # | context bytes. Deterministic, versioned, and never pickle.

    _VERSION = 1
    _TRANSITIONS = (
        ConfChangeTransition.AUTO,
        ConfChangeTransition.JOINT_IMPLICIT,
        ConfChangeTransition.JOINT_EXPLICIT,
    )
    # By code: append only (a stored entry's code must keep its meaning).
    _TYPES = (
        ConfChangeType.ADD_NODE,
        ConfChangeType.ADD_LEARNER_NODE,
        ConfChangeType.REMOVE_NODE,
        ConfChangeType.UPDATE_NODE,
    )

    def encode(self) -> bytes:
        parts = [
            struct.pack(
                ">BBH",
                self._VERSION,
                self._TRANSITIONS.index(self.transition),
                len(self.changes),
            )
        ]
        for change in self.changes:
            parts.append(struct.pack(">BQ", self._TYPES.index(change.type), change.node_id))
        parts.append(self.context)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        """Parse `encode`'s output; raises ValueError on anything malformed."""
        if len(data) < 4:
            raise ValueError("conf change: truncated header")
        version, transition, count = struct.unpack_from(">BBH", data, 0)
        if version != cls._VERSION:
            raise ValueError(f"conf change: unknown version {version}")
        if transition >= len(cls._TRANSITIONS):
            raise ValueError(f"conf change: unknown transition {transition}")
        offset = 4
        if len(data) < offset + 9 * count:
            raise ValueError("conf change: truncated changes")
        changes = []
        for _ in range(count):
            kind, node_id = struct.unpack_from(">BQ", data, offset)
            offset += 9
            if kind >= len(cls._TYPES):
                raise ValueError(f"conf change: unknown change type {kind}")
            changes.append(ConfChangeSingle(cls._TYPES[kind], NodeId(node_id)))
        return cls(tuple(changes), cls._TRANSITIONS[transition], bytes(data[offset:]))
