"""`Node`: one Raft node running on asyncio around the pure core.

One task (the loop) owns the `RawNode`; everything else talks to it by appending to
bounded queues and setting `_wake`. The loop, per Ready (docs/architecture.md#the-driver):

1. `ready()`; send `messages` at once (the leader's own append runs in parallel with
   replication);
2. persist snapshot + entries + hard state in ONE write, fsynced when the Ready says so,
   on a single writer thread (order kept) — or inline in deterministic simulations, and
   inline too when it needs no fsync and the writer is idle (a commit-index move);
3. once durable: send `persisted_messages`, install a snapshot into the state machine,
   apply committed entries, answer reads whose index is applied;
4. `advance`.

While step 2 runs the loop keeps stepping messages, ticks and proposals into the core;
everything proposed meanwhile lands in the next Ready, so one fsync serves many proposals
(group commit).

`Node` owns the loop, the Ready in progress and the node's life (start, stop, failure).
The state the loop drives has owners of its own, each given what it needs when built:
- `Requests` (requests.py): proposal and read futures, from the call to their outcome;
- `Applier` (applying.py): the state machine — committed entries, snapshots in and out;
- `Membership` (membership.py): peer addresses, removed ids, joins and changes;
- `LogFormats` (log_formats.py): the entry formats the members read (batch entries);
- `Leadership` (leadership.py): the leader this node knows, and waiting for one;
- `Ticker` (ticker.py): the clock turned into core ticks;
- `LeadershipTransfers` (transfer.py): handing leadership over, here or through the leader;
- `Writer` (writer.py): the storage writes, one at a time in submission order.

Invariants:
- Only the loop touches the RawNode and the state machine; it reads the core only
  through RawNode's public surface.
- A Ready's committed entries are applied only after its write is durable, and at most
  once: entries at or below the state machine's `applied_index()` are skipped (their
  membership changes are still replayed into the core, which starts from the snapshot).
- Every request future ends: applied, failed, timed out (by the clock) or stopped.
- Stopping cancels and awaits every task of the node (the loop, the ticker, member
  lookups), then lets the write under way finish: none is abandoned halfway.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from raftkv.raft.clock import Clock, SystemClock
from raftkv.raft.core.errors import (
    InvalidArgument,
    MalformedMessage,
    PeerNotFound,
    RaftError,
)
from raftkv.raft.core.rawnode import RawNode
from raftkv.raft.core.ready import Ready
from raftkv.raft.core.types import (
    MAX_TERM,
    NO_NODE,
    ConfState,
    HardState,
    Message,
    MessageType,
    NodeId,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)
from raftkv.raft.driver.applying import Applier
from raftkv.raft.driver.envelope import EnvelopeError, check_forwarded_entries, encode_snapshot
from raftkv.raft.driver.errors import (
    CommandTooLarge,
    NodeFailed,
    Removed,
    StateUnusable,
    Stopped,
)
from raftkv.raft.driver.leadership import LeaderObserver, Leadership, best_transferee
from raftkv.raft.driver.log_formats import LogFormats
from raftkv.raft.driver.membership import Membership
from raftkv.raft.driver.requests import Requests
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.driver.state_machine import BackgroundSnapshots, SnapshotInvalid, StateMachine
from raftkv.raft.driver.status import NodeStats, NodeStatus, PeerProgress
from raftkv.raft.driver.ticker import Ticker
from raftkv.raft.driver.transfer import LeadershipTransfers
from raftkv.raft.driver.writer import Writer
from raftkv.raft.storage.base import RaftStorage
from raftkv.raft.tasks import cancel_and_wait
from raftkv.raft.transport.base import (
    MemberAction,
    MemberRequest,
    MemberResponse,
    Transport,
)

logger = logging.getLogger("raftkv.node")

T = TypeVar("T")


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
        incarnation = self._rng.getrandbits(64)

        # The core, from start() on: only the loop steps it.
        self._rawnode: RawNode | None = None
        # Set whenever the loop has work: a message, ticks, a request, a write done.
        self._wake = asyncio.Event()
        # Messages from peers for the loop to step (at most max_inbox_messages).
        self._inbox: collections.deque[Message] = collections.deque()
        # The Ready taken and not advanced yet (at most one: RawNode's contract).
        self._outstanding: _Outstanding | None = None
        # The loop and the ticker, from start() on.
        self._tasks: list[asyncio.Task[None]] = []
        # Its life: started, then stopping (for good), then stopped; `failure` says why
        # it stopped if an error made it; `_final_status` is its status once stopped.
        self._started = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self.failure: BaseException | None = None
        self._final_status: NodeStatus | None = None
        self.stats = NodeStats()
        self._ticker = Ticker(clock=self.clock, settings=self.settings, wake=self._wake.set)
        self._writer = Writer(
            threaded=self.settings.persist_in_thread,
            name=f"raftkv-writer-{node_id}",
            wake=self._wake.set,
        )
        self._requests = Requests(
            node_id=node_id,
            incarnation=incarnation,
            settings=self.settings,
            clock=self.clock,
            stats=self.stats,
            wake=self._wake.set,
            may_batch=lambda: self.batching,
        )
        self._formats = LogFormats(
            node_id=node_id, settings=self.settings, clock=self.clock, requests=self._requests
        )
        self._leadership = Leadership(
            clock=self.clock, settings=self.settings, stats=self.stats, stopping=self._is_stopping
        )
        self._membership = Membership(
            node_id=node_id,
            peers=peers or {},
            settings=self.settings,
            clock=self.clock,
            rng=self._rng,
            transport=transport,
            requests=self._requests,
            leadership=self._leadership,
            core=self._core,
            check_running=self._check_running,
        )
        self._transfers = LeadershipTransfers(
            node_id=node_id,
            settings=self.settings,
            core=self._core,
            wake=self._wake,
            leadership=self._leadership,
            membership=self._membership,
            clock=self.clock,
        )
        self._applier = Applier(
            node_id=node_id,
            settings=self.settings,
            storage=storage,
            state_machine=state_machine,
            stats=self.stats,
            rng=self._rng,
            writer=self._writer,
            requests=self._requests,
            membership=self._membership,
            formats=self._formats,
            wake=self._wake.set,
        )

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
        self._membership.add_founders(voters)
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
        if not snapshot.is_empty():
            try:
                self._applier.recover(snapshot)
            except (EnvelopeError, SnapshotInvalid) as error:
                raise StateUnusable(
                    f"node {self.id}: the snapshot stored at index {snapshot.metadata.index}"
                    f"{self._storage_location()} cannot be used ({error}). This node's state "
                    "is lost: remove the node from the cluster and add it back with a new id "
                    "and an empty data dir, or restore it from a backup"
                ) from error
        # The core replays everything after the snapshot, so membership changes are
        # re-applied; the state machine skips what it already holds.
        config = self.settings.core_config(
            self.id,
            applied=snapshot.metadata.index,
            rng=random.Random(self._rng.getrandbits(64)),
        )
        self._rawnode = RawNode(config, self.storage)
        await self.transport.start(self)
        self._membership.connect()
        loop = asyncio.get_running_loop()
        self._ticker.start()
        self._tasks = [
            loop.create_task(self._run(), name=f"raftkv-node-{self.id}"),
            loop.create_task(self._ticker.run(), name=f"raftkv-ticker-{self.id}"),
        ]
        self._formats.start(replay_until=self.storage.initial_state()[0].commit)

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
        await cancel_and_wait(
            *(
                task
                for task in (*self._tasks, *self._membership.tasks(), *self._formats.tasks())
                if task is not current
            )
        )
        # A write already handed to the writer thread finishes; never abandon it halfway.
        if self._outstanding is not None and self._outstanding.write is not None:
            with contextlib.suppress(Exception):
                await self._outstanding.write
        await self._applier.settle()
        self._requests.end_all(reason)
        with contextlib.suppress(Exception):
            await self.transport.stop()
        self._writer.shutdown()
        with contextlib.suppress(Exception):
            self._final_status = self.status()
        if self._owns_storage:
            with contextlib.suppress(Exception):
                self.storage.close()
        self._stopped.set()

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

    async def propose(
        self, command: bytes, *, timeout: float | None = None, batchable: bool = False
    ) -> object:
        """Replicate `command`; return the state machine's result once it is applied on
        this node. Raises NotLeader (forwarding off), ProposalDropped, Overloaded, Stopped or
        CommandTooLarge (over max_command_bytes): nothing was applied; or OutcomeUnknown
        (ProposalTimeout at the deadline): it may have been applied.

        `batchable`: with NodeSettings.batch_proposals, the command may share a log entry
        with other batchable commands proposed at the same time; it then applies with the
        others, in order, at the same index (Command.index). Leave it off for a command
        whose effect depends on its index being its own."""
        self._check_running()
        if len(command) > self.settings.max_command_bytes:
            raise CommandTooLarge(
                f"command of {len(command)} bytes exceeds max_command_bytes "
                f"({self.settings.max_command_bytes})"
            )
        return await self._requests.propose(command, timeout, batchable=batchable)

    async def read_index(self, *, timeout: float | None = None) -> int:
        """A linearizable read point: returns an index such that this node's state machine
        has applied it and it covers every write acknowledged before the call."""
        self._check_running()
        return await self._requests.read(timeout)

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
        cluster has a different leader. Returns the new leader's id. On a follower the
        request goes to the leader, as membership changes do (MemberAction.TRANSFER_LEADER);
        its refusals come back as the same errors a leader raises here."""
        self._check_running()
        wait = timeout if timeout is not None else self.settings.election_timeout_s * 2
        return await self._transfers.transfer(to, wait)

    async def join(
        self, seeds: Sequence[str], *, promote: bool = True, timeout: float | None = None
    ) -> ConfState:
        """Become a member of a running cluster: ask it (through any member's address in
        `seeds`) to add this node as a learner, catch up, then, if `promote`, become a
        voter once the leader finds the log caught up. The node must have been started on
        empty storage, knowing its own address (`peers[node_id]`). Safe to retry."""
        return await self._membership.join(seeds, promote=promote, timeout=timeout)

    async def add_learner(
        self, node_id: NodeId, address: str, *, timeout: float | None = None
    ) -> ConfState:
        """Add `node_id` (reachable at `address`) as a non-voting learner."""
        return await self._membership.change(
            MemberRequest(MemberAction.ADD_LEARNER, node_id, address), timeout
        )

    async def promote(self, node_id: NodeId, *, timeout: float | None = None) -> ConfState:
        """Make learner `node_id` a voter; refused (LearnerNotCaughtUp) while its log lags."""
        return await self._membership.change(MemberRequest(MemberAction.PROMOTE, node_id), timeout)

    async def remove_member(self, node_id: NodeId, *, timeout: float | None = None) -> ConfState:
        """Remove `node_id` (voter or learner; the leader included)."""
        return await self._membership.change(MemberRequest(MemberAction.REMOVE, node_id), timeout)

    async def update_member(
        self, node_id: NodeId, address: str, *, timeout: float | None = None
    ) -> ConfState:
        """Reach member `node_id` at `address` from now on, on every member (a change
        through the log that leaves the configuration as it is; etcd's MemberUpdate). The
        member itself must then listen there: start it with that peer address."""
        return await self._membership.change(
            MemberRequest(MemberAction.UPDATE, node_id, address), timeout
        )

    def on_leader_change(self, observer: LeaderObserver) -> Callable[[], None]:
        """Call `observer(leader_id, term)` whenever the known leader changes (NO_NODE
        while there is none). Returns a function that unsubscribes."""
        return self._leadership.subscribe(observer)

    def on_removed(self, observer: Callable[[], None]) -> Callable[[], None]:
        """Call `observer()` when this node learns it was removed from the cluster (when
        the change applies here; at once if it already knows). Returns a function that
        unsubscribes."""
        return self._membership.on_removed(observer)

    async def wait_for_leader(self, *, timeout: float | None = None) -> NodeId:
        """Wait until this node knows a leader; returns its id."""
        wait = timeout if timeout is not None else self.settings.election_timeout_s * 5
        leadership = self._leadership
        await leadership.wait_for(lambda: leadership.leader_id != NO_NODE, wait)
        return leadership.leader_id

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
            snapshot_index=self._applier.snapshot_index,
            voters=tuple(sorted(status.conf_state.voters)),
            learners=tuple(sorted(status.conf_state.learners)),
            peers=dict(sorted(self._membership.peers().items())),
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
            last_contact_s=self._membership.last_contact_s(self.clock.now()),
            pending_proposals=self._requests.pending_proposals,
            pending_reads=self._requests.pending_reads,
            removed=self.removed,
            stopped=self._stopping,
            batching=self.batching,
        )

    @property
    def leader_id(self) -> NodeId:
        return self._leadership.leader_id

    @property
    def removed(self) -> bool:
        """This node was removed from the cluster by a membership change: it serves
        nothing any more (it keeps running only so the remaining voters can finish it)."""
        return self._membership.this_node_removed

    @property
    def removed_ids(self) -> frozenset[NodeId]:
        """Ids removed from the cluster: never added again, their messages dropped."""
        return self._membership.removed_ids()

    def leaderless_seconds(self) -> float:
        """How long this node has known no leader (0 while it knows one): a member cut off
        from the cluster, or one in a long election."""
        return self._leadership.leaderless_seconds()

    @property
    def is_leader(self) -> bool:
        return self._leadership.is_leader

    @property
    def batching(self) -> bool:
        """Whether this node writes batch entries now: NodeSettings.batch_proposals, and
        every member has declared it reads them (log_formats.py)."""
        return self._formats.batching_allowed()

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
        """ChecksSnapshots (on a transport's worker thread): see Applier.check_snapshot."""
        self._applier.check_snapshot(message)

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
        """A peer asks us (as leader) to change the membership, or what we know of it."""
        if self._stopping or self._rawnode is None:
            return MemberResponse(ok=False, error="stopped", message="node is stopping")
        refusal = self._outsider_refusal(request)
        if refusal is not None:
            return refusal
        if request.action is MemberAction.TRANSFER_LEADER:
            return await self._transfers.answer(request)
        return await self._membership.handle_request(request)

    def _outsider_refusal(self, request: MemberRequest) -> MemberResponse | None:
        """A requester its certificate names (raftkv.raft.transport.peer_identity) that is
        not a member may only ask what the members are, or to join and be promoted as
        itself: never to add, promote or remove another node, nor to move leadership."""
        requester = request.requester
        if requester is None or request.action is MemberAction.MEMBERS:
            return None
        status = self.status()
        if requester in status.voters or requester in status.learners:
            return None
        joining_itself = request.node_id == requester and request.action in (
            MemberAction.ADD_LEARNER,
            MemberAction.PROMOTE,
        )
        if joining_itself:
            return None
        return MemberResponse(
            ok=False,
            error="invalid",
            message=f"node {requester} is not a member: it may only join as itself",
        )

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

    def _process(self) -> None:
        rawnode = self._core()
        self._drain_inbox(rawnode)
        self._drain_ticks(rawnode)
        self._requests.drain_proposals(rawnode)
        self._requests.drain_reads(rawnode)
        while True:
            outstanding = self._outstanding
            if outstanding is not None:
                if outstanding.write is not None and not outstanding.write.done():
                    return
                self._finish_ready(rawnode, outstanding)
                # Proposals held back by the batch limit may go now.
                self._requests.drain_proposals(rawnode)
            if self._applier.snapshot_written():
                self._applier.finish_snapshot()
            if not rawnode.has_ready():
                return
            self._start_ready(rawnode)

    def _drain_ticks(self, rawnode: RawNode) -> None:
        ticks = self._ticker.take()
        for _ in range(ticks):
            rawnode.tick()
            self._requests.tick(rawnode)
        if ticks:
            self._requests.expire(self.clock.now())
            self._ask_members(None)

    def _drain_inbox(self, rawnode: RawNode) -> None:
        inbox = self._inbox
        membership = self._membership
        now = self.clock.now()
        while inbox:
            message = inbox.popleft()
            if message.to != self.id:
                self.stats.messages_rejected += 1
                continue
            if membership.was_removed(message.sender):
                # A removed member that does not know it (it was down when removed): it
                # is no member, whatever it says.
                self.stats.messages_rejected += 1
                continue
            if not membership.knows(rawnode, message.sender):
                # Nor is an id no trusted source named: its term would force elections, or
                # push ours where it cannot move any more (issue 12, A3).
                self.stats.messages_rejected += 1
                self._ask_members(message.sender)
                continue
            membership.heard_from(message.sender, now)
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

    def _ask_members(self, stranger: NodeId | None) -> None:
        """Ask the members we know about the membership (Membership.ask_members): because
        `stranger` sent us messages no trusted source explains, or (None) because we have
        been leaderless for two election timeouts — a member that missed its own removal
        learns it so."""
        if self._stopping or (
            stranger is None
            and (self.removed or self.leaderless_seconds() < 2 * self.settings.election_timeout_s)
        ):
            return
        self._membership.ask_members(stranger)

    # -- one Ready -------------------------------------------------------------------------

    def _start_ready(self, rawnode: RawNode) -> None:
        ready = rawnode.ready()
        self._requests.start_batch()
        if ready.soft_state is not None:
            self._on_soft_state(ready.soft_state.leader_id, ready.soft_state.role)
        must_write = (
            bool(ready.entries) or ready.hard_state is not None or ready.snapshot is not None
        )
        # A write with nothing to fsync (the commit index moved: the usual second Ready of
        # a write on the leader, and of a heartbeat on a follower) runs on the loop when
        # the writer thread is idle, so what it commits applies in this turn. Its messages
        # (the new commit index for the followers) go first, before the apply: the
        # followers then apply an entry while the leader does, so a long apply stalls
        # every loop at once, which costs no election (ticker), where a leader applying
        # alone went silent for as long and its followers elected another.
        cheap = must_write and not ready.must_sync and ready.snapshot is None
        if ready.messages:
            self.transport.send(ready.messages)
        write: asyncio.Future[tuple[None, float]] | None = None
        submitted_at = 0.0
        if must_write:
            submitted_at = time.perf_counter()
            # A follower writes on the loop too: its ack waits for the fsync either way,
            # and the thread adds two hand-offs before it (measured slower even with the
            # GIL released during the fsync). A leader keeps the thread (what its loop
            # takes in meanwhile joins the next Ready); a snapshot's write, long, always
            # goes there (docs/performance.md).
            inline = cheap or (ready.snapshot is None and not self._leadership.is_leader)
            submit = self._writer.submit_inline if inline else self._writer.submit
            write = submit(
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
            self._applier.install_snapshot(ready.snapshot)
        if ready.committed_entries:
            self._applier.apply_entries(rawnode, ready.committed_entries)
        self._requests.record_read_states(ready.read_states)
        rawnode.advance(ready)
        self._requests.answer_reads(rawnode.applied_index())
        self._applier.maybe_snapshot(rawnode)

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

    def _on_soft_state(self, leader_id: NodeId, role: StateRole) -> None:
        if not self._leadership.update(leader_id, role):
            return
        if leader_id != NO_NODE:
            # Whatever waited for a leader may go now.
            self._requests.requeue_waiting(min_age_ticks=0)
        self._leadership.notify(self._core().term())

    def _is_stopping(self) -> bool:
        return self._stopping

    async def _hand_over_leadership(self) -> None:
        if not self._leadership.is_leader or self._rawnode is None:
            return
        target = best_transferee(self._rawnode, self.id)
        if target is None:
            return
        match = self._rawnode.match_index(target)
        if match is None or match < self._rawnode.committed_index():
            return  # nobody is caught up; a transfer would leave the cluster leaderless
        await self._transfers.hand_over(target, self.settings.stop_transfer_timeout_s)
