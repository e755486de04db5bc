"""Peer-frame fuzzing: hostile but well-formed frames at a running cluster's peer ports.

Three real `Node`s (the KV state machine over memory storage, on loopback over the TCP
transport, or the gRPC one with `--peer-transport grpc`) run in this process; a member
added and removed at start gives the cluster a removed id. Per batch, an attacker — a raw
client (RawTcpPeerClient or RawPeerClient), not a node — sends frames built by a seeded
`Random` from the cluster's state at the batch's start (term T, leader, last index), each
frame on a connection or call of its own (a frame a node finds malformed ends it), and
snapshots whole. After each batch it checks that:
- no node crashed or stopped, and every frame was taken or refused as malformed;
- no node's term went past what the cluster's own elections made (hostile terms are at
  least T + TERM_MARGIN); while the leader stayed the same, no follower's commit index
  passed the leader's (no forged commit was taken);
- the cluster commits a write through its leader, and every member's state hash is equal
  once it applied it.

What it sends: from unknown and removed ids, any message type with any numbers (huge, zero
and current terms, commits and indexes past the log, contexts up to 64 KiB); from members,
only what no correct member could send, or what carries no authority: old terms; a second
"leader" in the current term; the leader's id with commits, probes or acknowledgements
past the log; absurd rejection hints; misaddressed messages; TimeoutNow from a follower;
entries whose terms go backwards; garbage proposals; snapshots whose data or metadata is
garbage. Never what a member could believably send (a newer term from a member's id, an
append or acknowledgement the leader's log could hold): a forged believable message is
indistinguishable from a real one, which is what authenticated peers (mutual TLS) are for.

    python -m raftkv.testing.peer_fuzz --seeds 0:20 --batches 30 [--peer-transport grpc]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import TypeVar

from raftkv.kv.commands import KvCommand, Put, encode_command
from raftkv.kv.state_machine import KvStateMachine
from raftkv.raft.builder import PEER_TRANSPORT_KINDS, PeerTransportKind
from raftkv.raft.core.errors import InvalidArgument
from raftkv.raft.core.types import (
    MAX_INDEX,
    MAX_TERM,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    NodeId,
    Snapshot,
    SnapshotMetadata,
)
from raftkv.raft.driver.envelope import encode_snapshot
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.storage.memory import MemoryStorage
from raftkv.raft.transport.base import Transport, TransportError
from raftkv.raft.transport.codec import encode_message
from raftkv.raft.transport.grpc_transport import GrpcTransport
from raftkv.raft.transport.raw_client import CallRefused, RawPeerClient
from raftkv.raft.transport.raw_tcp_client import RawTcpPeerClient
from raftkv.raft.transport.settings import PeerTransportSettings
from raftkv.raft.transport.tcp_transport import TcpTransport
from raftkv.testing.processes import free_port

__all__ = ["PeerFuzzResult", "main", "run_seed"]

_T = TypeVar("_T")

CLUSTER_ID = 7
MEMBERS = (NodeId(1), NodeId(2), NodeId(3))
REMOVED = NodeId(4)
STRANGERS = (NodeId(5), NodeId(99), NodeId(2**32), NodeId(2**64 - 1))
# Hostile terms are at least this far past the cluster's: its own elections, a few per
# batch at most, never get there.
TERM_MARGIN = 1000
# Short ticks: an election in about half a second.
SETTINGS = NodeSettings(tick_interval_s=0.05, election_ticks=10, heartbeat_ticks=2)
CALL_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 15.0


@dataclass(slots=True)
class PeerFuzzResult:
    seed: int
    frames: int = 0
    frames_refused: int = 0
    snapshots: int = 0
    snapshots_refused: int = 0
    # Leader changes after the first election (most of any one node's count).
    leader_changes: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def describe(self) -> str:
        return (
            f"seed {self.seed}: {self.frames} frames ({self.frames_refused} refused as "
            f"malformed), {self.snapshots} snapshots ({self.snapshots_refused} refused), "
            f"{self.leader_changes} leader changes"
        )


@dataclass(frozen=True, slots=True)
class _View:
    """The cluster as the attacker sees it at a batch's start."""

    term: int
    leader: NodeId
    last_index: int


class _Violation(Exception):
    """A check failed; the message says which."""


