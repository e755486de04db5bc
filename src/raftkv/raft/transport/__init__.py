"""Transports: how messages travel between nodes (in-process and gRPC)."""
