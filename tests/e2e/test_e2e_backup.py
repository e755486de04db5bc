"""Backup and restore with real processes: `raftkv snapshot save` from a follower of a live
cluster, `raftkv snapshot restore` into three new data dirs, the new cluster (with a new
cluster id, the same on every founder) serves the same data (same KV state hash as the
source at the backup's index; once it serves, the same data hash) and takes writes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from kv_processes import KvProcessCluster, running_cluster

from raftkv.kv import KvStateMachine
from raftkv.raft.storage.rocks import RocksStorage
from raftkv.testing.processes import wait_until


def raftkv(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftkv", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def state_hash(data_dir: Path) -> str:
    storage = RocksStorage(data_dir / "db", create=False)
    try:
        return KvStateMachine(storage.app_data()).state_hash()
    finally:
        storage.close()


def test_backup_restore_round_trip(tmp_path: Path) -> None:
    backup = tmp_path / "backup.raftkv"
    with running_cluster(tmp_path / "source") as source:
        leader = source.wait_for_leader()
        for index in range(200):
            status, _ = source.request(
                leader, "PUT", f"/v1/kv/backup/{index}", json={"value": f"value {index}"}
            )
            assert status == 200
        source.request(leader, "DELETE", "/v1/kv/backup/7")
        follower = next(node for node in source.ids if node != leader)
        saved = raftkv("snapshot", "save", str(backup), "--endpoints", source.url(follower))
        assert saved.returncode == 0, saved.stderr
        report = json.loads(saved.stdout)
        assert report["bytes"] == backup.stat().st_size and report["index"] >= 200
        # Nothing is written after the save: the source's state is the backup's.
        source_status = source.request(follower, "GET", "/v1/status?hash=true")[1]
        source_hash, source_data_hash = source_status["hash"], source_status["data_hash"]
        unreachable = raftkv(
            "snapshot", "save", str(tmp_path / "none"), "--endpoints", "http://127.0.0.1:9"
        )
        assert unreachable.returncode == 4 and not (tmp_path / "none").exists()

    target = KvProcessCluster(tmp_path / "target")
    cluster = ",".join(f"{node}=127.0.0.1:{target.peer_ports[node]}" for node in target.ids)
    cluster_ids = set()
    for node in target.ids:
        data_dir = tmp_path / "target" / f"data-{node}"
        restored = raftkv(
            "snapshot", "restore", str(backup), "--id", str(node),
            "--data-dir", str(data_dir), "--initial-cluster", cluster,
        )  # fmt: skip
        assert restored.returncode == 0, restored.stderr
        cluster_ids.add(json.loads(restored.stdout)["cluster_id"])
        assert json.loads((data_dir / "member.json").read_text())["cluster_id"] in cluster_ids
        assert state_hash(data_dir) == source_hash
    # A new cluster id (the source's is 1), the same on every founder.
    (cluster_id,) = cluster_ids
    assert cluster_id != 1
    again = raftkv(
        "snapshot", "restore", str(backup), "--data-dir", str(tmp_path / "target" / "data-1"),
        "--initial-cluster", cluster,
    )  # fmt: skip
    assert again.returncode == 2 and "not empty" in again.stderr
    damaged = tmp_path / "damaged.raftkv"
    damaged.write_bytes(backup.read_bytes()[:-5])
    refused = raftkv("snapshot", "restore", str(damaged), "--data-dir", str(tmp_path / "x"))
    assert refused.returncode == 5 and "checksum" in refused.stderr
    assert not (tmp_path / "x").exists()

    try:
        # No --cluster-id: each data dir keeps the new id restore gave it.
        target.start_all()
        leader = target.wait_for_leader()

        def published() -> bool:
            members = target.request(leader, "GET", "/v1/cluster")[1]["members"]
            return {member["client_url"] for member in members} == set(target.endpoints())

        wait_until(published, 30, "every restored member to publish its client URL")
        # Its members' client URLs are the new ones: the state hash differs from the
        # source's, the hash of the user's data does not.
        status = target.request(leader, "GET", "/v1/status?hash=true")[1]
        assert status["data_hash"] == source_data_hash and status["hash"] != source_hash
        status, body = target.request(
            leader, "GET", "/v1/kv?key=backup/&prefix=true&count_only=true"
        )
        assert (status, body["count"]) == (200, 199)
        status, body = target.request(leader, "GET", "/v1/kv/backup/42")
        assert body["kv"]["value"] == "value 42"
        assert target.request(leader, "PUT", "/v1/kv/backup/new", json={"value": "n"})[0] == 200
        members = target.request(leader, "GET", "/v1/cluster")[1]["members"]
        assert sorted(member["id"] for member in members) == [1, 2, 3]
    finally:
        target.stop()


def test_incremental_backups_share_unchanged_chunks_and_restore(tmp_path: Path) -> None:
    directory = tmp_path / "backups"
    with running_cluster(tmp_path / "source") as source:
        leader = source.wait_for_leader()
        rng = random.Random(5)  # incompressible values: chunks of a realistic size
        for index in range(3000):
            status, _ = source.request(
                leader, "PUT", f"/v1/kv/inc/{index:05d}", json={"value": rng.randbytes(450).hex()}
            )
            assert status == 200
        first = raftkv("snapshot", "save", "--incremental", str(directory),
                       "--endpoints", source.url(leader))  # fmt: skip
        assert first.returncode == 0, first.stderr
        for index in range(0, 3000, 600):
            source.request(leader, "PUT", f"/v1/kv/inc/{index:05d}", json={"value": "changed"})
        follower = next(node for node in source.ids if node != leader)
        second = raftkv("snapshot", "save", "--incremental", str(directory),
                        "--endpoints", source.url(follower))  # fmt: skip
        assert second.returncode == 0, second.stderr
        report = json.loads(second.stdout)
        source_hash = source.request(follower, "GET", "/v1/status?hash=true")[1]["hash"]
    # Five keys changed: the second backup wrote a fraction of its size.
    assert report["reused_bytes"] > report["written_bytes"]
    assert report["written_bytes"] + report["reused_bytes"] == report["bytes"]
    print(
        f"\nincremental backup: wrote {report['written_bytes']} of {report['bytes']} bytes "
        f"({report['written_bytes'] / report['bytes']:.1%})"
    )
    manifest = Path(report["saved"])
    target = KvProcessCluster(tmp_path / "target", nodes=1)
    data_dir = tmp_path / "target" / "data-1"
    restored = raftkv(
        "snapshot", "restore", str(manifest), "--id", "1", "--data-dir", str(data_dir),
        "--initial-cluster", f"1=127.0.0.1:{target.peer_ports[1]}",
    )  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert state_hash(data_dir) == source_hash
    # Dropping the first backup and pruning keeps the second whole.
    first_manifest = Path(json.loads(first.stdout)["saved"])
    first_manifest.unlink()
    pruned = raftkv("snapshot", "prune", str(directory))
    assert pruned.returncode == 0 and json.loads(pruned.stdout)["removed_pieces"] >= 1
    again = raftkv(
        "snapshot", "restore", str(manifest), "--id", "1", "--data-dir", str(tmp_path / "again"),
        "--initial-cluster", f"1=127.0.0.1:{target.peer_ports[1]}",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert state_hash(tmp_path / "again") == source_hash
