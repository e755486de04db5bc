"""Membership with real processes: grow a one-node cluster to three with
`raftkv serve --join URL --auto-promote` while writing, add a learner and promote it with
the CLI, move leadership, and remove the old leader; no acknowledged write is lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kv_processes import KvProcessCluster, wait_until

from raftkv.cli import EXIT_OK


def cli(cluster: KvProcessCluster, *arguments: str, node: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftkv", *arguments, "--endpoints", cluster.url(node)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def roles(cluster: KvProcessCluster, node: int) -> dict[int, str]:
    status, body = cluster.request(node, "GET", "/v1/cluster")
    assert status == 200
    return {member["id"]: member["role"] for member in body["members"]}


def has_raft_state(cluster: KvProcessCluster, node: int) -> bool:
    identity = json.loads((cluster.root / f"data-{node}" / "member.json").read_bytes())
    return bool(identity["has_raft_state"])


def test_grow_one_to_four_then_move_leadership_and_remove_the_founder(tmp_path: Path) -> None:
    cluster = KvProcessCluster(tmp_path, nodes=1)
    try:
        cluster.start_all()
        written = []
        for index in range(20):
            key = f"grow/{index}"
            assert cluster.request(1, "PUT", f"/v1/kv/{key}", json={"value": "v"})[0] == 200
            written.append(key)

        for _ in range(2):  # nodes 2 and 3 join and become voters by themselves
            node = cluster.add_node()
            command = cluster.join_command(node, cluster.url(1), auto_promote=True)
            cluster.start(node, command=command)
            assert roles(cluster, 1)[node] == "voter"
            # Recorded before it could vote: its state lost, it must never rejoin as itself.
            assert has_raft_state(cluster, node)
            key = f"grow/after-{node}"
            assert cluster.request(node, "PUT", f"/v1/kv/{key}", json={"value": "v"})[0] == 200
            written.append(key)

        learner = cluster.add_node()
        cluster.start(
            learner, command=cluster.join_command(learner, cluster.url(2), auto_promote=False)
        )
        assert roles(cluster, 1)[learner] == "learner"
        assert has_raft_state(cluster, learner)  # marked before it could be promoted
        # The operator watches the learner catch up before promoting it.
        caught_up = cli(cluster, "status", "--wait", "60", node=2)
        assert caught_up.returncode == EXIT_OK, caught_up.stderr
        assert "every member is caught up" in caught_up.stdout
        promoted = cli(cluster, "member", "promote", str(learner), "--output", "json", node=3)
        assert promoted.returncode == EXIT_OK, promoted.stderr
        members = json.loads(promoted.stdout)["members"]
        assert {member["id"]: member["role"] for member in members}[learner] == "voter"

        moved = cli(cluster, "transfer-leader", "3", "--output", "json", node=2)
        assert moved.returncode == EXIT_OK, moved.stderr
        assert json.loads(moved.stdout) == {"leader": 3}
        assert cluster.wait_for_leader() == 3

        removed = cli(cluster, "member", "remove", "1", "--output", "json", node=4)
        assert removed.returncode == EXIT_OK, removed.stderr
        assert 1 not in {member["id"] for member in json.loads(removed.stdout)["members"]}

        def founder_not_ready() -> bool:
            status, body = cluster.request(1, "GET", "/ready")
            return status == 503 and "removed" in body["reason"]

        wait_until(founder_not_ready, 30, "the removed founder to say it was removed")
        answer = cluster.request(4, "GET", "/v1/kv?key=grow/&prefix=true&keys_only=true")[1]
        assert sorted(kv["key"] for kv in answer["kvs"]) == sorted(written)
        for node in (2, 3, 4):
            assert cluster.request(node, "PUT", "/v1/kv/grow/last", json={"value": "x"})[0] == 200
    finally:
        cluster.stop()
