"""The lease routes' requests and answers."""

from __future__ import annotations

import msgspec

from raftkv.api.keys import Header, Int64, PositiveInt64

__all__ = [
    "LeaseAnswer",
    "LeaseGrantAnswer",
    "LeaseGrantBody",
    "LeaseKeepAliveAnswer",
    "LeaseRevokeAnswer",
    "LeaseStatusAnswer",
    "LeasesAnswer",
]


class LeaseGrantBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/lease`: a lease that expires `ttl` seconds after its grant or its last
    keep-alive, unless kept alive again. `id` 0: the server picks one. A `ttl` below the
    server's `lease_min_ttl_s` is raised to it (the answer says which TTL was granted)."""

    ttl: PositiveInt64
    id: Int64 = 0


class LeaseGrantAnswer(msgspec.Struct, frozen=True):
    header: Header
    id: int
    # The TTL granted, in seconds (the one asked for, or lease_min_ttl_s if that was less).
    ttl: int


class LeaseKeepAliveAnswer(msgspec.Struct, frozen=True):
    """`POST /v1/lease/{id}/keepalive`: the lease now expires `ttl` seconds from when the
    keep-alive was sent (it is answered once applied through the log)."""

    header: Header
    id: int
    ttl: int


class LeaseRevokeAnswer(msgspec.Struct, frozen=True):
    """`DELETE /v1/lease/{id}`: the lease is gone and its keys were deleted at
    `header.revision` (one revision for all of them)."""

    header: Header


class LeaseAnswer(msgspec.Struct, frozen=True, omit_defaults=True):
    """`GET /v1/lease/{id}` (`keys=true` lists the attached keys)."""

    header: Header
    id: int
    # Seconds left before the lease expires, as this node estimates it (rounded down; the
    # leader decides expiry), and the TTL it was granted with.
    ttl: int
    granted_ttl: int
    keys: list[str] = msgspec.field(default_factory=list)


class LeaseStatusAnswer(msgspec.Struct, frozen=True):
    id: int
    ttl: int
    granted_ttl: int


class LeasesAnswer(msgspec.Struct, frozen=True):
    """`GET /v1/leases`: every lease, by id."""

    header: Header
    leases: list[LeaseStatusAnswer]
