"""Helpers for tests and benchmarks that run raftkv as real processes on loopback: a free
port to listen on, and a bounded wait on a condition (polled, never a bare sleep)."""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable

from raftkv.raft.listening import probe_listen

__all__ = ["free_port", "port_free", "server_ports", "wait_until"]


# Ports handed out for test and benchmark servers: below the kernel's ephemeral range
# (32768 and up on Linux), where outgoing connections take their local ports. A port taken
# from that range could be claimed by a client connection between this probe and the
# server's bind.
_ALL_SERVER_PORTS = range(20000, 32768)


def _worker_ports(all_ports: range, worker: str | None, worker_count: str | None) -> range:
    """This process's share of `all_ports`: under pytest-xdist (`make test`'s workers, named
    gw0, gw1, ... in PYTEST_XDIST_WORKER) each worker draws from its own slice, so two
    workers never probe the same port in the moment before its server binds it."""
    if not worker or not worker_count or not worker.startswith("gw"):
        return all_ports
    try:
        index, count = int(worker[2:]), int(worker_count)
    except ValueError:
        return all_ports
    if not 0 <= index < count <= len(all_ports) // 64:
        return all_ports
    size = len(all_ports) // count
    start = all_ports.start + index * size
    return range(start, start + size)


_SERVER_PORTS = _worker_ports(
    _ALL_SERVER_PORTS,
    os.environ.get("PYTEST_XDIST_WORKER"),
    os.environ.get("PYTEST_XDIST_WORKER_COUNT"),
)
_choice = random.SystemRandom()
# Ports this process handed out already: a cluster asks for several at once, before any
# server binds them, so the probe alone could give the same one twice.
_handed_out: set[int] = set()


def server_ports() -> range:
    """The ports `free_port` draws from in this process (its worker's slice)."""
    return _SERVER_PORTS


def port_free(port: int) -> bool:
    """Whether a listener may bind the port on 127.0.0.1 now: no socket listens there
    (whatever its options; a port left in TIME_WAIT is free)."""
    try:
        probe_listen("127.0.0.1", port, v6_only=False)
    except OSError:
        return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 below the ephemeral range that was free a moment ago (a
    hint, not a reservation: chosen at random, so parallel test runs rarely meet), and
    never one this process handed out before."""
    for _ in range(200):
        port = _choice.choice(_SERVER_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise OSError(f"no free port in {_SERVER_PORTS.start}..{_SERVER_PORTS.stop - 1}")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` every 50 ms; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
