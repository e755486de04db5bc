"""The transport protocol: how a node's messages reach its peers.

A transport is fire-and-forget, like the network Raft assumes: `send` never blocks and
never raises for a peer that is down; it queues (bounded, per peer), batches, and reports
`report_unreachable(peer)` to its handler when it drops or fails to deliver. Raft retries
everything that matters.

Snapshots (MessageType.SNAPSHOT) travel separately, in checksummed chunks, and their
outcome is reported with `report_snapshot(peer, ok)`. A transport may send only the chunks
the receiver lacks; a handler that is also `LocalSnapshots` lets it find them in the
receiver's own state.

Membership requests (`MemberRequest`) are the one request/response exchange: a node that
wants to join asks an existing member to add it as a learner, then to promote it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from raftkv.raft.core.types import NO_NODE, Message, NodeId


class MemberAction(enum.Enum):
    ADD_LEARNER = "add_learner"
    PROMOTE = "promote"
    REMOVE = "remove"
    # Changes nothing: any member (leader or not) answers ok with the members it knows.
    MEMBERS = "members"
    # Not a membership change: the leader hands leadership to `node_id` (NO_NODE: the
    # most caught-up voter) and answers with the new leader's id, so any member forwards
    # a transfer the way it forwards a change.
    TRANSFER_LEADER = "transfer_leader"
    # Member `node_id` is reached at `address` from now on (etcd's MemberUpdate).
    UPDATE = "update"


@dataclass(frozen=True, slots=True)
class MemberRequest:
    action: MemberAction
    node_id: NodeId
    # The peer address of `node_id` (for ADD_LEARNER); "" otherwise.
    address: str = ""
    # The node that asked, as its TLS certificate names it (set by the receiving transport,
    # never read from the wire; None: not known — no TLS, or a certificate allowed for any
    # node). A requester that is not a member may only join as itself.
    requester: NodeId | None = None


@dataclass(frozen=True, slots=True)
class MemberResponse:
    ok: bool
    # A short machine-readable reason when not ok: "not_leader", "not_caught_up",
    # "busy" (another change in flight), "invalid", "timeout", "stopped".
    error: str = ""
    message: str = ""
    # The responder's idea of the leader, to retry there.
    leader_id: NodeId = NO_NODE
    leader_address: str = ""
    # The responder's known members (id, peer address), so a joiner can reach them.
    members: tuple[tuple[NodeId, str], ...] = ()
    # Ids the responder knows were removed from the cluster (never reused).
    removed: tuple[NodeId, ...] = ()


class TransportError(Exception):
    """A transport-level failure that the caller of a request/response call can see. The
    request may have reached the peer (e.g. a timeout while waiting for the answer)."""


class NotDelivered(TransportError):
    """The request never reached the peer (nobody listens there, the connection was
    refused, a partition): the peer did nothing, so retrying is safe."""


class TransportHandler(Protocol):
    """What a transport calls back into (the driver's Node). Called on the event loop."""

    def deliver(self, messages: Sequence[Message]) -> None:
        """Messages received from peers. Must not block; may drop when overloaded."""
        ...

    def report_unreachable(self, peer: NodeId) -> None: ...

    def report_snapshot(self, peer: NodeId, ok: bool) -> None: ...

    async def handle_member_request(self, request: MemberRequest) -> MemberResponse: ...


@runtime_checkable
class LocalSnapshots(Protocol):
    """Optional for a TransportHandler: this node's own state as snapshot data.

    A receiving transport calls it when a peer offers a snapshot whose chunks it does not
    all hold, and reuses every chunk of the result that the offer names, so a follower
    that was down receives only what changed (raftkv.raft.snapshot_chunks). The data only
    serves as a source of chunks, each checked by its SHA-256: it need not be a snapshot
    at any particular index, nor complete. Called on the event loop; must not block it
    (capture the state there, encode it on a worker thread). None when there is nothing
    to offer; without this capability every transfer sends the data whole.
    """

    async def local_snapshot_data(self) -> bytes | None: ...


@runtime_checkable
class ChecksSnapshots(Protocol):
    """Optional for a TransportHandler: tells a snapshot it cannot use before it is
    delivered.

    A transport that received a MsgSnap calls `check_snapshot(message)` before `deliver`,
    off the event loop (it may cost O(data)). MalformedMessage means the data is unusable:
    the transport drops the message and fails the transfer, so that the sender reports it
    failed (its leader retries later) and nothing of it is persisted here. Must read
    nothing but `message` and state that does not change while the handler runs.
    """

    def check_snapshot(self, message: Message) -> None: ...


def snapshot_checker(handler: object) -> ChecksSnapshots | None:
    """The handler as a ChecksSnapshots, if it has that capability. (Taking `object`: mypy
    cannot narrow one protocol type to another.)"""
    return handler if isinstance(handler, ChecksSnapshots) else None


def snapshot_source(handler: object) -> LocalSnapshots | None:
    """The handler as a LocalSnapshots, if it has that capability."""
    return handler if isinstance(handler, LocalSnapshots) else None


class Transport(Protocol):
    async def start(self, handler: TransportHandler) -> None:
        """Begin listening (if it serves) and delivering to `handler`: a received MsgSnap
        only once the handler's `check_snapshot` passed, if it has one (ChecksSnapshots)."""
        ...

    def send(self, messages: Sequence[Message]) -> None:
        """Queue each message for `message.to`. Never blocks, never raises for a peer
        that is down or unknown (it reports it unreachable instead)."""
        ...

    def set_peer(self, peer: NodeId, address: str) -> None:
        """Add a peer or change its address."""
        ...

    def remove_peer(self, peer: NodeId) -> None: ...

    async def member_request(
        self, address: str, request: MemberRequest, timeout: float
    ) -> MemberResponse:
        """Send `request` to the node at `address` and wait for its answer.

        Raises TransportError if it cannot be reached or does not answer in time."""
        ...

    async def stop(self) -> None:
        """Stop serving and sending; queued messages are dropped."""
        ...
