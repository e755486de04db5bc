"""A member whose state is gone or cut back refuses to start, saying what happened and
what to do, instead of taking part again under its old id: its database wiped (identity
file kept), it would bootstrap again and vote with an empty log; its write-ahead log cut,
it would serve an older state, having acknowledged entries and maybe a vote it no longer
remembers. Either could lose acknowledged writes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from kv_processes import KvProcessCluster, running_cluster, wait_until


def refused_start(cluster: KvProcessCluster, node: int) -> str:
    """Start `node` as before; it must exit 1 with one error line and no traceback (INFO
    start-up lines, such as the open-files limit, may come first). Returns that line."""
    started = subprocess.run(
        cluster.serve_command(node),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert started.returncode == 1, started.stderr
    assert '"started"' not in started.stdout
    assert "Traceback" not in started.stderr, started.stderr
    lines = [line for line in started.stderr.strip().splitlines() if " INFO " not in line]
    assert len(lines) == 1, started.stderr
    assert lines[0].startswith("raftkv serve: "), started.stderr
    return lines[0]


def test_a_member_whose_database_was_wiped_refuses_to_start(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        assert cluster.request(1, "PUT", "/v1/kv/kept", json={"value": "v"})[0] == 200
        database = tmp_path / "data-3" / "db"
        assert cluster.kill(3, signal.SIGTERM) == 0

        for damage in ("removed", "emptied"):
            shutil.rmtree(database, ignore_errors=True)
            if damage == "emptied":
                database.mkdir()
            refusal = refused_start(cluster, 3)
            assert "node 3 lost its Raft state" in refusal
            assert "raftkv member remove 3" in refusal

        # The two others still serve what was acknowledged.
        status, body = cluster.request(2, "GET", "/v1/kv/kept")
        assert status == 200
        assert body["kv"]["value"] == "v"


def test_a_member_whose_write_ahead_log_was_cut_refuses_to_start(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        leader = cluster.wait_for_leader()
        follower = next(node for node in cluster.ids if node != leader)
        for index in range(300):
            status, _ = cluster.request(
                leader, "PUT", f"/v1/kv/k{index}", json={"value": "v" * 200}
            )
            assert status == 200
        wait_until(
            lambda: (cluster.status(follower) or {}).get("applied_index", 0) >= 300,
            30,
            "the follower to apply the writes",
        )
        # A new term is recorded in the follower's durability watermark at once (commits
        # only once a second): the cut below is then past the watermark whatever the timing.
        term = (cluster.status(follower) or {})["term"]
        other = next(node for node in cluster.ids if node not in (leader, follower))
        assert cluster.request(leader, "POST", "/v1/leader/transfer", json={"to": other})[0] == 200
        wait_until(
            lambda: (cluster.status(follower) or {}).get("term", 0) > term,
            30,
            "the follower to see the new term",
        )
        cluster.kill(follower)  # kill -9: the writes are in RocksDB's write-ahead log only
        database = tmp_path / f"data-{follower}" / "db"
        wal = max(database.glob("*.log"), key=lambda path: path.stat().st_size)
        os.truncate(wal, wal.stat().st_size // 2)

        refusal = refused_start(cluster, follower)
        assert "the log was cut at index" in refusal
        assert "join again with a new id" in refusal
        status, _ = cluster.request(other, "PUT", "/v1/kv/after", json={"value": "v"})
        assert status == 200
