"""The HTTP/JSON API on a 3-node LocalCluster (real Nodes, manual clock), one aiohttp
server per node on 127.0.0.1 with an ephemeral port. Requests run inside
`cluster.complete`, which advances simulated time until the answer has been read."""

from __future__ import annotations

import base64
from typing import Any, TypeVar

import pytest
from server_helpers import error_code, started

from raftkv.kv import KvSettings
from raftkv.raft.core.errors import ConfigInvalid
from raftkv.raft.core.types import NodeId
from raftkv.server import HttpSettings
from raftkv.testing.local_cluster import address_of, run_scenario

# What every client of the API sends with a body (a body without it is refused 415).
JSON = {"Content-Type": "application/json"}

T = TypeVar("T")

Json = Any


# -- happy paths ---------------------------------------------------------------------------


def test_put_then_get_through_every_node_with_prev_kv() -> None:
    async def scenario() -> None:
        async with started() as api:
            status, body = await api.call(2, "PUT", "/v1/kv/greeting", json={"value": "hello"})
            assert status == 200 and body["header"]["revision"] == 2
            assert body["header"]["leader"] == api.cluster.leader().id  # type: ignore[union-attr]
            assert "prev_kv" not in body
            status, body = await api.call(
                3, "PUT", "/v1/kv/greeting", json={"value": "hi", "prev_kv": True}
            )
            assert status == 200 and body["prev_kv"]["value"] == "hello"
            for node in (1, 2, 3):
                status, body = await api.call(node, "GET", "/v1/kv/greeting")
                assert status == 200
                assert body["kv"] == {
                    "key": "greeting",
                    "value": "hi",
                    "create_revision": 2,
                    "mod_revision": 3,
                    "version": 2,
                    "lease": 0,
                }

    run_scenario(scenario)


def test_keys_with_slashes_and_unicode() -> None:
    async def scenario() -> None:
        async with started() as api:
            status, _ = await api.call(1, "PUT", "/v1/kv/a/b/c%C3%A9", json={"value": "ü"})
            assert status == 200
            status, body = await api.call(1, "GET", "/v1/kv/a/b/c%C3%A9")
            assert status == 200 and body["kv"]["key"] == "a/b/cé" and body["kv"]["value"] == "ü"
            # A newline in a key (found by schemathesis: the route's pattern missed it).
            status, _ = await api.call(1, "PUT", "/v1/kv/line%0Abreak", json={"value": "n"})
            assert status == 200
            status, body = await api.call(1, "GET", "/get/line%0Abreak")
            assert status == 200 and body["kv"]["key"] == "line\nbreak"
            status, body = await api.call(1, "DELETE", "/v1/kv/line%0Abreak")
            assert status == 200 and body["deleted"] == 1

    run_scenario(scenario)


def test_get_of_a_missing_key_is_404_not_found() -> None:
    async def scenario() -> None:
        async with started() as api:
            status, body = await api.call(1, "GET", "/v1/kv/nothing")
            assert status == 404 and error_code(body) == "not_found"

    run_scenario(scenario)


def test_linearizable_read_through_a_follower_sees_a_write_made_on_the_leader() -> None:
    async def scenario() -> None:
        async with started() as api:
            leader = api.cluster.leader()
            assert leader is not None
            follower = api.follower()
            await api.call(leader.id, "PUT", "/v1/kv/x", json={"value": "1"})
            status, body = await api.call(follower, "GET", "/v1/kv/x")
            assert status == 200 and body["kv"]["value"] == "1"
            status, body = await api.call(follower, "GET", "/v1/kv/x?consistency=serializable")
            assert status == 200 and body["kv"]["value"] == "1"

    run_scenario(scenario)


def test_get_at_a_past_revision() -> None:
    async def scenario() -> None:
        async with started() as api:
            await api.call(1, "PUT", "/v1/kv/k", json={"value": "old"})
            await api.call(1, "PUT", "/v1/kv/k", json={"value": "new"})
            status, body = await api.call(1, "GET", "/v1/kv/k?revision=2")
            assert status == 200 and body["kv"]["value"] == "old"

    run_scenario(scenario)


