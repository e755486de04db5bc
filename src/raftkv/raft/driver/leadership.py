"""`Leadership`: what one node knows of its cluster's leader — who leads, whether it is
this node, since when it has known none — who is told when that changes, waiting for a
condition such a change may fulfil, and which voter should lead next (`best_transferee`).

It learns only from the soft state of the Readies the node's loop takes (`update`), so
it may lag the core by the Ready being built: what it says is what the node has acted on.

Invariants:
- `leaderless_seconds()` is 0 exactly while a leader is known;
- observers are told once per change of leader (`notify`), in subscription order, after
  the change is visible here; an observer that raises is logged, never breaks the loop;
- each change sets the event waiters wait on and replaces it with a fresh one, so a
  waiter wakes once per change it waited through (`wait_for`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from raftkv.raft.clock import Clock
from raftkv.raft.core.rawnode import RawNode
from raftkv.raft.core.types import NO_NODE, NodeId, StateRole
from raftkv.raft.driver.errors import Stopped
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.driver.status import NodeStats

logger = logging.getLogger("raftkv.node")

# Called with the new leader's id (NO_NODE while there is none) and the current term.
LeaderObserver = Callable[[NodeId, int], None]


class Leadership:
    def __init__(
        self,
        *,
        clock: Clock,
        settings: NodeSettings,
        stats: NodeStats,
        stopping: Callable[[], bool],
    ) -> None:
        """`stopping` says whether the node is stopping: waits end with Stopped then."""
        self._clock = clock
        self._settings = settings
        self._stats = stats
        self._stopping = stopping
        self._leader_id = NO_NODE
        self._role = StateRole.FOLLOWER
        # When (the node's clock) it last lost its leader, or started without one; None
        # while it knows a leader.
        self._leaderless_since: float | None = clock.now()
        self._changed = asyncio.Event()
        self._observers: list[LeaderObserver] = []

    @property
    def leader_id(self) -> NodeId:
        return self._leader_id

    @property
    def is_leader(self) -> bool:
        return self._role is StateRole.LEADER

    def leaderless_seconds(self) -> float:
        since = self._leaderless_since
        return 0.0 if since is None else max(0.0, self._clock.now() - since)

    def subscribe(self, observer: LeaderObserver) -> Callable[[], None]:
        """Tell `observer` of every change of leader; returns a function that unsubscribes."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    def update(self, leader_id: NodeId, role: StateRole) -> bool:
        """A Ready's soft state: the leader and this node's role now. Returns whether the
        leader changed (the observers are told by `notify`)."""
        changed = leader_id != self._leader_id
        self._leader_id = leader_id
        self._role = role
        if not changed:
            return False
        self._stats.leader_changes += 1
        self._leaderless_since = self._clock.now() if leader_id == NO_NODE else None
        self._changed.set()
        self._changed = asyncio.Event()
        return True

    def notify(self, term: int) -> None:
        """Log the change `update` reported (in `term`) at INFO, as etcd does, and tell the
        observers."""
        if self._leader_id == NO_NODE:
            logger.info("no leader at term %d: an election is under way", term)
        elif self.is_leader:
            logger.info("this node is the leader at term %d", term)
        else:
            logger.info("node %d is the leader at term %d", self._leader_id, term)
        for observer in list(self._observers):
            try:
                observer(self._leader_id, term)
            except Exception:
                logger.exception("leader-change observer failed")

    async def wait_for(self, condition: Callable[[], bool], timeout: float) -> None:
        """Return once `condition()` holds, checked at each change of leader and every
        tick interval; TimeoutError after `timeout` seconds, Stopped if the node stops."""
        deadline = self._clock.now() + timeout
        while not condition():
            if self._stopping():
                raise Stopped("the node is stopping")
            remaining = deadline - self._clock.now()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s")
            changed = self._changed
            sleeper = asyncio.ensure_future(
                self._clock.sleep(min(remaining, self._settings.tick_interval_s))
            )
            waiter = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waiter.cancel()


def best_transferee(rawnode: RawNode, leader_id: NodeId) -> NodeId | None:
    """The voter other than `leader_id` (whose core `rawnode` is) with the longest log,
    the higher id among equals: the one to hand leadership to. None if there is none."""
    candidates = [
        (match, peer)
        for peer in rawnode.voters()
        if peer != leader_id and (match := rawnode.match_index(peer)) is not None
    ]
    return max(candidates)[1] if candidates else None