class _Cluster:
    def __init__(self, transport: PeerTransportKind) -> None:
        self.transport = transport
        self.addresses = {node: f"127.0.0.1:{free_port()}" for node in MEMBERS}
        self.nodes: dict[NodeId, Node] = {}

    async def start(self, rng: Random) -> None:
        for node_id, address in self.addresses.items():
            storage = MemoryStorage()
            node = Node(
                node_id=node_id,
                storage=storage,
                transport=self._transport(address),
                state_machine=KvStateMachine(storage.app_data()),
                settings=SETTINGS,
                peers=self.addresses,
                rng=Random(rng.getrandbits(64)),
            )
            node.bootstrap(self.addresses)
            self.nodes[node_id] = node
        for node in self.nodes.values():
            await node.start()
        leader = await self.leader()
        # A removed id: added (at an address nobody listens on) and removed.
        await leader.add_learner(REMOVED, f"127.0.0.1:{free_port()}", timeout=WRITE_TIMEOUT_S)
        await leader.remove_member(REMOVED, timeout=WRITE_TIMEOUT_S)

    async def stop(self) -> None:
        for node in self.nodes.values():
            await node.stop(transfer_leadership=False)

    def _transport(self, address: str) -> Transport:
        settings = PeerTransportSettings(listen_address=address, cluster_id=CLUSTER_ID)
        if self.transport == "grpc":
            return GrpcTransport(settings)
        return TcpTransport(settings)

    async def leader(self) -> Node:
        """The leader every member agrees on (waits for one)."""
        deadline = time.monotonic() + WRITE_TIMEOUT_S
        while True:
            leaders = {node.leader_id for node in self.nodes.values()}
            leader = leaders.pop() if len(leaders) == 1 else None
            if leader in self.nodes and self.nodes[leader].is_leader:
                return self.nodes[leader]
            if time.monotonic() > deadline:
                raise _Violation(f"no agreed leader within {WRITE_TIMEOUT_S}s: {self.line()}")
            await asyncio.sleep(0.02)

    def check_running(self) -> None:
        for node in self.nodes.values():
            status = node.status()
            if node.failure is not None or status.stopped:
                raise _Violation(f"node {node.id} stopped: {node.failure!r}")

    def line(self) -> str:
        parts = []
        for node_id, node in sorted(self.nodes.items()):
            status = node.status()
            parts.append(
                f"{node_id}: {status.role.value} term {status.term} leader {status.leader_id} "
                f"commit {status.commit_index} last {status.last_index}"
            )
        return "; ".join(parts)


class _Attacker:
    """A raw client: the frames go out as built, whatever a node would send."""

    def __init__(self, cluster: _Cluster, result: PeerFuzzResult) -> None:
        self.client: RawPeerClient | RawTcpPeerClient
        if cluster.transport == "grpc":
            self.client = RawPeerClient(CLUSTER_ID, timeout_seconds=CALL_TIMEOUT_S)
        else:
            self.client = RawTcpPeerClient(CLUSTER_ID, timeout_seconds=CALL_TIMEOUT_S)
        self.cluster = cluster
        self.result = result

    async def close(self) -> None:
        await self.client.close()

    async def frame(self, target: NodeId, messages: list[Message]) -> None:
        self.result.frames += 1
        try:
            await self.client.send(self.cluster.addresses[target], messages)
        except CallRefused:
            self.result.frames_refused += 1
        except TransportError as error:
            self._failed(error)

    async def snapshot(self, target: NodeId, message: Message) -> None:
        self.result.snapshots += 1
        try:
            await self.client.send_snapshot(self.cluster.addresses[target], message)
        except CallRefused:
            self.result.snapshots_refused += 1
        except TransportError as error:
            self._failed(error)

    def _failed(self, error: TransportError) -> None:
        self.cluster.check_running()  # a stopped node explains it best
        raise _Violation(str(error))


# -- what the attacker sends ---------------------------------------------------------------


def _pick(rng: Random, options: Sequence[_T]) -> _T:
    return options[rng.randrange(len(options))]


def _numbers(rng: Random, view: _View) -> int:
    """An index, commit or hint: around the log, past it, or absurd."""
    last = view.last_index
    return _pick(rng, (0, 1, max(last - 1, 0), last, last + 1, last + 10**6, MAX_INDEX))


def _past_the_log(rng: Random, view: _View) -> int:
    return _pick(rng, (view.last_index + 10**6, view.last_index + 10**9, MAX_INDEX))


def _context(rng: Random) -> bytes:
    return rng.randbytes(_pick(rng, (0, 0, 1, 64, 4096, 65536)))


