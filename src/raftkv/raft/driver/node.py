"""`Node`: one Raft node running on asyncio around the pure core.

One task (the loop) owns the `RawNode`; everything else talks to it by appending to
bounded queues and setting `_wake`. The loop, per Ready (ARCHITECTURE.md §2.2):

1. `ready()`; send `messages` at once (the leader's own append runs in parallel with
   replication);
2. persist snapshot + entries + hard state in ONE write, fsynced when the Ready says so,
   on a single writer thread (order kept) — or inline in deterministic simulations;
3. once durable: send `persisted_messages`, install a snapshot into the state machine,
   apply committed entries, answer reads whose index is applied;
4. `advance`.

While step 2 runs the loop keeps stepping messages, ticks and proposals into the core;
everything proposed meanwhile lands in the next Ready, so one fsync serves many proposals
(group commit).

Invariants:
- Only the loop touches the RawNode and the state machine.
- A Ready's committed entries are applied only after its write is durable, and at most
  once: entries at or below the state machine's `applied_index()` are skipped (their
  membership changes are still replayed into the core, which starts from the snapshot).
- Every request future ends: applied, failed, timed out (by the clock) or stopped.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from raftkv.raft.clock import Clock, SystemClock
from raftkv.raft.core.config import Config
from raftkv.raft.core.errors import (
    ConfChangeInvalid,
    InvalidArgument,
    MalformedMessage,
    NotLeader,
    PeerNotFound,
    ProposalDropped,
    RaftError,
)
from raftkv.raft.core.rawnode import RawNode
from raftkv.raft.core.ready import Ready
from raftkv.raft.core.types import (
    MAX_TERM,
    NO_NODE,
    ConfChange,
    ConfState,
    HardState,
    Message,
    MessageType,
    NodeId,
    ReadOnlyOption,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)
from raftkv.raft.driver import applying, membership
from raftkv.raft.driver.envelope import (
    EnvelopeError,
    RequestId,
    check_forwarded_entries,
    decode_snapshot_envelope,
    encode_proposal,
    encode_snapshot,
)
from raftkv.raft.driver.errors import (
    NodeFailed,
    OutcomeUnknown,
    Overloaded,
    ProposalTimeout,
    ReadTimeout,
    Removed,
    StateUnusable,
    Stopped,
)
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.driver.state_machine import (
    BackgroundSnapshots,
    SnapshotInvalid,
    StateMachine,
    ValidatesSnapshots,
)
from raftkv.raft.driver.status import NodeStats, NodeStatus, PeerProgress
from raftkv.raft.storage.base import RaftStorage
from raftkv.raft.transport.base import (
    MemberAction,
    MemberRequest,
    MemberResponse,
    Transport,
)

logger = logging.getLogger("raftkv.node")

T = TypeVar("T")
StateMachineT = TypeVar("StateMachineT", bound=StateMachine)

LeaderObserver = Callable[[NodeId, int], None]


@dataclass(slots=True)
class _Pending:
    """A request waiting for its outcome."""

    future: asyncio.Future[Any]
    deadline: float
    # Set once the core took the proposal (appended as leader, or forwarded to the
    # leader): from then on it may be applied whatever happens here, so ending it early
    # is OutcomeUnknown, never Stopped ("not applied").
    sent: bool = False


@dataclass(slots=True)
class _PendingRead:
    future: asyncio.Future[int]
    deadline: float
    # Set once the core answered; resolved when the state machine has applied it.
    index: int = 0
    requested_at_tick: int = 0


@dataclass(slots=True)
class _Queued:
    request: RequestId
    data: bytes
    # ConfChange proposals carry the change instead of data.
    change: ConfChange | None = None


@dataclass(slots=True)
class _Outstanding:
    ready: Ready
    write: asyncio.Future[tuple[None, float]] | None
    # time.perf_counter() when the write was submitted (for stats.append_seconds).
    submitted_at: float


class Node:
    """A running Raft node. Build one with `raftkv.raft.NodeBuilder` or directly."""

    def __init__(
        self,
        *,
        node_id: NodeId,
        storage: RaftStorage,
        transport: Transport,
        state_machine: StateMachine,
        settings: NodeSettings | None = None,
        clock: Clock | None = None,
        peers: Mapping[NodeId, str] | None = None,
        rng: random.Random | None = None,
        owns_storage: bool = False,
    ) -> None:
        if node_id == NO_NODE or node_id < 0:
            raise InvalidArgument("node_id must be a positive integer")
        self.id = node_id
        self.storage = storage
        self.transport = transport
        self.state_machine = state_machine
        self.settings = settings if settings is not None else NodeSettings()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._rng = rng if rng is not None else random.Random()
        self._owns_storage = owns_storage
        # Addresses of every member we know; the log and snapshots keep it current.
        self._peers: dict[NodeId, str] = dict(peers or {})
        self._incarnation = self._rng.getrandbits(64)
        self._sequence = 0

        self._rawnode: RawNode | None = None
        self._wake = asyncio.Event()
        self._inbox: collections.deque[Message] = collections.deque()
        # When (this node's clock) a message from each peer last arrived: "last contact".
        self._last_heard: dict[NodeId, float] = {}
        self._queued: collections.deque[_Queued] = collections.deque()
        # Proposals the core refused for want of a leader; retried until their deadline.
        self._parked: list[_Queued] = []
        self._read_requests: collections.deque[bytes] = collections.deque()
        self._proposals: dict[RequestId, _Pending] = {}
        # Log index -> the proposal this node appended there as leader.
        self._appended_at: dict[int, RequestId] = {}
        self._reads: dict[bytes, _PendingRead] = {}
        # One ReadIndex request serves every read queued when it was made (etcd's
        # linearizableReadLoop): its context -> the contexts of those reads. Its answer
        # covers each of them, as each was asked before it. Pruned by _expire.
        self._read_batches: dict[bytes, list[bytes]] = {}
        # The batch asked last and when (tick): while it waits for its answer, newly queued
        # reads wait too and then go together, so batches grow with the load instead of
        # each read arriving alone costing a round. A batch unanswered for retry_ticks no
        # longer holds the queue (its answer may be lost).
        self._read_in_flight: bytes | None = None
        self._read_in_flight_tick = 0
        self._pending_ticks = 0
        self._next_tick = 0.0
        self._tick_count = 0
        self._batch_entries = 0
        self._batch_bytes = 0
        self._outstanding: _Outstanding | None = None
        self._writer: concurrent.futures.ThreadPoolExecutor | None = None
        self._snapshot_write: asyncio.Future[tuple[Snapshot, float]] | None = None
        self._snapshot_index = 0
        # Bytes of entries applied since the last snapshot (or since start: a restart
        # counts afresh, so it may snapshot up to that much later than planned).
        self._log_bytes_since_snapshot = 0
        self._snapshot_wanted = False
        # time.perf_counter() when the snapshot being written was started (for stats).
        self._snapshot_started_at = 0.0
        self._observers: list[LeaderObserver] = []
        self._removal_observers: list[Callable[[], None]] = []
        self._leader_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self.failure: BaseException | None = None
        self._final_status: NodeStatus | None = None
        self.removed = False
        self.stats = NodeStats()
        self._leader_id = NO_NODE
        # Ids removed from the cluster (from the snapshot, then applied REMOVE changes):
        # never added again, and their messages are dropped. A removed machine that was
        # down when removed still thinks itself a member; were its id reused, its stale
        # vote would count as the new member's (etcd never reuses member ids either).
        self._removed: set[NodeId] = set()
        # Asking the members about the membership (see _ask_members): the task, and when
        # (our clock) another may start.
        self._member_lookup: asyncio.Task[None] | None = None
        self._next_member_lookup = 0.0
        # When (this node's clock) it last lost its leader, or started without one; None
        # while it knows a leader.
        self._leaderless_since: float | None = self.clock.now()
        self._role = StateRole.FOLLOWER

    # -- lifecycle -------------------------------------------------------------------------

    def is_bootstrapped(self) -> bool:
        """Whether the storage holds any Raft state (a restart rather than a first start)."""
        hard_state, conf_state = self.storage.initial_state()
        # first_index() > 1 means a snapshot is installed; asked this way because reading
        # the snapshot itself would load (and checksum) all its data just to test it.
        return bool(
            not hard_state.is_empty()
            or conf_state.voters
            or self.storage.last_index() > 0
            or self.storage.first_index() > 1
        )

    def bootstrap(self, voters: Mapping[NodeId, str]) -> None:
        """Write the initial state of a new cluster whose voters are `voters` (id →
        address). Every founding member bootstraps with the same map. Refuses storage
        that already holds Raft state."""
        if self._started:
            raise InvalidArgument("bootstrap() must be called before start()")
        if self.is_bootstrapped():
            raise InvalidArgument("storage already holds Raft state; restart instead")
        if self.id not in voters:
            raise InvalidArgument(f"node {self.id} is not among the voters {sorted(voters)}")
        if any(peer == NO_NODE or peer < 0 for peer in voters):
            raise InvalidArgument("node ids must be positive integers")
        self._peers.update(voters)
        # Index 1, term 1: every founding member starts from the same snapshot, holding an
        # empty state machine and the founding membership, as etcd's bootstrap does.
        snapshot = Snapshot(
            metadata=SnapshotMetadata(
                index=1, term=1, conf_state=ConfState(voters=frozenset(voters))
            ),
            data=encode_snapshot(dict(voters), self.state_machine.snapshot()),
        )
        self.storage.persist(HardState(term=1, commit=1), (), snapshot, sync=True)

    async def start(self) -> None:
        """Recover from storage and start serving. Without bootstrap() and with empty
        storage the node waits to be added to a cluster (it is a joiner)."""
        if self._started:
            raise InvalidArgument("the node is already started")
        self._started = True
        self._check_stored_term()
        snapshot = self.storage.snapshot()
        applied = self.state_machine.applied_index()
        if not snapshot.is_empty():
            try:
                peers, removed, app = decode_snapshot_envelope(snapshot.data)
                if applied < snapshot.metadata.index:
                    metadata = snapshot.metadata
                    self.state_machine.restore(app, metadata.index, metadata.term)
            except (EnvelopeError, SnapshotInvalid) as error:
                raise StateUnusable(
                    f"node {self.id}: the snapshot stored at index {snapshot.metadata.index}"
                    f"{self._storage_location()} cannot be used ({error}). This node's state "
                    "is lost: remove the node from the cluster and add it back with a new id "
                    "and an empty data dir, or restore it from a backup"
                ) from error
            for peer, address in peers.items():
                self._peers.setdefault(peer, address)
            self._removed |= removed
            # Removed before the snapshot was taken: a restart still knows it.
            self.removed = self.id in self._removed
            self._snapshot_index = snapshot.metadata.index
        settings = self.settings
        config = Config(
            id=self.id,
            election_tick=settings.election_ticks,
            heartbeat_tick=settings.heartbeat_ticks,
            # The core replays everything after the snapshot, so membership changes are
            # re-applied; the state machine skips what it already holds.
            applied=snapshot.metadata.index,
            max_size_per_message=settings.max_size_per_message,
            max_inflight_messages=settings.max_inflight_messages,
            max_uncommitted_entries_size=settings.max_uncommitted_bytes,
            check_quorum=settings.check_quorum,
            pre_vote=settings.pre_vote,
            read_only_option=(
                ReadOnlyOption.LEASE_BASED if settings.lease_reads else ReadOnlyOption.SAFE
            ),
            disable_proposal_forwarding=not settings.forward_proposals,
            rng=random.Random(self._rng.getrandbits(64)),
        )
        self._rawnode = RawNode(config, self.storage)
        if settings.persist_in_thread:
            self._writer = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"raftkv-writer-{self.id}"
            )
        await self.transport.start(self)
        # Every address we know, members or not: a joiner must be able to answer the
        # leader before the snapshot tells it the membership.
        for peer, address in self._peers.items():
            if peer != self.id:
                self.transport.set_peer(peer, address)
        loop = asyncio.get_running_loop()
        self._next_tick = self.clock.now() + settings.tick_interval_s
        self._tasks = [
            loop.create_task(self._run(), name=f"raftkv-node-{self.id}"),
            loop.create_task(self._tick_forever(), name=f"raftkv-ticker-{self.id}"),
        ]

    def _check_stored_term(self) -> None:
        term = self.storage.initial_state()[0].term
        if term < MAX_TERM:
            return
        advice = (
            "no election can succeed in this cluster any more: recover it with `raftkv "
            "recover --force-new-cluster` on the member with the highest commit index"
        )
        if term > MAX_TERM:
            raise StateUnusable(
                f"node {self.id}: the term stored{self._storage_location()} ({term}) is past "
                f"the largest term ({MAX_TERM}); {advice}"
            )
        logger.error("node %d is at the largest term (%d): %s", self.id, term, advice)

    def _storage_location(self) -> str:
        path = getattr(self.storage, "path", None)
        return f" in {path}" if isinstance(path, str) else ""

    async def stop(self, *, transfer_leadership: bool = True) -> None:
        """Stop gracefully: a leader first hands leadership to a caught-up voter (bounded
        by settings.stop_transfer_timeout_s); pending requests fail with Stopped; the write
        in progress completes; the transport and (if owned) the storage are closed."""
        if not self._started or self._stopped.is_set():
            return
        if transfer_leadership and not self._stopping and self.failure is None:
            with contextlib.suppress(RaftError, TimeoutError):
                await self._hand_over_leadership()
        await self._shutdown(Stopped("the node is stopping"))

    async def wait_stopped(self) -> None:
        """Wait until the node has stopped; raises NodeFailed if it failed."""
        await self._stopped.wait()
        if self.failure is not None:
            raise NodeFailed(f"node {self.id} failed: {self.failure}") from self.failure

    async def _shutdown(self, reason: Stopped) -> None:
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for task in self._tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # A write already handed to the writer thread finishes; never abandon it halfway.
        if self._outstanding is not None and self._outstanding.write is not None:
            with contextlib.suppress(Exception):
                await self._outstanding.write
        if self._snapshot_write is not None:
            with contextlib.suppress(Exception):
                await self._snapshot_write
        self._fail_everything(reason)
        with contextlib.suppress(Exception):
            await self.transport.stop()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        with contextlib.suppress(Exception):
            self._final_status = self.status()
        if self._owns_storage:
            with contextlib.suppress(Exception):
                self.storage.close()
        self._stopped.set()

    def _fail_everything(self, reason: Stopped) -> None:
        self._end_unfinished(reason)
        self._proposals.clear()
        self._reads.clear()
        self._read_batches.clear()
        self._queued.clear()
        self._parked.clear()
        self._read_requests.clear()

    def _end_unfinished(self, reason: Stopped) -> None:
        """End every pending request because of `reason` (stopping, failed, removed): a
        proposal that never left this node and every read with `reason`; a proposal that
        left it with OutcomeUnknown, since the cluster may apply it all the same."""
        for pending in self._proposals.values():
            if pending.sent:
                unknown = OutcomeUnknown(f"{reason}; the write had been sent and may apply")
                unknown.__cause__ = reason
                self._fail_proposal(pending, unknown)
            else:
                self._fail_proposal(pending, reason)
        for read in self._reads.values():
            if not read.future.done():
                read.future.set_exception(reason)

    def _fail(self, error: BaseException) -> None:
        """Stop the node after an error it cannot continue from."""
        if self.failure is None:
            self.failure = error
            logger.error("node %d stopping after a fatal error: %s", self.id, error)
        if not self._stopping:
            cause = NodeFailed(f"node {self.id} failed: {error}")
            cause.__cause__ = error
            asyncio.get_running_loop().create_task(self._shutdown(cause))

    # -- requests --------------------------------------------------------------------------

    async def propose(self, command: bytes, *, timeout: float | None = None) -> object:
        """Replicate `command`; return the state machine's result once it is applied on
        this node. Raises NotLeader (forwarding off), ProposalDropped, Overloaded, Stopped or
        InvalidArgument (over max_command_bytes): nothing was applied; or OutcomeUnknown
        (ProposalTimeout at the deadline): it may have been applied."""
        self._check_running()
        if len(command) > self.settings.max_command_bytes:
            raise InvalidArgument(
                f"command of {len(command)} bytes exceeds max_command_bytes "
                f"({self.settings.max_command_bytes})"
            )
        request = self._next_request()
        future = self._register_proposal(request, timeout)
        self._queued.append(_Queued(request, encode_proposal(request, command)))
        self._wake.set()
        try:
            return await future
        finally:
            self._proposals.pop(request, None)

    async def read_index(self, *, timeout: float | None = None) -> int:
        """A linearizable read point: returns an index such that this node's state machine
        has applied it and it covers every write acknowledged before the call."""
        self._check_running()
        if len(self._reads) >= self.settings.max_pending_requests:
            self.stats.overloaded += 1
            raise Overloaded(f"{len(self._reads)} reads pending")
        context = self._next_request_bytes()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        deadline = self.clock.now() + (
            timeout if timeout is not None else self.settings.read_timeout_s
        )
        self._reads[context] = _PendingRead(future, deadline, requested_at_tick=self._tick_count)
        self._read_requests.append(context)
        self._wake.set()
        try:
            return await future
        finally:
            self._reads.pop(context, None)

    async def linearizable_read(
        self, read: Callable[[Any], T], *, timeout: float | None = None
    ) -> T:
        """Run `read(state_machine)` at a linearizable point (after read_index)."""
        await self.read_index(timeout=timeout)
        return read(self.state_machine)

    async def transfer_leadership(
        self, to: NodeId | None = None, *, timeout: float | None = None
    ) -> NodeId:
        """Hand leadership to `to` (or the most caught-up other voter) and wait until the
        cluster has a different leader. Returns the new leader's id."""
        self._check_running()
        rawnode = self._core()
        if rawnode.raft.role is not StateRole.LEADER:
            raise NotLeader(self._leader_id)
        if to is None:
            to = self._best_transferee()
            if to is None:
                raise ProposalDropped("no other voter to transfer leadership to")
        rawnode.transfer_leader(to)
        self._wake.set()
        wait = timeout if timeout is not None else self._election_timeout_s() * 2
        await self._wait_for(lambda: self._leader_id not in (NO_NODE, self.id), wait)
        return self._leader_id

    async def join(
        self, seeds: Sequence[str], *, promote: bool = True, timeout: float | None = None
    ) -> ConfState:
        """Become a member of a running cluster: ask it (through any member's address in
        `seeds`) to add this node as a learner, catch up, then, if `promote`, become a
        voter once the leader finds the log caught up. The node must have been started on
        empty storage, knowing its own address (`peers[node_id]`). Safe to retry."""
        return await membership.join(self, seeds, promote=promote, timeout=timeout)

    async def add_learner(
        self, node_id: NodeId, address: str, *, timeout: float | None = None
    ) -> ConfState:
        """Add `node_id` (reachable at `address`) as a non-voting learner."""
        return await membership.change(
            self, MemberRequest(MemberAction.ADD_LEARNER, node_id, address), timeout
        )

    async def promote(self, node_id: NodeId, *, timeout: float | None = None) -> ConfState:
        """Make learner `node_id` a voter; refused (NotCaughtUp) while its log lags."""
        return await membership.change(self, MemberRequest(MemberAction.PROMOTE, node_id), timeout)

    async def remove_member(self, node_id: NodeId, *, timeout: float | None = None) -> ConfState:
        """Remove `node_id` (voter or learner; the leader included)."""
        return await membership.change(self, MemberRequest(MemberAction.REMOVE, node_id), timeout)

    def on_leader_change(self, observer: LeaderObserver) -> Callable[[], None]:
        """Call `observer(leader_id, term)` whenever the known leader changes (NO_NODE
        while there is none). Returns a function that unsubscribes."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    def on_removed(self, observer: Callable[[], None]) -> Callable[[], None]:
        """Call `observer()` when this node learns it was removed from the cluster (when
        the change applies here; at once if it already knows). Returns a function that
        unsubscribes."""
        self._removal_observers.append(observer)
        if self.removed:
            _call_removal_observer(observer)
        return lambda: self._removal_observers.remove(observer)

    def _learn_removed(self, how: str) -> None:
        """This node is no member any more (`how` it knows): it serves nothing from now on,
        and nothing pending here can complete, so say so now, not at deadlines."""
        if self.removed:
            return
        self.removed = True
        logger.warning("node %d was removed from the cluster (%s)", self.id, how)
        self._end_unfinished(Removed(f"node {self.id} was removed from the cluster"))
        for observer in list(self._removal_observers):
            _call_removal_observer(observer)

    async def wait_for_leader(self, *, timeout: float | None = None) -> NodeId:
        """Wait until this node knows a leader; returns its id."""
        wait = timeout if timeout is not None else self._election_timeout_s() * 5
        await self._wait_for(lambda: self._leader_id != NO_NODE, wait)
        return self._leader_id

    def status(self) -> NodeStatus:
        if self._final_status is not None:
            return self._final_status  # stopped: the storage may be closed
        rawnode = self._core()
        status = rawnode.status()
        return NodeStatus(
            id=self.id,
            role=status.soft_state.role,
            term=status.hard_state.term,
            leader_id=status.soft_state.leader_id,
            commit_index=status.committed,
            applied_index=status.applied,
            first_index=status.first_index,
            last_index=status.last_index,
            snapshot_index=self._snapshot_index,
            voters=tuple(sorted(status.conf_state.voters)),
            learners=tuple(sorted(status.conf_state.learners)),
            peers=dict(sorted(self._peers.items())),
            progress={
                peer: PeerProgress(
                    match=item.match,
                    next=item.next,
                    state=item.state,
                    recent_active=item.recent_active,
                    is_learner=item.is_learner,
                )
                for peer, item in status.progress.items()
            },
            last_contact_s={
                peer: max(0.0, self.clock.now() - heard)
                for peer, heard in sorted(self._last_heard.items())
            },
            pending_proposals=len(self._proposals),
            pending_reads=len(self._reads),
            removed=self.removed,
            stopped=self._stopping,
        )

    @property
    def leader_id(self) -> NodeId:
        return self._leader_id

    @property
    def removed_ids(self) -> frozenset[NodeId]:
        """Ids removed from the cluster: never added again, their messages dropped."""
        return frozenset(self._removed)

    def leaderless_seconds(self) -> float:
        """How long this node has known no leader (0 while it knows one): a member cut off
        from the cluster, or one in a long election."""
        since = self._leaderless_since
        return 0.0 if since is None else max(0.0, self.clock.now() - since)

    @property
    def is_leader(self) -> bool:
        return self._role is StateRole.LEADER

    # -- TransportHandler ------------------------------------------------------------------

    def deliver(self, messages: Sequence[Message]) -> None:
        if self._stopping:
            return
        if len(self._inbox) + len(messages) > self.settings.max_inbox_messages:
            self.stats.messages_dropped += len(messages)
            return
        self._inbox.extend(messages)
        self._wake.set()

    def check_snapshot(self, message: Message) -> None:
        """ChecksSnapshots: refuse (MalformedMessage) a snapshot whose data this node could
        not install (an envelope that does not decode; state its ValidatesSnapshots state
        machine could not restore), before any of it is persisted. Runs on a transport's
        worker thread: reads only `message` and the state machine's validate_snapshot."""
        snapshot = message.snapshot
        if snapshot is None:
            return
        try:
            _, _, app = decode_snapshot_envelope(snapshot.data)
            machine = self.state_machine
            if isinstance(machine, ValidatesSnapshots):
                machine.validate_snapshot(app)
        except (EnvelopeError, SnapshotInvalid) as error:
            metadata = snapshot.metadata
            raise MalformedMessage(
                f"snapshot {metadata.term}/{metadata.index} from node {message.sender} is "
                f"unusable: {error}"
            ) from None

    def report_unreachable(self, peer: NodeId) -> None:
        if self._rawnode is not None and not self._stopping:
            with contextlib.suppress(RaftError):
                self._rawnode.report_unreachable(peer)

    def report_snapshot(self, peer: NodeId, ok: bool) -> None:
        if self._rawnode is not None and not self._stopping:
            with contextlib.suppress(RaftError):
                self._rawnode.report_snapshot(peer, ok)
            self._wake.set()

    async def handle_member_request(self, request: MemberRequest) -> MemberResponse:
        """A peer asks us (as leader) to change the membership."""
        return await membership.handle_request(self, request)

    async def local_snapshot_data(self) -> bytes | None:
        """LocalSnapshots: the state machine's state as of now, encoded as its snapshots
        are, for a transport receiving a snapshot to reuse the chunks it shares with it.
        Only for a BackgroundSnapshots state machine (captured here, encoded on a worker
        thread, so the loop keeps running); None otherwise or when not running."""
        machine = self.state_machine
        if not self._started or self._stopping or not isinstance(machine, BackgroundSnapshots):
            return None
        produce = machine.snapshot_later()
        return await asyncio.get_running_loop().run_in_executor(None, produce)

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._process()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a fatal error: storage, state machine, our own bug
            self._fail(error)

    async def _tick_forever(self) -> None:
        interval = self.settings.tick_interval_s
        # A stall (a long apply or snapshot, a GC pause) must not stretch the core's
        # notion of time: a leader's lease is counted in ticks, so every tick missed
        # while stalled is delivered afterwards, capped at two election timeouts (enough
        # to expire any lease or timeout). _process steps the inbox before these ticks,
        # so messages that did arrive during the stall count first.
        burst_limit = 2 * self.settings.election_ticks
        while True:
            await self.clock.sleep(self._next_tick - self.clock.now())
            missed = int((self.clock.now() - self._next_tick) // interval) + 1
            self._next_tick += missed * interval
            self._pending_ticks = min(self._pending_ticks + missed, burst_limit)
            self._wake.set()

    def _process(self) -> None:
        rawnode = self._core()
        self._drain_inbox(rawnode)
        self._drain_ticks(rawnode)
        self._drain_proposals(rawnode)
        self._drain_reads(rawnode)
        while True:
            outstanding = self._outstanding
            if outstanding is not None:
                if outstanding.write is not None and not outstanding.write.done():
                    return
                self._finish_ready(rawnode, outstanding)
                # Proposals held back by the batch limit may go now.
                self._drain_proposals(rawnode)
            if self._snapshot_write is not None and self._snapshot_write.done():
                applying.finish_snapshot(self)
            if not rawnode.has_ready():
                return
            self._start_ready(rawnode)

    def _drain_ticks(self, rawnode: RawNode) -> None:
        ticks, self._pending_ticks = self._pending_ticks, 0
        for _ in range(ticks):
            rawnode.tick()
            self._tick_count += 1
            if self._tick_count % self.settings.retry_ticks == 0:
                self._retry_waiting(rawnode)
        if ticks:
            self._expire(self.clock.now())
            self._ask_members(None)

    def _drain_inbox(self, rawnode: RawNode) -> None:
        inbox = self._inbox
        now = self.clock.now()
        while inbox:
            message = inbox.popleft()
            if message.to != self.id:
                self.stats.messages_rejected += 1
                continue
            if message.sender in self._removed:
                # A removed member that does not know it (it was down when removed): it
                # is no member, whatever it says.
                self.stats.messages_rejected += 1
                continue
            if not self._is_known_peer(rawnode, message.sender):
                # Nor is an id no trusted source named: its term would force elections, or
                # push ours where it cannot move any more (issue 12, A3).
                self.stats.messages_rejected += 1
                self._ask_members(message.sender)
                continue
            # "Last contact" is kept for known peers only: ids a message merely names would
            # grow it without bound.
            self._last_heard[message.sender] = now
            try:
                if message.type is MessageType.PROPOSE:
                    check_forwarded_entries(message.entries)
                rawnode.step(message)
            except (MalformedMessage, PeerNotFound, InvalidArgument, EnvelopeError) as error:
                # A peer's fault or a stale response: drop it, never crash on it.
                self.stats.messages_rejected += 1
                logger.debug(
                    "node %d dropped %s from %d: %s",
                    self.id,
                    message.type.value,
                    message.sender,
                    error,
                )

    def _is_known_peer(self, rawnode: RawNode, peer: NodeId) -> bool:
        """A member of the configuration in force, or a node whose address came from a
        source we trust: our log and snapshots, the operator (`peers`, `bootstrap`), a
        member's answer to a membership request. Never an id that only a message names.
        A joiner knows the leader adding it from the answer to its join request; a node
        lagging behind the change that added the sender drops its messages until it
        learns of it (see `_ask_members`)."""
        return peer in self._peers or peer in rawnode.raft.tracker.progress

    def _ask_members(self, stranger: NodeId | None) -> None:
        """Ask the members we know about the membership (membership.ask_members), at most
        once per election timeout and one question at a time: because `stranger` sent us
        messages no trusted source explains, or (None) because we have been leaderless for
        two election timeouts — a member that missed its own removal learns it so."""
        if stranger is None and (
            self.removed or self.leaderless_seconds() < 2 * self._election_timeout_s()
        ):
            return
        lookup = self._member_lookup
        if lookup is not None and not lookup.done():
            return
        now = self.clock.now()
        if now < self._next_member_lookup or self._stopping:
            return
        self._next_member_lookup = now + self._election_timeout_s()
        if lookup is not None:
            self._tasks.remove(lookup)
        # Kept with the node's tasks, so stopping cancels it.
        self._member_lookup = asyncio.get_running_loop().create_task(
            membership.ask_members(self, stranger), name=f"raftkv-ask-members-{self.id}"
        )
        self._tasks.append(self._member_lookup)

    def _drain_proposals(self, rawnode: RawNode) -> None:
        """Step queued proposals into the core, as few messages as possible: consecutive
        commands go in one multi-entry proposal (one append per follower), a membership
        change on its own. Stops at the batch limits (group commit: the rest waits for
        the next Ready)."""
        settings = self.settings
        queued = self._queued
        batch: list[_Queued] = []
        while queued:
            if (
                self._batch_entries >= settings.max_batch_entries
                or self._batch_bytes >= settings.max_batch_bytes
            ):
                break
            item = queued.popleft()
            if not self._is_pending(item.request):
                continue  # cancelled or timed out while queued
            if item.change is not None:
                self._propose_now(rawnode, batch)
                batch = []
                self._propose_now(rawnode, [item])
                continue
            batch.append(item)
            self._batch_entries += 1
            self._batch_bytes += len(item.data)
        self._propose_now(rawnode, batch)

    def _propose_now(self, rawnode: RawNode, items: list[_Queued]) -> None:
        if not items:
            return
        raft = rawnode.raft
        try:
            change = items[0].change
            if change is not None:
                rawnode.propose_conf_change(change)
            else:
                rawnode.propose_many([item.data for item in items])
        except (NotLeader, ConfChangeInvalid) as error:
            self._fail_proposals(items, error)
            return
        except ProposalDropped as error:
            if raft.leader_id == NO_NODE or raft.lead_transferee != NO_NODE:
                # An election or a leadership transfer is under way: try again soon.
                self._parked.extend(items)
            else:
                self._fail_proposals(items, error)
            return
        for item in items:
            pending = self._proposals.get(item.request)
            if pending is not None:
                pending.sent = True
        if raft.role is StateRole.LEADER:
            first = raft.log.last_index() - len(items) + 1
            for offset, item in enumerate(items):
                self._appended_at[first + offset] = item.request

    def _fail_proposals(self, items: list[_Queued], error: Exception) -> None:
        for item in items:
            self._fail_proposal(self._proposals.get(item.request), error)

    def _fail_proposal(self, pending: _Pending | None, error: BaseException) -> None:
        """End a proposal that will never apply, or whose outcome is unknown."""
        if pending is not None and not pending.future.done():
            pending.future.set_exception(error)
            self.stats.proposals_failed += 1

    def _is_pending(self, request: RequestId) -> bool:
        pending = self._proposals.get(request)
        return pending is not None and not pending.future.done()

    def _drain_reads(self, rawnode: RawNode) -> None:
        """Ask for one read index covering every read queued since the last ask: one
        heartbeat round (or one message to the leader) for all of them, not one each."""
        in_flight = self._read_in_flight
        if (
            in_flight is not None
            and in_flight in self._read_batches
            and self._tick_count - self._read_in_flight_tick < self.settings.retry_ticks
        ):
            return
        self._read_in_flight = None
        batch: list[bytes] = []
        while self._read_requests:
            context = self._read_requests.popleft()
            read = self._reads.get(context)
            if read is None or read.future.done() or read.index != 0:
                continue
            read.requested_at_tick = self._tick_count
            batch.append(context)
        if not batch:
            return
        batch_context = batch[0] if len(batch) == 1 else self._next_request_bytes()
        self._read_batches[batch_context] = batch
        self._read_in_flight, self._read_in_flight_tick = batch_context, self._tick_count
        # With no leader the request is dropped; the retry below asks again.
        with contextlib.suppress(ProposalDropped, NotLeader):
            rawnode.read_index(batch_context)

    def _retry_waiting(self, rawnode: RawNode) -> None:
        """Every few ticks: re-ask for reads not answered for a while (the request or its
        answer may be lost) and re-propose parked proposals."""
        if rawnode.raft.leader_id != NO_NODE:
            self._requeue_waiting(min_age_ticks=self.settings.retry_ticks)

    def _requeue_waiting(self, *, min_age_ticks: int) -> None:
        """Queue again the proposals parked for want of a leader, and the reads not
        answered that were last asked at least `min_age_ticks` ago."""
        for context, read in self._reads.items():
            if read.index == 0 and self._tick_count - read.requested_at_tick >= min_age_ticks:
                self._read_requests.append(context)
                self._read_in_flight = None
        parked, self._parked = self._parked, []
        self._queued.extendleft(reversed(parked))
        self._wake.set()

    def _expire(self, now: float) -> None:
        # Parked and queued items of finished requests hold their commands: drop them.
        self._parked = [item for item in self._parked if self._is_pending(item.request)]
        for request, pending in list(self._proposals.items()):
            if now >= pending.deadline:
                self._fail_proposal(
                    pending, ProposalTimeout(f"no outcome for proposal {request.sequence} in time")
                )
        for read in list(self._reads.values()):
            if now >= read.deadline and not read.future.done():
                read.future.set_exception(ReadTimeout("the read could not be confirmed in time"))
        # A batch whose answer was lost is asked again read by read (_requeue_waiting);
        # forget it once none of its reads still waits for an index.
        for batch_context, batch in list(self._read_batches.items()):
            if not any(self._waiting_for_index(context) for context in batch):
                del self._read_batches[batch_context]

    def _waiting_for_index(self, context: bytes) -> bool:
        read = self._reads.get(context)
        return read is not None and read.index == 0 and not read.future.done()

    # -- one Ready -------------------------------------------------------------------------

    def _start_ready(self, rawnode: RawNode) -> None:
        ready = rawnode.ready()
        self._batch_entries = 0
        self._batch_bytes = 0
        if ready.soft_state is not None:
            self._on_soft_state(ready.soft_state.leader_id, ready.soft_state.role)
        if ready.messages:
            self.transport.send(ready.messages)
        write: asyncio.Future[tuple[None, float]] | None = None
        submitted_at = 0.0
        if ready.entries or ready.hard_state is not None or ready.snapshot is not None:
            submitted_at = time.perf_counter()
            write = self._submit_write(
                self.storage.persist,
                ready.hard_state,
                ready.entries,
                ready.snapshot,
                sync=ready.must_sync,
            )
            if ready.must_sync:
                self.stats.fsyncs += 1
                self.stats.entries_per_fsync.observe(len(ready.entries))
            self.stats.entries_persisted += len(ready.entries)
        self._outstanding = _Outstanding(ready, write, submitted_at)

    def _submit_write(
        self, function: Callable[..., T], *arguments: Any, **keywords: Any
    ) -> asyncio.Future[tuple[T, float]]:
        """Run `function` on the writer thread (inline without one), in submission order.
        The future's result is the function's with the seconds the call itself took."""

        def timed() -> tuple[T, float]:
            started = time.perf_counter()
            result = function(*arguments, **keywords)
            return result, time.perf_counter() - started

        loop = asyncio.get_running_loop()
        if self._writer is None:
            future: asyncio.Future[tuple[T, float]] = loop.create_future()
            try:
                future.set_result(timed())
            except Exception as error:
                future.set_exception(error)
            return future
        future = loop.run_in_executor(self._writer, timed)
        future.add_done_callback(lambda _: self._wake.set())
        return future

    def _finish_ready(self, rawnode: RawNode, outstanding: _Outstanding) -> None:
        ready = outstanding.ready
        if outstanding.write is not None:
            # A failed write is fatal: raise into _run.
            _, write_seconds = outstanding.write.result()
            self.stats.append_seconds.observe(time.perf_counter() - outstanding.submitted_at)
            if ready.must_sync:
                self.stats.fsync_seconds.observe(write_seconds)
        self._outstanding = None
        if ready.persisted_messages:
            self.transport.send(ready.persisted_messages)
        if ready.snapshot is not None:
            applying.install_snapshot(self, ready.snapshot)
        if ready.committed_entries:
            applying.apply_entries(self, rawnode, ready.committed_entries)
        if ready.read_states and self._read_requests:
            self._wake.set()  # reads held behind the batch answered now go next
        for read_state in ready.read_states:
            batch = self._read_batches.pop(read_state.request_context, ())
            for context in batch:
                read = self._reads.get(context)
                if read is not None and read.index == 0:
                    read.index = max(read_state.index, 1)
        rawnode.advance(ready)
        self._answer_reads(rawnode.raft.log.applied)
        applying.maybe_snapshot(self, rawnode)

    def _answer_reads(self, applied: int) -> None:
        for read in self._reads.values():
            if 0 < read.index <= applied and not read.future.done():
                read.future.set_result(read.index)

    # -- snapshots -------------------------------------------------------------------------

    # -- membership ------------------------------------------------------------------------

    async def _propose_conf_change(
        self, request: RequestId, change: ConfChange, timeout: float | None
    ) -> ConfState:
        future = self._register_proposal(request, timeout)
        self._queued.append(_Queued(request, b"", change))
        self._wake.set()
        try:
            result = await future
        finally:
            self._proposals.pop(request, None)
        assert isinstance(result, ConfState)
        return result

    # -- helpers ---------------------------------------------------------------------------

    def _core(self) -> RawNode:
        if self._rawnode is None:
            raise Stopped("the node is not started")
        return self._rawnode

    def _check_running(self) -> None:
        if not self._started:
            raise Stopped("the node is not started")
        if self.removed:
            raise Removed(f"node {self.id} was removed from the cluster")
        if self._stopping:
            if self.failure is not None:
                raise NodeFailed(f"node {self.id} failed: {self.failure}") from self.failure
            raise Stopped("the node is stopping")

    def _next_request(self) -> RequestId:
        self._sequence += 1
        return RequestId(self.id, self._incarnation, self._sequence)

    def _next_request_bytes(self) -> bytes:
        self._sequence += 1
        return self._incarnation.to_bytes(8, "big") + self._sequence.to_bytes(8, "big")

    def _register_proposal(self, request: RequestId, timeout: float | None) -> asyncio.Future[Any]:
        if len(self._proposals) >= self.settings.max_pending_requests:
            self.stats.overloaded += 1
            raise Overloaded(f"{len(self._proposals)} proposals pending")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        wait = timeout if timeout is not None else self.settings.proposal_timeout_s
        self._proposals[request] = _Pending(future, self.clock.now() + wait)
        return future

    def _decode_snapshot(
        self, snapshot: Snapshot
    ) -> tuple[dict[NodeId, str], frozenset[NodeId], bytes]:
        try:
            return decode_snapshot_envelope(snapshot.data)
        except EnvelopeError as error:
            raise EnvelopeError(f"snapshot at index {snapshot.metadata.index}: {error}") from error

    def _sync_transport_peers(self, conf_state: ConfState) -> None:
        members = (
            conf_state.voters
            | conf_state.learners
            | conf_state.voters_outgoing
            | conf_state.learners_next
        )
        for peer in members:
            if peer != self.id and peer in self._peers:
                self.transport.set_peer(peer, self._peers[peer])

    def _on_soft_state(self, leader_id: NodeId, role: StateRole) -> None:
        changed = leader_id != self._leader_id
        self._leader_id = leader_id
        self._role = role
        if not changed:
            return
        self.stats.leader_changes += 1
        if leader_id == NO_NODE:
            self._leaderless_since = self.clock.now()
        else:
            self._leaderless_since = None
        self._leader_changed.set()
        self._leader_changed = asyncio.Event()
        if leader_id != NO_NODE:
            # Whatever waited for a leader may go now.
            self._requeue_waiting(min_age_ticks=0)
        term = self._core().raft.term
        for observer in list(self._observers):
            try:
                observer(leader_id, term)
            except Exception:
                logger.exception("leader-change observer failed")

    async def _wait_for(self, condition: Callable[[], bool], timeout: float) -> None:
        deadline = self.clock.now() + timeout
        while not condition():
            if self._stopping:
                raise Stopped("the node is stopping")
            remaining = deadline - self.clock.now()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s")
            changed = self._leader_changed
            sleeper = asyncio.ensure_future(
                self.clock.sleep(min(remaining, self.settings.tick_interval_s))
            )
            waiter = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waiter.cancel()

    def _election_timeout_s(self) -> float:
        return self.settings.election_ticks * self.settings.tick_interval_s

    def _best_transferee(self) -> NodeId | None:
        raft = self._core().raft
        best: tuple[int, NodeId] | None = None
        for peer in raft.tracker.voters.ids():
            if peer == self.id:
                continue
            progress = raft.tracker.progress.get(peer)
            if progress is None:
                continue
            candidate = (progress.match, peer)
            if best is None or candidate > best:
                best = candidate
        return best[1] if best is not None else None

    async def _hand_over_leadership(self) -> None:
        if self._role is not StateRole.LEADER or self._rawnode is None:
            return
        target = self._best_transferee()
        if target is None:
            return
        progress = self._rawnode.raft.tracker.progress.get(target)
        if progress is None or progress.match < self._rawnode.raft.log.committed:
            return  # nobody is caught up; a transfer would leave the cluster leaderless
        await self.transfer_leadership(target, timeout=self.settings.stop_transfer_timeout_s)


def _call_removal_observer(observer: Callable[[], None]) -> None:
    try:
        observer()
    except Exception:
        logger.exception("removal observer failed")