def test_range_prefix_limit_keys_only_count_only_and_range_end() -> None:
    async def scenario() -> None:
        async with started() as api:
            for key in ("app/a", "app/b", "app/c", "other"):
                await api.call(1, "PUT", f"/v1/kv/{key}", json={"value": key.upper()})
            status, body = await api.call(
                1, "GET", "/v1/kv", params={"key": "app/", "prefix": "true"}
            )
            assert status == 200 and body["count"] == 3 and body["more"] is False
            assert [kv["key"] for kv in body["kvs"]] == ["app/a", "app/b", "app/c"]
            assert body["header"]["revision"] == 5
            status, body = await api.call(
                2,
                "GET",
                "/v1/kv",
                params={"key": "app/", "prefix": "true", "limit": "2", "keys_only": "true"},
            )
            assert body["count"] == 3 and body["more"] is True
            assert [kv["value"] for kv in body["kvs"]] == ["", ""]
            status, body = await api.call(
                3, "GET", "/v1/kv", params={"key": "app/b", "range_end": "p", "count_only": "true"}
            )
            assert status == 200 and body["count"] == 3 and body["kvs"] == []
            status, body = await api.call(1, "GET", "/v1/kv", params={"prefix": "true"})
            assert body["count"] == 4

    run_scenario(scenario)


def test_delete_single_and_prefix() -> None:
    async def scenario() -> None:
        async with started() as api:
            for key in ("dir/a", "dir/b", "dirt", "keep"):
                await api.call(1, "PUT", f"/v1/kv/{key}", json={"value": "v"})
            status, body = await api.call(2, "DELETE", "/v1/kv/keep")
            assert status == 200 and body["deleted"] == 1
            status, body = await api.call(2, "DELETE", "/v1/kv/dir/?prefix=true")
            assert status == 200 and body["deleted"] == 2
            assert body["header"]["revision"] == api.revision()
            status, body = await api.call(1, "GET", "/v1/kv", params={"prefix": "true"})
            assert [kv["key"] for kv in body["kvs"]] == ["dirt"]

    run_scenario(scenario)


def test_txn_compare_and_swap_with_put_range_and_delete_ops() -> None:
    async def scenario() -> None:
        async with started() as api:
            await api.call(1, "PUT", "/v1/kv/lock", json={"value": "free"})
            await api.call(1, "PUT", "/v1/kv/tmp", json={"value": "x"})
            take = {
                "compares": [{"key": "lock", "target": "value", "op": "=", "value": "free"}],
                "success": [
                    {"op": "put", "key": "lock", "value": "taken", "prev_kv": True},
                    {"op": "range", "key": "lock"},
                    {"op": "delete", "key": "tmp"},
                ],
                "failure": [{"op": "range", "key": "lock"}],
            }
            status, body = await api.call(2, "POST", "/v1/txn", json=take)
            assert status == 200 and body["succeeded"] is True
            put, read, delete = body["responses"]
            assert put["op"] == "put" and put["prev_kv"]["value"] == "free"
            assert read["op"] == "range" and read["kvs"][0]["value"] == "taken"
            assert delete == {"op": "delete", "header": delete["header"], "deleted": 1}
            status, body = await api.call(3, "POST", "/v1/txn", json=take)
            assert status == 200 and body["succeeded"] is False
            assert body["responses"][0]["kvs"][0]["value"] == "taken"
            version = {"key": "lock", "target": "version", "op": "=", "value": 2}
            status, body = await api.call(1, "POST", "/v1/txn", json={"compares": [version]})
            assert status == 200 and body["succeeded"] is True

    run_scenario(scenario)


