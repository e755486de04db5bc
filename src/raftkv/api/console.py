"""What the web console (`/ui`) reads beyond the rest of the API: a node's recent cluster
events (`GET /v1/events`), its metrics over the last minutes (`GET /v1/console/history`),
itself with its version (`GET /v1/console/node`) and every member as seen from it, each
member asked over its client URL (`GET /v1/console/members`)."""

from __future__ import annotations

import msgspec

from raftkv.api.cluster import StatusAnswer

__all__ = [
    "ConsoleEvent",
    "ConsoleMember",
    "ConsoleMembersAnswer",
    "ConsoleNodeAnswer",
    "EventsAnswer",
    "HistoryAnswer",
    "HistoryPoint",
]


class ConsoleEvent(msgspec.Struct, frozen=True):
    """One thing that happened, as the node that recorded it saw it."""

    # Increasing per node from 1 (GET /v1/events?after=seq answers the later ones).
    seq: int
    # When the node noticed it (Unix seconds; up to the sampling interval late).
    at: float
    # "leader", "election", "membership", "snapshot", "compaction", "lease" or "started"
    # (a str so that a page reads a newer kind).
    kind: str
    # What happened, in a sentence.
    message: str
    # The term it happened in, as the node knew it.
    term: int


class EventsAnswer(msgspec.Struct, frozen=True):
    """`GET /v1/events`: the node's recent events, oldest first (the ring keeps the last
    `capacity`; `dropped` older ones are gone)."""

    member: int
    capacity: int
    dropped: int
    events: list[ConsoleEvent]


class HistoryPoint(msgspec.Struct, frozen=True):
    """The node over one sampling interval ending at `at` (Unix seconds). A latency is null
    when nothing was timed in the interval."""

    at: float
    # Commands applied to the state machine per second (the cluster's writes: every
    # member applies them all).
    writes_per_s: float
    # Reads this node answered per second: GETs of a key or a range (a read-only txn
    # counts in requests_per_s only).
    reads_per_s: float
    # Every request this node answered per second, streams (watches, backups) left out.
    requests_per_s: float
    # Latency of those requests, in milliseconds (bucket-interpolated, as Prometheus'
    # histogram_quantile).
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    commit_index: int
    # The disk's durable write (write + fsync) p99, in milliseconds.
    fsync_p99_ms: float | None
    # The event loop's worst lag seen, in milliseconds (bucket upper bound).
    loop_lag_max_ms: float | None


class HistoryAnswer(msgspec.Struct, frozen=True):
    """`GET /v1/console/history`: one point per `interval_s`, oldest first, the last
    `capacity` at most."""

    member: int
    interval_s: float
    capacity: int
    points: list[HistoryPoint]


class ConsoleNodeAnswer(msgspec.Struct, frozen=True):
    """`GET /v1/console/node`: the node's status (as `GET /v1/status`), its health and the
    raftkv version it runs."""

    version: str
    # "ok", or "failed: <reason>" once the node hit an error it cannot continue from.
    health: str
    status: StatusAnswer


class ConsoleMember(msgspec.Struct, frozen=True, omit_defaults=True):
    """A member as the answering node reached it: `node` when it answered, else why not."""

    id: int
    client_url: str
    reachable: bool
    # Why it could not be reached ("" when it answered).
    error: str = ""
    node: ConsoleNodeAnswer | None = None


class ConsoleMembersAnswer(msgspec.Struct, frozen=True):
    """`GET /v1/console/members`: every member of the configuration the answering node
    knows, each asked for `GET /v1/console/node` at its client URL (at most `timeout_s`),
    in id order. A member that is down shows as unreachable; the answer still comes."""

    member: int
    timeout_s: float
    members: list[ConsoleMember]
