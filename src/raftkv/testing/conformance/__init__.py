"""Conformance suites: the promises Raft relies on, checked on an embedder's own parts.

- `storage.check_raft_storage` for a `RaftStorage`;
- `transport.check_transport` for a `Transport`;
- `state_machine.check_state_machine` for a `StateMachine`.

Each takes a factory for the part under test and raises AssertionError naming the broken
promise. `raftkv.testing` exports the three, with their factory protocols.
"""
