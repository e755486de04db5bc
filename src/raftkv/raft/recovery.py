"""Disaster recovery: restart a surviving member as a one-node cluster (etcd's
`--force-new-cluster`), for when a quorum is lost for good (machines gone, disks wiped).

`force_new_cluster` works on a stopped node's storage:
1. apply every entry the node knows committed and has not applied yet (a Node runs over
   the storage, alone, until its state machine reaches the stored commit index);
2. replace the log with a snapshot at that index whose membership is this node alone, and
   commit exactly that index. Entries after it are dropped: the node never learnt that
   they committed, so no client was told they did by this node — but another member may
   have known more. What the lost members had and this one did not is gone; pick the
   member with the highest commit index (`recover` reports it) to lose the least.
The next start is an ordinary restart: the node is the only voter, elects itself and
serves; others are added back with the usual membership changes (as new, empty members).

A term at or past MAX_TERM (a buggy or hostile peer pushed the old cluster there: no
election can succeed any more) is impossible to keep: the new cluster starts at the term
of the entry it keeps (or 1 if that is impossible too) and the report says so. That is
safe because nothing of the old cluster votes in the new one.

Never run it while the node runs, or on more than one member of the same cluster: two
one-node clusters with diverging histories would result.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from raftkv.raft.core.types import (
    MAX_TERM,
    NO_NODE,
    ConfState,
    HardState,
    NodeId,
    Snapshot,
    SnapshotMetadata,
)
from raftkv.raft.driver.envelope import decode_snapshot, encode_snapshot, encode_snapshot_head
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.driver.state_machine import StateMachine
from raftkv.raft.storage.rocks import RocksStorage
from raftkv.raft.transport.inprocess import InProcessNetwork

__all__ = ["RecoveryReport", "force_new_cluster", "start_membership"]


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    node_id: NodeId
    # The index the new cluster starts from (everything up to it is kept).
    index: int
    term: int
    # The members before, and the uncommitted (as far as this node knew) entries dropped.
    previous_voters: tuple[NodeId, ...]
    previous_learners: tuple[NodeId, ...]
    dropped_entries: int
    # The term before, when it was impossible to keep (at or past MAX_TERM); None if kept.
    term_reset_from: int | None = None


async def force_new_cluster(
    storage: RocksStorage,
    node_id: NodeId,
    state_machine: StateMachine,
    *,
    peer_address: str = "",
    timeout_s: float = 60.0,
) -> RecoveryReport:
    """See the module docstring. `state_machine` must be the one kept in `storage` (its
    applied index is durable with its data); `peer_address` defaults to the address the
    node had. Raises TimeoutError if the committed entries cannot be applied in time."""
    hard_state, conf_state = storage.initial_state()
    if not conf_state.voters and not conf_state.learners:
        raise ValueError("the storage holds no cluster state: nothing to recover")
    address = peer_address or _own_address(storage, node_id)
    if hard_state.term > MAX_TERM:
        # A node refuses to start with such a term; the one that applies what is committed
        # below must start. MAX_TERM loads, and never campaigns (it has no successor).
        storage.persist(
            HardState(term=MAX_TERM, vote=NO_NODE, commit=hard_state.commit), (), None, sync=True
        )
    if state_machine.applied_index() < hard_state.commit:
        await _apply_committed(
            storage,
            node_id,
            state_machine,
            address=address,
            hard_state=hard_state,
            timeout_s=timeout_s,
        )
    index = state_machine.applied_index()
    term = storage.term(index)
    dropped = storage.last_index() - index
    # Keep the term: the node's next election moves past it, as after any restart.
    current_term = max(hard_state.term, term)
    term_reset_from = None
    if current_term >= MAX_TERM:
        # No election could move past it. The entries kept end at `term`; a term that is
        # impossible too (a forged entry's) is replaced: the new log is that one snapshot.
        term_reset_from = current_term
        term = term if term < MAX_TERM else 1
        current_term = term
    start_membership(
        storage,
        {node_id: address},
        index=index,
        term=term,
        app=state_machine.snapshot(),
        current_term=current_term,
    )
    return RecoveryReport(
        node_id=node_id,
        index=index,
        term=term,
        previous_voters=tuple(sorted(conf_state.voters)),
        previous_learners=tuple(sorted(conf_state.learners)),
        dropped_entries=dropped,
        term_reset_from=term_reset_from,
    )


def start_membership(
    storage: RocksStorage,
    voters: dict[NodeId, str],
    *,
    index: int,
    term: int,
    app: bytes,
    current_term: int,
) -> None:
    """Make `storage` a node of a cluster whose voters are `voters` (id -> peer address),
    holding state `app` (a state machine snapshot) at `index`/`term`: its log becomes that
    snapshot, committed, with no vote cast in `current_term` (force_new_cluster here, and
    seeding a new cluster from a backup)."""
    snapshot = Snapshot(
        SnapshotMetadata(index, term, ConfState(voters=frozenset(voters))),
        encode_snapshot(voters, app),
    )
    storage.reset_to_snapshot(snapshot, HardState(term=current_term, vote=NodeId(0), commit=index))


def start_membership_in_pieces(
    storage: RocksStorage,
    voters: dict[NodeId, str],
    *,
    index: int,
    term: int,
    app_pieces: Callable[[], Iterator[bytes]],
    current_term: int,
) -> None:
    """`start_membership` for a state too large to hold in memory (a backup restored into
    a new data dir): `app_pieces()` gives the state machine snapshot's bytes a piece at a
    time, and is called twice, to measure it and to write it (so it must give the same
    bytes each time). Not atomic (RocksStorage.reset_to_snapshot_pieces): the caller marks
    the data dir unfinished until it returns."""
    app_bytes = sum(len(piece) for piece in app_pieces())
    head = encode_snapshot_head(voters, app_bytes)
    storage.reset_to_snapshot_pieces(
        SnapshotMetadata(index, term, ConfState(voters=frozenset(voters))),
        itertools.chain([head], app_pieces()),
        len(head) + app_bytes,
        HardState(term=current_term, vote=NodeId(0), commit=index),
    )


def _own_address(storage: RocksStorage, node_id: NodeId) -> str:
    snapshot = storage.snapshot()
    if snapshot.is_empty():
        return ""
    peers, _ = decode_snapshot(snapshot.data)
    return peers.get(node_id, "")


async def _apply_committed(
    storage: RocksStorage,
    node_id: NodeId,
    state_machine: StateMachine,
    *,
    address: str,
    hard_state: HardState,
    timeout_s: float,
) -> None:
    """Run the node alone (an in-process network with nobody else on it) until it has
    applied what its storage says is committed. It cannot win an election (PreVote needs
    a quorum of the old members), so it changes nothing but the applied state."""
    own = address or f"recovering-{node_id}"
    network = InProcessNetwork()
    node = Node(
        node_id=node_id,
        storage=storage,
        transport=network.transport(own),
        state_machine=state_machine,
        settings=NodeSettings(pre_vote=True, snapshot_every_entries=1 << 62),
        peers={node_id: own},
        owns_storage=False,
    )
    await node.start()
    try:
        async with asyncio.timeout(timeout_s):
            while state_machine.applied_index() < hard_state.commit:
                await asyncio.sleep(0.01)
    finally:
        await node.stop(transfer_leadership=False)
