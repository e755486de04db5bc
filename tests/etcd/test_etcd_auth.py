"""etcd's Auth service and token credentials on the etcd gRPC port, on a 3-node LocalCluster:
every Auth method, the token in the call's metadata acting as its user (unary calls and
streams), and etcd's exact statuses for each refusal (clients branch on them; etcdctl
prints them), and the JSON gateway's /v3/auth routes."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import grpc.aio
import pytest
from aiohttp.test_utils import TestClient, TestServer
from etcd_helpers import AUTH_SETTINGS, EtcdApi, etcd_cluster
from etcd_watch_helpers import WatchClient

from raftkv.etcd.auth_servicer import source_of
from raftkv.etcd.call_stats import CallStats
from raftkv.etcd.credentials import CallerInterceptor, common_name_of, token_of
from raftkv.etcd.proto import auth_pb2, rpc_pb2, rpc_pb2_grpc
from raftkv.etcd.server import EtcdGrpcPort
from raftkv.kv.auth_service import AuthSettings
from raftkv.server import HttpSettings, create_app
from raftkv.testing.certificates import CertificateAuthority
from raftkv.testing.local_cluster import run_scenario

Code = grpc.StatusCode
READ, WRITE, READWRITE = (
    auth_pb2.Permission.READ,
    auth_pb2.Permission.WRITE,
    auth_pb2.Permission.READWRITE,
)


class Auth:
    """Calls to one member's etcd API, each as some token's user (None: no token)."""

    def __init__(self, api: EtcdApi, node: int) -> None:
        self.api = api
        self.node = node
        self.root: str | None = None
        self.alice: str | None = None

    async def call(self, service: str, method: str, request: Any, token: str | None = None) -> Any:
        metadata = (("token", token),) if token is not None else None
        stub = getattr(self.api.stubs(self.node), service)
        # Password hashes run on threads, in real time: room for a loaded machine.
        return await self.api.cluster.complete(
            getattr(stub, method)(request, metadata=metadata), max_seconds=120
        )

    async def auth(self, method: str, request: Any, token: str | None = None) -> Any:
        return await self.call("Auth", method, request, token)

    async def login(self, name: str, password: str) -> str:
        answer = await self.auth(
            "Authenticate", rpc_pb2.AuthenticateRequest(name=name, password=password)
        )
        assert answer.token
        return str(answer.token)

    async def refused(
        self, service: str, method: str, request: Any, token: str | None = None
    ) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as refusal:
            await self.call(service, method, request, token)
        return refusal.value.code(), str(refusal.value.details())


def permission(
    kind: auth_pb2.Permission.Type, key: bytes, range_end: bytes = b""
) -> auth_pb2.Permission:
    return auth_pb2.Permission(permType=kind, key=key, range_end=range_end)


async def set_up(api: Auth) -> None:
    """etcdctl's usual steps, auth disabled: user root (role root), role reader (read on
    app/, readwrite on app/alice/) held by alice; then auth enable and both log in."""
    for method, request in (
        ("UserAdd", rpc_pb2.AuthUserAddRequest(name="root", password="rootpw")),
        ("UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root")),
        ("RoleAdd", rpc_pb2.AuthRoleAddRequest(name="reader")),
        (
            "RoleGrantPermission",
            rpc_pb2.AuthRoleGrantPermissionRequest(
                name="reader", perm=permission(READ, b"app/", b"app0")
            ),
        ),
        (
            "RoleGrantPermission",
            rpc_pb2.AuthRoleGrantPermissionRequest(
                name="reader", perm=permission(READWRITE, b"app/alice/", b"app/alice0")
            ),
        ),
        ("UserAdd", rpc_pb2.AuthUserAddRequest(name="alice", password="alicepw")),
        ("UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="reader")),
        ("AuthEnable", rpc_pb2.AuthEnableRequest()),
    ):
        answer = await api.auth(method, request)
        assert answer.header.member_id == api.node
    api.root = await api.login("root", "rootpw")
    api.alice = await api.login("alice", "alicepw")


@asynccontextmanager
async def secured(auth_settings: AuthSettings = AUTH_SETTINGS) -> AsyncIterator[Auth]:
    """A cluster set up by `set_up` through its leader's etcd port."""
    async with etcd_cluster(auth_settings=auth_settings) as api:
        auth = Auth(api, api.leader())
        await set_up(auth)
        yield auth


