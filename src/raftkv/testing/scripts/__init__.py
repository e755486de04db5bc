"""Interaction scripts: the protocol's executable documentation, after etcd-io/raft's
`rafttest` (`tests/core/testdata/*.txt`).

- `datadriven`: the script format (commands, input, `----`, expected output) and its
  runner, after cockroachdb/datadriven;
- `interaction`: the environment the commands drive, RawNodes on a hand-cranked network;
- `toy_state_machine`: the state machine and storage of its nodes.
"""
