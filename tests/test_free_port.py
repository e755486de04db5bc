"""`free_port`: server ports below the ephemeral range, never the same one twice in a
process (a cluster asks for several before any of them is bound)."""

from __future__ import annotations

import pytest

from raftkv.testing.processes import _worker_ports, free_port, server_ports


def test_free_ports_are_distinct_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(20000 <= port < 32768 for port in ports)
    assert all(port in server_ports() for port in ports)


def test_each_xdist_worker_draws_from_its_own_slice() -> None:
    all_ports = range(20000, 32768)
    first = _worker_ports(all_ports, "gw0", "2")
    second = _worker_ports(all_ports, "gw1", "2")
    assert first.start == 20000 and second.stop <= 32768
    assert not set(first) & set(second)
    assert len(first) == len(second) == len(all_ports) // 2


@pytest.mark.parametrize(
    ("worker", "count"),
    [(None, None), ("master", "2"), ("gw", "2"), ("gw2", "2"), ("gw0", "x"), ("gw0", "1000")],
)
def test_outside_xdist_or_with_odd_names_every_port_is_drawn_from(
    worker: str | None, count: str | None
) -> None:
    all_ports = range(20000, 32768)
    assert _worker_ports(all_ports, worker, count) == all_ports