def put(key: bytes, value: bytes = b"v") -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(key=key, value=value)


# -- the Auth service ----------------------------------------------------------------------


class _Details(NamedTuple):
    """grpc.HandlerCallDetails' fields."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


def test_every_auth_method_answers_as_etcd() -> None:
    async def scenario() -> None:
        async with secured() as api:
            root = api.root
            status = await api.auth("AuthStatus", rpc_pb2.AuthStatusRequest())
            assert status.enabled is True
            # Eight changes after the initial revision 1.
            assert status.authRevision == 9
            users = await api.auth("UserList", rpc_pb2.AuthUserListRequest(), root)
            assert list(users.users) == ["alice", "root"]
            roles = await api.auth("RoleList", rpc_pb2.AuthRoleListRequest(), root)
            assert list(roles.roles) == ["reader", "root"]
            alice = await api.auth("UserGet", rpc_pb2.AuthUserGetRequest(name="alice"), root)
            assert list(alice.roles) == ["reader"]
            reader = await api.auth("RoleGet", rpc_pb2.AuthRoleGetRequest(role="reader"), root)
            assert list(reader.perm) == [
                permission(READ, b"app/", b"app0"),
                permission(READWRITE, b"app/alice/", b"app/alice0"),
            ]
            # A user may read itself and change its own password.
            own = await api.auth("UserGet", rpc_pb2.AuthUserGetRequest(name="alice"), api.alice)
            assert list(own.roles) == ["reader"]
            await api.auth(
                "UserChangePassword",
                rpc_pb2.AuthUserChangePasswordRequest(name="alice", password="newpw"),
                api.alice,
            )
            assert await api.login("alice", "newpw")
            # Granting a role held already changes nothing, as etcd ignores it.
            before = (await api.auth("AuthStatus", rpc_pb2.AuthStatusRequest())).authRevision
            await api.auth(
                "UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="reader"), root
            )
            after = (await api.auth("AuthStatus", rpc_pb2.AuthStatusRequest())).authRevision
            assert after == before
            await api.auth(
                "RoleRevokePermission",
                rpc_pb2.AuthRoleRevokePermissionRequest(
                    role="reader", key=b"app/", range_end=b"app0"
                ),
                root,
            )
            reader = await api.auth("RoleGet", rpc_pb2.AuthRoleGetRequest(role="reader"), root)
            assert list(reader.perm) == [permission(READWRITE, b"app/alice/", b"app/alice0")]
            await api.auth(
                "UserRevokeRole",
                rpc_pb2.AuthUserRevokeRoleRequest(name="alice", role="reader"),
                root,
            )
            alice = await api.auth("UserGet", rpc_pb2.AuthUserGetRequest(name="alice"), root)
            assert list(alice.roles) == []
            await api.auth("RoleDelete", rpc_pb2.AuthRoleDeleteRequest(role="reader"), root)
            await api.auth("UserDelete", rpc_pb2.AuthUserDeleteRequest(name="alice"), root)
            users = await api.auth("UserList", rpc_pb2.AuthUserListRequest(), root)
            assert list(users.users) == ["root"]
            # A user without a password (a client certificate names it).
            await api.auth(
                "UserAdd",
                rpc_pb2.AuthUserAddRequest(
                    name="cert-user", options=auth_pb2.UserAddOptions(no_password=True)
                ),
                root,
            )
            await api.auth("AuthDisable", rpc_pb2.AuthDisableRequest(), root)
            status = await api.auth("AuthStatus", rpc_pb2.AuthStatusRequest())
            assert status.enabled is False
            # Disabled: everything is allowed without credentials again.
            await api.call("KV", "Put", put(b"secret/x"))

    run_scenario(scenario)


def test_auth_changes_hold_on_every_member() -> None:
    async def scenario() -> None:
        async with secured() as api:
            follower = Auth(api.api, api.api.follower())
            # A token from the leader is good at a follower (HMAC tokens, not etcd's
            # simple tokens of one member).
            assert api.alice is not None
            await follower.call("KV", "Put", put(b"app/alice/k"), api.alice)
            found = await follower.call(
                "KV", "Range", rpc_pb2.RangeRequest(key=b"app/alice/k"), api.alice
            )
            assert found.kvs[0].value == b"v"

    run_scenario(scenario)


# -- credentials ---------------------------------------------------------------------------


def test_a_token_in_the_metadata_acts_as_its_user() -> None:
    async def scenario() -> None:
        async with secured() as api:
            alice = api.alice
            await api.call("KV", "Put", put(b"app/alice/a"), alice)
            found = await api.call(
                "KV", "Range", rpc_pb2.RangeRequest(key=b"app/", range_end=b"app0"), alice
            )
            assert [kv.key for kv in found.kvs] == [b"app/alice/a"]
            denied = (Code.PERMISSION_DENIED, "etcdserver: permission denied")
            assert await api.refused("KV", "Put", put(b"app/other"), alice) == denied
            assert (
                await api.refused("KV", "Range", rpc_pb2.RangeRequest(key=b"secret"), alice)
                == denied
            )
            assert (
                await api.refused("KV", "Compact", rpc_pb2.CompactionRequest(revision=1), alice)
                == denied
            )
            assert (
                await api.refused("Auth", "UserList", rpc_pb2.AuthUserListRequest(), alice)
                == denied
            )
            # Root may do anything.
            await api.call("KV", "Put", put(b"secret"), api.root)
            # "authorization", with or without "Bearer ", as some clients send it.
            for metadata in ((("authorization", f"Bearer {alice}"),), (("authorization", alice),)):
                await api.api.call(api.node, "KV", "Put", put(b"app/alice/b"), metadata)

    run_scenario(scenario)


def test_no_credentials_is_etcds_user_name_is_empty() -> None:
    async def scenario() -> None:
        async with secured() as api:
            empty = (Code.INVALID_ARGUMENT, "etcdserver: user name is empty")
            assert await api.refused("KV", "Put", put(b"app/alice/a")) == empty
            assert await api.refused("KV", "Range", rpc_pb2.RangeRequest(key=b"a")) == empty
            assert (
                await api.refused("Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=10)) == empty
            )
            # Public: the auth status, logins, the members and this member's status.
            await api.auth("AuthStatus", rpc_pb2.AuthStatusRequest())
            await api.call("Cluster", "MemberList", rpc_pb2.MemberListRequest())
            await api.call("Maintenance", "Status", rpc_pb2.StatusRequest())

    run_scenario(scenario)


def test_an_invalid_token_is_unauthenticated_but_on_public_methods() -> None:
    async def scenario() -> None:
        async with secured() as api:
            invalid = (Code.UNAUTHENTICATED, "etcdserver: invalid auth token")
            assert (
                await api.refused("KV", "Range", rpc_pb2.RangeRequest(key=b"app/"), "forged")
                == invalid
            )
            # A changed password voids the user's tokens (clientv3 then logs in again).
            old = api.alice
            await api.auth(
                "UserChangePassword",
                rpc_pb2.AuthUserChangePasswordRequest(name="alice", password="newpw"),
                api.root,
            )
            assert (
                await api.refused("KV", "Range", rpc_pb2.RangeRequest(key=b"app/"), old) == invalid
            )
            # A stream too.
            keep_alive = api.api.stubs(api.node).Lease.LeaseKeepAlive(
                metadata=(("token", "forged"),)
            )
            with pytest.raises(grpc.aio.AioRpcError) as refusal:
                await api.api.cluster.complete(keep_alive.read())
            assert (refusal.value.code(), refusal.value.details()) == invalid
            # Logging in and the status ignore a stale token, as a client holding one
            # logs in again with it still attached.
            status = await api.auth("AuthStatus", rpc_pb2.AuthStatusRequest(), "forged")
            assert status.enabled
            token = await api.auth(
                "Authenticate", rpc_pb2.AuthenticateRequest(name="alice", password="newpw"), old
            )
            assert token.token
            stats = api.api.servicers[api.node].context.stats
            assert stats.counts[("Range", "UNAUTHENTICATED")] == 2

    run_scenario(scenario)


def test_streams_run_as_the_caller_named_when_they_open() -> None:
    async def scenario() -> None:
        async with secured() as api:
            alice = (("token", api.alice),)
            granted = await api.call(
                "Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=30), api.alice
            )
            keep_alive = api.api.stubs(api.node).Lease.LeaseKeepAlive(metadata=alice)
            await api.api.cluster.complete(
                keep_alive.write(rpc_pb2.LeaseKeepAliveRequest(ID=granted.ID))
            )
            renewed = await api.api.cluster.complete(keep_alive.read())
            assert renewed.TTL == 30
            await api.api.cluster.complete(keep_alive.done_writing())
            # A watch on a range the user may not read is created and canceled, as etcd.
            watch = WatchClient(api.api, api.node, metadata=alice)
            await watch.create(key=b"secret/", range_end=b"secret0")
            refused = await watch.receive()
            assert (refused.created, refused.canceled) == (True, True)
            assert refused.cancel_reason == "etcdserver: permission denied"
            await watch.create(key=b"app/", range_end=b"app0")
            created = await watch.receive()
            assert created.created and not created.canceled
            await api.call("KV", "Put", put(b"app/alice/w", b"1"), api.alice)
            (event,) = await watch.events(1)
            assert event.kv.key == b"app/alice/w"
            watch.call.cancel()
            # Without credentials: refused.
            anonymous = WatchClient(api.api, api.node)
            await anonymous.create(key=b"app/", range_end=b"app0")
            assert (await anonymous.receive()).cancel_reason == "etcdserver: permission denied"
            anonymous.call.cancel()

    run_scenario(scenario)


def test_a_verified_client_certificate_names_its_common_names_user(tmp_path: Path) -> None:
    authority = CertificateAuthority(tmp_path, "etcd")
    server = authority.issue("server")
    pem = tuple(path.read_bytes() for path in (server.cert_file, server.key_file, server.ca_file))

    def channel_for(port: int, common_name: str) -> grpc.aio.Channel:
        client = authority.issue(common_name)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=client.ca_file.read_bytes(),
            private_key=client.key_file.read_bytes(),
            certificate_chain=client.cert_file.read_bytes(),
        )
        return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)

    async def scenario() -> None:
        async with secured() as api:
            port = EtcdGrpcPort(api.api.servicers[api.node], "127.0.0.1:0", tls=lambda: pem)
            await port.start()
            channels = {name: channel_for(port.port, name) for name in ("alice", "stranger")}
            try:

                async def call(name: str, method: str, request: Any, metadata: Any = None) -> Any:
                    stub = rpc_pb2_grpc.KVStub(channels[name])  # type: ignore[no-untyped-call]
                    return await api.api.cluster.complete(
                        getattr(stub, method)(request, metadata=metadata)
                    )

                async def refused(name: str, method: str, request: Any) -> tuple[Code, str]:
                    with pytest.raises(grpc.aio.AioRpcError) as refusal:
                        await call(name, method, request)
                    return refusal.value.code(), str(refusal.value.details())

                await call("alice", "Put", put(b"app/alice/cert"))
                assert await refused("alice", "Put", put(b"app/other")) == (
                    Code.PERMISSION_DENIED,
                    "etcdserver: permission denied",
                )
                # A certificate naming no user is no one.
                assert await refused("stranger", "Put", put(b"app/alice/cert")) == (
                    Code.INVALID_ARGUMENT,
                    "etcdserver: user name is empty",
                )
                # A token wins over the certificate.
                await call("stranger", "Put", put(b"secret/x"), (("token", api.root),))
            finally:
                for channel in channels.values():
                    await channel.close()
                await port.close()

    run_scenario(scenario)


# -- etcd's statuses -----------------------------------------------------------------------


# Two failed logins, then none for good (however much simulated time the calls take).
REFUSALS_SETTINGS = AuthSettings(
    password_cost=AUTH_SETTINGS.password_cost, max_failed_logins=2, failed_login_refill_s=1e9
)


def test_refusals_are_etcds_statuses() -> None:
    async def scenario() -> None:
        async with secured(REFUSALS_SETTINGS) as api:
            root = api.root

            async def refused(
                method: str, request: Any, token: str | None = root
            ) -> tuple[Code, str]:
                return await api.refused("Auth", method, request, token)

            pre = Code.FAILED_PRECONDITION
            assert await refused(
                "UserAdd", rpc_pb2.AuthUserAddRequest(name="alice", password="x")
            ) == (
                pre,
                "etcdserver: user name already exists",
            )
            assert await refused("UserAdd", rpc_pb2.AuthUserAddRequest(name="", password="x")) == (
                Code.INVALID_ARGUMENT,
                "etcdserver: user name is empty",
            )
            assert await refused("UserGet", rpc_pb2.AuthUserGetRequest(name="bob")) == (
                pre,
                "etcdserver: user name not found",
            )
            assert await refused("UserDelete", rpc_pb2.AuthUserDeleteRequest(name="bob")) == (
                pre,
                "etcdserver: user name not found",
            )
            assert await refused("RoleAdd", rpc_pb2.AuthRoleAddRequest(name="reader")) == (
                pre,
                "etcdserver: role name already exists",
            )
            assert await refused("RoleGet", rpc_pb2.AuthRoleGetRequest(role="writer")) == (
                pre,
                "etcdserver: role name not found",
            )
            assert await refused(
                "UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="writer")
            ) == (pre, "etcdserver: role name not found")
            assert await refused(
                "UserRevokeRole", rpc_pb2.AuthUserRevokeRoleRequest(name="alice", role="root")
            ) == (pre, "etcdserver: role is not granted to the user")
            assert await refused(
                "RoleRevokePermission",
                rpc_pb2.AuthRoleRevokePermissionRequest(role="reader", key=b"zzz"),
            ) == (pre, "etcdserver: permission is not granted to the role")
            assert await refused(
                "RoleGrantPermission", rpc_pb2.AuthRoleGrantPermissionRequest(name="reader")
            ) == (
                Code.INVALID_ARGUMENT,
                "etcdserver: permission not given",
            )
            mgmt = (Code.INVALID_ARGUMENT, "etcdserver: invalid auth management")
            assert await refused("UserDelete", rpc_pb2.AuthUserDeleteRequest(name="root")) == mgmt
            assert (
                await refused(
                    "UserRevokeRole", rpc_pb2.AuthUserRevokeRoleRequest(name="root", role="root")
                )
                == mgmt
            )
            assert await refused("UserList", rpc_pb2.AuthUserListRequest(), api.alice) == (
                Code.PERMISSION_DENIED,
                "etcdserver: permission denied",
            )
            assert await refused(
                "UserAdd", rpc_pb2.AuthUserAddRequest(name="bob", hashedPassword="$2a$10$x")
            ) == (
                Code.INVALID_ARGUMENT,
                "raftkv: hashedPassword is not accepted: send the password, raftkv hashes it",
            )
            failed = (
                Code.INVALID_ARGUMENT,
                "etcdserver: authentication failed, invalid user ID or password",
            )
            for name in ("alice", "nobody"):
                assert (
                    await refused(
                        "Authenticate",
                        rpc_pb2.AuthenticateRequest(name=name, password="wrong"),
                        None,
                    )
                    == failed
                )
            code, message = await refused(
                "Authenticate", rpc_pb2.AuthenticateRequest(name="alice", password="alicepw"), None
            )
            assert code == Code.RESOURCE_EXHAUSTED
            assert message.startswith("raftkv: too many failed logins from 127.0.0.1: retry in ")

    run_scenario(scenario)


def test_enabling_needs_a_root_user_with_the_root_role() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as raw:
            api = Auth(raw, raw.leader())
            enable = rpc_pb2.AuthEnableRequest()
            assert await api.refused("Auth", "AuthEnable", enable) == (
                Code.FAILED_PRECONDITION,
                "etcdserver: root user does not exist",
            )
            await api.auth("UserAdd", rpc_pb2.AuthUserAddRequest(name="root", password="pw"))
            assert await api.refused("Auth", "AuthEnable", enable) == (
                Code.FAILED_PRECONDITION,
                "etcdserver: root user does not have root role",
            )
            assert await api.refused(
                "Auth", "Authenticate", rpc_pb2.AuthenticateRequest(name="root", password="pw")
            ) == (Code.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")
            # Disabling a disabled auth changes nothing, as etcd.
            await api.auth("AuthDisable", rpc_pb2.AuthDisableRequest())

    run_scenario(scenario)


# -- pieces --------------------------------------------------------------------------------


def test_the_token_is_found_under_etcds_metadata_keys() -> None:
    assert token_of(None) is None
    assert token_of([("token", "t1")]) == "t1"
    assert token_of([("authorization", "Bearer t2")]) == "t2"
    assert token_of([("Authorization", b"t3")]) == "t3"
    assert token_of([("token", "t4"), ("authorization", "t5")]) == "t4"
    assert token_of([("hasleader", "true")]) is None


def test_a_methods_handler_is_wrapped_once_and_again_only_if_it_changes() -> None:
    # Wrapping cost every call ~7 µs; the caller is still named per call (tests above).
    async def behavior(request: Any, call: Any) -> None:
        return None

    async def scenario() -> None:
        interceptor = CallerInterceptor(None, CallStats())  # type: ignore[arg-type]
        handlers = [grpc.unary_unary_rpc_method_handler(behavior)]

        async def continuation(details: Any) -> Any:
            return handlers[0]

        put = _Details("/etcdserverpb.KV/Put", ())
        first = await interceptor.intercept_service(continuation, put)
        assert first is not None and first is not handlers[0]
        assert await interceptor.intercept_service(continuation, put) is first
        range_ = await interceptor.intercept_service(continuation, _Details("/x.KV/Range", ()))
        assert range_ is not first
        handlers[0] = grpc.unary_unary_rpc_method_handler(behavior)
        assert await interceptor.intercept_service(continuation, put) is not first

        async def unknown(details: Any) -> None:
            return None

        assert await interceptor.intercept_service(unknown, _Details("/x/Nope", ())) is None
        assert "/x/Nope" not in interceptor._wrapped_handlers

    run_scenario(scenario)


def test_a_certificates_common_name_is_read_from_grpcs_auth_context() -> None:
    assert common_name_of({"x509_common_name": [b"alice"]}) == "alice"
    assert common_name_of({"transport_security_type": [b"ssl"]}) is None
    assert common_name_of(None) is None


def test_failed_logins_count_against_the_peers_host_not_its_port() -> None:
    assert source_of("ipv4:10.0.0.1:51000") == "10.0.0.1"
    assert source_of("ipv6:[::1]:51000") == "::1"
    assert source_of("unix:/tmp/socket") == "unix:/tmp/socket"
    assert source_of("") == "unknown"


# -- the JSON gateway ----------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_the_gateways_auth_routes_in_etcds_json_mapping() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            leader = api.leader()
            app = create_app(api.services[leader], HttpSettings(), api.servicers[leader])
            client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1", port=0))
            await client.start_server()

            async def post(path: str, body: Any, token: str | None = None) -> tuple[int, Any]:
                headers = {"Content-Type": "application/json"}
                if token is not None:
                    headers["Authorization"] = token  # the bare token, as etcd's clients
                async with client.post(path, headers=headers, json=body) as response:
                    return response.status, await response.json()

            async def ok(path: str, body: Any, token: str | None = None) -> Any:
                status, answer = await api.cluster.complete(
                    post(path, body, token), max_seconds=120
                )
                assert status == 200, answer
                return answer

            async def refused(path: str, body: Any, token: str | None = None) -> tuple[int, Any]:
                answer: tuple[int, Any] = await api.cluster.complete(
                    post(path, body, token), max_seconds=120
                )
                return answer

            try:
                answer = await ok("/v3/auth/user/add", {"name": "root", "password": "rootpw"})
                assert answer["header"]["member_id"] == str(leader)
                await ok("/v3/auth/user/grant", {"user": "root", "role": "root"})
                await ok("/v3/auth/role/add", {"name": "reader"})
                prefix = {"permType": "READ", "key": b64("app/"), "range_end": b64("app0")}
                await ok("/v3/auth/role/grant", {"name": "reader", "perm": prefix})
                await ok("/v3/auth/user/add", {"name": "alice", "password": "alicepw"})
                await ok("/v3/auth/user/grant", {"user": "alice", "role": "reader"})
                await ok("/v3/auth/enable", {})
                status = await ok("/v3/auth/status", {})
                assert (status["enabled"], status["authRevision"]) == (True, "8")
                root = (await ok("/v3/auth/authenticate", {"name": "root", "password": "rootpw"}))[
                    "token"
                ]
                alice = (
                    await ok("/v3/auth/authenticate", {"name": "alice", "password": "alicepw"})
                )["token"]
                # READ is permType's default: left out, as etcd's gateway leaves it out.
                role = await ok("/v3/auth/role/get", {"role": "reader"}, root)
                assert role["perm"] == [{"key": b64("app/"), "range_end": b64("app0")}]
                assert (await ok("/v3/auth/user/list", {}, root))["users"] == ["alice", "root"]
                assert (await ok("/v3/auth/role/list", {}, root))["roles"] == ["reader", "root"]
                user = await ok("/v3/auth/user/get", {"name": "alice"}, alice)
                assert user["roles"] == ["reader"]
                await ok("/v3/kv/range", {"key": b64("app/x")}, alice)
                # Without credentials, or with a bad token: etcd's refusals, in the
                # gateway's body.
                empty, invalid = "etcdserver: user name is empty", "etcdserver: invalid auth token"
                for token, status, code, message in (
                    (None, 400, 3, empty),
                    ("forged", 401, 16, invalid),
                ):
                    assert await refused("/v3/kv/range", {"key": b64("a")}, token) == (
                        status,
                        {"error": message, "code": code, "message": message},
                    )
                denied = "etcdserver: permission denied"
                assert await refused("/v3/kv/put", {"key": b64("app/x")}, alice) == (
                    403,
                    {"error": denied, "code": 7, "message": denied},
                )
                assert await refused("/v3/auth/user/list", {}, alice) == (
                    403,
                    {"error": denied, "code": 7, "message": denied},
                )
                failed = "etcdserver: authentication failed, invalid user ID or password"
                assert await refused(
                    "/v3/auth/authenticate", {"name": "alice", "password": "wrong"}
                ) == (400, {"error": failed, "code": 3, "message": failed})
                await ok(
                    "/v3/auth/role/revoke",
                    {"role": "reader", "key": b64("app/"), "range_end": b64("app0")},
                    root,
                )
                await ok("/v3/auth/user/revoke", {"name": "alice", "role": "reader"}, root)
                await ok("/v3/auth/user/changepw", {"name": "alice", "password": "pw2"}, root)
                await ok("/v3/auth/role/delete", {"role": "reader"}, root)
                await ok("/v3/auth/user/delete", {"name": "alice"}, root)
                await ok("/v3/auth/disable", {}, root)
                assert (await ok("/v3/auth/status", {})).get("enabled") is None  # false: left out
            finally:
                await client.close()

    run_scenario(scenario)
