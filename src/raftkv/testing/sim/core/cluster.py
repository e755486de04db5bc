"""The simulated cluster: nodes, network, disks and the event loop that drives them.

Theory of operation
-------------------
Time advances in steps (`scenario.TICK_STEPS` per Raft tick). At each step the cluster:

1. hands queued transport reports to their senders (`report_snapshot`, `report_unreachable`);
2. delivers every message the network has due (`RawNode.step`);
3. ticks the nodes whose phase falls on this step;
4. on tick boundaries, restarts crashed nodes that are due, then lets the fault injector and
   the clients act;
5. processes Readies: a node with a Ready takes it (`ready()`), sends `messages` at once and
   starts its disk write, which finishes now or a few steps later (a slow disk; meanwhile
   the node keeps stepping messages, as the RawNode contract allows). When the write
   finishes, the node persists the snapshot, entries and hard state, sends
   `persisted_messages`, applies committed entries, registers read states and advances.

A crash may strike between any two events, and inside a Ready at a `CrashPoint`: the RawNode,
an unfinished Ready, the in-memory state machine and pending reads are lost; the disk keeps
what was written. A restart builds a new RawNode from the disk with
`Config(applied=<state machine image's applied index>)`.

Every event (delivery, tick, Ready, fault, client call) gets a number (`events`), is written
to the trace, and is followed by the safety checks for the node it touched. Only nodes an
event touched (or with a Ready in flight) are asked for a new Ready: the core is
deterministic, so an untouched node has nothing new.

Membership changes: an applied configuration that no longer includes a node retires it (it
stops for good, as a removed server shuts down). After each applied membership change the
node snapshots its storage at that index, so a restart reads the right configuration
(`MemoryStorage.initial_state` takes it from the snapshot).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass

from raftkv.raft.core.config import Config
from raftkv.raft.core.describe import describe_conf_change, describe_conf_state
from raftkv.raft.core.errors import (
    ConfChangeInvalid,
    PeerNotFound,
    ProposalDropped,
)
from raftkv.raft.core.ready import Ready
from raftkv.raft.core.types import (
    ConfChange,
    ConfState,
    EntryKind,
    Message,
    MessageType,
    NodeId,
    StateRole,
)
from raftkv.testing.sim.core.disk import Disk, bootstrap_disk, empty_disk
from raftkv.testing.sim.core.faults import CrashPoint, FaultInjector
from raftkv.testing.sim.core.invariants import SafetyChecker
from raftkv.testing.sim.core.network import Network, Packet
from raftkv.testing.sim.core.node import SimNode
from raftkv.testing.sim.core.scenario import TICK_STEPS, Scenario, substream
from raftkv.testing.sim.core.state_machine import Image, SessionStateMachine
from raftkv.testing.sim.core.trace import Trace
from raftkv.testing.sim.core.workload import Workload

__all__ = ["Cluster", "EventLimitExceeded"]


class EventLimitExceeded(Exception):
    """The run used more events than `Limits.max_events`."""


@dataclass(slots=True)
class _Outstanding:
    """A Ready whose disk write is in progress."""

    ready: Ready
    done_at: int
    crash_point: CrashPoint | None


class Cluster:
    def __init__(self, scenario: Scenario, trace: Trace) -> None:
        self.scenario = scenario
        self.trace = trace
        seed = scenario.seed
        self.now = 0
        self.events = 0
        self.nodes: dict[NodeId, SimNode] = {}
        self.nodes_ever = 0
        self.network = Network(
            substream(seed, "network"), scenario.network, scenario.limits.max_in_flight
        )
        self.faults = FaultInjector(substream(seed, "faults"), scenario.faults)
        self.workload = Workload(
            substream(seed, "workload"),
            self.event,
            clients=scenario.clients,
            keys=scenario.keys,
            rate=scenario.client_rate,
            read_share=scenario.read_share,
            timeout_steps=scenario.client_timeout_ticks * TICK_STEPS,
        )
        self._phase_rng = substream(seed, "phases")
        # Disk latency and state machine flushes.
        self._disk_rng = substream(seed, "disk")
        self.checker = SafetyChecker(self.nodes)
        self._outstanding: dict[NodeId, _Outstanding] = {}
        # Transport reports to hand to senders at the next step: (sender, incarnation,
        # peer, snapshot ok / None for unreachable).
        self._reports: list[tuple[NodeId, int, NodeId, bool | None]] = []
        # The newest membership any node applied: the index of its entry, and its members.
        # A node that is no longer a member retires (stops for good), as a removed server
        # shuts down.
        self._membership_index = 0
        self._members: frozenset[NodeId] = frozenset()
        # (node, index of the configuration without it, that configuration's voters).
        self._to_retire: list[tuple[NodeId, int, frozenset[NodeId]]] = []
        self._live: list[SimNode] | None = None
        # Nodes touched since their last Ready check: only they can have a new Ready.
        self._touched: set[NodeId] = set()
        # What the run exercised (for coverage reports): event kinds and their counts.
        self.stats: Counter[str] = Counter()

        voters = frozenset(range(1, scenario.nodes + 1))
        self._members = frozenset(NodeId(voter) for voter in voters)
        for voter in sorted(voters):
            self._add_node(NodeId(voter), bootstrap_disk(voters))

    # -- bookkeeping -----------------------------------------------------------------------

    def event(self, line: str) -> int:
        """Count and trace one event; returns its number (the history's clock)."""
        self.events += 1
        if self.events > self.scenario.limits.max_events:
            raise EventLimitExceeded(f"more than {self.scenario.limits.max_events} events")
        self.trace.event(f"{self.now} #{self.events} {line}")
        return self.events

    def after_event(self, node: SimNode) -> None:
        self.checker.check_node(node)
        self._touched.add(node.id)

    def _add_node(self, node_id: NodeId, disk: Disk) -> SimNode:
        node = SimNode(node_id, disk, tick_phase=self._phase_rng.randrange(TICK_STEPS))
        self.nodes[node_id] = node
        self.nodes_ever += 1
        self._start(node)
        return node

    def next_node_id(self) -> NodeId:
        return NodeId(max(self.nodes, default=0) + 1)

    def _config(self, node: SimNode) -> Config:
        return self.scenario.raft.config(
            node.id,
            applied=node.disk.image.applied,
            rng=substream(self.scenario.seed, f"node:{node.id}:{node.incarnation + 1}"),
        )

    def _start(self, node: SimNode) -> None:
        self.checker.check_disk(node.id, node.disk)
        node.start(self._config(node))
        self._live = None
        self.stats["start"] += 1
        hard = node.disk.storage.hard_state
        self.event(
            f"start n{node.id} incarnation {node.incarnation} term {hard.term} "
            f"image@{node.disk.image.applied} log=[{node.disk.storage.first_index()},"
            f"{node.disk.storage.last_index()}]"
        )
        self.after_event(node)

    # -- queries ---------------------------------------------------------------------------

    def live_nodes(self) -> list[SimNode]:
        """Nodes that are up, by id (cached; invalidated on start and crash)."""
        if self._live is None:
            self._live = [node for _, node in sorted(self.nodes.items()) if node.up]
        return self._live

    def active_ids(self) -> list[NodeId]:
        """Nodes not retired (up or down)."""
        return [node_id for node_id, node in sorted(self.nodes.items()) if not node.retired]

    def leader(self) -> SimNode | None:
        """The live leader with the highest term, if any."""
        best: SimNode | None = None
        for node in self.live_nodes():
            assert node.rawnode is not None
            raft = node.rawnode.raft
            if raft.role is StateRole.LEADER and (
                best is None or best.rawnode is None or raft.term > best.rawnode.raft.term
            ):
                best = node
        return best

    # -- the event loop --------------------------------------------------------------------

    def run_step(self) -> None:
        self.now += 1
        now = self.now
        self._deliver_reports()
        delivery = self.network.due(now)
        for packet in delivery.dropped:
            self._on_dropped(packet, blocked=True)
        for packet in delivery.delivered:
            self._deliver(packet)
        phase = now % TICK_STEPS
        for node in self.live_nodes():
            if node.tick_phase == phase:
                assert node.rawnode is not None
                node.rawnode.tick()
                self.event(f"tick n{node.id}")
                self.after_event(node)
        if phase == 0:
            self._on_tick()
            # Clients and faults call into nodes directly.
            self._touched.update(node.id for node in self.live_nodes())
        candidates = sorted(self._touched.union(self._outstanding))
        self._touched.clear()
        for node_id in candidates:
            node = self.nodes[node_id]
            if node.up:
                self._process_ready(node)
        self._retire_pending()

    def _on_tick(self) -> None:
        for node in sorted(self.nodes.values(), key=lambda item: item.id):
            due = node.restart_at is not None and node.restart_at <= self.now
            if due and not node.up and not node.retired:
                self._start(node)
        self.faults.on_tick(self)
        self.workload.on_tick(self.now, self.live_nodes(), self.leader())

    # -- network ---------------------------------------------------------------------------

    def _send(self, node: SimNode, message: Message) -> None:
        self.checker.on_send(node, message)
        for packet in self.network.send(self.now, message, node.incarnation):
            self._on_dropped(packet, blocked=False)

    def _deliver(self, packet: Packet) -> None:
        message = packet.message
        node = self.nodes.get(message.to)
        if node is None or node.rawnode is None:
            self._on_dropped(packet, blocked=False)
            return
        self.event(f"deliver {_describe(message)}")
        self.stats[message.type.value] += 1
        # PeerNotFound: a response from a node no longer in our configuration.
        with contextlib.suppress(PeerNotFound):
            node.rawnode.step(message)
        self.after_event(node)
        if message.type is MessageType.SNAPSHOT:
            self._reports.append((message.sender, packet.sender_incarnation, message.to, True))

    def _on_dropped(self, packet: Packet, *, blocked: bool) -> None:
        message = packet.message
        if message.type is MessageType.SNAPSHOT:
            self._reports.append((message.sender, packet.sender_incarnation, message.to, False))
        elif blocked and message.type is MessageType.APPEND:
            self._reports.append((message.sender, packet.sender_incarnation, message.to, None))

    def _deliver_reports(self) -> None:
        reports, self._reports = self._reports, []
        for sender, incarnation, peer, ok in reports:
            node = self.nodes.get(sender)
            if node is None or node.rawnode is None or node.incarnation != incarnation:
                continue
            if ok is None:
                self.event(f"report n{sender}: n{peer} unreachable")
                node.rawnode.report_unreachable(peer)
            else:
                self.event(f"report n{sender}: snapshot to n{peer} {'ok' if ok else 'failed'}")
                node.rawnode.report_snapshot(peer, ok)
            self.after_event(node)

    # -- Ready processing ------------------------------------------------------------------

    def _process_ready(self, node: SimNode) -> None:
        rawnode = node.rawnode
        assert rawnode is not None
        outstanding = self._outstanding.get(node.id)
        if outstanding is None:
            if not rawnode.has_ready():
                return
            ready = rawnode.ready()
            self.event(
                f"ready n{node.id} #{ready.number} hs={_hard(ready)} "
                f"entries={len(ready.entries)} committed={len(ready.committed_entries)} "
                f"snap={ready.snapshot.metadata.index if ready.snapshot else '-'} "
                f"msgs={len(ready.messages)}+{len(ready.persisted_messages)} "
                f"reads={len(ready.read_states)}"
            )
            for message in ready.messages:
                self._send(node, message)
            outstanding = _Outstanding(
                ready, self.now + self._disk_delay(), self.faults.crash_point()
            )
            self._outstanding[node.id] = outstanding
        if outstanding.done_at > self.now:
            return
        del self._outstanding[node.id]
        self._finish_ready(node, outstanding)

    def _finish_ready(self, node: SimNode, outstanding: _Outstanding) -> None:
        ready = outstanding.ready
        crash_point = outstanding.crash_point
        rawnode = node.rawnode
        state_machine = node.state_machine
        assert rawnode is not None and state_machine is not None
        self.event(f"persist n{node.id} #{ready.number}")
        if crash_point is CrashPoint.BEFORE_PERSIST:
            self.crash(node, restart_at=self.now + TICK_STEPS, why=crash_point.value)
            return
        storage = node.disk.storage
        if ready.snapshot is not None:
            snapshot = ready.snapshot
            self.checker.on_snapshot_install(node, snapshot)
            self.stats["snapshot installed"] += 1
            storage.apply_snapshot(snapshot)
            metadata = snapshot.metadata
            image = Image.decode(snapshot.data, metadata.index, metadata.conf_state)
            self.checker.before_image_flush(node, image.applied)
            node.disk.flush(image)
            state_machine = node.state_machine = SessionStateMachine(image)
            self._note_membership(metadata.index, metadata.conf_state)
        if ready.entries:
            storage.append(ready.entries)
        if ready.hard_state is not None:
            self.checker.before_hard_state(node, ready.hard_state)
            storage.set_hard_state(ready.hard_state)
        self.checker.after_persist(node, ready.entries)
        if crash_point is CrashPoint.AFTER_PERSIST:
            self.crash(node, restart_at=self.now + TICK_STEPS, why=crash_point.value)
            return
        for message in ready.persisted_messages:
            self._send(node, message)
        force_flush = False
        for entry in ready.committed_entries:
            self.checker.on_apply(node, entry)
            command = state_machine.apply(entry)
            if entry.kind is EntryKind.CONF_CHANGE:
                change = ConfChange.decode(entry.data)
                try:
                    conf_state = rawnode.apply_conf_change(change)
                except ConfChangeInvalid as error:
                    self.event(f"n{node.id} rejects conf change {entry.index}: {error}")
                    continue
                state_machine.conf_state = conf_state
                self.event(
                    f"n{node.id} applies conf change {entry.index} "
                    f"({describe_conf_change(change)}): {describe_conf_state(conf_state)}"
                )
                self._note_membership(entry.index, conf_state)
                self.stats["conf change applied"] += 1
                if conf_state.is_joint():
                    self.stats["joint config applied"] += 1
                force_flush = True
            elif command is not None:
                self.workload.on_apply(node, command)
        if crash_point is CrashPoint.AFTER_APPLY:
            self.crash(node, restart_at=self.now + TICK_STEPS, why=crash_point.value)
            return
        rate = self.scenario.faults.state_machine_flush
        if force_flush or not self.faults.enabled or self._disk_rng.random() < rate:
            self._flush(node)
            if force_flush:
                # The restart configuration comes from the storage snapshot's membership:
                # keep it in step with every applied membership change.
                self._create_snapshot(node)
        node.read_states.extend(ready.read_states)
        rawnode.advance(ready)
        self._serve_reads(node)
        self.after_event(node)

    def _disk_delay(self) -> int:
        """Steps a Ready's write takes: usually none, sometimes up to three ticks (a slow
        disk; the node keeps stepping messages meanwhile)."""
        rate = self.scenario.faults.slow_ready
        if not self.faults.enabled or not rate or self._disk_rng.random() >= rate:
            return 0
        return self._disk_rng.randint(1, 3 * TICK_STEPS)

    def _flush(self, node: SimNode) -> None:
        assert node.state_machine is not None
        image = node.state_machine.image()
        if image.applied == node.disk.image.applied:
            return
        self.checker.before_image_flush(node, image.applied)
        node.disk.flush(image)

    def _create_snapshot(self, node: SimNode) -> None:
        snapshot = node.disk.create_snapshot()
        if snapshot is not None:
            self.checker.on_snapshot_created(node, snapshot)

    def _serve_reads(self, node: SimNode) -> None:
        state_machine = node.state_machine
        assert state_machine is not None
        waiting = []
        for read_state in node.read_states:
            if read_state.index > state_machine.applied:
                waiting.append(read_state)
                continue
            context = read_state.request_context
            key = self.workload.read_key(context)
            value = None if key is None else state_machine.read(key)
            self.workload.on_read(node, context, value)
            self.stats["read served"] += 1
        node.read_states = waiting

    # -- membership ------------------------------------------------------------------------

    def _note_membership(self, index: int, conf_state: ConfState) -> None:
        """A configuration was applied somewhere; nodes it no longer has will retire."""
        if index <= self._membership_index:
            return
        self._membership_index = index
        members = conf_state.members()
        for removed in sorted(self._members - members):
            self._to_retire.append((removed, index, conf_state.voters))
        self._members = members

    def _retire_pending(self) -> None:
        """Stop removed nodes, as a well-behaved server stops once it is removed, but only
        when that cannot cost the cluster its liveness: the node no longer leads (a removed
        leader hands over first, see Raft._maybe_finish_step_down), and a majority of the
        new voters has durably applied the configuration without it. Before that, the
        others may still hold the old configuration and need the removed node's vote.
        """
        retiring, self._to_retire = self._to_retire, []
        for node_id, index, voters in retiring:
            node = self.nodes.get(node_id)
            if node is None or node.retired:
                continue
            leading = node.rawnode is not None and node.rawnode.raft.role is StateRole.LEADER
            applied = sum(
                1
                for voter in voters
                if voter in self.nodes and self.nodes[voter].disk.image.applied >= index
            )
            if leading or applied <= len(voters) // 2:
                self._to_retire.append((node_id, index, voters))
                continue
            if node.up:
                self.crash(node, restart_at=None, why="removed")
            node.retired = True
            self.event(f"retire n{node_id}")

    def propose_conf_change(self, leader: SimNode, change: ConfChange) -> None:
        assert leader.rawnode is not None
        self.event(f"fault conf-change at n{leader.id}: {describe_conf_change(change)}")
        try:
            leader.rawnode.propose_conf_change(change)
        except (ProposalDropped, ConfChangeInvalid) as error:
            self.event(f"  conf change refused: {error}")
            self.after_event(leader)
            return
        self.after_event(leader)
        for single in change.changes:
            if single.node_id not in self.nodes:
                self._add_node(single.node_id, empty_disk())

    # -- faults ----------------------------------------------------------------------------

    def crash(self, node: SimNode, *, restart_at: int | None, why: str = "fault") -> None:
        self.event(f"crash n{node.id} ({why})")
        self.stats[f"crash {why}"] += 1
        self._outstanding.pop(node.id, None)
        self._live = None
        self.workload.on_crash(node)
        node.crash()
        node.restart_at = restart_at

    def restart_all(self) -> None:
        for node in sorted(self.nodes.values(), key=lambda item: item.id):
            if not node.up and not node.retired:
                self._start(node)

    def partition(self, side: list[NodeId], others: list[NodeId]) -> None:
        self.network.partition(side, others)

    def block(self, sender: NodeId, receiver: NodeId) -> None:
        self.network.block(sender, receiver)

    def heal_partition(self) -> None:
        self.network.heal()
        self.event("fault heal")

    def clog(self, node_id: NodeId, until: int) -> None:
        self.network.clog(node_id, until)
        self.event(f"fault clog n{node_id} until {until}")

    def compact(self, node: SimNode, keep: int) -> None:
        """Snapshot the durable state machine image and drop the log before it."""
        snapshot_index = node.disk.storage.snapshot().metadata.index
        self._create_snapshot(node)
        storage = node.disk.storage
        new_index = storage.snapshot().metadata.index
        compact_to = min(new_index, node.disk.image.applied) - keep
        if compact_to <= storage.first_index() - 1:
            return
        storage.compact(compact_to)
        self.stats["compaction"] += 1
        self.event(
            f"fault compact n{node.id} snapshot {snapshot_index}->{new_index} "
            f"first index {storage.first_index()}"
        )
        self.after_event(node)

    def status_lines(self) -> list[str]:
        return [node.status_line() for _, node in sorted(self.nodes.items())]


def _hard(ready: Ready) -> str:
    hard = ready.hard_state
    return "-" if hard is None else f"{hard.term}/{hard.vote}/{hard.commit}"


def _describe(message: Message) -> str:
    """A compact canonical line (entry payloads are summarised by count and size)."""
    text = (
        f"{message.sender}->{message.to} {message.type.value} t{message.term} "
        f"{message.log_term}/{message.index} c{message.commit}"
    )
    if message.entries:
        size = sum(len(entry.data) for entry in message.entries)
        text += f" entries={message.entries[0].index}..{message.entries[-1].index}({size}B)"
    if message.reject:
        text += f" reject(hint {message.reject_hint})"
    if message.snapshot is not None:
        text += f" snapshot@{message.snapshot.metadata.index}"
    if message.context:
        text += f" ctx={message.context!r}"
    return text
