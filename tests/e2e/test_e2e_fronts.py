"""Front processes (`http_workers`, raftkv.server.fronts) on a real 3-process cluster.

Every member runs one front. Through it: the KV routes answer as the member's own app
does (results, headers, errors, auth), every other route is forwarded (a watch streams
through), the member's /metrics counts the requests the front served under their route
templates, a front killed with SIGKILL is started again, a member killed with SIGKILL takes
its fronts with it (and restarts on its address at once), and garbage on the member's
private socket ends that connection only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

import httpx
from kv_processes import KvProcessCluster

from raftkv.testing.processes import wait_until

FRONTS = ["--http-workers", "1"]
# Bounds for a hang, not timings the test relies on.
BOUND_S = 30.0


def _fronts_of(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(child) for child in found.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _requests_count(
    cluster: KvProcessCluster, node: int, route: str, method: str, status: str = "200"
) -> float:
    labels = {"route": route, "method": method, "status": status}
    return sum(
        value
        for (name, sample_labels), value in cluster.metrics(node).items()
        if name == "raftkv_http_request_duration_seconds_count"
        and labels.items() <= dict(sample_labels).items()
    )


def test_a_front_serves_the_kv_routes_as_the_member_does_and_forwards_the_rest(
    tmp_path: Path,
) -> None:
    cluster = KvProcessCluster(tmp_path, arguments=FRONTS)
    try:
        cluster.start_all()
        leader = cluster.wait_for_leader()
        follower = next(node for node in cluster.ids if node != leader)
        for node in cluster.ids:
            assert len(_fronts_of(cluster.processes[node].pid)) == 1
        put_before = _requests_count(cluster, leader, "/v1/kv/{key}", "PUT")

        status, answer = cluster.request(leader, "PUT", "/v1/kv/a", json={"value": "1"})
        assert status == 200 and answer["header"]["leader"] == leader
        status, answer = cluster.request(follower, "PUT", "/v1/kv/b", json={"value": "2"})
        assert status == 200
        status, answer = cluster.request(
            leader, "PUT", "/v1/kv/a", json={"value": "3", "prev_kv": True}
        )
        assert answer["prev_kv"]["value"] == "1"
        status, answer = cluster.request(follower, "GET", "/v1/kv/a")
        assert status == 200 and answer["kv"]["value"] == "3" and answer["kv"]["version"] == 2
        status, answer = cluster.request(
            follower, "GET", "/v1/kv/Yg==?consistency=serializable&encoding=base64"
        )
        assert status == 200 and answer["kv"] == {**answer["kv"], "key": "Yg==", "value": "Mg=="}
        status, answer = cluster.request(leader, "GET", "/v1/kv?key=a&range_end=c&limit=1")
        assert [kv["key"] for kv in answer["kvs"]] == ["a"] and answer["more"] is True
        assert answer["count"] == 2
        status, answer = cluster.request(
            leader,
            "POST",
            "/v1/txn",
            json={
                "compares": [{"key": "a", "target": "value", "op": "=", "value": "3"}],
                "success": [{"op": "delete", "key": "b", "prev_kv": True}],
            },
        )
        assert status == 200 and answer["succeeded"] is True
        assert answer["responses"][0]["prev_kvs"][0]["value"] == "2"

        # Errors: the member's own answers, whichever process found them.
        status, answer = cluster.request(leader, "GET", "/v1/kv/b")
        assert (status, answer["error"]["code"]) == (404, "not_found")
        status, answer = cluster.request(leader, "PUT", "/v1/kv/c", content=b"{not json")
        assert (status, answer["error"]["code"]) == (400, "invalid_json")
        status, answer = cluster.request(
            leader, "PUT", "/v1/kv/c", json={"value": "x", "revision": 3}
        )
        assert (status, answer["error"]["code"]) == (400, "invalid_request")
        status, answer = cluster.request(leader, "GET", "/v1/kv/a?revision=99999")
        assert (status, answer["error"]["code"]) == (400, "future_revision")
        status, answer = cluster.request(leader, "PATCH", "/v1/kv/a")
        assert (status, answer["error"]["code"]) == (405, "method_not_allowed")

        # Forwarded: the member's status, and a watch streaming through the front.
        status, answer = cluster.request(follower, "GET", "/v1/status")
        assert status == 200 and answer["id"] == follower
        lines: list[dict[str, object]] = []
        url = f"{cluster.url(follower)}/v1/watch?key=w&progress_interval_s=60"
        with httpx.stream("GET", url, timeout=BOUND_S) as stream:
            reading = stream.iter_lines()
            lines.append(json.loads(next(reading)))
            assert cluster.request(leader, "PUT", "/v1/kv/w", json={"value": "v"})[0] == 200
            lines.append(json.loads(next(reading)))
            # The follower's /metrics counts its front's client connections (this one).
            wait_until(
                lambda: cluster.metrics(follower)[("raftkv_http_connections", frozenset())] >= 1,
                BOUND_S,
                "the front's connections in the member's metrics",
            )
        assert lines[0]["type"] == "created"
        assert lines[1]["type"] == "events"

        # The member counted what its front served, under the route's template, and
        # what the front refused itself on a forwarded route too.
        assert _requests_count(cluster, leader, "/v1/kv/{key}", "PUT") >= put_before + 2
        assert _requests_count(cluster, follower, "/v1/status", "GET") >= 1
        refused = cluster.http.get(
            f"{cluster.url(follower)}/v1/status", headers={"Host": "evil.example"}
        )
        assert refused.status_code == 421
        wait_until(
            lambda: _requests_count(cluster, follower, "/v1/status", "GET", status="421") == 1,
            BOUND_S,
            "the refusal counted under /v1/status",
        )
    finally:
        cluster.stop()


def test_fronts_are_restarted_die_with_their_member_and_refuse_garbage(tmp_path: Path) -> None:
    cluster = KvProcessCluster(tmp_path, nodes=1, arguments=FRONTS)
    try:
        cluster.start_all()
        member = cluster.processes[1]
        (front,) = _fronts_of(member.pid)
        assert cluster.request(1, "PUT", "/v1/kv/k", json={"value": "1"})[0] == 200

        # Garbage on the member's private socket: that connection ends, nothing else.
        gateway = tmp_path / "data-1" / "fronts" / "gateway.sock"
        with socket.socket(socket.AF_UNIX) as garbage:
            garbage.connect(str(gateway))
            garbage.sendall(b"\x00\x00\x00\x05hello")
            garbage.settimeout(BOUND_S)
            assert garbage.recv(100) == b""
        wait_until(lambda: "a front's connection ended" in cluster.log(1), BOUND_S, "the log")
        assert cluster.request(1, "GET", "/v1/kv/k")[0] == 200

        # A front killed is started again, and serves.
        subprocess.run(["kill", "-KILL", str(front)], check=True)
        wait_until(
            lambda: any(pid != front and _alive(pid) for pid in _fronts_of(member.pid)),
            BOUND_S,
            "another front",
        )
        wait_until(
            lambda: _serves(cluster, 1),
            BOUND_S,
            "the new front to serve",
        )
        assert "exited with code -9: starting another" in cluster.log(1)

        # A member killed takes its fronts with it, and starts again on its address; a
        # watch a front was forwarding is cut, not ended as if whole.
        fronts = _fronts_of(member.pid)
        watch = socket.create_connection(("127.0.0.1", cluster.client_ports[1]))
        watch.settimeout(BOUND_S)
        watch.sendall(b"GET /v1/watch?key=k HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while b'"created"' not in received:  # bounded by the socket's timeout
            received += watch.recv(65536)
        assert received.startswith(b"HTTP/1.1 200 OK")
        cluster.kill(1, signal.SIGKILL)
        with watch, contextlib.suppress(ConnectionResetError):  # cut: reset, or closed
            while chunk := watch.recv(65536):
                received += chunk
        assert not received.endswith(b"0\r\n\r\n")
        wait_until(lambda: not any(_alive(pid) for pid in fronts), BOUND_S, "the fronts to end")
        cluster.start(1)
        assert cluster.request(1, "GET", "/v1/kv/k")[1]["kv"]["value"] == "1"

        # SIGTERM to the whole group (a service manager's stop): the member stops its
        # fronts, which do not stop, nor get started again, on their own.
        fronts = _fronts_of(cluster.processes[1].pid)
        for pid in [cluster.processes[1].pid, *fronts]:
            os.kill(pid, signal.SIGTERM)
        assert cluster.processes[1].wait(timeout=BOUND_S) == 0
        assert not any(_alive(pid) for pid in fronts)
        assert cluster.log(1).count("starting another") == 1  # the SIGKILLed front's only
    finally:
        cluster.stop()


def _serves(cluster: KvProcessCluster, node: int) -> bool:
    try:
        return cluster.request(node, "GET", "/v1/kv/k")[0] == 200
    except httpx.HTTPError:
        return False


def test_with_auth_a_front_answers_401_without_a_token_and_serves_with_one(
    tmp_path: Path,
) -> None:
    cluster = KvProcessCluster(tmp_path, nodes=1, arguments=FRONTS)
    try:
        cluster.start_all()
        for method, path, body in (
            ("POST", "/v1/auth/users", {"name": "root", "password": "secret-root"}),
            ("POST", "/v1/auth/users/root/roles", {"role": "root"}),
            ("POST", "/v1/auth/enable", None),
        ):
            status, answer = cluster.request(1, method, path, json=body)
            assert status == 200, answer
        status, answer = cluster.request(1, "PUT", "/v1/kv/k", json={"value": "1"})
        assert (status, answer["error"]["code"]) == (401, "auth_required")
        # Without credentials a malformed body is refused for the credentials first, as
        # the member's app refuses it (the front knows auth is on within a second).
        wait_until(
            lambda: cluster.request(1, "PUT", "/v1/kv/k", content=b"{bad")[0] == 401,
            BOUND_S,
            "the front to forward requests without credentials",
        )
        status, answer = cluster.request(
            1, "POST", "/v1/auth/authenticate", json={"name": "root", "password": "secret-root"}
        )
        token = answer["token"]
        headers = {"Authorization": f"Bearer {token}"}
        status, answer = cluster.request(1, "PUT", "/v1/kv/k", json={"value": "1"}, headers=headers)
        assert status == 200
        status, answer = cluster.request(
            1, "GET", "/v1/kv/k", headers={"Authorization": "Bearer forged"}
        )
        assert (status, answer["error"]["code"]) == (401, "invalid_token")
    finally:
        cluster.stop()


def test_many_requests_at_once_through_a_front(tmp_path: Path) -> None:
    """Calls multiplexed on the front's one connection: each answer reaches its request."""
    cluster = KvProcessCluster(tmp_path, nodes=1, arguments=FRONTS)
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            with httpx.Client(timeout=BOUND_S) as client:
                for index in range(20):
                    key = f"many/{number}/{index}"
                    put = client.put(f"{cluster.url(1)}/v1/kv/{key}", json={"value": key})
                    assert put.status_code == 200
                    got = client.get(f"{cluster.url(1)}/v1/kv/{key}").json()
                    assert got["kv"]["value"] == key
        except BaseException as error:
            errors.append(error)

    try:
        cluster.start_all()
        threads = [threading.Thread(target=writer, args=(number,)) for number in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(BOUND_S * 2)
        assert not errors, errors[0]
        status, answer = cluster.request(1, "GET", "/v1/kv?key=many/&prefix=true&count_only=true")
        assert (status, answer["count"]) == (200, 16 * 20)
    finally:
        cluster.stop()


def test_a_node_whose_fronts_cannot_start_says_so_and_exits(tmp_path: Path) -> None:
    """A front that exits as it starts (here: made to, by a sitecustomize the node's
    environment carries to its fronts) stops the node's start with one line naming it."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import os, sys\nif 'raftkv.server.fronts.front' in sys.orig_argv:\n    os._exit(3)\n"
    )
    cluster = KvProcessCluster(tmp_path / "cluster", nodes=1, arguments=FRONTS)
    try:
        cluster.launch(1, environ={"PYTHONPATH": str(hooks)})
        assert cluster.processes[1].wait(timeout=BOUND_S * 2) == 1
        assert (
            "setting http_workers: front process 0 exited with code 3 as it started"
            in cluster.log(1)
        )
        assert "Traceback" not in cluster.log(1)
        assert "starting another" not in cluster.log(1)
    finally:
        cluster.stop()


def test_an_answer_larger_than_any_request_goes_through_a_front(tmp_path: Path) -> None:
    """A delete with prev_kv answers every value it deleted: here 6 values of ~1 MB, more
    than a request's frame may carry. It reaches the client whole, and the front serves on."""
    cluster = KvProcessCluster(tmp_path, nodes=1, arguments=FRONTS)
    try:
        cluster.start_all()
        value = "v" * 1_000_000
        for index in range(6):
            status, _ = cluster.request(1, "PUT", f"/v1/kv/big/{index}", json={"value": value})
            assert status == 200
        status, answer = cluster.request(
            1, "DELETE", "/v1/kv/big/?prefix=true&prev_kv=true", timeout=BOUND_S
        )
        assert status == 200, answer
        assert answer["deleted"] == 6
        assert [kv["value"] for kv in answer["prev_kvs"]] == [value] * 6
        assert cluster.request(1, "PUT", "/v1/kv/after", json={"value": "1"})[0] == 200
    finally:
        cluster.stop()
