"""Raft storage implementations."""
