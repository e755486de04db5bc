"""One simulated node: a disk that survives crashes, and volatile state that does not."""

from __future__ import annotations

from raftkv.raft.core import RawNode
from raftkv.raft.core.config import Config
from raftkv.raft.core.types import NodeId, ReadState
from raftkv.testing.sim.core.disk import Disk
from raftkv.testing.sim.core.state_machine import SessionStateMachine

__all__ = ["SimNode"]


class SimNode:
    def __init__(self, node_id: NodeId, disk: Disk, tick_phase: int) -> None:
        self.id = node_id
        self.disk = disk
        # The node ticks when `step % TICK_STEPS == tick_phase`.
        self.tick_phase = tick_phase
        # Volatile state; None while the node is down.
        self.rawnode: RawNode | None = None
        self.state_machine: SessionStateMachine | None = None
        # Reads confirmed by Raft, waiting for the state machine to reach their index.
        self.read_states: list[ReadState] = []
        # Bumped at every start: messages and reports are tied to one incarnation.
        self.incarnation = 0
        # A crashed node restarts at this step (None: stays down until the liveness phase).
        self.restart_at: int | None = None
        # Removed from the cluster for good; never restarted.
        self.retired = False

    @property
    def up(self) -> bool:
        return self.rawnode is not None

    def start(self, config: Config) -> None:
        assert self.rawnode is None and not self.retired
        self.incarnation += 1
        self.restart_at = None
        self.rawnode = RawNode(config, self.disk.storage)
        self.state_machine = SessionStateMachine(self.disk.image)

    def crash(self) -> None:
        """Lose everything volatile; the disk stays as it was last written."""
        self.rawnode = None
        self.state_machine = None
        self.read_states = []

    def status_line(self) -> str:
        """One line per node, as in TigerBeetle's VOPR traces."""
        if self.retired:
            return f"n{self.id} retired"
        if self.rawnode is None:
            image = self.disk.image
            hard = self.disk.storage.hard_state
            return (
                f"n{self.id} down  t{hard.term} v{hard.vote} c{hard.commit} "
                f"image@{image.applied} last={self.disk.storage.last_index()}"
            )
        raft = self.rawnode.raft
        log = raft.log
        role = raft.role.value.removeprefix("State").lower()
        return (
            f"n{self.id} {role:<12} t{raft.term} v{raft.vote} lead={raft.leader_id} "
            f"c{log.committed} a{log.applied} log=[{log.first_index()},{log.last_index()}] "
            f"image@{self.disk.image.applied}"
        )
