"""Auth on the HTTP API (`raftkv.server.auth_guard`, `auth_api`) on a 3-node cluster: with
auth enabled, every route but the open ones answers 401 without credentials and changes
nothing; a Bearer token acts as its user, whose permissions decide; logins are limited;
users and roles are managed through /v1/auth."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from server_helpers import Api, error_code, started

from raftkv.kv.auth_service import AuthSettings
from raftkv.kv.passwords import CHEAP_COST
from raftkv.server import HttpSettings
from raftkv.server.auth_guard import PUBLIC_ROUTES
from raftkv.server.routes import ROUTES
from raftkv.testing.local_cluster import run_scenario

SETTINGS = HttpSettings(
    auth=AuthSettings(password_cost=CHEAP_COST, max_failed_logins=2, hash_on_loop=True)
)
JSON = {"Content-Type": "application/json"}
# A value for each path parameter of the route table.
PATH_VALUES = {"key": "app/x", "id": "2", "name": "alice", "role": "reader", "asset": "console.js"}


async def call(
    api: Api, method: str, path: str, token: str | None = None, **kwargs: Any
) -> tuple[int, Any, dict[str, str]]:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if "json" in kwargs:
        headers.update(JSON)

    async def request() -> tuple[int, Any, dict[str, str]]:
        async with api.clients[1].request(method, path, headers=headers, **kwargs) as response:
            body = await response.read()
            parsed = await response.json() if body[:1] == b"{" else body
            return response.status, parsed, dict(response.headers)

    return await api.cluster.complete(request())


async def login(api: Api, name: str, password: str) -> str:
    status, body, _ = await call(
        api, "POST", "/v1/auth/authenticate", json={"name": name, "password": password}
    )
    assert status == 200, body
    token: str = body["token"]
    return token


@asynccontextmanager
async def secured() -> AsyncIterator[tuple[Api, str, str]]:
    """Users root and alice (role reader: read on app/, readwrite on app/alice/), auth
    enabled; yields the API and root's and alice's tokens."""
    async with started(SETTINGS) as api:
        for method, path, body in (
            ("POST", "/v1/auth/users", {"name": "root", "password": "rootpw"}),
            ("POST", "/v1/auth/users/root/roles", {"role": "root"}),
            ("POST", "/v1/auth/users", {"name": "alice", "password": "alicepw"}),
            ("POST", "/v1/auth/roles", {"name": "reader"}),
            (
                "POST",
                "/v1/auth/roles/reader/permissions",
                {"kind": "read", "key": "app/", "prefix": True},
            ),
            (
                "POST",
                "/v1/auth/roles/reader/permissions",
                {"kind": "readwrite", "key": "app/alice/", "prefix": True},
            ),
            ("POST", "/v1/auth/users/alice/roles", {"role": "reader"}),
            ("PUT", "/v1/kv/app/x", {"value": "1"}),
            ("PUT", "/v1/kv/other/x", {"value": "1"}),
            ("POST", "/v1/auth/enable", None),
        ):
            status, answer, _ = await call(api, method, path, json=body)
            assert status == 200, (path, answer)
        yield api, await login(api, "root", "rootpw"), await login(api, "alice", "alicepw")


def test_without_credentials_every_route_but_the_open_ones_answers_401_and_changes_nothing() -> (
    None
):
    async def scenario() -> None:
        async with secured() as (api, _, _):
            revision, auth_revision = api.revision(), api.services[1].machine.auth.revision
            for route in ROUTES:
                path = re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: PATH_VALUES[m[1]], route.path)
                body = {} if route.body is not None else None
                status, answer, headers = await call(api, route.method, path, json=body)
                if route.template in PUBLIC_ROUTES:
                    assert status != 401, (route.path, answer)
                    continue
                assert status == 401, (route.method, route.path, status, answer)
                assert error_code(answer) == "auth_required"
                assert headers["WWW-Authenticate"].startswith("Bearer")
            assert api.revision() == revision
            assert api.services[1].machine.auth.revision == auth_revision

    run_scenario(scenario)


def test_a_token_acts_as_its_user_and_the_users_permissions_decide() -> None:
    async def scenario() -> None:
        async with secured() as (api, root, alice):
            status, body, _ = await call(api, "GET", "/v1/kv/app/x", alice)
            assert (status, body["kv"]["value"]) == (200, "1")
            status, _, _ = await call(api, "PUT", "/v1/kv/app/alice/k", alice, json={"value": "v"})
            assert status == 200
            for method, path, body in (
                ("PUT", "/v1/kv/app/x", {"value": "2"}),
                ("GET", "/v1/kv/other/x", None),
                ("GET", "/v1/kv?key=app/&range_end=%00", None),
                ("DELETE", "/v1/kv/app/x", None),
                ("POST", "/v1/compact", {"revision": 1}),
                ("GET", "/v1/watch?key=other/x", None),
                ("GET", "/v1/snapshot", None),
                ("GET", "/v1/auth/users", None),
                ("POST", "/v1/leader/transfer", {}),
                ("GET", "/metrics", None),
                (
                    "POST",
                    "/v1/txn",
                    {
                        "compares": [
                            {"key": "other/x", "target": "version", "op": ">", "value": 0}
                        ],
                        "success": [{"op": "put", "key": "app/alice/y", "value": "1"}],
                    },
                ),
            ):
                status, answer, _ = await call(api, method, path, alice, json=body)
                assert status == 403, (method, path, status, answer)
                assert error_code(answer) == "permission_denied"
            status, answer, _ = await call(api, "GET", "/v1/kv/app/x", root)
            assert answer["kv"]["value"] == "1"
            status, _, _ = await call(api, "GET", "/metrics", root)
            assert status == 200

    run_scenario(scenario)


def test_a_bad_token_is_refused_where_credentials_are_needed_and_ignored_where_not() -> None:
    async def scenario() -> None:
        async with secured() as (api, _, alice):
            for token in ("garbage", alice[:-4] + "AAAA", "rk1." + "A" * 2000):
                status, answer, _ = await call(api, "GET", "/v1/kv/app/x", token)
                assert (status, error_code(answer)) == (401, "invalid_token")
                status, _, _ = await call(api, "GET", "/v1/status", token)
                assert status == 200
            # The bare token (etcd's gateway clients send it so) is taken too.
            status, _, _ = await call(api, "GET", "/v1/kv/app/x", headers={"Authorization": alice})
            assert status == 200

    run_scenario(scenario)


def test_a_password_change_voids_the_users_tokens() -> None:
    async def scenario() -> None:
        async with secured() as (api, _, alice):
            status, _, _ = await call(
                api, "PUT", "/v1/auth/users/alice/password", alice, json={"password": "new"}
            )
            assert status == 200
            status, answer, _ = await call(api, "GET", "/v1/kv/app/x", alice)
            assert (status, error_code(answer)) == (401, "invalid_token")
            assert "password changed" in answer["error"]["message"]
            fresh = await login(api, "alice", "new")
            status, answer, _ = await call(api, "GET", "/v1/auth/users/alice", fresh)
            assert answer == {"name": "alice", "roles": ["reader"], "has_password": True}

    run_scenario(scenario)


def test_repeated_failed_logins_answer_429_with_retry_after() -> None:
    async def scenario() -> None:
        async with secured() as (api, _, _):
            wrong = {"name": "alice", "password": "wrong"}
            for _ in range(2):
                status, answer, _ = await call(api, "POST", "/v1/auth/authenticate", json=wrong)
                assert (status, error_code(answer)) == (401, "auth_failed")
            right = {"name": "alice", "password": "alicepw"}
            status, answer, headers = await call(api, "POST", "/v1/auth/authenticate", json=right)
            assert (status, error_code(answer)) == (429, "too_many_auth_failures")
            assert int(headers["Retry-After"]) >= 1

    run_scenario(scenario)


def test_users_and_roles_are_listed_changed_and_deleted_by_root() -> None:
    async def scenario() -> None:
        async with secured() as (api, root, _):
            status, users, _ = await call(api, "GET", "/v1/auth/users", root)
            assert [user["name"] for user in users["users"]] == ["alice", "root"]
            status, roles, _ = await call(api, "GET", "/v1/auth/roles", root)
            reader = next(role for role in roles["roles"] if role["name"] == "reader")
            assert reader["permissions"] == [
                {"kind": "read", "key": "app/", "range_end": "app0"},
                {"kind": "readwrite", "key": "app/alice/", "range_end": "app/alice0"},
            ]
            status, role, _ = await call(
                api, "DELETE", "/v1/auth/roles/reader/permissions?key=app/&prefix=true", root
            )
            assert [permission["key"] for permission in role["permissions"]] == ["app/alice/"]
            for method, path, body, code in (
                ("POST", "/v1/auth/users", {"name": "alice", "password": "x"}, "auth_conflict"),
                ("POST", "/v1/auth/users", {"name": "bob"}, "invalid_request"),
                ("GET", "/v1/auth/users/ghost", None, "auth_not_found"),
                ("DELETE", "/v1/auth/users/root", None, "auth_conflict"),
                (
                    "POST",
                    "/v1/auth/roles/reader/permissions",
                    {"kind": "read", "key": "b", "range_end": "a"},
                    "invalid_request",
                ),
                ("POST", "/v1/auth/users", {"name": "x" * 200, "password": "x"}, "invalid_request"),
                (
                    "POST",
                    "/v1/auth/users",
                    {"name": "y", "password": "x" * 2000},
                    "limit_exceeded",
                ),
            ):
                status, answer, _ = await call(api, method, path, root, json=body)
                assert error_code(answer) == code, (path, answer)
            status, _, _ = await call(api, "DELETE", "/v1/auth/roles/reader", root)
            status, user, _ = await call(api, "GET", "/v1/auth/users/alice", root)
            assert user["roles"] == []
            status, _, _ = await call(api, "DELETE", "/v1/auth/users/alice", root)
            status, users, _ = await call(api, "GET", "/v1/auth/users", root)
            assert [user["name"] for user in users["users"]] == ["root"]
            status, answer, _ = await call(api, "POST", "/v1/auth/disable", root)
            assert answer["enabled"] is False
            status, _, _ = await call(api, "GET", "/v1/kv/other/x")
            assert status == 200

    run_scenario(scenario)


@pytest.mark.parametrize("body", [{"name": "a"}, {"password": "b"}, {"name": 1, "password": "b"}])
def test_a_malformed_login_is_a_400(body: dict[str, Any]) -> None:
    async def scenario() -> None:
        async with secured() as (api, _, _):
            status, answer, _ = await call(api, "POST", "/v1/auth/authenticate", json=body)
            assert (status, error_code(answer)) == (400, "invalid_request")

    run_scenario(scenario)
