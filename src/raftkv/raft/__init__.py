"""raftkv's Raft library: embed a replicated state machine of your own.

- `NodeBuilder` puts a `Node` together (storage, transport, state machine, settings);
- `Node` runs it on asyncio: `propose`, `read_index` / `linearizable_read`, membership,
  leadership transfer, `status`, `stop`;
- your `StateMachine` applies committed commands deterministically.

The pure protocol lives in `raftkv.raft.core`; the heavy parts (RocksDB, gRPC) are loaded
only when first used, so importing the core stays light.

Every public name has one owner across raftkv's packages: a promotion refused because the
learner lags is `LearnerNotCaughtUp` here (`NotCaughtUp` is the HTTP client's error). One
name is shared, as two classes: `OutcomeUnknown` (the client's is an HTTP call's).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from raftkv.raft.builder import NodeBuilder
from raftkv.raft.clock import Clock, ManualClock, SystemClock
from raftkv.raft.core.errors import (
    ConfChangeInvalid,
    ConfigInvalid,
    NotLeader,
    ProposalDropped,
    RaftError,
)
from raftkv.raft.core.types import NO_NODE, ConfState, NodeId, StateRole
from raftkv.raft.driver.errors import (
    LearnerNotCaughtUp,
    MembershipError,
    NodeFailed,
    OutcomeUnknown,
    Overloaded,
    ProposalTimeout,
    ReadTimeout,
    Removed,
    StateUnusable,
    Stopped,
)
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.driver.state_machine import Command, SnapshotInvalid, StateMachine
from raftkv.raft.driver.status import Histogram, NodeStats, NodeStatus, PeerProgress
from raftkv.raft.storage.base import AppBatch, AppData, RaftStorage, StorageCorrupt
from raftkv.raft.storage.memory import MemoryStorage
from raftkv.raft.transport.base import Transport, TransportError
from raftkv.raft.transport.inprocess import InProcessNetwork, InProcessTransport
from raftkv.raft.transport.settings import PeerTransportSettings

if TYPE_CHECKING:
    from raftkv.raft.storage.rocks import RocksStorage
    from raftkv.raft.transport.grpc_transport import GrpcTransport
    from raftkv.raft.transport.tcp_transport import TcpTransport

__all__ = [
    "NO_NODE",
    "AppBatch",
    "AppData",
    "Clock",
    "Command",
    "ConfChangeInvalid",
    "ConfState",
    "ConfigInvalid",
    "GrpcTransport",
    "Histogram",
    "InProcessNetwork",
    "InProcessTransport",
    "LearnerNotCaughtUp",
    "ManualClock",
    "MembershipError",
    "MemoryStorage",
    "Node",
    "NodeBuilder",
    "NodeFailed",
    "NodeId",
    "NodeSettings",
    "NodeStats",
    "NodeStatus",
    "NotLeader",
    "OutcomeUnknown",
    "Overloaded",
    "PeerProgress",
    "PeerTransportSettings",
    "ProposalDropped",
    "ProposalTimeout",
    "RaftError",
    "RaftStorage",
    "ReadTimeout",
    "Removed",
    "RocksStorage",
    "SnapshotInvalid",
    "StateMachine",
    "StateRole",
    "StateUnusable",
    "Stopped",
    "StorageCorrupt",
    "SystemClock",
    "TcpTransport",
    "Transport",
    "TransportError",
]

_LAZY = {
    "RocksStorage": "raftkv.raft.storage.rocks",
    "GrpcTransport": "raftkv.raft.transport.grpc_transport",
    "TcpTransport": "raftkv.raft.transport.tcp_transport",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'raftkv.raft' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
