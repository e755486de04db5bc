"""`raftkv serve` on a data dir whose Raft state cannot be used (issue 12, A3 and A5): it
exits 1 with one line saying what and what to do, never a traceback; a term no election
could move past is reset by `raftkv recover --force-new-cluster`, after which the node
serves again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from kv_processes import KvProcessCluster

from raftkv.raft.core.types import HardState, Snapshot
from raftkv.raft.storage.rocks import RocksStorage
from raftkv.server.runner import DATABASE_DIR


def serve_once(cluster: KvProcessCluster) -> subprocess.CompletedProcess[str]:
    """Run node 1 expecting it to refuse to start."""
    return subprocess.run(
        cluster.serve_command(1),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def stopped_node(tmp_path: Path) -> tuple[KvProcessCluster, Path]:
    """A one-node cluster that served a write and stopped cleanly; its database path."""
    cluster = KvProcessCluster(tmp_path, nodes=1)
    cluster.start(1)
    cluster.wait_for_leader()
    assert cluster.request(1, "PUT", "/v1/kv/a", json={"value": "1"})[0] == 200
    assert cluster.kill(1, signal.SIGTERM) == 0
    return cluster, tmp_path / "data-1" / DATABASE_DIR


def rewrite_snapshot(database: Path, data: bytes) -> int:
    """Replace the stored snapshot's data (its checksums made to match); its index."""
    storage = RocksStorage(database, create=False)
    try:
        snapshot = storage.snapshot()
        hard_state = storage.initial_state()[0]
        index = snapshot.metadata.index
        storage.reset_to_snapshot(
            Snapshot(snapshot.metadata, data), HardState(term=hard_state.term, commit=index)
        )
    finally:
        storage.close()
    return index


def rewrite_term(database: Path, term: int) -> None:
    storage = RocksStorage(database, create=False)
    try:
        hard_state = storage.initial_state()[0]
        storage.persist(HardState(term, hard_state.vote, hard_state.commit), (), None, sync=True)
    finally:
        storage.close()


def refusal(answer: subprocess.CompletedProcess[str]) -> str:
    assert answer.returncode == 1, answer.stderr
    assert "Traceback" not in answer.stderr, answer.stderr
    assert "node 1 stopped" not in answer.stderr, answer.stderr  # it never started
    last = answer.stderr.strip().splitlines()[-1]
    assert last.startswith("raftkv serve: node 1: "), answer.stderr
    return last


def test_a_stored_snapshot_that_does_not_decode_stops_the_start_with_one_line(
    tmp_path: Path,
) -> None:
    cluster, database = stopped_node(tmp_path)
    try:
        index = rewrite_snapshot(database, b"garbage with correct checksums")
        line = refusal(serve_once(cluster))
        assert f"the snapshot stored at index {index} in {database.resolve()}" in line
        assert "remove the node from the cluster" in line
    finally:
        cluster.stop()


def test_a_term_no_election_could_move_past_is_reset_by_recover(tmp_path: Path) -> None:
    cluster, database = stopped_node(tmp_path)
    try:
        rewrite_term(database, 2**64 - 1)
        line = refusal(serve_once(cluster))
        assert "past the largest term" in line and "recover --force-new-cluster" in line
        recovered = subprocess.run(
            [
                *(sys.executable, "-m", "raftkv", "recover", "--force-new-cluster"),
                *("--data-dir", str(tmp_path / "data-1")),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert recovered.returncode == 0, recovered.stderr
        assert "term_reset" in json.loads(recovered.stdout)
        cluster.start(1)
        assert cluster.wait_for_leader() == 1
        status, body = cluster.request(1, "GET", "/v1/kv/a")
        assert status == 200, body
    finally:
        cluster.stop()
