"""What a node says of itself: `GET /health` (liveness), `GET /ready` (readiness),
`GET /v1/status` (its Raft and MVCC state) and `GET /openapi.json` (the API it serves)."""

from __future__ import annotations

import time

from aiohttp import web

from raftkv.api.cluster import DefragmentAnswer, HealthAnswer, ReadyAnswer, StatusAnswer
from raftkv.kv.layout import CorruptAlarm
from raftkv.kv.service import KvService
from raftkv.raft.core.types import NodeId
from raftkv.server.alarm_api import alarm_answers
from raftkv.server.exposure import ClientWarning
from raftkv.server.http_common import bool_query, json_answer
from raftkv.server.openapi import openapi_document_bytes

__all__ = ["NodeHandlers", "corrupt_reason", "status_answer"]


def corrupt_reason(me: NodeId, alarm: CorruptAlarm) -> str:
    """Why member `me`, named by `alarm`, refuses client requests (and is not ready)."""
    return (
        f"member {me} is CORRUPT: the hash check at log index {alarm.check_index} "
        f"found its state different ({alarm.reason}); it serves no client "
        "requests: use another member"
    )


def status_answer(
    service: KvService,
    security_warnings: tuple[ClientWarning, ...] = (),
    digest: str = "",
    data_digest: str = "",
) -> StatusAnswer:
    """`GET /v1/status`'s answer: the node's state now (with the hashes given, if any), and
    what it exposes (a warning that holds only while auth is disabled, only then)."""
    status = service.status()
    return StatusAnswer(
        id=int(status.id),
        leader=int(status.leader_id),
        term=status.term,
        role=status.role.name.lower(),
        commit_index=status.commit_index,
        applied_index=status.applied_index,
        revision=service.current_revision(),
        compacted_revision=service.compacted_revision(),
        first_index=status.first_index,
        last_index=status.last_index,
        snapshot_index=status.snapshot_index,
        pending_proposals=status.pending_proposals,
        pending_reads=status.pending_reads,
        hash=digest,
        data_hash=data_digest,
        alarms=alarm_answers(service),
        warnings=[
            warning.text
            for warning in security_warnings
            if not (warning.while_auth_disabled and service.authorizer.enabled)
        ],
        removed=status.removed,
        batching=status.batching,
    )


class NodeHandlers:
    def __init__(
        self,
        service: KvService,
        ready_max_apply_lag: int,
        security_warnings: tuple[ClientWarning, ...] = (),
    ) -> None:
        self.service = service
        # /ready answers 503 while more committed entries than this wait to be applied.
        self.ready_max_apply_lag = ready_max_apply_lag
        # What the node's settings expose unprotected (raftkv.server.exposure).
        self.security_warnings = security_warnings

    async def health(self, request: web.Request) -> web.Response:
        """Liveness: the process answers, and its node has not failed. A node that hit an
        error it cannot continue from answers 503 `failed` for the moment until the
        process exits (non-zero, so a supervisor restarts it)."""
        failure = self.service.failure
        if failure is not None:
            return json_answer(
                HealthAnswer(status="failed", reason=f"the node failed: {failure}"), status=503
            )
        return json_answer(HealthAnswer(status="ok"))

    async def ready(self, request: web.Request) -> web.Response:
        """Readiness: see ReadyAnswer."""
        reason = self._not_ready_reason()
        return json_answer(
            ReadyAnswer(ready=not reason, reason=reason), status=503 if reason else 200
        )

    def _not_ready_reason(self) -> str:
        status = self.service.status()
        if status.stopped:
            return "the node is stopped"
        if status.removed:
            return "the node was removed from the cluster"
        alarm = self.service.corrupt_alarm()
        if alarm is not None:
            return corrupt_reason(status.id, alarm)
        if status.id not in status.voters and status.id not in status.learners:
            return "the node is not a member yet"
        if status.leader_id == 0:
            return "no leader is known"
        lag = status.commit_index - status.applied_index
        if lag > self.ready_max_apply_lag:
            return f"applying: {lag} committed entries not applied yet"
        return ""

    async def status(self, request: web.Request) -> web.Response:
        # The hash first: it is read off the loop, and the rest must be as of the answer.
        digest, data_digest = "", ""
        if bool_query(request, "hash"):
            digest, data_digest = await self.service.state_and_data_hashes()
        return json_answer(status_answer(self.service, self.security_warnings, digest, data_digest))

    async def defragment(self, request: web.Request) -> web.Response:
        """This node's storage files compacted whole (KvService.defragment)."""
        started = time.monotonic()
        before, after = await self.service.defragment()
        seconds = round(time.monotonic() - started, 3)
        return json_answer(DefragmentAnswer(before, after, seconds))

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=openapi_document_bytes(), content_type="application/json")
