"""The state machine side of a `Node`: applying committed entries (commands and
membership changes), installing snapshots from the leader, taking snapshots of our own.

Runs on the node's event loop, from its Ready loop, always after the Ready's write is
durable. Invariants:
- an entry at or below the state machine's `applied_index()` is not applied again, but its
  membership change is (the core restarts from the snapshot and must see it);
- an entry that cannot be decoded is skipped alike by every node, never fatal (a fatal
  error here would stop every node, on every restart, for good);
- the snapshot index only moves forward.

These functions are the Node's own methods kept in their own module; they use its
internals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from raftkv.raft.core.errors import (
    ConfChangeInvalid,
    RaftError,
    SnapshotOutOfDate,
)
from raftkv.raft.core.rawnode import RawNode
from raftkv.raft.core.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    NodeId,
    Snapshot,
)
from raftkv.raft.driver.envelope import (
    EnvelopeError,
    RequestId,
    decode_conf_change_context,
    decode_proposal,
    encode_snapshot,
)
from raftkv.raft.driver.state_machine import BackgroundSnapshots, Command

if TYPE_CHECKING:
    from raftkv.raft.driver.node import Node

logger = logging.getLogger("raftkv.node")

# Without a writer thread, a background snapshot is encoded on the loop after 1 to this many
# turns, log-uniformly: as a worker thread's build would, most finish at once and some take
# long (LocalCluster's run_until advances its clock a step every 8 turns: up to about 6
# simulated seconds).
_MAX_SIMULATED_BUILD_TURNS = 1024


def install_snapshot(node: Node, snapshot: Snapshot) -> None:
    node._requests.fail_covered_by_snapshot(snapshot.metadata.index)
    started = time.perf_counter()
    peers, removed, app = node._decode_snapshot(snapshot)
    node._peers.update(peers)
    node._removed |= removed
    metadata = snapshot.metadata
    node.state_machine.restore(app, metadata.index, metadata.term)
    node._snapshot_index = max(node._snapshot_index, metadata.index)
    node._log_bytes_since_snapshot = 0
    node._sync_transport_peers(metadata.conf_state)
    stats = node.stats
    stats.snapshots_installed += 1
    stats.last_snapshot_bytes = len(snapshot.data)
    stats.snapshot_install_seconds.observe(time.perf_counter() - started)


def apply_entries(node: Node, rawnode: RawNode, entries: Sequence[Entry]) -> None:
    """Apply a Ready's committed entries: membership changes into the core, commands to
    the state machine in one call, results to the futures of the requests they carry."""
    state_machine = node.state_machine
    already_applied = state_machine.applied_index()
    commands: list[Command] = []
    owners: list[RequestId] = []
    for entry in entries:
        if entry.index > already_applied:
            node._log_bytes_since_snapshot += len(entry.data)
        if entry.kind is EntryKind.CONF_CHANGE:
            apply_conf_change(node, rawnode, entry)
            continue
        if entry.index <= already_applied:
            continue
        if not entry.data:
            node._requests.fail_overwritten(entry.index, None)
            continue
        try:
            request, command = decode_proposal(entry.data)
        except EnvelopeError as error:
            # Forwarded proposals are checked on arrival, so only a peer of another
            # version could have put this here. Every node skips it alike (an error
            # here would stop every node, on every restart, for good).
            logger.error("node %d skips log entry %d: %s", node.id, entry.index, error)
            node._requests.fail_overwritten(entry.index, None)
            continue
        node._requests.fail_overwritten(entry.index, request)
        commands.append(Command(entry.index, entry.term, command))
        owners.append(request)
    last = entries[-1]
    if last.index <= already_applied:
        return
    started = time.perf_counter()
    results = state_machine.apply(commands, last.index, last.term)
    stats = node.stats
    stats.apply_seconds.observe(time.perf_counter() - started)
    if len(results) != len(commands):
        raise RaftError(
            f"state machine returned {len(results)} results for {len(commands)} commands"
        )
    stats.commands_applied += len(commands)
    for request, result in zip(owners, results, strict=True):
        node._requests.complete(request, result)


def apply_conf_change(node: Node, rawnode: RawNode, entry: Entry) -> None:
    try:
        change = ConfChange.decode(entry.data)
        request, peers = decode_conf_change_context(change.context)
    except (ValueError, EnvelopeError) as error:
        # As for a command: skipped alike everywhere rather than fatal everywhere.
        logger.error("node %d skips membership entry %d: %s", node.id, entry.index, error)
        node._requests.fail_overwritten(entry.index, None)
        return
    node._requests.fail_overwritten(entry.index, request)
    try:
        conf_state = rawnode.apply_conf_change(change)
    except ConfChangeInvalid as error:
        # Every node refuses the same change alike; the log position is still used.
        if request is not None:
            node._requests.complete(request, error)
        return
    node._peers.update(peers)
    members = conf_state.voters | conf_state.learners | conf_state.voters_outgoing
    # A member now is not a removed one (a log from before ids were never reused may
    # add one again: every node follows its log alike).
    node._removed -= members
    removed_here = False
    for single in change.changes:
        if single.type is ConfChangeType.REMOVE_NODE and single.node_id not in members:
            node._removed.add(single.node_id)
            node._peers.pop(single.node_id, None)
            if single.node_id == node.id:
                # Keep the transport: until the new voters have applied this they may
                # still need our vote.
                removed_here = True
            else:
                node.transport.remove_peer(single.node_id)
    node._sync_transport_peers(conf_state)
    if any(single.type is not ConfChangeType.REMOVE_NODE for single in change.changes):
        # A new member catches up from a snapshot, and refuses one whose membership
        # does not include it (the core's defence, as etcd's). The latest snapshot
        # predates this change, so take a fresh one.
        node._snapshot_wanted = True
    if request is not None:
        node._requests.complete(request, conf_state)
    if removed_here:
        node._learn_removed("its removal applied here")


def maybe_snapshot(node: Node, rawnode: RawNode) -> None:
    if node._snapshot_write is not None:
        return
    applied = node.state_machine.applied_index()
    if applied <= node._snapshot_index:
        return
    every_bytes = node.settings.snapshot_every_bytes
    if (
        not node._snapshot_wanted
        and applied - node._snapshot_index < node.settings.snapshot_every_entries
        and not (every_bytes and node._log_bytes_since_snapshot >= every_bytes)
    ):
        return
    if applied > rawnode.applied_index():
        return  # replaying after a restart: the core has not caught up to it yet
    node._snapshot_started_at = time.perf_counter()
    conf_state = rawnode.conf_state()
    node._snapshot_wanted = False
    # The snapshot covers everything applied so far (if it fails, the node stops).
    node._log_bytes_since_snapshot = 0
    machine = node.state_machine
    if isinstance(machine, BackgroundSnapshots):
        # Captured here, at `applied`; serialized on a worker thread; stored by the writer.
        produce = machine.snapshot_later()
        peers = dict(node._peers)
        removed = frozenset(node._removed)
        task = asyncio.ensure_future(
            _build_snapshot(node, applied, conf_state, peers, produce, removed=removed)
        )
        task.add_done_callback(lambda _: node._wake.set())
        node._snapshot_write = task
        return
    data = encode_snapshot(dict(node._peers), machine.snapshot(), node._removed)
    node._snapshot_write = node._writer.submit(
        node.storage.create_snapshot, applied, conf_state, data
    )


async def _build_snapshot(
    node: Node,
    applied: int,
    conf_state: ConfState,
    peers: dict[NodeId, str],
    produce: Callable[[], bytes],
    *,
    removed: frozenset[NodeId],
) -> tuple[Snapshot, float]:
    if not node._writer.threaded:
        # A deterministic simulation (persisting inline): a worker thread would finish
        # after as many loop turns, so as much simulated time, as the OS decides (up to
        # tens of simulated seconds). Encode on the loop instead, after a number of turns
        # the node's rng decides, so the loop still applies entries and installs snapshots
        # while the build is under way. Turns, not clock time: stop() awaits the build, and
        # nothing advances a ManualClock then.
        for _ in range(int(_MAX_SIMULATED_BUILD_TURNS ** node._rng.random())):
            await asyncio.sleep(0)
        data = encode_snapshot(peers, produce(), removed)
    else:
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, lambda: encode_snapshot(peers, produce(), removed))
    return await node._writer.submit(node.storage.create_snapshot, applied, conf_state, data)


def finish_snapshot(node: Node) -> None:
    assert node._snapshot_write is not None
    write, node._snapshot_write = node._snapshot_write, None
    try:
        snapshot, _ = write.result()  # any other failed snapshot write is fatal
    except SnapshotOutOfDate:
        # A newer snapshot from the leader was installed meanwhile: ours is moot.
        return
    # Never backwards: the leader's snapshot may have been installed after ours was
    # submitted and before it finished.
    node._snapshot_index = max(node._snapshot_index, snapshot.metadata.index)
    stats = node.stats
    stats.snapshots_created += 1
    stats.last_snapshot_bytes = len(snapshot.data)
    stats.snapshot_create_seconds.observe(time.perf_counter() - node._snapshot_started_at)
    # Compacting is cheap (a range delete) and done here on the loop so the core never
    # sees the log's first index move in the middle of a step.
    compact_to = snapshot.metadata.index - node.settings.snapshot_keep_entries
    if compact_to >= node.storage.first_index():
        node.storage.compact(compact_to)