def _entries(rng: Random, after: int, term: int) -> tuple[Entry, ...]:
    """Up to three entries after `after`; sometimes with terms going backwards."""
    count = rng.randrange(4)
    terms = sorted((rng.randrange(1, max(term, 1) + 1) for _ in range(count)), reverse=True)
    if count and rng.random() < 0.5:
        terms = sorted(terms)  # well ordered (still refused: see the callers)
    return tuple(
        Entry(entry_term, after + 1 + offset, _pick(rng, tuple(EntryKind)), rng.randbytes(16))
        for offset, entry_term in enumerate(terms)
    )


_STRANGER_TYPES = (
    MessageType.HEARTBEAT,
    MessageType.APPEND,
    MessageType.VOTE,
    MessageType.PRE_VOTE,
    MessageType.TIMEOUT_NOW,
    MessageType.APPEND_RESPONSE,
    MessageType.HEARTBEAT_RESPONSE,
    MessageType.VOTE_RESPONSE,
    MessageType.READ_INDEX,
    MessageType.READ_INDEX_RESPONSE,
    MessageType.TRANSFER_LEADER,
    MessageType.PROPOSE,
)


def _from_a_stranger(rng: Random, view: _View, target: NodeId) -> Message:
    """Anything, from an id no member knows or one that was removed: never heard."""
    sender = _pick(rng, (*STRANGERS, REMOVED))
    message_type = _pick(rng, _STRANGER_TYPES)
    forwarded = message_type in (MessageType.PROPOSE, MessageType.READ_INDEX)
    term = 0 if forwarded else _pick(rng, (view.term + TERM_MARGIN, 2**62, MAX_TERM))
    index = _numbers(rng, view)
    entries = _entries(rng, index, term)
    if message_type in (MessageType.READ_INDEX, MessageType.READ_INDEX_RESPONSE):
        entries = (Entry(0, 0, data=b"r" + rng.randbytes(8)),)
    elif message_type is MessageType.PROPOSE:
        entries = (Entry(0, 0, data=rng.randbytes(40)),)
    elif message_type is MessageType.APPEND:
        entries = tuple(sorted(entries, key=lambda entry: entry.index))
        entries = tuple(Entry(term, e.index, e.kind, e.data) for e in entries)
    else:
        entries = ()
    return Message(
        message_type,
        to=target,
        sender=sender,
        term=term,
        log_term=min(term, _pick(rng, (0, 1, view.term))),
        index=index,
        entries=entries,
        commit=_numbers(rng, view),
        reject=rng.random() < 0.5,
        reject_hint=_numbers(rng, view),
        context=_context(rng),
    )


