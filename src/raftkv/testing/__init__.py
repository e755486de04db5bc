"""Test tools shipped with raftkv, for raftkv's own tests and for applications that embed
it. Exported here: an in-process cluster of real nodes on a manual clock (`LocalCluster`),
test doubles (`LossyMemoryStorage`, the dict state machines, the in-process transport),
and conformance suites for an embedder's own storage, transport and state machine.

The rest, by what it is:
- `conformance/`: the three suites (`check_raft_storage`, `check_transport`,
  `check_state_machine`);
- `sim/`: the three simulators (the pure core, the asyncio driver, the KV state machine)
  and their one entry point, `python -m raftkv.testing.sim`;
- `scripts/`: interaction scripts (the datadriven format and the environment it drives);
- `local_cluster`, `lossy_storage`, `state_machines`: the cluster and doubles named above;
- `http_cluster`: a LocalCluster of KV nodes behind real HTTP servers, for client code;
- `processes`: free ports and bounded waits for tests that run real processes;
- `generated_code`: whether the modules generated from .proto files are current;
- `linearizability`: the history checker the simulators and chaos runs share;
- `peer_fuzz`: hostile peer frames at real gRPC nodes (`make fuzz-peer`);
- `chaos/`: real processes in network namespaces under faults (`make chaos`, root).

Three small state machines remain, one per contract, not copies: `state_machines` (the
driver's `StateMachine` protocol, for embedders' tests), `sim/core/state_machine` (entries
applied straight from the core, for the core simulator, which runs no driver) and
`scripts/toy_state_machine` (a record of every applied index, for interaction scripts).
"""

from raftkv.raft.clock import ManualClock
from raftkv.raft.storage.memory import MemoryStorage
from raftkv.raft.transport.inprocess import InProcessNetwork, InProcessTransport
from raftkv.testing.conformance.state_machine import StateMachineFactory, check_state_machine
from raftkv.testing.conformance.storage import StorageFactory, check_raft_storage
from raftkv.testing.conformance.transport import (
    RecordingHandler,
    TransportFactory,
    check_transport,
)
from raftkv.testing.local_cluster import ConditionNotMet, LocalCluster
from raftkv.testing.lossy_storage import LossyMemoryStorage
from raftkv.testing.state_machines import DictStateMachine, DurableDictStateMachine

__all__ = [
    "ConditionNotMet",
    "DictStateMachine",
    "DurableDictStateMachine",
    "InProcessNetwork",
    "InProcessTransport",
    "LocalCluster",
    "LossyMemoryStorage",
    "ManualClock",
    "MemoryStorage",
    "RecordingHandler",
    "StateMachineFactory",
    "StorageFactory",
    "TransportFactory",
    "check_raft_storage",
    "check_state_machine",
    "check_transport",
]
