"""Raft: a pure core (`raftkv.raft.core`) and, later, the runtime around it."""
