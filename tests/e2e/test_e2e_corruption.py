"""End to end with real processes: issue 12, item 1. One forged peer frame, claiming
to come from the leader in its term, appends a put at a follower's last index + 1; the
follower applies it and takes the leader's real entry at that index as present. The hash
checks (every second here) must then name that follower CORRUPT on every member's
`/v1/status`, `/metrics` and `raftkv status`, and the follower must refuse reads (503
`corrupt`), also after a restart."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from kv_processes import KvProcessCluster, wait_until

from raftkv.kv import KvCommand, Put, encode_command
from raftkv.raft.core.types import Entry, Message, MessageType, NodeId
from raftkv.raft.driver.envelope import RequestId, encode_proposal
from raftkv.raft.transport.codec import encode_batch
from raftkv.raft.transport.tcp_framing import Purpose, frame, greeting

CHECKS = {"RAFTKV_CORRUPT_CHECK_INTERVAL_S": "1"}


def forge_append(cluster: KvProcessCluster, victim: int, leader: int, key: str) -> int:
    """Send the victim one frame on the peer port as the leader would: a MsgApp in the leader's term
    appending, after the victim's last entry, a put the leader never proposed, with a
    commit index covering it. Returns the index it was appended at."""
    status = cluster.status(victim)
    leader_status = cluster.status(leader)
    assert status is not None and leader_status is not None
    last, term = status["last_index"], leader_status["term"]
    command = encode_command(KvCommand(Put(key=key.encode(), value=b"evil")))
    message = Message(
        MessageType.APPEND,
        to=NodeId(victim),
        sender=NodeId(leader),
        term=term,
        # The leader's no-op opened its term: the victim's last entry is of this term.
        log_term=term,
        index=last,
        entries=(
            Entry(
                term=term,
                index=last + 1,
                data=encode_proposal(RequestId(NodeId(leader), 7, 1), command),
            ),
        ),
        commit=last + 1,
    )
    # The frame carries the cluster's id (derived when it was founded): a frame of another
    # cluster is refused before anything in it is looked at.
    cluster_id = cluster.request(leader, "GET", "/v1/cluster")[1]["cluster_id"]
    batch = encode_batch(cluster_id, [message]).SerializeToString()
    address = ("127.0.0.1", cluster.peer_ports[victim])
    with socket.create_connection(address, timeout=10) as connection:
        connection.sendall(greeting(Purpose.MESSAGES))
        # The victim sends the greeting back: it accepted the stream.
        assert connection.recv(len(greeting(Purpose.MESSAGES))) == greeting(Purpose.MESSAGES)
        connection.sendall(frame(batch))
        # The victim never writes again on a message stream: reading until it closes
        # would wait forever, so end our side and wait for its close.
        connection.shutdown(socket.SHUT_WR)
        assert connection.recv(1) == b""
    return int(last + 1)


def alarmed(cluster: KvProcessCluster, node: int) -> list[Any]:
    status = cluster.status(node)
    return [] if status is None else list(status.get("alarms", []))


def test_a_forged_append_raises_a_corrupt_alarm_and_the_follower_refuses_reads(
    tmp_path: Path,
) -> None:
    cluster = KvProcessCluster(tmp_path)
    try:
        for node in cluster.ids:
            cluster.start(node, environ=CHECKS)
        leader = cluster.wait_for_leader()
        victim = next(node for node in cluster.ids if node != leader)
        assert cluster.request(leader, "PUT", "/v1/kv/before", json={"value": "0"})[0] == 200

        # The forgery races the leader's own appends (checks every second): if the leader
        # appended first, the victim ignores it (same index and term), so try again.
        for attempt in range(10):
            key = f"forged-{attempt}"
            index = forge_append(cluster, victim, leader, key)
            wait_until(
                lambda index=index: (cluster.status(victim) or {}).get("applied_index", 0) >= index,
                10,
                "the victim to apply past the forged index",
            )
            status, _ = cluster.request(victim, "GET", f"/v1/kv/{key}?consistency=serializable")
            if status in (200, 503):  # applied (and maybe already found out)
                break
            assert status == 404
        else:
            raise AssertionError("no forged append was applied in 10 attempts")
        assert cluster.request(leader, "PUT", "/v1/kv/real", json={"value": "1"})[0] == 200

        def every_member_names_the_victim() -> bool:
            return all(
                [(alarm["alarm"], alarm["member"]) for alarm in alarmed(cluster, node)]
                == [("CORRUPT", victim)]
                for node in cluster.ids
            )

        wait_until(every_member_names_the_victim, 20, f"a CORRUPT alarm naming {victim}")

        for path in ("/v1/kv/real", "/v1/kv/real?consistency=serializable", f"/v1/kv/{key}"):
            status, body = cluster.request(victim, "GET", path)
            assert (status, body["error"]["code"]) == (503, "corrupt"), (path, body)
        for node in cluster.ids:
            if node != victim:
                status, body = cluster.request(node, "GET", "/v1/kv/real")
                assert (status, body["kv"]["value"]) == (200, "1")
            metrics = cluster.http.get(f"{cluster.url(node)}/metrics").text
            assert f'raftkv_corrupt_alarm{{member="{victim}"}} 1.0' in metrics

        shown = subprocess.run(
            [sys.executable, "-m", "raftkv", "status", "--endpoints", cluster.url(leader)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert f"ALARM CORRUPT: member {victim}" in shown.stdout, shown.stdout + shown.stderr
        as_json = subprocess.run(
            [sys.executable, "-m", "raftkv", "status", "--endpoints", cluster.url(leader),
             "--output", "json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        rows = json.loads(as_json.stdout)
        assert all(
            [alarm["member"] for alarm in row["alarms"]] == [victim] for row in rows if "id" in row
        )
        assert f"CORRUPT: this member ({victim})" in cluster.log(victim)

        # The alarm is replicated state: it holds across a restart.
        cluster.kill(victim)
        cluster.start(victim, environ=CHECKS)
        status, body = cluster.request(victim, "GET", "/v1/kv/real?consistency=serializable")
        assert (status, body["error"]["code"]) == (503, "corrupt")
    finally:
        cluster.stop()