def test_a_txn_compare_over_a_range_or_prefix_holds_when_every_key_does() -> None:
    async def scenario() -> None:
        async with started() as api:
            await api.call(1, "PUT", "/v1/kv/job/1", json={"value": "done"})
            await api.call(1, "PUT", "/v1/kv/job/2", json={"value": "done"})

            async def succeeded(compare: Json) -> bool:
                status, body = await api.call(2, "POST", "/v1/txn", json={"compares": [compare]})
                assert status == 200, body
                return bool(body["succeeded"])

            done = {"key": "job/", "target": "value", "op": "=", "value": "done"}
            assert await succeeded({**done, "prefix": True})
            assert await succeeded({**done, "range_end": "job0"})
            await api.call(1, "PUT", "/v1/kv/job/3", json={"value": "running"})
            assert not await succeeded({**done, "prefix": True})
            assert await succeeded({**done, "key": "job/1", "range_end": "job/3"})
            # No key in the range: a value compare fails, the others compare 0.
            assert not await succeeded({**done, "key": "none/", "prefix": True})
            none = {"key": "none/", "prefix": True, "target": "version", "op": "=", "value": 0}
            assert await succeeded(none)
            both = {**done, "range_end": "job0", "prefix": True}
            status, body = await api.call(2, "POST", "/v1/txn", json={"compares": [both]})
            assert status == 400 and error_code(body) == "invalid_request"

    run_scenario(scenario)


def test_compact_then_reading_a_compacted_revision_is_410_gone() -> None:
    async def scenario() -> None:
        async with started() as api:
            await api.call(1, "PUT", "/v1/kv/k", json={"value": "1"})
            await api.call(1, "PUT", "/v1/kv/k", json={"value": "2"})
            status, body = await api.call(2, "POST", "/v1/compact", json={"revision": 3})
            assert status == 200 and body["header"]["revision"] == 3
            status, body = await api.call(1, "GET", "/v1/kv/k?revision=2")
            assert status == 410 and error_code(body) == "compacted"
            # The compaction revision itself is still read (a watch starts after it).
            assert (body["error"]["compact_revision"], body["error"]["oldest_revision"]) == (3, 3)
            status, body = await api.call(1, "GET", "/v1/kv/k?revision=3")
            assert status == 200 and body["kv"]["value"] == "2"
            status, body = await api.call(1, "POST", "/v1/compact", json={"revision": 2})
            assert status == 410 and error_code(body) == "compacted"

    run_scenario(scenario)


def test_health_and_status() -> None:
    async def scenario() -> None:
        async with started() as api:
            await api.call(1, "PUT", "/v1/kv/k", json={"value": "1"})
            status, body = await api.call(1, "GET", "/health")
            assert (status, body) == (200, {"status": "ok"})
            leader = api.cluster.leader()
            assert leader is not None
            await api.cluster.run_until(lambda: api.services[2].machine.current_revision() == 2)
            status, body = await api.call(2, "GET", "/v1/status")
            assert status == 200
            assert body["id"] == 2 and body["leader"] == leader.id
            assert body["role"] == ("leader" if leader.id == 2 else "follower")
            assert body["term"] >= 1 and body["commit_index"] >= body["applied_index"] >= 1
            assert body["revision"] == 2 and body["compacted_revision"] == 0

    run_scenario(scenario)


def test_a_failed_node_fails_its_health_check() -> None:
    async def scenario() -> None:
        async with started() as api:
            node = api.cluster.nodes[NodeId(2)]
            node._fail(OSError("No space left on device"))
            await api.cluster.run_until(lambda: node.status().stopped)
            status, body = await api.call(2, "GET", "/health")
            assert status == 503
            assert body["status"] == "failed"
            assert "No space left on device" in body["reason"]
            status, body = await api.call(2, "PUT", "/v1/kv/k", json={"value": "1"})
            assert status == 503 and error_code(body) == "stopped"
            assert (await api.call(1, "GET", "/health"))[0] == 200

    run_scenario(scenario)


def test_seed_routes_set_and_get() -> None:
    async def scenario() -> None:
        async with started() as api:
            status, body = await api.call(1, "POST", "/set", json={"key": "foo", "value": "bar"})
            assert status == 200 and body["header"]["revision"] == 2
            status, body = await api.call(3, "GET", "/get/foo")
            assert status == 200 and body["kv"]["value"] == "bar"
            status, body = await api.call(3, "GET", "/get/missing")
            assert status == 404 and error_code(body) == "not_found"

    run_scenario(scenario)


