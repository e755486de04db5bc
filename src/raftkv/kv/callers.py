"""Who a request acts for: the `Caller` of the task serving it.

The doors (the HTTP API's middleware, the etcd API's call wrappers) name the caller of each
request once, from its credentials, with `acting_as`; `KvService` asks `current_caller()`
at every call that reads, writes or administers, and `raftkv.kv.authorization` decides.
A context variable rather than a parameter on every method: each request runs in its own
task (or a task it started, which inherits the variable), so no door or service method can
forget to pass it, and the default is the caller with no rights at all (`ANONYMOUS`):
forgetting to name one fails closed. The node's own background work (the compactor, the
lease keeper) names itself `INTERNAL`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    """`user`: the authenticated user's name; None: no credentials. `internal`: the
    node's own work, never refused."""

    user: str | None
    internal: bool = False


ANONYMOUS = Caller(None)
INTERNAL = Caller(None, internal=True)

_CURRENT: ContextVar[Caller] = ContextVar("raftkv_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    return _CURRENT.get()


@contextmanager
def acting_as(caller: Caller) -> Iterator[None]:
    """Run the block (and the tasks it starts) as `caller`."""
    token = _CURRENT.set(caller)
    try:
        yield
    finally:
        _CURRENT.reset(token)
