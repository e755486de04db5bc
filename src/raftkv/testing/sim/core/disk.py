"""A node's disk: what survives a crash.

Two durable records, as a real node keeps them:
- the Raft storage (`MemoryStorage`: hard state, snapshot, log), written only when the
  node processes a Ready (that is the "fsync");
- the state machine's image (`Image`: data, sessions, membership, applied index as one
  atomic record), written when the node flushes its state machine. It may lag behind what
  was applied in memory; after a crash Raft replays from `Config(applied=image.applied)`.

Everything else (the RawNode, a Ready being processed, the in-memory state machine, reads
waiting for their index) is volatile and lost in a crash.

Invariant: `image.applied <= storage.hard_state.commit` or the storage holds a snapshot at
or above it; and the storage log (or its snapshot) covers `image.applied`, because
compaction never passes the image.
"""

from __future__ import annotations

from raftkv.raft.core.types import ConfState, NodeId, Snapshot, SnapshotMetadata
from raftkv.raft.storage.memory import MemoryStorage
from raftkv.testing.sim.core.state_machine import Image

__all__ = ["Disk", "bootstrap_disk", "empty_disk"]

EMPTY_IMAGE_DATA = Image(applied=0, data=(), sessions=(), conf_state=ConfState()).encode()


class Disk:
    def __init__(self, storage: MemoryStorage, image: Image) -> None:
        self.storage = storage
        self.image = image

    def flush(self, image: Image) -> None:
        """Atomically replace the state machine's durable image."""
        self.image = image

    def create_snapshot(self) -> Snapshot | None:
        """Record a Raft snapshot of the durable image, if it is newer than the last one.

        Returns the snapshot, or None if the storage already has one at or above it.
        """
        image = self.image
        if image.applied <= self.storage.snapshot().metadata.index:
            return None
        if image.applied > self.storage.last_index():
            return None
        return self.storage.create_snapshot(image.applied, image.conf_state, image.encode())


def bootstrap_disk(voters: frozenset[int]) -> Disk:
    """The disk of an initial member: a snapshot at index 1, term 1 of the empty state
    machine with membership `voters`."""
    conf_state = ConfState(voters=frozenset(NodeId(voter) for voter in voters))
    storage = MemoryStorage()
    storage.apply_snapshot(
        Snapshot(
            SnapshotMetadata(index=1, term=1, conf_state=conf_state),
            data=EMPTY_IMAGE_DATA,
        )
    )
    return Disk(storage, Image(applied=1, data=(), sessions=(), conf_state=conf_state))


def empty_disk() -> Disk:
    """The disk of a node added later: nothing; a snapshot from the leader fills it."""
    return Disk(MemoryStorage(), Image(applied=0, data=(), sessions=(), conf_state=ConfState()))
