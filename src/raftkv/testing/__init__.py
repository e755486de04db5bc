"""Test tools shipped with raftkv, for raftkv's own tests and for applications that embed
it: conformance suites for storage and transports, an in-process cluster on a manual clock,
small state machines, and (in submodules) the interaction runner and the simulators."""

from raftkv.raft.clock import ManualClock
from raftkv.raft.storage.memory import MemoryStorage
from raftkv.raft.transport.inprocess import InProcessNetwork, InProcessTransport
from raftkv.testing.local_cluster import ConditionNotMet, LocalCluster
from raftkv.testing.lossy_storage import LossyMemoryStorage
from raftkv.testing.state_machine_conformance import StateMachineFactory, check_state_machine
from raftkv.testing.state_machines import DictStateMachine, DurableDictStateMachine
from raftkv.testing.storage_conformance import StorageFactory, check_raft_storage
from raftkv.testing.transport_conformance import (
    RecordingHandler,
    TransportFactory,
    check_transport,
)

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