def _from_a_member(rng: Random, view: _View, target: NodeId) -> Message:
    """What no correct member could send, or what carries no authority."""
    followers = [node for node in MEMBERS if node != view.leader]
    other = _pick(rng, [node for node in MEMBERS if node != target])
    old_term = rng.randrange(1, view.term) if view.term > 1 else view.term
    choice = rng.randrange(9)
    if choice == 0:  # an old term, any type a peer sends
        message_type = _pick(rng, _STRANGER_TYPES[:8])
        return Message(
            message_type,
            to=target,
            sender=other,
            term=old_term,
            index=_numbers(rng, view),
            commit=_numbers(rng, view),
            reject_hint=_numbers(rng, view),
            context=_context(rng),
        )
    if choice == 1 and other != view.leader:  # a second leader in this term
        message_type = _pick(rng, (MessageType.HEARTBEAT, MessageType.APPEND))
        index = _past_the_log(rng, view) if message_type is MessageType.APPEND else 0
        return Message(
            message_type,
            to=target,
            sender=other,
            term=view.term,
            log_term=view.term,
            index=index,
            entries=tuple(Entry(view.term, index + 1 + n, data=b"x") for n in range(2))
            if message_type is MessageType.APPEND and index < MAX_INDEX - 2
            else (),
            commit=_past_the_log(rng, view),
        )
    if choice == 2 and target != view.leader:  # the leader's id, past the log
        return Message(
            MessageType.HEARTBEAT,
            to=target,
            sender=view.leader,
            term=view.term,
            commit=_past_the_log(rng, view),
            context=_context(rng),
        )
    if choice == 3 and target != view.leader:  # the leader's id probing past the log
        index = _past_the_log(rng, view)
        return Message(
            MessageType.APPEND,
            to=target,
            sender=view.leader,
            term=view.term,
            log_term=view.term,
            index=index,
            commit=_past_the_log(rng, view),
        )
    if choice == 4 and target == view.leader:  # acknowledgements past the log, absurd hints
        reject = rng.random() < 0.5
        return Message(
            _pick(rng, (MessageType.APPEND_RESPONSE, MessageType.HEARTBEAT_RESPONSE)),
            to=target,
            sender=_pick(rng, followers),
            term=view.term,
            index=_numbers(rng, view) if reject else _past_the_log(rng, view),
            commit=_past_the_log(rng, view),
            reject=reject,
            reject_hint=_numbers(rng, view),
            log_term=_pick(rng, (0, view.term, MAX_TERM)),
            context=_context(rng),
        )
    if choice == 5 and view.leader not in (target, other):  # a follower's TimeoutNow
        return Message(MessageType.TIMEOUT_NOW, to=target, sender=other, term=view.term)
    if choice == 6:  # entries whose terms go backwards (malformed: the frame is refused)
        entries = (Entry(view.term, 11), Entry(max(view.term - 1, 0), 12))
        return Message(
            MessageType.APPEND,
            to=target,
            sender=view.leader if view.leader != target else other,
            term=view.term,
            log_term=view.term,
            index=10,
            entries=entries,
        )
    if choice == 7:  # a garbage proposal, forwarded
        return Message(
            MessageType.PROPOSE,
            to=target,
            sender=other,
            entries=(Entry(0, 0, _pick(rng, tuple(EntryKind)), rng.randbytes(30)),),
        )
    # Misaddressed: for another node.
    return Message(
        MessageType.HEARTBEAT,
        to=_pick(rng, [node for node in MEMBERS if node != target]),
        sender=target,
        term=view.term + TERM_MARGIN,
        commit=_past_the_log(rng, view),
    )


def _snapshot(rng: Random, view: _View, target: NodeId) -> Message:
    """A snapshot that must never be installed: garbage data or metadata from a member, or
    anything from a stranger."""
    members = ConfState(voters=frozenset(MEMBERS))
    index = view.last_index + rng.randrange(1, 10**6)
    stranger = rng.random() < 0.3
    if stranger:
        sender, term = _pick(rng, (*STRANGERS, REMOVED)), view.term + TERM_MARGIN
    else:
        sender = view.leader if view.leader != target else _pick(rng, MEMBERS[:2])
        if sender == target:
            sender = MEMBERS[2]
        term = view.term
    data = _pick(
        rng,
        (
            rng.randbytes(rng.randrange(1, 20_000)),
            encode_snapshot(dict.fromkeys(MEMBERS, "127.0.0.1:1"), rng.randbytes(5000)),
            encode_snapshot(dict.fromkeys(MEMBERS, "127.0.0.1:1"), b"RAFTKVS3" + bytes(64)),
        ),
    )
    if stranger and rng.random() < 0.5:
        # Data this node could install: only who sends it is wrong.
        empty = KvStateMachine(MemoryStorage().app_data()).snapshot()
        data = encode_snapshot(dict.fromkeys(MEMBERS, "127.0.0.1:1"), empty)
    conf_state = _pick(
        rng,
        (
            members,
            members,
            ConfState(),  # no voters
            ConfState(voters=frozenset(MEMBERS), learners=frozenset({MEMBERS[0]})),
        ),
    )
    snapshot_term = _pick(rng, (term, term, term + 1))  # newer than the message: refused
    return Message(
        MessageType.SNAPSHOT,
        to=target,
        sender=sender,
        term=term,
        snapshot=Snapshot(SnapshotMetadata(index, snapshot_term, conf_state), data),
    )


# -- one run -------------------------------------------------------------------------------


async def _batch(
    cluster: _Cluster, attacker: _Attacker, rng: Random, frames: int, number: int
) -> None:
    leader = await cluster.leader()
    status = leader.status()
    view = _View(status.term, leader.id, max(n.status().last_index for n in cluster.nodes.values()))
    leader_changes = {node.id: node.stats.leader_changes for node in cluster.nodes.values()}
    for _ in range(frames):
        target = _pick(rng, MEMBERS)
        kind = rng.random()
        if kind < 0.15:
            await attacker.snapshot(target, _snapshot(rng, view, target))
            continue
        build: Callable[[Random, _View, NodeId], Message] = (
            _from_a_stranger if kind < 0.55 else _from_a_member
        )
        message = build(rng, view, target)
        try:
            encode_message(message)
        except InvalidArgument:
            continue  # not even encodable (a number past u64): nothing to send
        await attacker.frame(target, [message])
    await _check(cluster, view, leader, leader_changes, number)


