"""Fuzzing the client port of a live 3-process cluster: generated requests from
`/openapi.json` (schemathesis, valid and invalid) and hostile clients (compressed bodies,
slow and idle connections by the thousand, watchers that never read, garbage bytes, huge
headers). After every batch the cluster must be whole: every process running, `/health`
answered quickly, a write accepted, no traceback in any log, and every member at the same
applied index with the same state hash.

In `make test` each batch is small (a smoke); `make fuzz` runs the same batches with
`RAFTKV_TEST_FUZZ_EXAMPLES` (schemathesis examples per operation and mode) and
`RAFTKV_TEST_FUZZ_SCALE` (a multiplier on the hostile clients) raised."""

from __future__ import annotations

import contextlib
import gzip
import os
import random
import socket
import time
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from kv_processes import KvProcessCluster, wait_until
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error, status_code_conformance

EXAMPLES = int(os.environ.get("RAFTKV_TEST_FUZZ_EXAMPLES", "4"))
SCALE = int(os.environ.get("RAFTKV_TEST_FUZZ_SCALE", "1"))
SEED = int(os.environ.get("RAFTKV_TEST_FUZZ_SEED", "0"))
# How much of each node's log the last check read: each batch is judged on what it caused.
_LOGGED: dict[int, int] = {}


# The watch budget of the nodes under test (the default is 256 MiB): small enough that
# what the unread watchers may hold is a clear bound whatever RAFTKV_TEST_FUZZ_SCALE is.
WATCH_BUDGET_BYTES = 64 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KvProcessCluster]:
    started = KvProcessCluster(tmp_path_factory.mktemp("e2e-fuzz"))
    try:
        for node in started.ids:
            started.start(
                node, environ={"RAFTKV_WATCH_MAX_TOTAL_BUFFERED_BYTES": str(WATCH_BUDGET_BYTES)}
            )
        started.wait_for_leader()
        yield started
    finally:
        started.stop()


def assert_whole(cluster: KvProcessCluster) -> None:
    """Every process up, answering, writable, no traceback, members converged."""
    for node, process in cluster.processes.items():
        assert process.poll() is None, f"node {node} exited {process.returncode}"
    for node in cluster.ids:
        started = time.monotonic()
        status, _ = cluster.request(node, "GET", "/health")
        assert status == 200, f"node {node} /health {status}"
        assert time.monotonic() - started < 2.0, f"node {node} /health took too long"
    leader = cluster.wait_for_leader()
    assert cluster.request(leader, "PUT", "/v1/kv/fuzz-probe", json={"value": "v"})[0] == 200
    for node in cluster.ids:
        log = cluster.log(node)
        new, _LOGGED[node] = log[_LOGGED.get(node, 0) :], len(log)
        assert "Traceback" not in new, f"node {node} logged a traceback:\n{new[-3000:]}"
    states: dict[int, tuple[int, str]] = {}

    def converged() -> bool:
        states.clear()
        for node in cluster.ids:
            answer = cluster.http.get(f"{cluster.url(node)}/v1/status", params={"hash": "true"})
            body = answer.json()
            states[node] = (body["applied_index"], body["hash"])
        return len(set(states.values())) == 1

    wait_until(converged, 30, "every member at the same applied index and state hash")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_break_nothing(cluster: KvProcessCluster, mode: GenerationMode) -> None:
    base_url = cluster.url(1)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()
        # Membership changes would take the cluster under test apart; a watch never ends.
        if operation.path.startswith(("/v1/members", "/v1/leader", "/v1/watch")):
            continue
        inputs = len(operation.query) + len(operation.path_parameters) + len(operation.body)
        if mode is GenerationMode.NEGATIVE and not inputs:
            continue  # nothing to make invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=SEED == 0,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Case) -> None:
            response = case.call(base_url=base_url, timeout=10)
            case.validate_response(response, checks=[not_a_server_error, status_code_conformance])

        check()
    assert_whole(cluster)


def test_a_compressed_body_is_refused_without_inflating_it(cluster: KvProcessCluster) -> None:
    bomb = gzip.compress(b"\0" * (64 << 20) * SCALE, compresslevel=9)
    for encoding in ("gzip", "deflate", "br"):
        started = time.monotonic()
        response = cluster.http.put(
            f"{cluster.url(1)}/v1/kv/bomb",
            content=bomb,
            headers={"Content-Encoding": encoding, "Content-Type": "application/json"},
        )
        assert 400 <= response.status_code < 500, response.text
        assert time.monotonic() - started < 1.0, f"{encoding}: took the loop's time"
    assert_whole(cluster)


