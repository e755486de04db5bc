"""A member removed from the cluster serves nothing but the news that it was removed.

Once its removal applies on the node (`Node.on_removed`), the cluster no longer replicates
to it: whatever it still held would be stale forever (a serializable read, a range, a
watch stuck at an old revision), and whatever it still accepted could only fail. So, from
that moment:
- every request is answered 503 `removed` (nothing was applied; the client moves on to
  another member, as after any 503), except those that show an operator what happened:
  `/health` (the process is alive), `/ready` (503, "removed"), `/v1/status` (says
  `"removed": true`), `/v1/cluster`, `/metrics` and `/openapi.json`;
- every open watch ends at once, even one in the middle of a write, with the cancel
  reason `removed`: the client resumes it on another member from its watermark, so it
  misses nothing.
A request already waiting on the node when the removal applies fails as the driver fails
it (`Removed`, a `Stopped`: 503 `stopped`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from raftkv.kv.service import KvService
from raftkv.server.http_common import error_response

__all__ = ["STILL_ANSWERED", "guard_removal", "removed_message"]

# The routes a removed member still answers (exact paths).
STILL_ANSWERED = frozenset(
    {"/health", "/ready", "/v1/status", "/v1/cluster", "/metrics", "/openapi.json"}
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def removed_message(member_id: int) -> str:
    """What a removed member answers (503 `removed`) to a request for data."""
    return (
        f"node {member_id} was removed from the cluster and serves no data any more: "
        "use another member"
    )


def guard_removal(app: web.Application, service: KvService) -> None:
    """Make `app` (serving `service`, not started yet) refuse requests and end its watches
    once its member is removed from the cluster (see the module docstring)."""
    message = removed_message(service.member_id)

    @web.middleware
    async def refuse_when_removed(request: web.Request, handler: Handler) -> web.StreamResponse:
        if service.removed and request.path not in STILL_ANSWERED:
            return error_response(503, "removed", message)
        return await handler(request)

    def end_watches() -> None:
        service.watch_hub.close("removed", f"{message}: resume from revision + 1")

    app.middlewares.append(refuse_when_removed)
    unsubscribe = service.on_removed(end_watches)

    async def forget(_: web.Application) -> None:
        unsubscribe()

    app.on_cleanup.append(forget)
