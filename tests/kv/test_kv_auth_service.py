"""`AuthService` and the checks of `KvService` on a 3-node cluster with a manual clock: who
may read, write, watch, revoke and administer once auth is enabled, logins and their
tokens, and a member that lags behind a permission change."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from kv_helpers import started, stop

from raftkv.kv import KvCommand, KvService, Put, Range, Txn, TxnCompare, encode_command
from raftkv.kv.auth_commands import Permission
from raftkv.kv.auth_service import AuthService, AuthSettings
from raftkv.kv.auth_state import ROOT
from raftkv.kv.callers import ANONYMOUS, INTERNAL, Caller, acting_as
from raftkv.kv.errors import (
    AuthFailed,
    AuthNotEnabled,
    AuthRequired,
    AuthRevisionChanged,
    InvalidToken,
    PermissionDenied,
    SessionExpired,
    TooManyFailedLogins,
)
from raftkv.kv.passwords import CHEAP_COST
from raftkv.testing.local_cluster import LocalCluster, run_scenario

T = TypeVar("T")
SETTINGS = AuthSettings(password_cost=CHEAP_COST, max_failed_logins=3, hash_on_loop=True)
ROOT_CALLER = Caller(ROOT)
ALICE = Caller("alice")


class Members:
    """The cluster, a KvService and an AuthService per member, and a way to run a call
    as some caller."""

    def __init__(
        self, cluster: LocalCluster, services: dict[int, KvService], clock: list[int]
    ) -> None:
        self.cluster = cluster
        self.services = services
        self.auth = {node: AuthService(service, SETTINGS) for node, service in services.items()}
        self.clock = clock
        leader = cluster.leader()
        assert leader is not None
        self.leader = int(leader.id)

    async def run(self, caller: Caller, call: Awaitable[T]) -> T:
        with acting_as(caller):
            return await self.cluster.complete(call)

    @property
    def kv(self) -> KvService:
        return self.services[self.leader]

    @property
    def users(self) -> AuthService:
        return self.auth[self.leader]


@asynccontextmanager
async def secured(tmp_path: Path) -> AsyncIterator[Members]:
    """A cluster with users root (password "rootpw") and alice (role app-reader: read on
    app/, readwrite on app/alice/), auth enabled."""
    cluster, services = await started(tmp_path)
    wall_clock = [1_000_000]
    for service in services.values():
        service.authorizer._wall_clock_ms = lambda: wall_clock[0]
    members = Members(cluster, services, wall_clock)
    try:
        users = members.users
        for call in (
            users.add_user(ROOT, "rootpw"),
            users.grant_role(ROOT, ROOT),
            users.add_user("alice", "alicepw"),
            users.add_role("app-reader"),
            users.grant_permission("app-reader", Permission("read", b"app/", b"app0")),
            users.grant_permission(
                "app-reader", Permission("readwrite", b"app/alice/", b"app/alice0")
            ),
            users.grant_role("alice", "app-reader"),
            users.enable(),
        ):
            await members.run(ANONYMOUS, call)
        yield members
    finally:
        await stop(cluster, services)


def test_without_credentials_nothing_is_read_or_written_once_auth_is_enabled(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with secured(tmp_path) as members:
            kv = members.kv
            for call in (
                kv.put(b"app/x", b"1"),
                kv.get(b"app/x"),
                kv.range(Range(b"\0", b"\0"), serializable=True),
                kv.lease_grant(10),
                kv.leases(),
                kv.txn(Txn(success=[Put(b"a", b"1")])),
            ):
                with pytest.raises(AuthRequired):
                    await members.run(ANONYMOUS, call)
            revision = kv.current_revision()
            await members.run(ROOT_CALLER, kv.put(b"app/x", b"1"))
            assert kv.current_revision() == revision + 1

    run_scenario(scenario)


def test_a_reader_of_a_prefix_reads_it_and_nothing_else(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with secured(tmp_path) as members:
            kv = members.kv
            await members.run(ROOT_CALLER, kv.put(b"app/x", b"1"))
            await members.run(ROOT_CALLER, kv.put(b"other/x", b"1"))
            found = await members.run(ALICE, kv.get(b"app/x"))
            assert found.kvs[0].value == b"1"
            await members.run(ALICE, kv.range(Range(b"app/", b"app0")))
            await members.run(ALICE, kv.put(b"app/alice/mine", b"2", prev_kv=True))
            for call, what in (
                (kv.put(b"app/x", b"2"), "write key b'app/x'"),
                (kv.get(b"other/x"), "read key b'other/x'"),
                (kv.range(Range(b"app/", b"\0")), "read range b'app/' to the end"),
                (kv.delete_range(b"app/", b"app0"), "write range"),
                # A txn is checked on every key it touches: its compares, both branches.
                (
                    kv.txn(
                        Txn(
                            compares=[TxnCompare(b"other/x", "version", ">", 0)],
                            success=[Put(b"app/alice/y", b"1")],
                        )
                    ),
                    "read key b'other/x'",
                ),
                (
                    kv.txn(Txn(success=[Range(b"app/x")], failure=[Put(b"app/x", b"3")])),
                    "write key b'app/x'",
                ),
                (kv.compact(1), "compact"),
            ):
                with pytest.raises(PermissionDenied, match=what):
                    await members.run(ALICE, call)
            assert (await members.run(ROOT_CALLER, kv.get(b"app/x"))).kvs[0].value == b"1"
            allowed = Txn(
                compares=[TxnCompare(b"app/x", "version", ">", 0)],
                success=[Put(b"app/alice/y", b"1")],
                failure=[Range(b"app/x")],
            )
            assert (await members.run(ALICE, kv.txn(allowed))).succeeded

    run_scenario(scenario)


def test_admin_work_needs_the_role_root(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with secured(tmp_path) as members:
            kv, users = members.kv, members.users
            for call in (
                kv.transfer_leadership(None),
                kv.remove_member(3),
                kv.disarm_nospace_alarms(),
                kv.backup_snapshot(),
                kv.state_hash(),
                kv.defragment(),
                users.add_user("mallory", "pw"),
                users.grant_role("alice", ROOT),
                users.users(),
                users.roles(),
                users.disable(),
            ):
                with pytest.raises(PermissionDenied, match="role root"):
                    await members.run(ALICE, call)
            # A user reads its own record; the node's own work is never refused.
            assert (await members.run(ALICE, users.user("alice"))).roles == ["app-reader"]
            with pytest.raises(PermissionDenied):
                await members.run(ALICE, users.user(ROOT))
            await members.run(INTERNAL, kv.compact(1))
            names = [user.name for user in await members.run(ROOT_CALLER, users.users())]
            assert names == ["alice", ROOT]

    run_scenario(scenario)


def test_a_lease_revoke_needs_write_on_every_key_attached(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with secured(tmp_path) as members:
            kv = members.kv
            lease = (await members.run(ALICE, kv.lease_grant(60))).id
            await members.run(ROOT_CALLER, kv.put(b"other/x", b"1", lease=lease))
            with pytest.raises(PermissionDenied, match="other/x"):
                await members.run(ALICE, kv.lease_revoke(lease))
            # Listing the keys attached shows names alice may not read: refused too.
            with pytest.raises(PermissionDenied, match="other/x"):
                await members.run(ALICE, kv.lease_status(lease, keys=True))
            await members.run(ALICE, kv.lease_status(lease))
            await members.run(ROOT_CALLER, kv.delete_range(b"other/x"))
            await members.run(ALICE, kv.put(b"app/alice/k", b"1", lease=lease))
            await members.run(ALICE, kv.lease_revoke(lease))

    run_scenario(scenario)


def test_a_login_gives_a_token_every_member_takes_until_the_password_changes(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with secured(tmp_path) as members:
            users = members.users
            login = await members.run(ANONYMOUS, users.authenticate("alice", "alicepw", "a"))
            assert login.user == "alice" and login.ttl_s == SETTINGS.token_ttl_s
            await members.cluster.run_until(
                lambda: len({s.machine.auth.revision for s in members.services.values()}) == 1
            )
            for service in members.services.values():
                assert service.authorizer.caller_for_token(login.token) == ALICE
            # Alice changes her own password: the old token is void.
            await members.run(ALICE, users.change_password("alice", "newpw"))
            with pytest.raises(InvalidToken, match="password changed"):
                members.kv.authorizer.caller_for_token(login.token)
            with pytest.raises(AuthFailed):
                await members.run(ANONYMOUS, users.authenticate("alice", "alicepw", "a"))
            again = await members.run(ANONYMOUS, users.authenticate("alice", "newpw", "a"))
            members.clock[0] += SETTINGS.token_ttl_s * 1000
            with pytest.raises(InvalidToken, match="expired"):
                members.kv.authorizer.caller_for_token(again.token)
            # A deleted user's tokens are void.
            third = await members.run(ANONYMOUS, users.authenticate("alice", "newpw", "a"))
            await members.run(ROOT_CALLER, users.delete_user("alice"))
            with pytest.raises(InvalidToken, match="deleted"):
                members.kv.authorizer.caller_for_token(third.token)

    run_scenario(scenario)


def test_failed_logins_are_limited_per_source_and_unknown_users_fail_alike(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with secured(tmp_path) as members:
            users = members.users
            for name in ("alice", "ghost", "alice"):
                with pytest.raises(AuthFailed, match="invalid user name or password"):
                    await members.run(ANONYMOUS, users.authenticate(name, "wrong", "10.1.1.1"))
            with pytest.raises(TooManyFailedLogins):
                await members.run(ANONYMOUS, users.authenticate("alice", "alicepw", "10.1.1.1"))
            await members.run(ANONYMOUS, users.authenticate("alice", "alicepw", "10.1.1.2"))
            assert users.failed_login_count == 3

    run_scenario(scenario)


def test_a_member_behind_a_revoked_permission_cannot_let_a_write_through(
    tmp_path: Path,
) -> None:
    """A write checked against permissions that have since changed (its member had not
    applied the change yet) is refused at apply; the member checks again, now refusing it."""

    async def scenario() -> None:
        async with secured(tmp_path) as members:
            kv = members.kv
            checked = kv.machine.auth.revision
            await members.run(ROOT_CALLER, members.users.revoke_role("alice", "app-reader"))
            # What a lagging member would have proposed for alice, checked at `checked`.
            stale = KvCommand(Put(b"app/alice/x", b"1"), auth_revision=checked)
            with pytest.raises(AuthRevisionChanged):
                await members.cluster.complete(kv.node.propose(encode_command(stale)))
            with pytest.raises(PermissionDenied):
                await members.run(ALICE, kv.put(b"app/alice/x", b"1"))

    run_scenario(scenario)


def test_each_user_has_exactly_once_sessions_of_its_own(tmp_path: Path) -> None:
    """A user naming another's client id gets a session of its own: never the other's
    stored result (its previous value, say), nor a stale_sequence that spoils it."""

    async def scenario() -> None:
        async with secured(tmp_path) as members:
            kv = members.kv
            await members.run(ROOT_CALLER, kv.put(b"app/x", b"secret", client_id="c", sequence=1))
            first = await members.run(
                ROOT_CALLER, kv.put(b"app/x", b"next", prev_kv=True, client_id="c", sequence=2)
            )
            assert first.prev_kv is not None and first.prev_kv.value == b"secret"
            # Alice replays root's client id and sequence: a first write of her own session
            # (sequence 2 of a session she never had), not root's stored answer.
            with pytest.raises(SessionExpired):
                await members.run(
                    ALICE, kv.put(b"app/alice/k", b"v", prev_kv=True, client_id="c", sequence=2)
                )
            mine = await members.run(ALICE, kv.put(b"app/alice/k", b"v", client_id="c", sequence=1))
            assert mine.prev_kv is None
            again = await members.run(
                ROOT_CALLER, kv.put(b"app/x", b"next", prev_kv=True, client_id="c", sequence=2)
            )
            assert again == first  # root's session is untouched

    run_scenario(scenario)


def test_logins_need_auth_enabled(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster, services = await started(tmp_path)
        try:
            service = next(iter(services.values()))
            with pytest.raises(AuthNotEnabled):
                await cluster.complete(AuthService(service, SETTINGS).authenticate("a", "b", "c"))
            # With auth disabled anyone may do anything.
            await cluster.complete(service.put(b"k", b"v"))
        finally:
            await stop(cluster, services)

    run_scenario(scenario)