def test_slow_and_idle_connections_by_the_thousand(cluster: KvProcessCluster) -> None:
    """Slowloris and an idle flood, past the connection cap: the node refuses what is over
    the cap at once, keeps its file descriptors, its peers and its leader, logs no
    traceback, and serves everyone again once the flood is gone."""
    pid = cluster.processes[1].pid
    held: list[socket.socket] = []
    try:
        for index in range(3000 * SCALE):
            try:
                connection = socket.create_connection(
                    ("127.0.0.1", cluster.client_ports[1]), timeout=2
                )
            except OSError:
                continue  # refused: what a full backlog does
            held.append(connection)
            if index % 3 == 0:
                with contextlib.suppress(OSError):
                    connection.sendall(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        open_files = len(os.listdir(f"/proc/{pid}/fd"))
        assert open_files < 2000, f"node 1 holds {open_files} descriptors during the flood"
        assert cluster.processes[1].poll() is None
        # The cluster still has its leader and takes writes through the other members.
        leader = cluster.wait_for_leader()
        other = next(node for node in cluster.ids if node != 1)
        assert cluster.request(other, "PUT", "/v1/kv/during-flood", json={"value": "v"})[0] == 200
        assert leader == cluster.wait_for_leader()
    finally:
        for connection in held:
            connection.close()
    assert_whole(cluster)


def test_watchers_that_never_read_cost_bounded_memory(cluster: KvProcessCluster) -> None:
    node = 2
    pid = cluster.processes[node].pid
    before = _rss_bytes(pid)
    sockets = []
    try:
        # Enough watchers that their first messages alone (half a MiB each) overflow the
        # budget, however the puts fall into batches.
        for _ in range(150 * SCALE):
            connection = socket.create_connection(("127.0.0.1", cluster.client_ports[node]))
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            connection.sendall(
                b"GET /v1/watch?key=fan/&prefix=true&prev_kv=true HTTP/1.1\r\n"
                b"Host: 127.0.0.1\r\n\r\n"
            )
            sockets.append(connection)
        value = "x" * (512 * 1024)
        leader = cluster.wait_for_leader()
        revision = 0
        for index in range(6):
            status, body = cluster.request(
                leader, "PUT", f"/v1/kv/fan/{index % 2}", json={"value": value}
            )
            assert status == 200
            revision = body["header"]["revision"]
        wait_until(
            lambda: (cluster.status(node) or {}).get("revision", 0) >= revision,
            10,
            "the watched member to apply the puts",
        )
        grown = _rss_bytes(pid) - before
        # The budget acted: the watches holding the most were ended, and what the rest hold
        # is within it (the node's own count of the bytes its watches hold).
        metrics = cluster.metrics(node)
        limit = frozenset({("limit", "watch_max_total_buffered_bytes")})
        assert metrics[("raftkv_limit_hits_total", limit)] >= 1
        assert 0 < metrics[("raftkv_watch_buffered_bytes", frozenset())] <= WATCH_BUDGET_BYTES
        # And the process: what the watchers hold is capped by the budget; encoding a
        # message costs about as much again while it is being written. (A watch the budget
        # ends lets go of what its client did not take at once: waiting for its last words,
        # a burst of such watches took it to 408 MiB in 2 runs of 9.)
        bound = 2 * WATCH_BUDGET_BYTES + (64 << 20)
        assert grown < bound, f"RSS grew by {grown >> 20} MiB with unread watchers"
    finally:
        for connection in sockets:
            connection.close()
    assert_whole(cluster)


def test_garbage_and_absurd_requests(cluster: KvProcessCluster) -> None:
    rng = random.Random(SEED)
    port = cluster.client_ports[3]
    payloads = [
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096))) for _ in range(30 * SCALE)
    ]
    payloads += [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: " + b"a" * (256 * 1024) + b"\r\n\r\n",
        b"POST /v1/txn HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999999\r\n\r\n{",
        b"PUT /v1/kv/k HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"ffffffff\r\n",
        b"GET /v1/kv/" + b"%ff" * 5000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"\r\n" * 10000,
    ]
    for payload in payloads:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=3) as connection,
        ):
            connection.sendall(payload)
            connection.shutdown(socket.SHUT_WR)
            while connection.recv(65536):
                pass
    assert_whole(cluster)


def _send_and_drain(port: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as connection:
        connection.sendall(payload)
        connection.shutdown(socket.SHUT_WR)
        while connection.recv(65536):
            pass


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
