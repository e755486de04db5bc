"""`free_port`: server ports below the ephemeral range, never the same one twice in a
process (a cluster asks for several before any of them is bound)."""

from __future__ import annotations

from raftkv.testing.processes import free_port


def test_free_ports_are_distinct_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(20000 <= port < 32768 for port in ports)
