"""`Client`: the asyncio client (over httpx.AsyncClient). See the package docstring."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TypeVar

import httpx

from raftkv.api.auth import PermissionKind
from raftkv.client import auth_requests, protocol
from raftkv.client.async_watch import Watcher
from raftkv.client.call import Call, Done, Wait
from raftkv.client.credentials import credentials_of
from raftkv.client.errors import ClientError, SessionExpired
from raftkv.client.leases import KeptLease, check_ttl, random_lease_id
from raftkv.client.protocol import Session
from raftkv.client.results import (
    Alarm,
    AuthStatus,
    Cluster,
    CompactResult,
    Defragmented,
    DeleteResult,
    KeyValue,
    LeaseGrantResult,
    LeaseInfo,
    LeaseKeepAliveResult,
    LeaseRevokeResult,
    LeaseStatus,
    PutResult,
    RangeResult,
    Role,
    Status,
    TxnResult,
    User,
)
from raftkv.client.routing import Router, leaders_view, next_to_ask
from raftkv.client.sessions import AsyncSessions
from raftkv.client.settings import ClientSettings
from raftkv.client.tls import verify_of
from raftkv.client.txn import Compare, Data, Op, to_bytes
from raftkv.client.watching import WatchOptions, WatchStream

__all__ = ["Client"]

T = TypeVar("T")

_JSON = {"content-type": "application/json"}


class Client:
    """An asyncio client of a raftkv cluster; one per event loop. Safe for concurrent
    calls from many tasks (writes beyond `max_concurrent_writes` wait for a lane).

    `endpoints`: base URLs of some members ("http://host:port"), as a list or one
    comma-separated string. The test seams: `transport` (an httpx transport instead of the
    network), `rng` (backoff jitter), `sleep` and `clock` (backoff and deadlines, in
    seconds; the real ones by default).
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        settings: ClientSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings if settings is not None else ClientSettings()
        self.router = Router(endpoints, self.settings.member_refresh_s)
        self.client_id = self.settings.client_id or uuid.uuid4().hex
        self._sessions = AsyncSessions(self.client_id, self.settings.max_concurrent_writes)
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep if sleep is not None else asyncio.sleep
        self._clock = clock if clock is not None else time.monotonic
        # No proxies from the environment: a client talks to the cluster's nodes directly
        # (pass a transport to go through one). Redirects are not followed: the API has none.
        self._http = httpx.AsyncClient(
            transport=transport,
            trust_env=False,
            verify=verify_of(self.settings),
            auth=credentials_of(self.settings),
        )

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self.router.endpoints

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the KV API ------------------------------------------------------------------------

    async def put(
        self, key: Data, value: Data, *, lease: int = 0, prev_kv: bool = False
    ) -> PutResult:
        """Set `key` to `value`, exactly once (see the package docstring)."""
        key, value = to_bytes(key, "key"), to_bytes(value, "value")
        async with self._sessions.session() as session:
            return await self._write(
                lambda lane: protocol.put(key, value, lease, prev_kv, lane), session
            )

    async def get(
        self, key: Data, *, revision: int = 0, serializable: bool = False
    ) -> KeyValue | None:
        """The key's value (at `revision`, 0: the latest), or None if it does not exist.
        Linearizable unless `serializable` (then any node answers from its own state)."""
        return await self._call(protocol.get(to_bytes(key, "key"), revision, serializable))

    async def delete(
        self, key: Data, *, prefix: bool = False, prev_kv: bool = False
    ) -> DeleteResult:
        """Delete `key`, or every key starting with it; exactly once."""
        key = to_bytes(key, "key")
        async with self._sessions.session() as session:
            return await self._write(
                lambda lane: protocol.delete(key, prefix, prev_kv, lane), session
            )

    async def range(
        self,
        key: Data = b"",
        range_end: Data = b"",
        *,
        prefix: bool = False,
        limit: int = 0,
        revision: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        serializable: bool = False,
    ) -> RangeResult:
        """Keys in [key, range_end) (`key` alone if range_end is empty), or starting with
        `key` if `prefix` (every key if `key` is empty too); in key order, at most `limit`
        (0: all)."""
        request = protocol.range_(
            to_bytes(key, "key"),
            to_bytes(range_end, "range_end"),
            prefix=prefix,
            limit=limit,
            revision=revision,
            keys_only=keys_only,
            count_only=count_only,
            serializable=serializable,
        )
        return await self._call(request)

    async def txn(
        self,
        compares: Sequence[Compare] = (),
        success: Sequence[Op] = (),
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        """If every compare holds run `success`, else `failure`, atomically; exactly once.
        Build compares and ops with `raftkv.client.txn`. A txn of range ops only is a
        read: no session, retried after any failure."""
        if protocol.is_read_only(success, failure):
            return await self._call(protocol.txn(compares, success, failure, None))
        async with self._sessions.session() as session:
            return await self._write(
                lambda lane: protocol.txn(compares, success, failure, lane), session
            )

    async def compact(self, revision: int) -> CompactResult:
        """Forget the history before `revision`. Not exactly-once (no session): retried only
        when nothing was applied, else OutcomeUnknown (compacting twice is refused as
        `compacted`, so finding out is cheap)."""
        return await self._call(protocol.compact(revision))

    # -- leases ----------------------------------------------------------------------------

    async def lease_grant(self, ttl: int, *, id: int = 0) -> LeaseGrantResult:
        """A lease of `ttl` seconds (raised to the server's minimum; the result says which
        TTL was granted). `id` 0: the client picks a random one, so a retry after an
        unknown outcome cannot grant two leases (LeaseExists if `id` is taken)."""
        check_ttl(ttl)
        lease_id = id or random_lease_id()
        granted = await self._call(protocol.lease_grant(ttl, lease_id))
        if granted.revision == 0:
            # An earlier attempt granted it and its answer was lost: read what it granted.
            info = await self._call(protocol.lease_info(lease_id, False, False))
            granted = LeaseGrantResult(lease_id, info.granted_ttl, info.revision, info.leader)
        return granted

    async def lease_keep_alive(self, id: int) -> LeaseKeepAliveResult:
        """Renew lease `id` once: it expires no earlier than its TTL from now.
        LeaseNotFound if it is gone."""
        return await self._call(protocol.lease_keep_alive(id))

    async def lease_revoke(self, id: int) -> LeaseRevokeResult:
        """End lease `id` and delete its keys, in one revision. LeaseNotFound if it is
        gone (unless a retry of this call finds it gone: then it was this call)."""
        return await self._call(protocol.lease_revoke(id))

    async def lease_time_to_live(
        self, id: int, *, keys: bool = False, serializable: bool = False
    ) -> LeaseInfo:
        """Lease `id`'s remaining and granted TTL (and its keys with `keys=True`)."""
        return await self._call(protocol.lease_info(id, keys, serializable))

    async def leases(self, *, serializable: bool = False) -> tuple[LeaseStatus, ...]:
        """Every lease, by id."""
        return await self._call(protocol.leases(serializable))

    def lease(self, ttl: int, *, id: int = 0) -> KeptLease:
        """A lease kept alive in the background: `async with client.lease(10) as lease:`
        grants it, keeps it alive every TTL/3 and revokes it on exit (see `leases`)."""
        check_ttl(ttl)
        return KeptLease(self, ttl, id, self._sleep, self._clock)

    # -- watches ---------------------------------------------------------------------------

    def watch(
        self,
        key: Data = b"",
        range_end: Data = b"",
        *,
        prefix: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
        no_put: bool = False,
        no_delete: bool = False,
        progress_notify: bool = False,
        progress_interval_s: float = 5.0,
    ) -> Watcher:
        """Watch `key`, [key, range_end), or every key starting with `key` (`prefix`;
        every key if `key` is empty too), from `start_revision` (0: now). Iterate the
        result for WatchEvents, or its `batches()` for whole revisions (and progress, with
        `progress_notify`). It reconnects and resumes by itself: every matching event once,
        in revision order (see `watching`)."""
        options = WatchOptions(
            to_bytes(key, "key"),
            to_bytes(range_end, "range_end"),
            prefix=prefix,
            start_revision=start_revision,
            prev_kv=prev_kv,
            no_put=no_put,
            no_delete=no_delete,
            progress_notify=progress_notify,
            progress_interval_s=progress_interval_s,
        )
        stream = WatchStream(options, self.router, self.settings, self._rng)
        return Watcher(
            stream, self._http, self._sleep, self._clock, self.settings.request_timeout_s
        )

    # -- the cluster -----------------------------------------------------------------------

    async def status(self, endpoint: str | None = None, *, hash: bool = False) -> Status:
        """A node's status: `endpoint`'s (one attempt), or any endpoint's. With `hash`,
        also the SHA-256 of its whole committed KV state (`Status.hash`; a full scan on
        the node, O(data): compare members' with `raftkv endpoint hashkv`)."""
        return await self._call(protocol.status(hash), endpoint)

    async def cluster(self) -> Cluster:
        """The members as the leader sees them (only its answer has the match indexes,
        lags and recent contacts): asked of any endpoint, then, until an answer is the
        leader's, of the leader the answers name or of the other members they list (a
        removed member lists the live ones). If the leader cannot be asked, the first
        current member's answer (match indexes None). Also refreshes where the client
        reaches the members and the leader."""
        views = [await self._call(protocol.cluster())]
        asked = [views[0].endpoint]
        while views[-1].id != views[-1].leader:
            endpoint = next_to_ask(views, asked)
            if endpoint is None:
                break
            asked.append(endpoint)
            with contextlib.suppress(ClientError):
                views.append(await self._call(protocol.cluster(), endpoint))
        return leaders_view(views)

    async def add_member(self, member_id: int, peer_url: str) -> Cluster:
        """Add node `member_id`, reachable by peers at `peer_url`, as a learner."""
        return await self._call(protocol.add_member(member_id, peer_url))

    async def promote_member(self, member_id: int) -> Cluster:
        """Make learner `member_id` a voter; Refused (`not_caught_up`) while it lags."""
        return await self._call(protocol.promote_member(member_id))

    async def remove_member(self, member_id: int) -> Cluster:
        """Remove member `member_id` (voter or learner; the leader too: it hands over)."""
        return await self._call(protocol.remove_member(member_id))

    async def update_member(self, member_id: int, peer_url: str) -> Cluster:
        """Every member reaches `member_id` at `peer_url` (host:port) from now on; start
        it listening there (etcd's member update)."""
        return await self._call(protocol.update_member(member_id, peer_url))

    async def transfer_leadership(self, to: int = 0) -> int:
        """Hand leadership to voter `to` (0: the most caught-up); the new leader's id."""
        return await self._call(protocol.transfer_leadership(to))

    async def defragment(self, endpoint: str) -> Defragmented:
        """Compact the storage files of the node at `endpoint` whole (etcd's defragment):
        the space of deleted and compacted data comes back now. One node per call, as
        etcdctl defrag asks each endpoint."""
        return await self._call(protocol.defragment(), endpoint)

    async def alarms(self) -> tuple[Alarm, ...]:
        """The cluster's alarms (linearizable): CORRUPT and NOSPACE, by member."""
        return await self._call(protocol.alarms())

    async def disarm_alarms(self, member_id: int = 0) -> tuple[Alarm, ...]:
        """End the NOSPACE alarm of `member_id` (0: of every member); the alarms left. A
        member still out of space raises its alarm again within a second."""
        return await self._call(protocol.disarm_alarms(member_id))

    # -- users and roles (raftkv.client.auth_requests) -------------------------------------

    async def auth_status(self) -> AuthStatus:
        """Whether the cluster has auth enabled, and its auth revision."""
        return await self._call(auth_requests.auth_status())

    async def auth_enable(self) -> AuthStatus:
        """Enable auth (needs user root holding the role root)."""
        return await self._call(auth_requests.auth_enable())

    async def auth_disable(self) -> AuthStatus:
        """Disable auth (root): every request is allowed again."""
        return await self._call(auth_requests.auth_disable())

    async def users(self) -> tuple[User, ...]:
        """Every user, by name (root)."""
        return await self._call(auth_requests.users())

    async def user(self, name: str) -> User:
        """A user and its roles (root, or the user itself)."""
        return await self._call(auth_requests.user(name))

    async def add_user(self, name: str, password: str | None) -> User:
        """Add a user (root); `password` None: one only a client certificate names."""
        return await self._call(auth_requests.add_user(name, password))

    async def delete_user(self, name: str) -> AuthStatus:
        """Delete a user (root); its tokens end."""
        return await self._call(auth_requests.delete_user(name))

    async def change_password(self, name: str, password: str) -> AuthStatus:
        """Set a user's password (root, or the user itself); its tokens end."""
        return await self._call(auth_requests.change_password(name, password))

    async def grant_role(self, name: str, role: str) -> User:
        """Grant user `name` a role (root)."""
        return await self._call(auth_requests.grant_role(name, role))

    async def revoke_role(self, name: str, role: str) -> User:
        """Take a role from user `name` (root)."""
        return await self._call(auth_requests.revoke_role(name, role))

    async def roles(self) -> tuple[Role, ...]:
        """Every role with its permissions, by name (root)."""
        return await self._call(auth_requests.roles())

    async def role(self, name: str) -> Role:
        """A role and its permissions (root)."""
        return await self._call(auth_requests.role(name))

    async def add_role(self, name: str) -> Role:
        """Add a role (root)."""
        return await self._call(auth_requests.add_role(name))

    async def delete_role(self, name: str) -> AuthStatus:
        """Delete a role (root); its users lose it."""
        return await self._call(auth_requests.delete_role(name))

    async def grant_permission(
        self,
        role: str,
        kind: PermissionKind,
        key: Data,
        range_end: Data = b"",
        *,
        prefix: bool = False,
    ) -> Role:
        """Give `role` `kind` ("read", "write", "readwrite") on `key`, [key, range_end), or
        every key starting with `key` (`prefix`) (root)."""
        return await self._call(
            auth_requests.grant_permission(role, kind, key, range_end, prefix=prefix)
        )

    async def revoke_permission(
        self, role: str, key: Data, range_end: Data = b"", *, prefix: bool = False
    ) -> Role:
        """Take from `role` its permission on exactly that range (root)."""
        return await self._call(
            auth_requests.revoke_permission(role, key, range_end, prefix=prefix)
        )

    async def health(self, endpoint: str | None = None) -> bool:
        """Whether `endpoint` (one attempt), or any endpoint, answers `/health` with "ok"."""
        return await self._call(protocol.health(), endpoint)

    async def _write(
        self, request: Callable[[Session], protocol.Request[T]], session: Session
    ) -> T:
        """A write on its session; started afresh once if the server had forgotten the
        session before this write's first attempt (SessionExpired: nothing applied)."""
        try:
            return await self._call(request(session))
        except SessionExpired:
            return await self._call(request(self._sessions.renew(session)))

    # -- attempts --------------------------------------------------------------------------

    async def _call(self, request: protocol.Request[T], endpoint: str | None = None) -> T:
        if endpoint is None and request.to_leader and self.router.wants_discovery(self._clock()):
            await self._discover()
        pinned = None if endpoint is None else endpoint.rstrip("/")
        call = Call(request, self.router, self.settings, self._rng, self._clock(), endpoint=pinned)
        headers = _JSON if request.body is not None else None
        step: Done[T] | Wait
        while True:
            target = call.next_endpoint()
            try:
                response = await self._http.request(
                    request.method,
                    target + request.path,
                    params=request.params,
                    content=request.body,
                    headers=headers,
                    timeout=call.attempt_timeout(self._clock()),
                )
            except httpx.TransportError as error:
                step = call.lost(target, error, self._clock())
            else:
                step = call.answered(target, response.status_code, response.content, self._clock())
            if isinstance(step, Done):
                return step.value
            if step.discover_at is not None:
                await self._discover(step.discover_at)
            await self._sleep(step.seconds)

    async def _discover(self, endpoint: str | None = None) -> None:
        """Learn where the members and the leader are: one /v1/cluster attempt at
        `endpoint`, else at the rotation's endpoint."""
        self.router.discovery_started(self._clock())
        if endpoint is None:
            endpoint = self.router.pick(to_leader=False, avoid=())
        # A failure is no error of the caller's: calls still reach the cluster through any
        # node, and the next leader change tries again.
        with contextlib.suppress(ClientError):
            await self._call(protocol.cluster(), endpoint)