def test_base64_round_trip_of_binary_keys_and_values() -> None:
    async def scenario() -> None:
        async with started() as api:
            key, value = b"\x00\xff\xfebin", bytes(range(256))
            key64, value64 = base64.b64encode(key).decode(), base64.b64encode(value).decode()
            status, body = await api.call(
                1, "POST", "/set?encoding=base64", json={"key": key64, "value": value64}
            )
            assert status == 200
            status, body = await api.call(
                2, "GET", "/v1/kv", params={"key": key64, "encoding": "base64"}
            )
            assert status == 200 and body["kvs"][0]["key"] == key64
            assert base64.b64decode(body["kvs"][0]["value"]) == value
            # Without base64 the binary value is refused, not mangled.
            status, body = await api.call(2, "GET", "/v1/kv", params={"key": "\x00\xff\xfebin"})
            assert status == 200 and body["count"] == 0  # that is another key in UTF-8
            status, body = await api.call(2, "GET", "/v1/kv", params={"prefix": "true"})
            assert status == 406 and error_code(body) == "not_utf8"

    run_scenario(scenario)


def test_a_prefix_of_0xff_bytes_runs_to_the_end_of_the_key_space() -> None:
    """No key follows every key starting with 0xff: the prefix's range runs to the end (as
    in etcd), it is neither refused nor empty."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    async def scenario() -> None:
        async with started() as api:
            for key in (b"\xfe", b"\xff", b"\xff\xff\x00", b"\xff\xffz"):
                status, _ = await api.call(
                    1, "POST", "/set?encoding=base64", json={"key": b64(key), "value": ""}
                )
                assert status == 200
            query = {"key": b64(b"\xff\xff"), "prefix": "true", "encoding": "base64"}
            status, body = await api.call(2, "GET", "/v1/kv", params=query)
            assert status == 200
            assert [kv["key"] for kv in body["kvs"]] == [b64(b"\xff\xff\x00"), b64(b"\xff\xffz")]
            delete = {"op": "delete", "key": b64(b"\xff"), "prefix": True}
            status, body = await api.call(
                2, "POST", "/v1/txn?encoding=base64", json={"success": [delete]}
            )
            assert status == 200 and body["responses"][0]["deleted"] == 3
            status, body = await api.call(
                2, "GET", "/v1/kv", params={"prefix": "true", "encoding": "base64"}
            )
            assert [kv["key"] for kv in body["kvs"]] == [b64(b"\xfe")]

    run_scenario(scenario)


def test_a_retried_put_with_the_same_client_id_and_sequence_applies_once() -> None:
    async def scenario() -> None:
        async with started() as api:
            put = {"value": "v", "client_id": "client-a", "sequence": 1}
            status, first = await api.call(1, "PUT", "/v1/kv/k", json=put)
            assert status == 200
            status, again = await api.call(2, "PUT", "/v1/kv/k", json=put)
            assert status == 200 and again["header"]["revision"] == first["header"]["revision"]
            status, body = await api.call(3, "GET", "/v1/kv/k")
            assert body["kv"]["version"] == 1  # applied once
            assert api.revision() == 2

    run_scenario(scenario)


def test_a_retried_delete_with_the_same_client_id_and_sequence_applies_once() -> None:
    async def scenario() -> None:
        async with started() as api:
            await api.call(1, "PUT", "/v1/kv/k", json={"value": "v"})
            path = "/v1/kv/k?client_id=client-d&sequence=1"
            status, first = await api.call(1, "DELETE", path)
            assert status == 200 and first["deleted"] == 1
            await api.call(1, "PUT", "/v1/kv/k", json={"value": "again"})
            status, again = await api.call(2, "DELETE", path)
            # The original answer, and the key written since is untouched.
            assert status == 200 and again == first
            status, body = await api.call(3, "GET", "/v1/kv/k")
            assert status == 200 and body["kv"]["value"] == "again"
            status, body = await api.call(1, "DELETE", "/v1/kv/k?sequence=2")
            assert status == 400 and error_code(body) == "invalid_request"

    run_scenario(scenario)


# -- bad input: a 4xx with {"error": {"code", "message"}} and nothing written ------------------

BAD_REQUESTS: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    (
        "malformed json",
        "PUT",
        "/v1/kv/k",
        {"data": b"{not json", "headers": JSON},
        400,
        "invalid_json",
    ),
    (
        "truncated json",
        "POST",
        "/v1/txn",
        {"data": b'{"compares": [', "headers": JSON},
        400,
        "invalid_json",
    ),
    ("wrong type", "PUT", "/v1/kv/k", {"json": {"value": 5}}, 400, "invalid_request"),
    (
        "unknown field",
        "PUT",
        "/v1/kv/k",
        {"json": {"value": "v", "ttl": 1}},
        400,
        "invalid_request",
    ),
    ("missing field", "POST", "/set", {"json": {"key": "k"}}, 400, "invalid_request"),
    ("body not an object", "POST", "/v1/compact", {"json": [1]}, 400, "invalid_request"),
    (
        "unknown txn op",
        "POST",
        "/v1/txn",
        {"json": {"success": [{"op": "nope", "key": "k"}]}},
        400,
        "invalid_request",
    ),
    ("empty key put", "PUT", "/v1/kv/", {"json": {"value": "v"}}, 400, "empty_key"),
    ("empty key set", "POST", "/set", {"json": {"key": "", "value": "v"}}, 400, "empty_key"),
    ("empty key delete", "DELETE", "/v1/kv/?prefix=true", {}, 400, "empty_key"),
    (
        "empty key txn",
        "POST",
        "/v1/txn",
        {"json": {"success": [{"op": "put", "key": "", "value": "v"}]}},
        400,
        "empty_key",
    ),
    ("oversize key", "PUT", "/v1/kv/" + "k" * 65, {"json": {"value": "v"}}, 413, "limit_exceeded"),
    ("oversize value", "PUT", "/v1/kv/k", {"json": {"value": "v" * 129}}, 413, "limit_exceeded"),
    ("oversize body", "PUT", "/v1/kv/k", {"json": {"value": "v" * 2000}}, 413, "body_too_large"),
    (
        "bad base64 key",
        "PUT",
        "/v1/kv/%21%21?encoding=base64",
        {"json": {"value": "AA=="}},
        400,
        "invalid_base64",
    ),
    (
        "bad base64 value",
        "POST",
        "/set?encoding=base64",
        {"json": {"key": "AA==", "value": "A"}},
        400,
        "invalid_base64",
    ),
    (
        "unknown encoding",
        "PUT",
        "/v1/kv/k?encoding=rot13",
        {"json": {"value": "v"}},
        400,
        "invalid_request",
    ),
    ("bad revision", "GET", "/v1/kv/k?revision=abc", {}, 400, "invalid_request"),
    ("negative revision", "GET", "/v1/kv?key=k&revision=-1", {}, 400, "invalid_request"),
    ("future revision", "GET", "/v1/kv/k?revision=99", {}, 400, "future_revision"),
    ("negative compact", "POST", "/v1/compact", {"json": {"revision": -1}}, 400, "invalid_request"),
    ("future compact", "POST", "/v1/compact", {"json": {"revision": 99}}, 400, "future_revision"),
    ("bad consistency", "GET", "/v1/kv/k?consistency=eventual", {}, 400, "invalid_request"),
    ("bad bool", "GET", "/v1/kv?key=k&keys_only=maybe", {}, 400, "invalid_request"),
    (
        "prefix and range_end",
        "GET",
        "/v1/kv?key=a&range_end=b&prefix=true",
        {},
        400,
        "invalid_request",
    ),
    (
        "too many txn ops",
        "POST",
        "/v1/txn",
        {"json": {"success": [{"op": "range", "key": "k"}] * 5}},
        413,
        "limit_exceeded",
    ),
    (
        "duplicate txn key",
        "POST",
        "/v1/txn",
        {"json": {"success": [{"op": "put", "key": "k", "value": "1"}] * 2}},
        400,
        "duplicate_key",
    ),
    (
        "compare type",
        "POST",
        "/v1/txn",
        {"json": {"compares": [{"key": "k", "target": "version", "op": "=", "value": "1"}]}},
        400,
        "invalid_request",
    ),
    (
        "sequence without client",
        "PUT",
        "/v1/kv/k",
        {"json": {"value": "v", "sequence": 3}},
        400,
        "invalid_request",
    ),
    ("unknown route", "GET", "/v2/nothing", {}, 404, "unknown_route"),
    ("wrong method", "PATCH", "/v1/txn", {}, 405, "method_not_allowed"),
]


# Refused by the state machine when applied (only it knows the committed revision), so
# they cost a log entry but still change nothing.
REFUSED_IN_THE_LOG = {"future compact"}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS])
def test_bad_input_is_refused_with_a_json_error_and_writes_nothing(
    case: tuple[str, str, str, dict[str, Any], int, str],
) -> None:
    name, method, path, kwargs, status, code = case

    async def scenario() -> None:
        settings = HttpSettings(max_body_bytes=1024)
        limits = KvSettings(max_key_bytes=64, max_value_bytes=128, max_txn_ops=4)
        async with started(settings, limits) as api:
            leader = api.cluster.leader()
            assert leader is not None
            before_index = leader.status().last_index
            answer_status, body = await api.call(api.follower(), method, path, **kwargs)
            assert (answer_status, error_code(body)) == (status, code)
            assert body["error"]["message"]
            await api.cluster.settle()
            assert api.revision() == 1  # nothing written
            if name not in REFUSED_IN_THE_LOG:
                assert leader.status().last_index == before_index  # not even a log entry

    run_scenario(scenario)


def test_settings_are_validated() -> None:
    for bad in ({"max_body_bytes": 0}, {"request_timeout_s": 0}, {"request_timeout_s": True}):
        with pytest.raises(ConfigInvalid):
            HttpSettings(**bad)


# -- driver errors and faults --------------------------------------------------------------


def test_an_isolated_node_answers_504_timeout_for_reads_and_writes_and_serves_serializable() -> (
    None
):
    async def scenario() -> None:
        async with started(HttpSettings(request_timeout_s=2.0)) as api:
            await api.call(1, "PUT", "/v1/kv/x", json={"value": "1"})
            await api.cluster.run_until(
                lambda: all(s.machine.current_revision() == 2 for s in api.services.values())
            )
            isolated = api.follower()
            api.cluster.network.isolate(address_of(NodeId(isolated)))
            status, body = await api.call(isolated, "GET", "/v1/kv/x")
            assert status == 504 and error_code(body) == "timeout"
            assert "nothing was read" in body["error"]["message"]
            status, body = await api.call(isolated, "PUT", "/v1/kv/y", json={"value": "2"})
            assert status in (503, 504) and error_code(body) in ("timeout", "proposal_dropped")
            if status == 504:
                assert "unknown" in body["error"]["message"]
            status, body = await api.call(isolated, "GET", "/v1/kv/x?consistency=serializable")
            assert status == 200 and body["kv"]["value"] == "1"

    run_scenario(scenario)


def test_an_unexpected_exception_is_a_500_internal_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with started() as api:
            service = api.services[1]

            async def broken(*args: object, **kwargs: object) -> None:
                raise RuntimeError("boom")

            monkeypatch.setattr(service, "range", broken)
            status, body = await api.call(1, "GET", "/v1/kv/x")
            assert status == 500 and error_code(body) == "internal"
            assert "boom" not in body["error"]["message"]  # no internals leak
            monkeypatch.undo()
            status, body = await api.call(1, "GET", "/health")
            assert status == 200

    run_scenario(scenario)
    assert "unexpected error serving GET /v1/kv/x" in caplog.text
