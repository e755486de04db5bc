"""`EtcdContext`: what every etcd servicer shares — the `KvService` it translates to, and
the response header etcd puts on every answer (cluster id, member id, revision, term).

Ids: raftkv's member ids are etcd's member ids, unchanged (small positive integers where
etcd draws random 64-bit ones); the cluster id is raftkv's `cluster_id`. Clients only
compare them, so any stable unique numbers do (docs/etcd.md).

The term in the header is the one this node last saw a leader change in, kept current by a
leader-change observer rather than read from the node's status on every request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from raftkv.etcd.call_stats import CallStats
from raftkv.etcd.calls import Context, deadline
from raftkv.etcd.proto import rpc_pb2
from raftkv.kv.auth_service import AuthService
from raftkv.kv.service import KvService
from raftkv.raft.core.types import NodeId

# A whole backup file of raftkv's (`raftkv snapshot restore` reads it) of the state at a
# linearizable point, made within the given seconds. The server owns the format and passes
# this in (raftkv.etcd does not import raftkv.server).
BackupSource = Callable[[float], Awaitable[bytes]]


class EtcdContext:
    """Owns the term it reports; `close()` unsubscribes from the node."""

    def __init__(
        self,
        service: KvService,
        cluster_id: int,
        *,
        request_timeout_s: float = 5.0,
        backup: BackupSource | None = None,
        auth: AuthService | None = None,
    ) -> None:
        self.service = service
        # Logins, users and roles: shared with the HTTP API's /v1/auth and /v3/auth, so a
        # failed-login limit counts both doors.
        self.auth = auth if auth is not None else AuthService(service)
        # What Maintenance.Snapshot streams (None: it is refused as UNIMPLEMENTED).
        self.backup = backup
        self.cluster_id = cluster_id
        # The unary calls' counts and durations (raftkv.etcd.calls), for /metrics.
        self.stats = CallStats()
        # How long one call may wait for the cluster (the server's request_timeout_s).
        self.request_timeout_s = request_timeout_s
        self.member_id = int(service.member_id)
        self._term = service.status().term
        self._unsubscribe = service.on_leader_change(self._leader_changed)

    def _leader_changed(self, leader: NodeId, term: int) -> None:
        self._term = term

    def timeout(self, call: Context) -> float:
        """Seconds `call` may wait for the cluster: the client's deadline if it set one,
        capped at the server's request_timeout_s."""
        return deadline(call, self.request_timeout_s)

    @property
    def term(self) -> int:
        return self._term

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        """The header for an answer at `revision` (None: the revision this node has
        applied, for answers that read no particular one)."""
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            revision=self.service.current_revision() if revision is None else revision,
            raft_term=self._term,
        )

    def close(self) -> None:
        self._unsubscribe()
