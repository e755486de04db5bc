"""No open doors for browsers (issue 17, `raftkv.server.browser_guards`): a body must say it
is JSON, the Host must be one the node answers to, an Origin must be the node's own or
listed; each refusal happens before any handler runs, so nothing is written.

The API runs on a one-node LocalCluster (real Node, manual clock) behind the real client
port on 127.0.0.1 (`server_helpers.served`); a Host header aiohttp's client would not
send is written as raw bytes on a socket."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from server_helpers import error_code, served, status_of

from raftkv.server import HttpSettings
from raftkv.server.browser_guards import BrowserGuards
from raftkv.server.browser_policy import ANY, allowed_hosts, normalize_origin, parse_host_pattern
from raftkv.testing.local_cluster import run_scenario

JSON = {"Content-Type": "application/json"}


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    run_scenario(scenario, timeout_s=60)


def guarded(hosts: tuple[str, ...] = (ANY,), origins: tuple[str, ...] = ()) -> HttpSettings:
    return HttpSettings(browsers=BrowserGuards(hosts=hosts, origins=origins))


def put_with_host(host: str, key: str = "k") -> bytes:
    body = b'{"value": "v"}'
    return (
        f"PUT /v1/kv/{key} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


# -- content type ----------------------------------------------------------------------------

# One JSON body per POST route family, which would be applied if it were let in.
WRITES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/set", {"key": "k", "value": "v"}),
    ("POST", "/v1/txn", {"success": [{"op": "put", "key": "k", "value": "v"}]}),
    ("POST", "/v1/compact", {"revision": 1}),
    ("POST", "/v1/lease", {"ttl": 60, "id": 7}),
    ("POST", "/v1/members", {"id": 9, "peer_url": "127.0.0.1:9"}),
    ("POST", "/v1/members/1/promote", {}),
    ("POST", "/v1/leader/transfer", {"to": 0}),
]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_post_body_not_sent_as_json_is_refused_415_on_every_route(content_type: str) -> None:
    """The types a web page may POST cross-origin without a preflight: each used to be
    decoded as JSON and applied."""

    async def scenario() -> None:
        async with served() as api:
            for method, path, body in WRITES:
                status, answer = await api.call(
                    method, path, data=json.dumps(body), headers={"Content-Type": content_type}
                )
                assert (status, error_code(answer)) == (415, "unsupported_media_type"), path
                assert "application/json" in answer["error"]["message"]
            # Nothing was written: no key, no lease, no member, nothing compacted.
            assert await api.keys() == []
            assert (await api.call("GET", "/v1/leases"))[1]["leases"] == []
            assert [m["id"] for m in (await api.call("GET", "/v1/cluster"))[1]["members"]] == [1]
            # A body without any Content-Type is refused as well (on /v1; etcd's gateway
            # takes it, as etcd does: tests/etcd/test_etcd_gateway.py), and octet-stream.
            txn = b'{"success": [{"op": "put", "key": "k", "value": "v"}]}'
            status, answer = await api.call(
                "POST", "/v1/txn", data=txn, skip_auto_headers=["Content-Type"]
            )
            assert (status, error_code(answer)) == (415, "unsupported_media_type")
            assert "'none'" in answer["error"]["message"]
            status, answer = await api.call("POST", "/v1/txn", data=txn)
            assert (status, error_code(answer)) == (415, "unsupported_media_type")
            assert await api.keys() == []

    run(scenario)


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", "application/octet-stream", None],
)
def test_a_put_body_is_read_as_json_whatever_type_it_says(content_type: str | None) -> None:
    """A browser never sends a PUT cross-origin without a preflight (the Origin guard's),
    so the type guards nothing there; `curl -X PUT -d` (a form type) must work, as at
    etcd (../shared/bench populates its read keys so)."""

    async def scenario() -> None:
        async with served() as api:
            headers = {} if content_type is None else {"Content-Type": content_type}
            skip = ["Content-Type"] if content_type is None else []
            status, _ = await api.call(
                "PUT", "/v1/kv/k", data=b'{"value": "v"}', headers=headers, skip_auto_headers=skip
            )
            assert status == 200
            assert await api.keys() == ["k"]
            # Still JSON: anything else is the same 400 a JSON-typed body gets.
            status, answer = await api.call(
                "PUT", "/v1/kv/k", data=b"value=v", headers=headers, skip_auto_headers=skip
            )
            assert (status, error_code(answer)) == (400, "invalid_json")

    run(scenario)


def test_json_with_or_without_a_utf8_charset_is_accepted_and_bodyless_writes_unaffected() -> None:
    async def scenario() -> None:
        async with served() as api:
            for content_type in (
                "application/json",
                "application/json; charset=utf-8",
                "Application/JSON;charset=UTF-8",
            ):
                status, _ = await api.call(
                    "PUT",
                    "/v1/kv/k",
                    data=b'{"value": "v"}',
                    headers={"Content-Type": content_type},
                )
                assert status == 200, content_type
            status, answer = await api.call(
                "POST",
                "/v1/txn",
                data=b'{"success": [{"op": "put", "key": "k", "value": "v"}]}',
                headers={"Content-Type": "application/json; charset=latin-1"},
            )
            assert (status, error_code(answer)) == (415, "unsupported_media_type")
            # No body, no type needed: a delete, a keep-alive.
            assert (await api.call("POST", "/v1/lease", json={"ttl": 60, "id": 5}))[0] == 200
            assert (await api.call("POST", "/v1/lease/5/keepalive"))[0] == 200
            assert (await api.call("DELETE", "/v1/kv/k"))[0] == 200
            assert await api.keys() == []

    run(scenario)


# -- Host ------------------------------------------------------------------------------------

LOOPBACK = allowed_hosts((), "127.0.0.1", "")


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:8080", "LOCALHOST.", "127.0.0.1", "127.0.0.1:1234", "127.9.9.9:80",
     "[::1]", "[::1]:8080", "[::ffff:127.0.0.1]:8080"],
)  # fmt: skip
def test_a_node_on_loopback_answers_to_loopback_names_with_any_port(host: str) -> None:
    async def scenario() -> None:
        async with served(guarded(hosts=LOOPBACK)) as api:
            status_line, _, _ = await api.raw(put_with_host(host))
            assert status_of(status_line) == 200
            assert await api.keys() == ["k"]

    run(scenario)


@pytest.mark.parametrize(
    "host",
    ["evil.example:8080", "evil.example", "localhost.evil.example", "10.0.0.1:8080",
     "[2001:db8::1]:8080", "127.0.0.1.evil.example"],
)  # fmt: skip
def test_a_host_not_allowed_is_refused_421_before_anything_is_written(host: str) -> None:
    """DNS rebinding: a page at evil.example:8080 whose name now resolves to 127.0.0.1
    sends Host: evil.example:8080; it used to be served like any other request."""

    async def scenario() -> None:
        async with served(guarded(hosts=LOOPBACK)) as api:
            status_line, _, answer = await api.raw(put_with_host(host))
            assert (status_of(status_line), error_code(answer)) == (421, "host_not_allowed")
            assert "host_whitelist" in answer["error"]["message"]
            assert await api.keys() == []

    run(scenario)


def test_a_host_whitelist_takes_names_addresses_and_networks() -> None:
    hosts = tuple(parse_host_pattern(h) for h in ("kv.example", "10.0.0.0/8", "[2001:db8::1]"))

    async def scenario() -> None:
        async with served(guarded(hosts=hosts)) as api:
            for host in ("KV.example:8080", "10.1.2.3", "[2001:db8:0::1]:80"):
                assert status_of((await api.raw(put_with_host(host)))[0]) == 200, host
            for host in ("localhost", "127.0.0.1", "kv.example.org", "11.0.0.1"):
                assert status_of((await api.raw(put_with_host(host, key="no")))[0]) == 421, host
            read = b"GET /v1/kv/no HTTP/1.1\r\nHost: kv.example\r\nConnection: close\r\n\r\n"
            status_line, _, answer = await api.raw(read)
            assert (status_of(status_line), error_code(answer)) == (404, "not_found")

    run(scenario)


def test_the_default_host_whitelist_follows_the_listen_address() -> None:
    assert allowed_hosts((), "127.0.0.1", "") == ("localhost", "127.0.0.0/8", "::1")
    assert allowed_hosts((), "::1", "kv.internal") == (
        "localhost",
        "127.0.0.0/8",
        "::1",
        "kv.internal",
    )
    assert allowed_hosts((), "localhost", "127.0.0.1") == (
        "localhost",
        "127.0.0.0/8",
        "::1",
        "127.0.0.1",
    )
    # Listening elsewhere: any, as etcd; given: exactly what is given.
    for listen in ("0.0.0.0", "::", "10.0.0.5", "kv.internal"):
        assert allowed_hosts((), listen, "") == (ANY,)
    assert allowed_hosts(["KV.example.", "*"], "127.0.0.1", "") == ("kv.example", ANY)
    for bad in ("evil example", "a/b/c", "http://x", "", "-x.example"):
        with pytest.raises(ValueError):
            parse_host_pattern(bad)


# -- Origin ----------------------------------------------------------------------------------


def test_a_cross_origin_request_is_refused_403_and_nothing_is_written() -> None:
    """A page elsewhere used to write through a "simple" request (no preflight): a
    body-less promote, DELETE or keep-alive, or a form post."""

    async def scenario() -> None:
        async with served(guarded(origins=(normalize_origin("http://app.example:3000"),))) as api:
            assert (await api.call("PUT", "/v1/kv/k", json={"value": "v"}))[0] == 200
            for origin in ("http://evil.example", "null", "http://app.example:3001",
                           "https://app.example:3000", "http://127.0.0.1:1"):  # fmt: skip
                for method, path in (("DELETE", "/v1/kv/k"), ("GET", "/v1/kv/k")):
                    status, answer = await api.call(method, path, headers={"Origin": origin})
                    assert (status, error_code(answer)) == (403, "origin_not_allowed"), origin
                    assert "cors" in answer["error"]["message"]
            assert await api.keys() == ["k"]

    run(scenario)


def test_an_allowed_origin_gets_cors_headers_on_answers_errors_and_preflights() -> None:
    origin = "http://app.example:3000"

    async def scenario() -> None:
        async with served(guarded(origins=(normalize_origin(origin),))) as api:
            url = api.url
            headers = {"Origin": origin, **JSON}
            async with api.session.put(
                url + "/v1/kv/k", data=b'{"value": "v"}', headers=headers
            ) as r:
                assert r.status == 200
                assert r.headers["Access-Control-Allow-Origin"] == origin
                assert r.headers["Vary"] == "Origin"
            async with api.session.get(url + "/v1/kv/none", headers={"Origin": origin}) as r:
                assert r.status == 404
                assert r.headers["Access-Control-Allow-Origin"] == origin
            preflight = {"Origin": origin, "Access-Control-Request-Method": "PUT",
                         "Access-Control-Request-Headers": "content-type"}  # fmt: skip
            async with api.session.options(url + "/v1/kv/k", headers=preflight) as r:
                assert r.status == 204
                assert r.headers["Access-Control-Allow-Origin"] == origin
                assert "PUT" in r.headers["Access-Control-Allow-Methods"]
                assert r.headers["Access-Control-Allow-Headers"] == "Content-Type, Authorization"
                assert int(r.headers["Access-Control-Max-Age"]) > 0
            # A preflight from an origin not listed: refused, without CORS headers.
            preflight["Origin"] = "http://evil.example"
            async with api.session.options(url + "/v1/kv/k", headers=preflight) as r:
                assert r.status == 403
                assert "Access-Control-Allow-Origin" not in r.headers
            # A watch stream (prepared by its handler) carries them too.
            async with api.session.get(url + "/v1/watch?key=k", headers={"Origin": origin}) as r:
                assert r.status == 200
                assert r.headers["Access-Control-Allow-Origin"] == origin

    run(scenario)


def test_same_origin_requests_pass_without_cors_settings() -> None:
    """A page served by the node itself (a future /ui) sends its own origin."""

    async def scenario() -> None:
        async with served() as api:
            origin = f"http://127.0.0.1:{api.port.port}"
            status, _ = await api.call(
                "PUT", "/v1/kv/k", json={"value": "v"}, headers={"Origin": origin}
            )
            assert status == 200
            # The same page's origin at another port is another origin.
            other = f"http://127.0.0.1:{api.port.port + 1}"
            assert (await api.call("DELETE", "/v1/kv/k", headers={"Origin": other}))[0] == 403
            # No Origin (curl, the client): unaffected.
            assert (await api.call("DELETE", "/v1/kv/k"))[0] == 200

    run(scenario)


def test_cors_any_lets_every_origin_in() -> None:
    async def scenario() -> None:
        async with served(guarded(origins=(ANY,))) as api:
            for origin in ("http://evil.example", "null"):
                status, _ = await api.call("GET", "/health", headers={"Origin": origin})
                assert status == 200

    run(scenario)


def test_origins_are_normalized_and_bad_ones_refused() -> None:
    assert normalize_origin("HTTP://App.Example:80") == "http://app.example"
    assert normalize_origin("https://app.example:8443/") == "https://app.example:8443"
    assert normalize_origin("http://[::1]:3000") == "http://[::1]:3000"
    for bad in ("app.example", "ftp://app.example", "http://app.example/path", "http://"):
        with pytest.raises(ValueError):
            normalize_origin(bad)
    with pytest.raises(ValueError):
        BrowserGuards(origins=("HTTP://App.Example",))


def test_the_host_guard_remembers_its_verdicts_within_a_bound() -> None:
    """Verdicts are kept per Host header (matching parses addresses), never more than
    _MAX_REMEMBERED_HOSTS of them (forgotten all at once past it): a remembered verdict and
    one made again after the forgetting are the ones matching gives."""
    from aiohttp.test_utils import make_mocked_request

    from raftkv.server import browser_guards

    check = browser_guards.HostCheck(LOOPBACK)

    def send(host: str) -> int:
        request = make_mocked_request("GET", "/v1/status", headers={"Host": host})
        refusal = check(request)
        return 200 if refusal is None else refusal.status

    many = browser_guards._MAX_REMEMBERED_HOSTS + 10
    for _round in range(2):
        assert send("127.0.0.1:2379") == 200
        assert send("evil.example:2379") == 421
        for index in range(many):
            assert send(f"10.0.{index // 256}.{index % 256}") == 421
        assert len(check._verdicts) <= browser_guards._MAX_REMEMBERED_HOSTS
