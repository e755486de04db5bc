"""Helpers for tests and benchmarks that run raftkv as real processes on loopback: a free
port to listen on, and a bounded wait on a condition (polled, never a bare sleep)."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable

__all__ = ["free_port", "wait_until"]


# Ports handed out for test and benchmark servers: below the kernel's ephemeral range
# (32768 and up on Linux), where outgoing connections take their local ports. A port taken
# from that range could be claimed by a client connection between this probe and the
# server's bind.
_SERVER_PORTS = range(20000, 32768)
_choice = random.SystemRandom()
# Ports this process handed out already: a cluster asks for several at once, before any
# server binds them, so the probe alone could give the same one twice.
_handed_out: set[int] = set()


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
