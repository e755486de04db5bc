"""Transports: how messages travel between nodes (in-process, TCP and gRPC)."""
