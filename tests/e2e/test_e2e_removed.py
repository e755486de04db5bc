"""A member removed from a real 3-process cluster (issue 12, B10).

Node 3 serves an open watch (raw HTTP), a Python client's watch and serializable reads;
then it is removed through the API. Within a bound, its raw watch ends with `removed`,
every kind of request it gets is answered 503 `removed` while `/health`, `/v1/status`
(saying `removed`) and `/v1/cluster` still answer, and the client's watch goes on at
another member with every event once, no gap.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

from kv_processes import running_cluster

from raftkv.client import ClientSettings, SyncClient, WatchEvent
from raftkv.testing.processes import wait_until

VICTIM = 3
# How soon after the removal is acknowledged everything on the victim must have ended.
BOUND_S = 5.0
# Bounds for a hang, not timings the test relies on.
JOIN_TIMEOUT_S = 60.0

REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/v1/kv/r/0?consistency=serializable", {}),
    ("GET", "/v1/kv?key=r/&prefix=true&consistency=serializable", {}),
    ("GET", "/v1/kv/r/0", {}),
    ("PUT", "/v1/kv/r/late", {"json": {"value": "late"}}),
    ("POST", "/v1/txn", {"json": {"compares": [], "success": [], "failure": []}}),
    ("POST", "/v1/lease", {"json": {"ttl": 10}}),
    ("GET", "/v1/leases", {}),
    ("GET", "/v1/watch?key=r/&prefix=true", {}),
    ("POST", "/v1/compact", {"json": {"revision": 1}}),
]


class Watching(threading.Thread):
    """A SyncClient watch of prefix r/ from `start`, node 3 first, until it has `count`."""

    def __init__(self, endpoints: list[str], start: int, count: int) -> None:
        super().__init__(name="watching", daemon=True)
        self.endpoints = endpoints
        self.start_revision = start
        self.count = count
        self.events: list[WatchEvent] = []
        self.reconnections = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with SyncClient(self.endpoints, ClientSettings(deadline_s=30.0)) as client:
                watcher = client.watch(
                    "r/", prefix=True, start_revision=self.start_revision, progress_interval_s=1
                )
                with watcher:
                    for event in watcher:
                        self.events.append(event)
                        self.reconnections = watcher.reconnections
                        if len(self.events) == self.count:
                            return
        except BaseException as error:  # reported by the test
            self.error = error


class RawWatch:
    """`GET /v1/watch` on a plain socket: the lines as they come (a reader thread)."""

    def __init__(self, port: int, query: str) -> None:
        self.lines: list[dict[str, Any]] = []
        self.closed = False
        self._socket = socket.create_connection(("127.0.0.1", port))
        self._socket.sendall(f"GET /v1/watch?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        threading.Thread(target=self._read, name="raw-watch", daemon=True).start()

    def _read(self) -> None:
        pending = b""
        while chunk := self._socket.recv(65536):
            pending += chunk
            # Chunked framing: every line of the stream is a JSON object on its own.
            *complete, pending = pending.split(b"\n")
            for line in complete:
                if line.startswith(b"{"):
                    self.lines.append(json.loads(line))
        self.closed = True

    def close(self) -> None:
        self._socket.close()


def test_a_removed_member_ends_its_requests_and_watches_and_clients_move_on(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path) as cluster:
        leader = cluster.wait_for_leader()
        if leader == VICTIM:
            status, _ = cluster.request(VICTIM, "POST", "/v1/leader/transfer", json={"to": 1})
            assert status == 200
            leader = cluster.wait_for_leader()
        victim_url = cluster.url(VICTIM)
        endpoints = [victim_url] + [cluster.url(node) for node in cluster.ids if node != VICTIM]
        with SyncClient(endpoints[1:]) as client:
            start = client.put("r/0", "0").revision
            wait_until(
                lambda: cluster.request(VICTIM, *REQUESTS[0][:2])[0] == 200,
                10,
                "node 3 to have r/0",
            )
            raw = RawWatch(cluster.client_ports[VICTIM], "key=r/&prefix=true")
            try:
                watching = Watching(endpoints, start, 20)
                watching.start()
                for number in range(1, 10):
                    client.put(f"r/{number}", str(number))
                wait_until(lambda: len(watching.events) == 10, 10, "the first 10 events")
                wait_until(lambda: len(raw.lines) >= 2, 10, "the raw watch's first events")

                status, body = cluster.request(leader, "DELETE", f"/v1/members/{VICTIM}")
                assert status == 200, body
                wait_until(
                    lambda: any(line["type"] == "canceled" for line in raw.lines),
                    BOUND_S,
                    "the raw watch on node 3 to end",
                )
                canceled = raw.lines[-1]
                assert canceled["type"] == "canceled"
                assert canceled["error"]["code"] == "removed"
                # Its watermark covers what it sent, nothing more.
                sent = [event for line in raw.lines for event in line.get("events", [])]
                assert canceled["revision"] >= max(e["kv"]["mod_revision"] for e in sent)
                for method, path, options in REQUESTS:
                    status, body = cluster.request(VICTIM, method, path, **options)
                    assert (status, body["error"]["code"]) == (503, "removed"), (method, path, body)
                assert cluster.request(VICTIM, "GET", "/health")[0] == 200
                status, body = cluster.request(VICTIM, "GET", "/v1/status")
                assert status == 200 and body["removed"] is True
                status, body = cluster.request(VICTIM, "GET", "/v1/cluster")
                assert status == 200 and VICTIM not in [member["id"] for member in body["members"]]

                # The client watch goes on at another member, every event once.
                for number in range(10, 20):
                    client.put(f"r/{number}", str(number))
                watching.join(JOIN_TIMEOUT_S)
                assert watching.error is None, watching.error
                assert [event.kv.key for event in watching.events] == [
                    f"r/{number}".encode() for number in range(20)
                ]
                revisions = [event.revision for event in watching.events]
                assert revisions == sorted(set(revisions)) and revisions[0] == start
                assert watching.reconnections >= 1
            finally:
                raw.close()  # also when an assertion fails: no socket left to the GC