async def _check(
    cluster: _Cluster, view: _View, leader: Node, leader_changes: dict[NodeId, int], number: int
) -> None:
    cluster.check_running()
    statuses = {node_id: node.status() for node_id, node in cluster.nodes.items()}
    for node_id, status in statuses.items():
        if status.term >= view.term + TERM_MARGIN:
            raise _Violation(f"batch {number}: node {node_id} adopted term {status.term}")
    stable = leader.is_leader and all(
        node.stats.leader_changes == leader_changes[node.id] for node in cluster.nodes.values()
    )
    if stable:
        # A follower learns its commit index from its leader only.
        top = statuses[leader.id].commit_index
        for node_id, status in statuses.items():
            if status.commit_index > top:
                raise _Violation(
                    f"batch {number}: node {node_id} passed the leader's commit index: "
                    f"{cluster.line()}"
                )
    # The cluster still commits, and every member ends with the same state.
    current = await cluster.leader()
    command = encode_command(KvCommand(Put(b"batch", b"%d" % number), "", 0))
    await current.propose(command, timeout=WRITE_TIMEOUT_S)
    index = current.status().commit_index
    deadline = time.monotonic() + WRITE_TIMEOUT_S
    while any(node.status().applied_index < index for node in cluster.nodes.values()):
        cluster.check_running()
        if time.monotonic() > deadline:
            raise _Violation(f"batch {number}: members did not apply {index}: {cluster.line()}")
        await asyncio.sleep(0.02)
    hashes = set()
    for node in cluster.nodes.values():
        machine = node.state_machine
        assert isinstance(machine, KvStateMachine)
        hashes.add(machine.state_hash())
    if len(hashes) != 1:
        raise _Violation(f"batch {number}: members' states differ: {cluster.line()}")


async def _run(
    seed: int, batches: int, frames: int, transport: PeerTransportKind
) -> PeerFuzzResult:
    rng = Random(seed)
    result = PeerFuzzResult(seed)
    cluster = _Cluster(transport)
    attacker = _Attacker(cluster, result)
    try:
        await cluster.start(rng)
        for number in range(batches):
            await _batch(cluster, attacker, rng, frames, number)
    except _Violation as violation:
        result.failures.append(str(violation))
    finally:
        result.leader_changes = max(
            (node.stats.leader_changes - 1 for node in cluster.nodes.values()), default=0
        )
        await attacker.close()
        await cluster.stop()
    return result


def run_seed(
    seed: int, *, batches: int = 3, frames: int = 30, transport: PeerTransportKind = "tcp"
) -> PeerFuzzResult:
    """One seeded run of `batches` batches of `frames` hostile frames (or snapshots) at
    nodes on `transport`; never raises for a violation (see `result.failures`)."""
    try:
        return asyncio.run(_run(seed, batches, frames, transport))
    except Exception as error:  # a crash of the run itself is a failure of the seed
        result = PeerFuzzResult(seed)
        result.failures.append(f"run raised {type(error).__name__}: {error}")
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0:10", help="A:B, half-open")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--frames", type=int, default=50, help="frames per batch")
    parser.add_argument(
        "--peer-transport", choices=PEER_TRANSPORT_KINDS, default="tcp", help="(default tcp)"
    )
    arguments = parser.parse_args(argv)
    # Nodes log every refused stream; a sweep shows failures only.
    logging.basicConfig(level=logging.CRITICAL)
    first, last = (int(part) for part in arguments.seeds.split(":"))
    started = time.monotonic()
    failed = 0
    for seed in range(first, last):
        result = run_seed(
            seed,
            batches=arguments.batches,
            frames=arguments.frames,
            transport=arguments.peer_transport,
        )
        print(result.describe())
        if not result.ok:
            failed += 1
            print("  FAILED:\n  " + "\n  ".join(result.failures))
            print(
                f"  reproduce: python -m raftkv.testing.peer_fuzz --seeds {seed}:{seed + 1} "
                f"--peer-transport {arguments.peer_transport}"
            )
    count = last - first
    print(f"{count} seeds, {failed} failed, {time.monotonic() - started:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
