"""`Applier`: the state machine side of a node — applying committed entries (commands and
membership changes), installing snapshots from the leader, taking snapshots of our own.

The node's loop calls it once per Ready, always after the Ready's write is durable; while
the node runs, nothing else changes the state machine (apply, restore). Invariants:
- an entry at or below the state machine's `applied_index()` is not applied again, but its
  membership change or format declaration is (the core, and LogFormats, restart from the
  snapshot and must see it);
- an entry that cannot be decoded is skipped alike by every node, never fatal (a fatal
  error here would stop every node, on every restart, for good);
- the snapshot index only moves forward;
- one snapshot of our own at a time: written by the node's `Writer` after the Ready writes
  submitted before it, so the log it lets us compact is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence

from raftkv.raft.core.errors import (
    ConfChangeInvalid,
    MalformedMessage,
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
    Message,
    NodeId,
    Snapshot,
)
from raftkv.raft.driver.envelope import (
    EnvelopeError,
    RequestId,
    decode_conf_change_context,
    decode_declaration,
    decode_proposals,
    decode_snapshot_envelope,
    encode_snapshot,
    is_declaration,
)
from raftkv.raft.driver.log_formats import LogFormats
from raftkv.raft.driver.membership import Membership
from raftkv.raft.driver.requests import Requests
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.driver.state_machine import (
    BackgroundSnapshots,
    Command,
    SnapshotInvalid,
    StateMachine,
    ValidatesSnapshots,
)
from raftkv.raft.driver.status import NodeStats
from raftkv.raft.driver.writer import Writer
from raftkv.raft.storage.base import RaftStorage

logger = logging.getLogger("raftkv.node")

# Without a writer thread, a background snapshot is encoded on the loop after 1 to this many
# turns, log-uniformly: as a worker thread's build would, most finish at once and some take
# long (LocalCluster's run_until advances its clock a step every 8 turns: up to about 6
# simulated seconds).
_MAX_SIMULATED_BUILD_TURNS = 1024


# The changes that add a member (which then needs a snapshot to catch up from).
_ADDS = (ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER_NODE)


class Applier:
    def __init__(
        self,
        *,
        node_id: NodeId,
        settings: NodeSettings,
        storage: RaftStorage,
        state_machine: StateMachine,
        stats: NodeStats,
        rng: random.Random,
        writer: Writer,
        requests: Requests,
        membership: Membership,
        formats: LogFormats,
        wake: Callable[[], None],
    ) -> None:
        """`wake` tells the node's loop there is work for it (a snapshot built)."""
        self._node_id = node_id
        self._settings = settings
        self._storage = storage
        self._state_machine = state_machine
        self._stats = stats
        self._rng = rng
        self._writer = writer
        self._requests = requests
        self._membership = membership
        self._formats = formats
        self._wake = wake
        # The index of the latest snapshot stored, ours or the leader's.
        self._snapshot_index = 0
        # Our own snapshot being built or written (at most one).
        self._snapshot_write: asyncio.Future[tuple[Snapshot, float]] | None = None
        # time.perf_counter() when the snapshot being written was started (for stats).
        self._snapshot_started_at = 0.0
        # Bytes of entries applied since the last snapshot (or since start: a restart
        # counts afresh, so it may snapshot up to that much later than planned).
        self._log_bytes_since_snapshot = 0
        # A membership change asks for a snapshot at once (see _apply_conf_change).
        self._snapshot_wanted = False

    @property
    def snapshot_index(self) -> int:
        return self._snapshot_index

    # -- snapshots in ----------------------------------------------------------------------

    def recover(self, snapshot: Snapshot) -> None:
        """At start: bring the state machine up to the stored `snapshot` if it is behind
        it, and the membership to what it says. Raises EnvelopeError or SnapshotInvalid
        when it cannot be used."""
        applied = self._state_machine.applied_index()
        envelope = decode_snapshot_envelope(snapshot.data)
        metadata = snapshot.metadata
        if applied < metadata.index:
            self._state_machine.restore(envelope.app, metadata.index, metadata.term)
        self._membership.recover(envelope.peers, envelope.removed)
        self._formats.learn_from_snapshot(envelope.formats, metadata.conf_state, metadata.index)
        self._snapshot_index = metadata.index

    def check_snapshot(self, message: Message) -> None:
        """Refuse (MalformedMessage) a snapshot whose data this node could not install (an
        envelope that does not decode; state its ValidatesSnapshots state machine could not
        restore), before any of it is persisted. Runs on a transport's worker thread:
        reads only `message` and the state machine's validate_snapshot."""
        snapshot = message.snapshot
        if snapshot is None:
            return
        try:
            app = decode_snapshot_envelope(snapshot.data).app
            machine = self._state_machine
            if isinstance(machine, ValidatesSnapshots):
                machine.validate_snapshot(app)
        except (EnvelopeError, SnapshotInvalid) as error:
            metadata = snapshot.metadata
            raise MalformedMessage(
                f"snapshot {metadata.term}/{metadata.index} from node {message.sender} is "
                f"unusable: {error}"
            ) from None

    def install_snapshot(self, snapshot: Snapshot) -> None:
        """Install a leader's snapshot, now durable in the Raft storage."""
        self._requests.fail_covered_by_snapshot(snapshot.metadata.index)
        started = time.perf_counter()
        try:
            envelope = decode_snapshot_envelope(snapshot.data)
        except EnvelopeError as error:
            raise EnvelopeError(f"snapshot at index {snapshot.metadata.index}: {error}") from error
        self._membership.learn_from_snapshot(envelope.peers, envelope.removed)
        metadata = snapshot.metadata
        self._state_machine.restore(envelope.app, metadata.index, metadata.term)
        self._formats.learn_from_snapshot(envelope.formats, metadata.conf_state, metadata.index)
        self._snapshot_index = max(self._snapshot_index, metadata.index)
        self._log_bytes_since_snapshot = 0
        self._membership.sync_transport_peers(metadata.conf_state)
        stats = self._stats
        stats.snapshots_installed += 1
        stats.last_snapshot_bytes = len(snapshot.data)
        stats.snapshot_install_seconds.observe(time.perf_counter() - started)

    # -- entries ---------------------------------------------------------------------------

    def apply_entries(self, rawnode: RawNode, entries: Sequence[Entry]) -> None:
        """Apply a Ready's committed entries: membership changes into the core, commands to
        the state machine in one call, results to the futures of the requests they carry."""
        state_machine = self._state_machine
        requests = self._requests
        already_applied = state_machine.applied_index()
        commands: list[Command] = []
        owners: list[RequestId] = []
        for entry in entries:
            if entry.index > already_applied:
                self._log_bytes_since_snapshot += len(entry.data)
            if entry.kind is EntryKind.CONF_CHANGE:
                self._apply_conf_change(rawnode, entry)
                continue
            if is_declaration(entry.data):
                self._apply_declaration(entry, replayed=entry.index <= already_applied)
                continue
            if entry.index <= already_applied:
                continue
            if not entry.data:
                requests.fail_overwritten(entry.index, ())
                continue
            try:
                proposals = decode_proposals(entry.data)
            except EnvelopeError as error:
                # Forwarded proposals are checked on arrival, so only a peer of another
                # version could have put this here. Every node skips it alike (an error
                # here would stop every node, on every restart, for good).
                logger.error("node %d skips log entry %d: %s", self._node_id, entry.index, error)
                requests.fail_overwritten(entry.index, ())
                continue
            requests.fail_overwritten(entry.index, tuple(request for request, _ in proposals))
            # A batch's commands share its index and term, in order (envelope).
            for request, command in proposals:
                commands.append(Command(entry.index, entry.term, command))
                owners.append(request)
        last = entries[-1]
        self._formats.entries_applied(last.index)
        if last.index <= already_applied:
            return
        started = time.perf_counter()
        results = state_machine.apply(commands, last.index, last.term)
        stats = self._stats
        stats.apply_seconds.observe(time.perf_counter() - started)
        if len(results) != len(commands):
            raise RaftError(
                f"state machine returned {len(results)} results for {len(commands)} commands"
            )
        stats.commands_applied += len(commands)
        for request, result in zip(owners, results, strict=True):
            requests.complete(request, result)

    def _apply_conf_change(self, rawnode: RawNode, entry: Entry) -> None:
        try:
            change = ConfChange.decode(entry.data)
            request, peers = decode_conf_change_context(change.context)
        except (ValueError, EnvelopeError) as error:
            # As for a command: skipped alike everywhere rather than fatal everywhere.
            logger.error("node %d skips membership entry %d: %s", self._node_id, entry.index, error)
            self._requests.fail_overwritten(entry.index, ())
            return
        self._requests.fail_overwritten(entry.index, () if request is None else (request,))
        try:
            conf_state = rawnode.apply_conf_change(change)
        except ConfChangeInvalid as error:
            # Every node refuses the same change alike; the log position is still used.
            if request is not None:
                self._requests.complete(request, error)
            return
        removed_here = self._membership.apply_change(change, conf_state, peers)
        self._formats.apply_conf_state(conf_state)
        if any(single.type in _ADDS for single in change.changes):
            # A new member catches up from a snapshot, and refuses one whose membership
            # does not include it (the core's defence, as etcd's). The latest snapshot
            # predates this change, so take a fresh one.
            self._snapshot_wanted = True
        if request is not None:
            self._requests.complete(request, conf_state)
        if removed_here:
            self._membership.learn_removed("its removal applied here")

    def _apply_declaration(self, entry: Entry, *, replayed: bool) -> None:
        try:
            declaration = decode_declaration(entry.data)
        except EnvelopeError as error:
            # As for a command: skipped alike everywhere rather than fatal everywhere.
            logger.error("node %d skips log entry %d: %s", self._node_id, entry.index, error)
            self._requests.fail_overwritten(entry.index, ())
            return
        self._formats.apply(entry.index, declaration, replayed=replayed)
        if not replayed:
            self._requests.fail_overwritten(entry.index, (declaration.request,))
            self._requests.complete(declaration.request, None)

    # -- snapshots of our own --------------------------------------------------------------

    def maybe_snapshot(self, rawnode: RawNode) -> None:
        """Start a snapshot of our own if one is due (snapshot_every_entries / _bytes, or
        asked for) and none is under way."""
        if self._snapshot_write is not None:
            return
        applied = self._state_machine.applied_index()
        if applied <= self._snapshot_index:
            return
        settings = self._settings
        every_bytes = settings.snapshot_every_bytes
        if (
            not self._snapshot_wanted
            and applied - self._snapshot_index < settings.snapshot_every_entries
            and not (every_bytes and self._log_bytes_since_snapshot >= every_bytes)
        ):
            return
        if applied > rawnode.applied_index():
            return  # replaying after a restart: the core has not caught up to it yet
        self._snapshot_started_at = time.perf_counter()
        conf_state = rawnode.conf_state()
        self._snapshot_wanted = False
        # The snapshot covers everything applied so far (if it fails, the node stops).
        self._log_bytes_since_snapshot = 0
        machine = self._state_machine
        if isinstance(machine, BackgroundSnapshots):
            # Captured here, at `applied`; serialized on a worker thread; stored by the writer.
            produce = machine.snapshot_later()
            peers = self._membership.peers()
            removed = self._membership.removed_ids()
            formats = self._formats.declared()
            task = asyncio.ensure_future(
                self._build_snapshot(
                    applied, conf_state, peers, produce, removed=removed, formats=formats
                )
            )
            task.add_done_callback(lambda _: self._wake())
            self._snapshot_write = task
            return
        data = encode_snapshot(
            self._membership.peers(),
            machine.snapshot(),
            self._membership.removed_ids(),
            self._formats.declared(),
        )
        self._snapshot_write = self._writer.submit(
            self._storage.create_snapshot, applied, conf_state, data
        )

    async def _build_snapshot(
        self,
        applied: int,
        conf_state: ConfState,
        peers: dict[NodeId, str],
        produce: Callable[[], bytes],
        *,
        removed: frozenset[NodeId],
        formats: dict[NodeId, tuple[int, int]],
    ) -> tuple[Snapshot, float]:
        if not self._writer.threaded:
            # A deterministic simulation (persisting inline): a worker thread would finish
            # after as many loop turns, so as much simulated time, as the OS decides (up to
            # tens of simulated seconds). Encode on the loop instead, after a number of turns
            # the node's rng decides, so the loop still applies entries and installs
            # snapshots while the build is under way. Turns, not clock time: stop() awaits
            # the build, and nothing advances a ManualClock then.
            for _ in range(int(_MAX_SIMULATED_BUILD_TURNS ** self._rng.random())):
                await asyncio.sleep(0)
            data = encode_snapshot(peers, produce(), removed, formats)
        else:
            loop = asyncio.get_running_loop()
            data = await loop.run_in_executor(
                None, lambda: encode_snapshot(peers, produce(), removed, formats)
            )
        return await self._writer.submit(self._storage.create_snapshot, applied, conf_state, data)

    def snapshot_written(self) -> bool:
        """Whether our own snapshot is built and written (or failed): finish_snapshot next."""
        return self._snapshot_write is not None and self._snapshot_write.done()

    def finish_snapshot(self) -> None:
        """Take note of our own snapshot, now stored, and compact the log behind it."""
        assert self._snapshot_write is not None
        write, self._snapshot_write = self._snapshot_write, None
        try:
            snapshot, _ = write.result()  # any other failed snapshot write is fatal
        except SnapshotOutOfDate:
            # A newer snapshot from the leader was installed meanwhile: ours is moot.
            return
        # Never backwards: the leader's snapshot may have been installed after ours was
        # submitted and before it finished.
        self._snapshot_index = max(self._snapshot_index, snapshot.metadata.index)
        stats = self._stats
        stats.snapshots_created += 1
        stats.last_snapshot_bytes = len(snapshot.data)
        stats.snapshot_create_seconds.observe(time.perf_counter() - self._snapshot_started_at)
        # Compacting is cheap (a range delete) and done here on the loop so the core never
        # sees the log's first index move in the middle of a step.
        compact_to = snapshot.metadata.index - self._settings.snapshot_keep_entries
        if compact_to >= self._storage.first_index():
            self._storage.compact(compact_to)

    async def settle(self) -> None:
        """Wait for the snapshot under way, if any, to be written (or to fail): the node
        stops only after it, never leaving a write halfway."""
        if self._snapshot_write is not None:
            with contextlib.suppress(Exception):
                await self._snapshot_write
