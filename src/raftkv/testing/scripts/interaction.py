"""The interaction environment: several RawNodes on a hand-cranked network, driven by
datadriven scripts (after etcd-io/raft's `rafttest.InteractionEnv`).

Theory of operation
-------------------
Each node is a `RawNode` over its own `MemoryStorage` and a toy state machine that records
the data of every applied entry. Nothing happens unless a script says so: ticks, Ready
handling and message delivery are separate commands, so a script can hold any message back,
drop it, or let the nodes run to a fixed point with `stabilize`.

- `process-ready` handles one Ready completely and synchronously: persist the snapshot,
  entries and hard state; queue `messages` and `persisted_messages` on the network; apply
  the committed entries (conf changes through `apply_conf_change`); then `advance`.
- The network is one ordered queue of in-flight messages. `deliver-msgs` and `stabilize`
  hand messages to their recipients. A message crossing a partition is dropped when it is
  sent and when it would be delivered; one addressed to a node that is down is dropped at
  delivery, and whatever is in flight to a node is dropped when it restarts.
- `add-nodes` bootstraps each new node with a snapshot at `index` (default 1, term 1) whose
  configuration holds `voters` and `learners`, and a hard state at term 1. Without voters
  or learners a node starts empty, to be caught up by a snapshot once it is added.
- `compact ID I` cuts a snapshot of the applied state at I and discards the log up to I.
  A leader sending a snapshot gets one of its state machine's latest applied state.
- `partition (1,2) (3)` splits the nodes into groups; nodes not named form one more group.
- A node's storage and state machine are its durable state. `crash` loses everything else
  (the RawNode with its unpersisted log entries and pending Ready); `restart` rebuilds the
  RawNode from storage, with `applied` and the configuration taken from the state machine,
  which persists them atomically with its data
  (docs/architecture.md#the-state-machine-contract). `restart` of a running node crashes
  it first.
- Election timeouts are not random here: every node draws the smallest value, so the
  randomized timeout equals `election_tick` and `tick-election` campaigns a follower.
  `set-randomized-election-timeout ID timeout=T` makes a node draw T instead, from the
  next time it resets its election timer (any change of term or role) on.
- Defaults follow etcd's interaction tests, not `Config`'s: election_tick=3,
  heartbeat_tick=1, no PreVote, no CheckQuorum, no size or in-flight limits. Scripts turn
  features on explicitly (`add-nodes 3 voters=(1,2,3) prevote=true checkquorum=true`).

The environment checks State Machine Safety as it goes: two nodes that apply an entry at
the same index must apply the same entry, and each node applies indices in order without
gaps; a violation raises `SafetyViolation`, which fails the script.

Commands (ids are node ids, which are assigned 1, 2, 3, ... by `add-nodes`)::

    add-nodes N [voters=(1,2,3)] [learners=(4)] [index=I] [prevote=true] [checkquorum=true]
              [read-only=safe|lease] [max-size-per-message=B] [max-inflight=N]
              [max-inflight-bytes=B] [max-uncommitted-size=B] [max-committed-size-per-ready=B]
              [step-down-on-removal=true] [disable-proposal-forwarding=true]
              [election-tick=T] [heartbeat-tick=T]
    campaign ID                      propose ID DATA
    propose-conf-change ID [transition=auto|implicit|explicit]   (input: v4 l5 r2; none=leave)
    tick-election ID                 tick-heartbeat ID                 tick ID N
    process-ready ID...              deliver-msgs [ID...] [drop=(ID,...)] [type=MsgApp]
    stabilize [ID...]                print-msgs [ID...]
    raft-log ID                      raft-state                        status ID
    state-machine ID                 compact ID INDEX                  send-snapshot FROM TO
    report-snapshot ID PEER [ok=false]                                 report-unreachable ID PEER
    transfer-leadership from=ID to=ID                                  read-index ID CONTEXT
    partition (1,2) (3)              heal                              crash ID    restart ID
    set-randomized-election-timeout ID timeout=T                       log-level none|info
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from raftkv.raft.core import (
    NO_LIMIT,
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    InvariantViolation,
    Message,
    MessageType,
    NodeId,
    RaftError,
    RawNode,
    ReadOnlyOption,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)
from raftkv.raft.core.describe import (
    CHANGE_PREFIXES,
    describe_conf_change,
    describe_conf_state,
    describe_data,
    describe_entry,
    describe_hard_state,
    describe_message,
    describe_node,
    describe_ready,
)
from raftkv.raft.storage.memory import MemoryStorage
from raftkv.testing.scripts.datadriven import DataDrivenError, TestCase
from raftkv.testing.scripts.toy_state_machine import InteractionStorage, ToyStateMachine

__all__ = ["InteractionEnv", "InteractionNode", "SafetyViolation", "ToyStateMachine"]

# A bound on `stabilize`: a healthy cluster reaches a fixed point in a few dozen rounds.
MAX_STABILIZE_ROUNDS = 1000


class SafetyViolation(AssertionError):
    """The nodes disagree about what was applied: a Raft safety property is broken."""


class _ScriptedRandom(random.Random):
    """A `random.Random` whose draws the script decides: `randrange` gives its lowest value
    plus `offset` (clamped to the range), everything else its lowest value.

    With offset 0 the core's randomized election timeout is exactly `election_tick`, which
    makes `tick-election` mean "one full election timeout" in every script.
    """

    def __init__(self) -> None:
        super().__init__(0)
        self.offset = 0

    def random(self) -> float:
        return 0.0

    def getrandbits(self, k: int, /) -> int:
        return 0

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        low, high = (0, start) if stop is None else (start, stop)
        if high <= low:
            raise ValueError(f"empty range for randrange({start}, {stop})")
        return min(low + self.offset * step, high - 1)


@dataclass(eq=False, slots=True)
class InteractionNode:
    id: NodeId
    config: Config
    storage: InteractionStorage
    state_machine: ToyStateMachine
    # None while the node is down (after `crash`, before `restart`).
    raw_node: RawNode | None

    @property
    def running(self) -> RawNode:
        if self.raw_node is None:
            raise DataDrivenError(f"node {self.id} is down")
        return self.raw_node


@dataclass(frozen=True, slots=True)
class _Observed:
    role: StateRole
    term: int
    leader: NodeId

    def __str__(self) -> str:
        return f"{self.role.value} Term:{self.term} Lead:{describe_node(self.leader)}"


# -- output ---------------------------------------------------------------------------------


class _Output:
    """The text a command produces. `quiet` (log-level none) keeps only errors."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.indent = 0
        self.quiet = False

    def write(self, text: str) -> None:
        if not self.quiet:
            self._add(text)

    def error(self, text: str) -> None:
        self._add(text)

    def _add(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self.lines.append("  " * self.indent + line)

    @contextlib.contextmanager
    def indented(self) -> Iterator[None]:
        self.indent += 1
        try:
            yield
        finally:
            self.indent -= 1

    def take(self) -> str:
        text = "".join(f"{line}\n" for line in self.lines)
        self.lines = []
        self.indent = 0
        return text


def _describe_error(error: RaftError) -> str:
    return f"error: {type(error).__name__}: {error}"


def _parse_group(text: str, case: TestCase) -> frozenset[NodeId]:
    if not (text.startswith("(") and text.endswith(")")):
        raise case.error(f"expected a group like (1,2), got {text!r}")
    members = [part.strip() for part in text[1:-1].split(",") if part.strip()]
    return frozenset(NodeId(case.parse_int(member, "group member")) for member in members)


_CONF_CHANGE_TYPES = {prefix: kind for kind, prefix in CHANGE_PREFIXES.items()}
_ADD_NODES_KEYS = frozenset(
    [
        "voters",
        "learners",
        "index",
        "prevote",
        "checkquorum",
        "read-only",
        "max-size-per-message",
        "max-inflight",
        "max-inflight-bytes",
        "max-inflight-entries",
        "max-uncommitted-size",
        "max-committed-size-per-ready",
        "step-down-on-removal",
        "disable-proposal-forwarding",
        "election-tick",
        "heartbeat-tick",
    ]
)
_TRANSITIONS = {
    "auto": ConfChangeTransition.AUTO,
    "implicit": ConfChangeTransition.JOINT_IMPLICIT,
    "explicit": ConfChangeTransition.JOINT_EXPLICIT,
}


def _stepping(message: Message) -> Callable[[RawNode], None]:
    return lambda raw_node: raw_node.step(message)


# -- the environment ------------------------------------------------------------------------


class InteractionEnv:
    """Drives a group of RawNodes from datadriven scripts: `run_file(path, env.handle)`."""

    def __init__(self) -> None:
        self.nodes: dict[NodeId, InteractionNode] = {}
        # In-flight messages, in the order they were sent.
        self.messages: list[Message] = []
        # None: no partition. Otherwise each node's group; nodes not named share group -1.
        self.partition: dict[NodeId, int] | None = None
        # What each index was applied as, by any node: State Machine Safety (§5.4.3).
        self.applied_entries: dict[int, Entry] = {}
        self.output = _Output()
        self._commands: dict[str, Callable[[TestCase], None]] = {
            "add-nodes": self._add_nodes,
            "campaign": self._campaign,
            "propose": self._propose,
            "propose-conf-change": self._propose_conf_change,
            "tick-election": self._tick_election,
            "tick-heartbeat": self._tick_heartbeat,
            "tick": self._tick,
            "process-ready": self._process_ready_command,
            "deliver-msgs": self._deliver_msgs,
            "stabilize": self._stabilize,
            "print-msgs": self._print_msgs,
            "raft-log": self._raft_log,
            "raft-state": self._raft_state,
            "status": self._status,
            "state-machine": self._state_machine,
            "compact": self._compact,
            "send-snapshot": self._send_snapshot,
            "report-snapshot": self._report_snapshot,
            "report-unreachable": self._report_unreachable,
            "transfer-leadership": self._transfer_leadership,
            "read-index": self._read_index,
            "partition": self._partition,
            "heal": self._heal,
            "set-randomized-election-timeout": self._set_randomized_election_timeout,
            "crash": self._crash,
            "restart": self._restart,
            "log-level": self._log_level,
        }

    def handle(self, case: TestCase) -> str:
        """Run one script command; return its output ("ok" if it printed nothing)."""
        command = self._commands.get(case.command)
        if command is None:
            raise case.error(f"unknown command {case.command!r}")
        command(case)
        return self.output.take() or "ok\n"

    # -- helpers ---------------------------------------------------------------------------

    def _node(self, case: TestCase, text: str) -> InteractionNode:
        node_id = NodeId(case.parse_int(text, "node id"))
        node = self.nodes.get(node_id)
        if node is None:
            raise case.error(f"no node {node_id}")
        return node

    def _ids(self, case: TestCase) -> list[InteractionNode]:
        return [self._node(case, text) for text in case.positional()]

    def _one(self, case: TestCase) -> InteractionNode:
        nodes = self._ids(case)
        if len(nodes) != 1:
            raise case.error("expected exactly one node id")
        return nodes[0]

    def _positional(self, case: TestCase, *names: str) -> list[str]:
        """The positional arguments, which must be exactly `names` (for the error)."""
        positional = case.positional()
        if len(positional) != len(names):
            raise case.error(f"{case.command} takes: {' '.join(names)}")
        return positional

    def _check_keys(self, case: TestCase, allowed: frozenset[str] | set[str]) -> None:
        unknown = set(case.keyed()) - allowed
        if unknown:
            raise case.error(f"unknown arguments: {', '.join(sorted(unknown))}")

    def _observe(self, node: InteractionNode) -> _Observed | None:
        if node.raw_node is None:
            return None
        status = node.raw_node.status()
        return _Observed(
            status.soft_state.role, status.hard_state.term, status.soft_state.leader_id
        )

    @contextlib.contextmanager
    def _transitions(self, node: InteractionNode) -> Iterator[None]:
        """Print a line if the node's role, term or known leader changes inside the block."""
        before = self._observe(node)
        try:
            yield
        finally:
            after = self._observe(node)
            if before is not None and after is not None and after != before:
                self.output.write(f"state {node.id}: {after} (was {before})")

    def _call(self, node: InteractionNode, operation: Callable[[RawNode], None]) -> None:
        """Run one RawNode input; expected errors are printed, broken invariants raise."""
        with self._transitions(node):
            try:
                operation(node.running)
            except InvariantViolation:
                raise
            except RaftError as error:
                self.output.error(_describe_error(error))

    # -- nodes -----------------------------------------------------------------------------

    def _add_nodes(self, case: TestCase) -> None:
        self._check_keys(case, _ADD_NODES_KEYS)
        (count_text,) = self._positional(case, "COUNT")
        count = case.parse_int(count_text, "count")
        voters = frozenset(NodeId(value) for value in case.ints("voters"))
        learners = frozenset(NodeId(value) for value in case.ints("learners"))
        index = case.int_arg("index", 1)
        read_only = case.single("read-only") or "safe"
        if read_only not in ("safe", "lease", "lease-based"):
            raise case.error(f"read-only must be safe or lease, not {read_only!r}")
        template = Config(
            id=NodeId(1),
            election_tick=case.int_arg("election-tick", 3),
            heartbeat_tick=case.int_arg("heartbeat-tick", 1),
            max_size_per_message=case.int_arg("max-size-per-message", NO_LIMIT),
            max_committed_size_per_ready=case.int_arg("max-committed-size-per-ready", NO_LIMIT),
            max_uncommitted_entries_size=case.int_arg("max-uncommitted-size", NO_LIMIT),
            max_inflight_messages=case.int_arg("max-inflight", NO_LIMIT),
            max_inflight_bytes=case.int_arg("max-inflight-bytes", 0),
            max_inflight_entries=case.int_arg("max-inflight-entries", 0),
            check_quorum=case.bool_arg("checkquorum", default=False),
            pre_vote=case.bool_arg("prevote", default=False),
            read_only_option=(
                ReadOnlyOption.SAFE if read_only == "safe" else ReadOnlyOption.LEASE_BASED
            ),
            disable_proposal_forwarding=case.bool_arg("disable-proposal-forwarding", default=False),
            step_down_on_removal=case.bool_arg("step-down-on-removal", default=True),
            rng=_ScriptedRandom(),
        )
        bootstrap = Snapshot()
        if voters or learners:
            if index < 1:
                raise case.error("index must be at least 1 to bootstrap a configuration")
            bootstrap = Snapshot(
                SnapshotMetadata(index=index, term=1, conf_state=ConfState(voters, learners))
            )
        for _ in range(count):
            node_id = NodeId(len(self.nodes) + 1)
            state_machine = ToyStateMachine(bootstrap)
            storage = InteractionStorage(state_machine)
            if not bootstrap.is_empty():
                storage.apply_snapshot(bootstrap)
                # The log holds a term-1 entry, so the node is at least at term 1.
                storage.set_hard_state(HardState(term=1, commit=index))
            config = dataclasses.replace(
                template, id=node_id, applied=bootstrap.metadata.index, rng=_ScriptedRandom()
            )
            self.nodes[node_id] = InteractionNode(
                id=node_id,
                config=config,
                storage=storage,
                state_machine=state_machine,
                raw_node=RawNode(config, storage),
            )

    def _set_randomized_election_timeout(self, case: TestCase) -> None:
        self._check_keys(case, {"timeout"})
        node = self._one(case)
        timeout = case.int_arg("timeout", node.config.election_tick)
        election_tick = node.config.election_tick
        if not election_tick <= timeout < 2 * election_tick:
            raise case.error(f"timeout must be in [{election_tick}, {2 * election_tick})")
        assert isinstance(node.config.rng, _ScriptedRandom)
        node.config.rng.offset = timeout - election_tick

    def _crash(self, case: TestCase) -> None:
        node = self._one(case)
        if node.raw_node is None:
            raise case.error(f"node {node.id} is already down")
        node.raw_node = None
        hard_state = node.storage.hard_state
        self.output.write(
            f"{node.id} is down; durable: HardState {describe_hard_state(hard_state)} "
            f"last index {node.storage.last_index()} applied {node.state_machine.applied_index}"
        )

    def _restart(self, case: TestCase) -> None:
        node = self._one(case)
        node.raw_node = None
        # Connections to the node broke when it went down: what was in flight is lost.
        lost = [message for message in self.messages if message.to == node.id]
        self.messages = [message for message in self.messages if message.to != node.id]
        for message in lost:
            self.output.write(f"dropped ({node.id} was down): {describe_message(message)}")
        node.storage.durable_conf_state = node.state_machine.conf_state
        node.config = dataclasses.replace(node.config, applied=node.state_machine.applied_index)
        raw_node = RawNode(node.config, node.storage)
        node.raw_node = raw_node
        status = raw_node.status()
        self.output.write(
            f"{node.id} restarted: {self._observe(node)} "
            f"commit={status.committed} applied={status.applied} "
            f"conf: {describe_conf_state(status.conf_state)}"
        )

    # -- inputs ----------------------------------------------------------------------------

    def _campaign(self, case: TestCase) -> None:
        self._call(self._one(case), lambda raw_node: raw_node.campaign())

    def _propose(self, case: TestCase) -> None:
        node_text, data_text = self._positional(case, "ID", "DATA")
        data = data_text.encode()
        self._call(self._node(case, node_text), lambda raw_node: raw_node.propose(data))

    def _propose_conf_change(self, case: TestCase) -> None:
        self._check_keys(case, {"transition"})
        node = self._one(case)
        transition_name = case.single("transition") or "auto"
        if transition_name not in _TRANSITIONS:
            raise case.error(f"unknown transition {transition_name!r}")
        changes: list[ConfChangeSingle] = []
        for token in case.input.split():
            kind = _CONF_CHANGE_TYPES.get(token[0])
            if kind is None:
                raise case.error(f"conf change {token!r}: expected v<id>, l<id> or r<id>")
            changes.append(
                ConfChangeSingle(kind, NodeId(case.parse_int(token[1:], "conf change id")))
            )
        change = ConfChange(tuple(changes), _TRANSITIONS[transition_name])
        self._call(node, lambda raw_node: raw_node.propose_conf_change(change))

    def _tick_election(self, case: TestCase) -> None:
        node = self._one(case)
        self._tick_times(node, node.config.election_tick)

    def _tick_heartbeat(self, case: TestCase) -> None:
        node = self._one(case)
        self._tick_times(node, node.config.heartbeat_tick)

    def _tick(self, case: TestCase) -> None:
        node_text, ticks_text = self._positional(case, "ID", "TICKS")
        self._tick_times(self._node(case, node_text), case.parse_int(ticks_text, "ticks"))

    def _tick_times(self, node: InteractionNode, count: int) -> None:
        for _ in range(count):
            self._call(node, lambda raw_node: raw_node.tick())

    def _peer_command(self, case: TestCase, operation: Callable[[RawNode, NodeId], None]) -> None:
        node_text, peer_text = self._positional(case, "ID", "PEER")
        peer = NodeId(case.parse_int(peer_text, "peer id"))
        self._call(self._node(case, node_text), lambda raw_node: operation(raw_node, peer))

    def _report_unreachable(self, case: TestCase) -> None:
        self._peer_command(case, lambda raw_node, peer: raw_node.report_unreachable(peer))

    def _report_snapshot(self, case: TestCase) -> None:
        self._check_keys(case, {"ok"})
        ok = case.bool_arg("ok", default=True)
        self._peer_command(case, lambda raw_node, peer: raw_node.report_snapshot(peer, ok))

    def _transfer_leadership(self, case: TestCase) -> None:
        self._check_keys(case, {"from", "to"})
        node = self._node(case, case.single("from") or "")
        target = NodeId(case.int_arg("to", 0))
        self._call(node, lambda raw_node: raw_node.transfer_leader(target))

    def _read_index(self, case: TestCase) -> None:
        node_text, context_text = self._positional(case, "ID", "CONTEXT")
        context = context_text.encode()
        self._call(self._node(case, node_text), lambda raw_node: raw_node.read_index(context))

    # -- Ready handling --------------------------------------------------------------------

    def _process_ready_command(self, case: TestCase) -> None:
        nodes = self._ids(case)
        for node in nodes:
            if len(nodes) > 1:
                self.output.write(f"> {node.id} handling Ready")
                with self.output.indented():
                    self.process_ready(node)
            else:
                self.process_ready(node)

    def process_ready(self, node: InteractionNode) -> None:
        """Handle one Ready of `node` completely (see the module docstring)."""
        raw_node = node.running
        if not raw_node.has_ready():
            self.output.write("<no Ready>")
            return
        with self._transitions(node):
            ready = raw_node.ready()
            self.output.write(describe_ready(ready))
            if ready.snapshot is not None and not ready.snapshot.is_empty():
                node.storage.apply_snapshot(ready.snapshot)
                node.state_machine.restore(ready.snapshot)
            node.storage.append(ready.entries)
            if ready.hard_state is not None:
                node.storage.set_hard_state(ready.hard_state)
            for message in (*ready.messages, *ready.persisted_messages):
                self.send(message)
            for entry in ready.committed_entries:
                self._apply(node, entry)
            raw_node.advance(ready)

    def _apply(self, node: InteractionNode, entry: Entry) -> None:
        state_machine = node.state_machine
        if entry.index != state_machine.applied_index + 1:
            raise SafetyViolation(
                f"node {node.id} applies {entry.index} after {state_machine.applied_index}"
            )
        agreed = self.applied_entries.setdefault(entry.index, entry)
        if agreed != entry:
            raise SafetyViolation(
                f"node {node.id} applies {describe_entry(entry)} at {entry.index}, "
                f"but {describe_entry(agreed)} was applied there before"
            )
        conf_state = None
        if entry.kind is EntryKind.CONF_CHANGE:
            change = ConfChange.decode(entry.data)
            try:
                conf_state = node.running.apply_conf_change(change)
            except InvariantViolation:
                raise
            except RaftError as error:
                # A committed change that does not apply is a no-op on every node alike.
                self.output.error(f"{node.id} ignored conf change at {entry.index}: {error}")
            else:
                self.output.write(
                    f"{node.id} applied conf change {describe_conf_change(change)} at "
                    f"{entry.index}: {describe_conf_state(conf_state)}"
                )
        state_machine.apply(entry, conf_state)

    # -- the network -----------------------------------------------------------------------

    def _partitioned(self, message: Message) -> bool:
        if self.partition is None:
            return False
        return self.partition.get(message.sender, -1) != self.partition.get(message.to, -1)

    def send(self, message: Message) -> None:
        """Put `message` on the network, unless a partition is in the way."""
        if self._partitioned(message):
            self.output.write(f"dropped (partitioned): {describe_message(message)}")
        else:
            self.messages.append(message)

    def _drop_reason(self, message: Message) -> str | None:
        target = self.nodes.get(message.to)
        if target is None:
            return f"no node {message.to}"
        if target.raw_node is None:
            return f"{message.to} is down"
        if self._partitioned(message):
            return "partitioned"
        return None

    def deliver(self, to: NodeId, message_type: MessageType | None, drop: bool) -> int:
        """Deliver (or drop) the in-flight messages for `to`, optionally of one type only.
        Returns how many messages were handled."""
        selected: list[Message] = []
        kept: list[Message] = []
        for message in self.messages:
            wanted = message.to == to and (message_type is None or message.type is message_type)
            (selected if wanted else kept).append(message)
        self.messages = kept
        for message in selected:
            if drop:
                self.output.write(f"dropped: {describe_message(message)}")
                continue
            reason = self._drop_reason(message)
            if reason is not None:
                self.output.write(f"dropped ({reason}): {describe_message(message)}")
                continue
            self.output.write(describe_message(message))
            node = self.nodes[to]
            with self.output.indented():
                self._call(node, _stepping(message))
        return len(selected)

    def _deliver_msgs(self, case: TestCase) -> None:
        self._check_keys(case, {"drop", "type"})
        message_type: MessageType | None = None
        type_name = case.single("type")
        if type_name is not None:
            matching = [kind for kind in MessageType if kind.value == type_name]
            if not matching:
                raise case.error(f"unknown message type {type_name!r}")
            message_type = matching[0]
        targets = [NodeId(case.parse_int(text, "node id")) for text in case.positional()]
        dropped = [NodeId(value) for value in case.ints("drop")]
        if not targets and not dropped:
            targets = sorted({message.to for message in self.messages})
        handled = 0
        for target in targets:
            handled += self.deliver(target, message_type, drop=False)
        for target in dropped:
            handled += self.deliver(target, message_type, drop=True)
        if handled == 0:
            self.output.write("no messages")

    def _print_msgs(self, case: TestCase) -> None:
        targets = {NodeId(case.parse_int(text, "node id")) for text in case.positional()}
        shown = [m for m in self.messages if not targets or m.to in targets]
        for message in shown:
            self.output.write(describe_message(message))
        if not shown:
            self.output.write("no messages")

    def _stabilize(self, case: TestCase) -> None:
        nodes = self._ids(case) or list(self.nodes.values())
        self.stabilize(nodes)

    def stabilize(self, nodes: list[InteractionNode]) -> None:
        """Handle Readies and deliver messages among `nodes` until nothing is left to do."""
        for _ in range(MAX_STABILIZE_ROUNDS):
            done = True
            for node in nodes:
                if node.raw_node is not None and node.raw_node.has_ready():
                    done = False
                    self.output.write(f"> {node.id} handling Ready")
                    with self.output.indented():
                        self.process_ready(node)
            for node in nodes:
                if any(message.to == node.id for message in self.messages):
                    done = False
                    self.output.write(f"> {node.id} receiving messages")
                    with self.output.indented():
                        self.deliver(node.id, None, drop=False)
            if done:
                return
        raise DataDrivenError(f"stabilize: no fixed point after {MAX_STABILIZE_ROUNDS} rounds")

    def _partition(self, case: TestCase) -> None:
        groups = [_parse_group(text, case) for text in case.positional()]
        if not groups:
            raise case.error("partition takes groups like (1,2) (3)")
        self.partition = {}
        for number, group in enumerate(groups):
            for node_id in group:
                if node_id in self.partition:
                    raise case.error(f"node {node_id} is in two groups")
                self.partition[node_id] = number

    def _heal(self, case: TestCase) -> None:
        self.partition = None

    def _send_snapshot(self, case: TestCase) -> None:
        sender_text, recipient_text = self._positional(case, "FROM", "TO")
        sender = self._node(case, sender_text)
        recipient = NodeId(case.parse_int(recipient_text, "recipient"))
        snapshot = sender.storage.snapshot()
        if snapshot.is_empty():
            self.output.error(f"error: node {sender.id} has no snapshot")
            return
        message = Message(
            type=MessageType.SNAPSHOT,
            to=recipient,
            sender=sender.id,
            term=sender.running.status().hard_state.term,
            snapshot=snapshot,
        )
        self.output.write(describe_message(message))
        self.send(message)

    # -- inspection ------------------------------------------------------------------------

    def _raft_log(self, case: TestCase) -> None:
        self._print_log(self._one(case).storage)

    def _print_log(self, storage: MemoryStorage) -> None:
        first, last = storage.first_index(), storage.last_index()
        if last < first:
            self.output.write(f"log is empty: first index={first}, last index={last}")
            return
        for entry in storage.entries(first, last + 1, NO_LIMIT):
            self.output.write(describe_entry(entry))

    def _raft_state(self, case: TestCase) -> None:
        for node in self.nodes.values():
            if node.raw_node is None:
                self.output.write(f"{node.id}: down")
                continue
            status = node.raw_node.status()
            conf = status.conf_state
            voter = "Voter" if node.id in conf.voters | conf.voters_outgoing else "Non-Voter"
            self.output.write(
                f"{node.id}: {status.soft_state.role.value} ({voter}) "
                f"Term:{status.hard_state.term} Lead:{describe_node(status.soft_state.leader_id)}"
            )

    def _status(self, case: TestCase) -> None:
        node = self._one(case)
        status = node.running.status()
        self.output.write(
            f"{node.id}: {status.soft_state.role.value} {describe_hard_state(status.hard_state)} "
            f"Lead:{describe_node(status.soft_state.leader_id)} Applied:{status.applied} "
            f"Log:[{status.first_index}, {status.last_index}]"
        )
        self.output.write(f"conf: {describe_conf_state(status.conf_state)}")
        if status.lead_transferee:
            self.output.write(f"transferring leadership to {status.lead_transferee}")
        for peer, progress in sorted(status.progress.items()):
            parts = [f"{peer}: {progress.state} match={progress.match} next={progress.next}"]
            if progress.is_learner:
                parts.append("learner")
            if progress.inflight_count:
                parts.append(f"inflight={progress.inflight_count}")
            if progress.pending_snapshot:
                parts.append(f"pending_snap={progress.pending_snapshot}")
            if not progress.recent_active:
                parts.append("inactive")
            self.output.write(" ".join(parts))

    def _state_machine(self, case: TestCase) -> None:
        state_machine = self._one(case).state_machine
        data = " ".join(describe_data(item) for item in state_machine.data)
        self.output.write(
            f"applied={state_machine.applied_index} "
            f"conf: {describe_conf_state(state_machine.conf_state)}"
        )
        self.output.write(f"data: [{data}]")

    def _compact(self, case: TestCase) -> None:
        node_text, index_text = self._positional(case, "ID", "INDEX")
        node = self._node(case, node_text)
        index = case.parse_int(index_text, "index")
        try:
            data, conf_state = node.state_machine.snapshot_at(index)
        except ValueError as error:
            self.output.error(f"error: {error}")
            return
        try:
            node.storage.create_snapshot(index, conf_state, data)
            node.storage.compact(index)
        except RaftError as error:
            self.output.error(_describe_error(error))
            return
        self._print_log(node.storage)

    def _log_level(self, case: TestCase) -> None:
        (level,) = self._positional(case, "none|info")
        if level not in ("none", "info"):
            raise case.error(f"unknown log level {level!r}")
        self.output.quiet = level == "none"
