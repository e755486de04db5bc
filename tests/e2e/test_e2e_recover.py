"""Disaster recovery with real processes: a 3-node cluster loses two members for good;
`raftkv recover --force-new-cluster` turns the survivor's data dir into a one-node cluster
that keeps every acknowledged write, serves, and grows again with --join."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from kv_processes import running_cluster, wait_until


def recover(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftkv", "recover", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_force_new_cluster_keeps_the_data_and_serves_alone(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        leader = cluster.wait_for_leader()
        for index in range(50):
            status, _ = cluster.request(leader, "PUT", f"/v1/kv/dr/{index}", json={"value": "v"})
            assert status == 200
        survivor = next(node for node in cluster.ids if node != leader)
        # Recovery keeps what the survivor knew committed: a follower learns the last
        # write's commit from the leader's next message, which a kill could beat.
        committed = cluster.status(leader)
        assert committed is not None

        def knows_it_committed() -> bool:
            status = cluster.status(survivor)
            return status is not None and status["commit_index"] >= committed["commit_index"]

        wait_until(knows_it_committed, 10, "the survivor to learn the last write committed")
        for node in cluster.ids:
            cluster.kill(node)
        # The other members are gone for good.
        for node in cluster.ids:
            if node != survivor:
                shutil.rmtree(tmp_path / f"data-{node}")

        refused = recover("--data-dir", str(tmp_path / f"data-{survivor}"))
        assert refused.returncode == 2 and "--force-new-cluster" in refused.stderr
        missing = recover("--force-new-cluster", "--data-dir", str(tmp_path / "nowhere"))
        assert missing.returncode == 2 and "not a raftkv data dir" in missing.stderr

        done = recover("--force-new-cluster", "--data-dir", str(tmp_path / f"data-{survivor}"))
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["recovered"] == survivor
        assert report["previous_voters"] == [1, 2, 3]
        assert report["index"] >= 50

        cluster.ids = [survivor]
        cluster.start(survivor)
        assert cluster.wait_for_leader() == survivor
        status, body = cluster.request(
            survivor, "GET", "/v1/kv?key=dr/&prefix=true&count_only=true"
        )
        assert (status, body["count"]) == (200, 50)
        status, body = cluster.request(survivor, "GET", "/v1/cluster")
        assert [member["id"] for member in body["members"]] == [survivor]
        assert cluster.request(survivor, "PUT", "/v1/kv/dr/after", json={"value": "x"})[0] == 200

        # Grow again: a new, empty member joins the recovered cluster.
        new = cluster.add_node()
        cluster.start(
            new, command=cluster.join_command(new, cluster.url(survivor), auto_promote=True)
        )
        status, body = cluster.request(new, "GET", "/v1/kv?key=dr/&prefix=true&count_only=true")
        assert (status, body["count"]) == (200, 51)
