"""The lease routes of the HTTP API (`raftkv.kv.leases`, `raftkv.kv.lease_keeper`).

- `POST /v1/lease {"ttl", "id"?}` -> `{"header", "id", "ttl"}` (409 `lease_exists`; 413
  `limit_exceeded` beyond max_leases);
- `POST /v1/lease/{id}/keepalive` -> `{"header", "id", "ttl"}`: answered once applied, so
  the lease lasts at least `ttl` seconds from when the request was sent;
- `GET /v1/lease/{id}` (`keys=true`, `consistency`) -> `{"header", "id", "ttl",
  "granted_ttl", "keys"?}`; `ttl` is what this node's countdown has left (whole seconds);
- `DELETE /v1/lease/{id}` -> `{"header"}`: the lease and its keys are gone, the keys
  deleted at `header.revision`;
- `GET /v1/leases` -> `{"header", "leases": [{"id", "ttl", "granted_ttl"}]}`.
An unknown lease is 404 `lease_not_found` everywhere (also for a put naming it).
"""

from __future__ import annotations

import math

from aiohttp import web

from raftkv.api.keys import Header
from raftkv.api.leases import (
    LeaseAnswer,
    LeaseGrantAnswer,
    LeaseGrantBody,
    LeaseKeepAliveAnswer,
    LeaseRevokeAnswer,
    LeasesAnswer,
    LeaseStatusAnswer,
)
from raftkv.kv.service import KvService
from raftkv.server.http_common import (
    ApiError,
    Codec,
    bool_query,
    decode_body,
    json_answer,
    serializable_query,
)

_MAX_LEASE_ID = (1 << 63) - 1


def lease_id_of(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise ApiError(400, "invalid_request", f"a lease id is a positive integer, got {text!r}")
    lease_id = int(text)
    if not 1 <= lease_id <= _MAX_LEASE_ID:
        raise ApiError(400, "invalid_request", f"a lease id is in 1..{_MAX_LEASE_ID}")
    return lease_id


class LeaseHandlers:
    def __init__(self, service: KvService, timeout: float, max_body_bytes: int) -> None:
        self.service = service
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes

    def _header(self, revision: int) -> Header:
        return Header(revision=revision, leader=int(self.service.leader_id))

    async def grant(self, request: web.Request) -> web.Response:
        body = await decode_body(request, LeaseGrantBody, self.max_body_bytes)
        if body.id < 0 or body.id > _MAX_LEASE_ID:
            raise ApiError(400, "invalid_request", f"a lease id is in 1..{_MAX_LEASE_ID} (0: any)")
        result = await self.service.lease_grant(body.ttl, body.id, timeout=self.timeout)
        return json_answer(
            LeaseGrantAnswer(
                header=self._header(result.header.revision), id=result.id, ttl=result.ttl
            )
        )

    async def keep_alive(self, request: web.Request) -> web.Response:
        lease_id = lease_id_of(request.match_info["id"])
        result = await self.service.lease_keep_alive(lease_id, timeout=self.timeout)
        return json_answer(
            LeaseKeepAliveAnswer(
                header=self._header(result.header.revision), id=result.id, ttl=result.ttl
            )
        )

    async def revoke(self, request: web.Request) -> web.Response:
        lease_id = lease_id_of(request.match_info["id"])
        result = await self.service.lease_revoke(lease_id, timeout=self.timeout)
        return json_answer(LeaseRevokeAnswer(header=self._header(result.header.revision)))

    async def status(self, request: web.Request) -> web.Response:
        codec = Codec.of(request)
        lease_id = lease_id_of(request.match_info["id"])
        status = await self.service.lease_status(
            lease_id,
            keys=bool_query(request, "keys"),
            serializable=serializable_query(request),
            timeout=self.timeout,
        )
        return json_answer(
            LeaseAnswer(
                header=self._header(self.service.current_revision()),
                id=lease_id,
                ttl=math.floor(status.remaining_s),
                granted_ttl=status.granted_ttl,
                keys=[codec.encode(key, "key") for key in status.keys],
            )
        )

    async def list(self, request: web.Request) -> web.Response:
        leases = await self.service.leases(
            serializable=serializable_query(request), timeout=self.timeout
        )
        return json_answer(
            LeasesAnswer(
                header=self._header(self.service.current_revision()),
                leases=[
                    LeaseStatusAnswer(
                        id=lease.id,
                        ttl=math.floor(lease.remaining_s),
                        granted_ttl=lease.granted_ttl,
                    )
                    for lease in leases
                ],
            )
        )
