"""The packet simulator: delay, loss, duplication, reordering, partitions, clogging.

Rules:
- Every message gets its own delay, so two messages between the same pair of nodes can
  arrive in either order (reordering); with probability `duplicate` a second copy travels
  with an independent delay.
- Partitions are sets of blocked *directed* links, checked when a message is due: a message
  in flight when a partition starts is lost. A symmetric partition blocks both directions;
  an asymmetric one only one.
- Clogging freezes every link of a node until a given step: its due messages wait (they are
  not lost) and go out once the clog ends, all at once.
- The network holds at most `max_in_flight` messages; beyond that it drops, like a full
  socket buffer.

Dropped messages are reported through `Delivery.dropped`, so the cluster can tell a
snapshot's sender that the snapshot failed (`report_snapshot(peer, ok=False)`).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from raftkv.raft.core.types import Message, NodeId
from raftkv.testing.sim.core.scenario import NetworkProfile

__all__ = ["Delivery", "Network", "NetworkStats", "Packet"]


@dataclass(frozen=True, slots=True)
class Packet:
    message: Message
    # The sender's incarnation when it sent the message: a report about the message (a
    # failed snapshot) only goes back to that same incarnation.
    sender_incarnation: int
    sent_at: int


@dataclass(slots=True)
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    blocked: int = 0
    overflowed: int = 0


@dataclass(slots=True)
class Delivery:
    """What the network does at one step: messages to deliver and messages dropped."""

    delivered: list[Packet] = field(default_factory=list)
    dropped: list[Packet] = field(default_factory=list)


class Network:
    def __init__(self, rng: random.Random, profile: NetworkProfile, max_in_flight: int) -> None:
        self.rng = rng
        self.profile = profile
        self.max_in_flight = max_in_flight
        self.stats = NetworkStats()
        # Blocked directed links (sender, receiver).
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        # Node -> step until which all its links are frozen.
        self.clogged_until: dict[NodeId, int] = {}
        # Heap of (due step, sequence number, packet); the sequence keeps order stable.
        self._queue: list[tuple[int, int, Packet]] = []
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._queue)

    # -- sending ---------------------------------------------------------------------------

    def send(self, now: int, message: Message, sender_incarnation: int) -> list[Packet]:
        """Put `message` on the wire. Returns packets dropped at once (loss, overflow)."""
        self.stats.sent += 1
        packet = Packet(message, sender_incarnation, now)
        profile = self.profile
        rng = self.rng
        if profile.loss and rng.random() < profile.loss:
            self.stats.lost += 1
            return [packet]
        if len(self._queue) >= self.max_in_flight:
            self.stats.overflowed += 1
            return [packet]
        self._push(now + self._delay(), packet)
        if profile.duplicate and rng.random() < profile.duplicate:
            self.stats.duplicated += 1
            if len(self._queue) < self.max_in_flight:
                self._push(now + self._delay(), packet)
        return []

    def _delay(self) -> int:
        profile = self.profile
        if profile.slow and self.rng.random() < profile.slow:
            return self.rng.randint(
                profile.min_delay, max(profile.min_delay, profile.slow_max_delay)
            )
        return self.rng.randint(profile.min_delay, profile.max_delay)

    def _push(self, due: int, packet: Packet) -> None:
        self._sequence += 1
        heapq.heappush(self._queue, (due, self._sequence, packet))

    # -- delivering ------------------------------------------------------------------------

    def due(self, now: int) -> Delivery:
        """Pop every message due at or before `now`, in due order."""
        delivery = Delivery()
        queue = self._queue
        while queue and queue[0][0] <= now:
            _, _, packet = heapq.heappop(queue)
            message = packet.message
            link = (message.sender, message.to)
            if link in self.blocked:
                self.stats.blocked += 1
                delivery.dropped.append(packet)
                continue
            frozen_until = max(
                self.clogged_until.get(message.sender, 0), self.clogged_until.get(message.to, 0)
            )
            if frozen_until > now:
                self._push(frozen_until, packet)
                continue
            self.stats.delivered += 1
            delivery.delivered.append(packet)
        return delivery

    # -- faults ----------------------------------------------------------------------------

    def partition(self, side: Iterable[NodeId], others: Iterable[NodeId]) -> None:
        """Block both directions between `side` and `others`."""
        side, others = list(side), list(others)
        for a in side:
            for b in others:
                self.blocked.add((a, b))
                self.blocked.add((b, a))

    def block(self, sender: NodeId, receiver: NodeId) -> None:
        """Block one direction only (an asymmetric partition)."""
        self.blocked.add((sender, receiver))

    def heal(self) -> None:
        self.blocked.clear()

    def clog(self, node: NodeId, until: int) -> None:
        self.clogged_until[node] = max(until, self.clogged_until.get(node, 0))

    def unclog_all(self) -> None:
        self.clogged_until.clear()

    def set_profile(self, profile: NetworkProfile) -> None:
        self.profile = profile
