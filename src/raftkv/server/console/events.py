"""The console's timeline: a bounded ring of the cluster events one node saw.

Events are found by comparing consecutive observations of the node (`observation`): a new
leader or term, a configuration with other voters or learners, more snapshots created,
installed, sent or received, a higher compacted revision, more leases expired. Nothing in
the node, the state machine or the lease keeper is hooked for it: what the metrics count
is what the timeline shows, up to one sampling interval late. Several changes between two
observations show as one event (two leader changes within a second: the last leader).

Invariants: the ring holds at most `capacity` events, in increasing `seq` order, and
`seq` increases by one per event ever recorded, so `dropped` = first seq - 1.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from raftkv.api.console import ConsoleEvent
from raftkv.server.console.observation import Observation

__all__ = ["EventRing", "events_between"]


def _ids(members: frozenset[int]) -> str:
    return ", ".join(str(member) for member in sorted(members)) or "none"


def _count(delta: float, one: str, many: str) -> str:
    count = int(delta)
    return one if count == 1 else f"{count} {many}"


def events_between(previous: Observation, current: Observation) -> Iterator[tuple[str, str]]:
    """(kind, message) of each change from `previous` to `current`."""
    if current.leader != previous.leader or current.term != previous.term:
        if current.leader == 0:
            yield "election", f"no leader known (term {current.term}): an election is on"
        elif current.leader != previous.leader:
            yield "leader", f"member {current.leader} leads (term {current.term})"
        else:
            yield "election", f"member {current.leader} leads again (term {current.term})"
    for kind, before, after in (
        ("voters", previous.voters, current.voters),
        ("learners", previous.learners, current.learners),
    ):
        if before != after:
            added, removed = after - before, before - after
            parts = [f"{kind}: {_ids(after)}"]
            if added:
                parts.append(f"added {_ids(added)}")
            if removed:
                parts.append(f"removed {_ids(removed)}")
            yield "membership", "; ".join(parts)
    for delta, one, many in (
        (
            current.snapshots_created - previous.snapshots_created,
            "snapshot taken",
            "snapshots taken",
        ),
        (
            current.snapshots_installed - previous.snapshots_installed,
            "snapshot from the leader installed",
            "snapshots from the leader installed",
        ),
        (
            current.snapshots_sent - previous.snapshots_sent,
            "snapshot sent to a follower",
            "snapshots sent to followers",
        ),
        (
            current.snapshots_received - previous.snapshots_received,
            "snapshot received from the leader",
            "snapshots received from the leader",
        ),
        (
            current.snapshots_failed - previous.snapshots_failed,
            "snapshot transfer failed",
            "snapshot transfers failed",
        ),
    ):
        if delta > 0:
            yield "snapshot", _count(delta, one, many)
    if current.compacted_revision > previous.compacted_revision:
        yield "compaction", f"history compacted to revision {current.compacted_revision}"
    expired = current.leases_expired - previous.leases_expired
    if expired > 0:
        yield "lease", _count(expired, "lease expired", "leases expired")


class EventRing:
    """The last `capacity` events of one node (see the module docstring)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"EventRing capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._events: deque[ConsoleEvent] = deque(maxlen=capacity)
        # The seq of the last event recorded (0: none yet).
        self.last_seq = 0
        self._previous: Observation | None = None

    @property
    def dropped(self) -> int:
        """Events recorded then pushed out of the ring by newer ones."""
        return self.last_seq - len(self._events)

    def record(self, at: float, kind: str, message: str, term: int) -> ConsoleEvent:
        self.last_seq += 1
        event = ConsoleEvent(seq=self.last_seq, at=at, kind=kind, message=message, term=term)
        self._events.append(event)
        return event

    def observe(self, current: Observation) -> list[ConsoleEvent]:
        """Record what changed since the previous observation (the first one: that the
        console started watching, and who leads)."""
        previous = self._previous
        self._previous = current
        if previous is None:
            leader = f"member {current.leader} leads" if current.leader else "no leader known"
            voters = _ids(current.voters)
            return [
                self.record(
                    current.at,
                    "started",
                    f"console started: {leader} (term {current.term}); voters: {voters}",
                    current.term,
                )
            ]
        return [
            self.record(current.at, kind, message, current.term)
            for kind, message in events_between(previous, current)
        ]

    def after(self, seq: int) -> list[ConsoleEvent]:
        """The events with a seq above `seq`, oldest first."""
        return [event for event in self._events if event.seq > seq]
