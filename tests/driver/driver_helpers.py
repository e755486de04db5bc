"""Test doubles shared by the driver tests."""

from __future__ import annotations

from raftkv.raft.core.types import NodeId
from raftkv.raft.storage.base import RaftStorage
from raftkv.raft.storage.memory import MemoryStorage
from raftkv.testing.state_machines import DictStateMachine


def memory_dict(_: RaftStorage) -> DictStateMachine:
    """A LocalCluster `state_machine` factory: a fresh DictStateMachine per node."""
    return DictStateMachine()


class FailingStorage(MemoryStorage):
    """MemoryStorage whose writes fail with `error` once `fail` is set (a full disk, an
    I/O error): the node must stop, naming it."""

    def __init__(self, error: str = "disk on fire") -> None:
        super().__init__()
        self.fail = False
        self.error = error

    def persist(self, *arguments: object, **keywords: object) -> None:
        if self.fail:
            raise OSError(self.error)
        super().persist(*arguments, **keywords)  # type: ignore[arg-type]


class FailingStorages:
    """A LocalCluster `storage` factory making a FailingStorage per node, kept by id."""

    def __init__(self, error: str = "disk on fire") -> None:
        self.error = error
        self.by_node: dict[NodeId, FailingStorage] = {}

    def __call__(self, node_id: NodeId) -> RaftStorage:
        self.by_node[node_id] = FailingStorage(self.error)
        return self.by_node[node_id]
