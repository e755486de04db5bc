"""End to end: the HTTP API of a 3-process cluster (`python -m raftkv serve` x3), every
route through every node, the seed routes as curl sends them, and every class of bad input
(refused with a JSON error, nothing written, the node still serving)."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kv_processes import KvProcessCluster, running_cluster, wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KvProcessCluster]:
    with running_cluster(tmp_path_factory.mktemp("e2e-api")) as started:
        yield started


def revision(cluster: KvProcessCluster, node: int = 1) -> int:
    status = cluster.status(node)
    assert status is not None
    value: int = status["revision"]
    return value


# Fields an error may carry besides code and message (see raftkv.api.errors.ErrorDetail).
OPTIONAL_ERROR_FIELDS = {"compact_revision", "oldest_revision"}


def error_code(body: Any) -> str:
    assert set(body) == {"error"}
    assert {"code", "message"} <= set(body["error"]) <= {"code", "message"} | OPTIONAL_ERROR_FIELDS
    assert body["error"]["message"]
    code: str = body["error"]["code"]
    return code


def test_writes_through_any_node_and_linearizable_reads_on_every_node(
    cluster: KvProcessCluster,
) -> None:
    leader = cluster.wait_for_leader()
    follower = next(node for node in cluster.ids if node != leader)
    status, body = cluster.request(follower, "PUT", "/v1/kv/e2e/a", json={"value": "1"})
    assert status == 200 and body["header"]["leader"] == leader
    written = body["header"]["revision"]
    for node in cluster.ids:
        # Linearizable by default: a read anywhere right after the write sees it.
        status, body = cluster.request(node, "GET", "/v1/kv/e2e/a")
        assert status == 200 and body["kv"]["value"] == "1"
        assert body["kv"]["mod_revision"] == written
    status, body = cluster.request(
        leader, "PUT", "/v1/kv/e2e/a", json={"value": "2", "prev_kv": True}
    )
    assert status == 200 and body["prev_kv"]["value"] == "1"
    status, body = cluster.request(follower, "GET", "/v1/kv/e2e/a?consistency=serializable")
    assert status == 200 and body["kv"]["value"] in ("1", "2")
    status, body = cluster.request(follower, "GET", f"/v1/kv/e2e/a?revision={written}")
    assert status == 200 and body["kv"]["value"] == "1"


def test_range_delete_txn_and_compact(cluster: KvProcessCluster) -> None:
    for index in range(5):
        cluster.request(1, "PUT", f"/v1/kv/range/{index}", json={"value": str(index)})
    status, body = cluster.request(2, "GET", "/v1/kv?key=range/&prefix=true&limit=2")
    assert status == 200 and body["count"] == 5 and body["more"] is True
    assert [kv["key"] for kv in body["kvs"]] == ["range/0", "range/1"]
    status, body = cluster.request(3, "GET", "/v1/kv?key=range/1&range_end=range/3&keys_only=true")
    assert [kv["key"] for kv in body["kvs"]] == ["range/1", "range/2"]
    assert all(kv["value"] == "" for kv in body["kvs"])
    status, body = cluster.request(3, "GET", "/v1/kv?key=range/&prefix=true&count_only=true")
    assert (body["count"], body["kvs"]) == (5, [])

    status, body = cluster.request(
        2,
        "POST",
        "/v1/txn",
        json={
            "compares": [{"key": "range/0", "target": "value", "op": "=", "value": "0"}],
            "success": [
                {"op": "put", "key": "range/0", "value": "zero"},
                {"op": "range", "key": "range/1"},
            ],
            "failure": [],
        },
    )
    assert status == 200 and body["succeeded"] is True
    assert [item["op"] for item in body["responses"]] == ["put", "range"]
    status, body = cluster.request(3, "DELETE", "/v1/kv/range/?prefix=true&prev_kv=true")
    assert status == 200 and body["deleted"] == 5 and len(body["prev_kvs"]) == 5
    status, body = cluster.request(1, "GET", "/v1/kv/range/0")
    assert status == 404 and error_code(body) == "not_found"

    current = revision(cluster)
    status, body = cluster.request(1, "POST", "/v1/compact", json={"revision": current})
    assert status == 200
    status, body = cluster.request(2, "GET", f"/v1/kv/range/0?revision={current - 1}")
    assert status == 410 and error_code(body) == "compacted"


def test_seed_routes_as_curl_sends_them(cluster: KvProcessCluster) -> None:
    # curl -X POST -H 'Content-Type: application/json' -d '{"key":"k","value":"v"}' .../set
    status, body = cluster.request(
        1,
        "POST",
        "/set",
        content=b'{"key":"seed-key","value":"seed value"}',
        headers={"Content-Type": "application/json"},
    )
    assert status == 200 and body["header"]["revision"] >= 2
    for node in cluster.ids:
        status, body = cluster.request(node, "GET", "/get/seed-key")
        assert status == 200 and body["kv"]["value"] == "seed value"


def test_binary_keys_and_values_with_base64(cluster: KvProcessCluster) -> None:
    key = base64.b64encode(b"\x00\xffbin").decode()
    value = base64.b64encode(bytes(range(256))).decode()
    quoted = key.replace("/", "%2F").replace("+", "%2B")
    status, _ = cluster.request(2, "PUT", f"/v1/kv/{quoted}?encoding=base64", json={"value": value})
    assert status == 200
    status, body = cluster.request(3, "GET", f"/v1/kv/{quoted}?encoding=base64")
    assert status == 200 and body["kv"]["value"] == value and body["kv"]["key"] == key
    # A text key holding a binary value: read as text, the value is refused, not altered.
    text_key = base64.b64encode(b"binary-value").decode()
    status, _ = cluster.request(
        1, "PUT", f"/v1/kv/{text_key}?encoding=base64", json={"value": value}
    )
    assert status == 200
    status, body = cluster.request(3, "GET", "/v1/kv/binary-value")
    assert status == 406 and error_code(body) == "not_utf8"


def test_status_health_ready_cluster_and_openapi_on_every_node(cluster: KvProcessCluster) -> None:
    leader = cluster.wait_for_leader()
    cluster.request(1, "PUT", "/v1/kv/hash-me", json={"value": "x"})
    for node in cluster.ids:
        assert cluster.request(node, "GET", "/health") == (200, {"status": "ok"})
        assert cluster.request(node, "GET", "/ready") == (200, {"ready": True, "reason": ""})
        status, body = cluster.request(node, "GET", "/openapi.json")
        assert status == 200 and body["openapi"].startswith("3.1")

    def published() -> bool:
        return all(
            member["client_url"] == cluster.url(member["id"])
            for node in cluster.ids
            for member in cluster.request(node, "GET", "/v1/cluster")[1]["members"]
        )

    wait_until(published, 30, "every member's client URL published to every member")
    status, body = cluster.request(leader, "GET", "/v1/cluster")
    assert body["leader"] == leader and len(body["members"]) == 3
    roles = {member["id"]: member["role"] for member in body["members"]}
    assert roles[leader] == "leader" and sorted(roles.values()).count("voter") == 2
    assert all(member["match_index"] >= 1 for member in body["members"])
    assert {member["peer_url"] for member in body["members"]} == {
        f"127.0.0.1:{cluster.peer_ports[node]}" for node in cluster.ids
    }

    def same_hash() -> bool:
        statuses = [cluster.request(node, "GET", "/v1/status?hash=true")[1] for node in cluster.ids]
        return len({(s["applied_index"], s["hash"]) for s in statuses}) == 1

    wait_until(same_hash, 30, "every member at the same applied index and state hash")


def test_metrics_are_served_in_prometheus_format(cluster: KvProcessCluster) -> None:
    leader = cluster.wait_for_leader()
    cluster.request(leader, "PUT", "/v1/kv/metered", json={"value": "x"})
    response = cluster.http.get(f"{cluster.url(leader)}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        "raftkv_term",
        'raftkv_role{role="leader"} 1.0',
        "raftkv_fsync_duration_seconds_bucket",
        "raftkv_proposals_committed_total",
        "raftkv_peer_send_queue_messages",
        'raftkv_http_request_duration_seconds_count{method="PUT",route="/v1/kv/{key}",status="200"}',
    ):
        assert name in text, name


BAD_INPUTS: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    (
        "malformed JSON",
        "PUT",
        "/v1/kv/bad",
        {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        400,
        "invalid_json",
    ),
    # What a web page can send (docs/http-api.md#browsers-no-open-doors), refused by the
    # defaults of a node listening on 127.0.0.1.
    (
        "a form body",
        "POST",
        "/v1/txn",
        {
            "content": b'{"success": [{"op": "put", "key": "bad", "value": "v"}]}',
            "headers": {"Content-Type": "text/plain"},
        },
        415,
        "unsupported_media_type",
    ),
    (
        "a DNS-rebinding Host",
        "PUT",
        "/v1/kv/bad",
        {"json": {"value": "v"}, "headers": {"Host": "evil.example:8080"}},
        421,
        "host_not_allowed",
    ),
    (
        "a cross-origin page",
        "POST",
        "/v1/compact",
        {"json": {"revision": 1}, "headers": {"Origin": "http://evil.example"}},
        403,
        "origin_not_allowed",
    ),
    ("wrong type", "PUT", "/v1/kv/bad", {"json": {"value": 1}}, 400, "invalid_request"),
    (
        "unknown field",
        "PUT",
        "/v1/kv/bad",
        {"json": {"value": "v", "x": 1}},
        400,
        "invalid_request",
    ),
    ("empty key", "PUT", "/v1/kv/", {"json": {"value": "v"}}, 400, "empty_key"),
    (
        "oversize key",
        "PUT",
        "/v1/kv/" + "k" * 5000,
        {"json": {"value": "v"}},
        413,
        "limit_exceeded",
    ),
    (
        "oversize value",
        "PUT",
        "/v1/kv/bad",
        {"json": {"value": "v" * ((1 << 20) + 1)}},
        413,
        "limit_exceeded",
    ),
    (
        "oversize body",
        "PUT",
        "/v1/kv/bad",
        {
            "content": b'{"value":"' + b"v" * (3 << 20) + b'"}',
            "headers": {"Content-Type": "application/json"},
        },
        413,
        "body_too_large",
    ),
    (
        "too many txn ops",
        "POST",
        "/v1/txn",
        {"json": {"success": [{"op": "put", "key": f"t{i}", "value": "v"} for i in range(129)]}},
        413,
        "limit_exceeded",
    ),
    (
        "duplicate key in txn",
        "POST",
        "/v1/txn",
        {
            "json": {
                "success": [
                    {"op": "put", "key": "d", "value": "1"},
                    {"op": "put", "key": "d", "value": "2"},
                ]
            }
        },
        400,
        "duplicate_key",
    ),
    ("negative revision", "GET", "/v1/kv/bad?revision=-1", {}, 400, "invalid_request"),
    ("text revision", "GET", "/v1/kv?key=a&revision=abc", {}, 400, "invalid_request"),
    ("future revision", "GET", "/v1/kv/bad?revision=999999999", {}, 400, "future_revision"),
    (
        "future compact",
        "POST",
        "/v1/compact",
        {"json": {"revision": 999999999}},
        400,
        "future_revision",
    ),
    (
        "invalid base64",
        "PUT",
        "/v1/kv/%25%25?encoding=base64",
        {"json": {"value": "AA=="}},
        400,
        "invalid_base64",
    ),
    ("bad encoding", "GET", "/v1/kv/a?encoding=latin1", {}, 400, "invalid_request"),
    ("bad consistency", "GET", "/v1/kv/a?consistency=eventual", {}, 400, "invalid_request"),
    (
        "half a session",
        "PUT",
        "/v1/kv/bad",
        {"json": {"value": "v", "sequence": 3}},
        400,
        "invalid_request",
    ),
    ("unknown route", "GET", "/v2/nothing", {}, 404, "unknown_route"),
    ("wrong method", "POST", "/v1/kv/bad", {"json": {}}, 405, "method_not_allowed"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_refused_with_a_json_error_and_writes_nothing(
    cluster: KvProcessCluster, case: tuple[str, str, str, dict[str, Any], int, str]
) -> None:
    _, method, path, kwargs, status, code = case
    before = revision(cluster, 2)
    answer_status, body = cluster.request(2, method, path, **kwargs)
    assert (answer_status, error_code(body)) == (status, code)
    assert revision(cluster, 2) == before
    assert cluster.request(2, "GET", "/health")[0] == 200


def test_garbage_on_the_client_port_is_refused_and_the_node_keeps_serving(
    cluster: KvProcessCluster,
) -> None:
    # Each garbage, and the refusal it gets when the answer is written before the server
    # reads our end of the stream (which then closes without one: either may come first).
    refusals = [
        (b"\x00\x01\x02garbage\r\n\r\n", b"400"),
        (b"GET / HTTP/9.9\r\n\r\n", b"505"),
        (b"\xff" * 70000, b"400"),
    ]
    for garbage, status in refusals:
        with socket.create_connection(("127.0.0.1", cluster.client_ports[3]), timeout=5) as raw:
            raw.sendall(garbage)
            raw.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
            # aiohttp answers HTTP/1.0 when it cannot read a version.
            assert answer == b"" or answer[:12] in (b"HTTP/1.1 " + status, b"HTTP/1.0 " + status), (
                answer[:80]
            )
    assert cluster.request(3, "GET", "/health")[0] == 200
    assert cluster.processes[3].poll() is None


def test_a_killed_leader_is_replaced_and_catches_up_when_restarted(
    cluster: KvProcessCluster, tmp_path: Path
) -> None:
    leader = cluster.wait_for_leader()
    cluster.request(leader, "PUT", "/v1/kv/failover/before", json={"value": "1"})
    cluster.kill(leader)
    survivors = [node for node in cluster.ids if node != leader]
    new_leader = cluster.wait_for_leader()
    assert new_leader in survivors
    for index in range(10):
        node = survivors[index % 2]
        status, _ = cluster.request(node, "PUT", f"/v1/kv/failover/{index}", json={"value": "x"})
        assert status == 200
    cluster.start(leader)
    cluster.wait_for_leader()

    def caught_up() -> bool:
        status, body = cluster.request(
            leader,
            "GET",
            "/v1/kv?key=failover/&prefix=true&count_only=true&consistency=serializable",
        )
        return status == 200 and body["count"] == 11

    wait_until(caught_up, 30, "the restarted node to apply what it missed")
