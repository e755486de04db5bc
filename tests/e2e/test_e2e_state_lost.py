"""A member whose database was wiped (its identity file kept) refuses to start, saying
what happened and what to do, instead of bootstrapping again under its old id: started,
it would vote again with an empty log and could lose acknowledged writes."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

from kv_processes import running_cluster


def test_a_member_whose_database_was_wiped_refuses_to_start(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        assert cluster.request(1, "PUT", "/v1/kv/kept", json={"value": "v"})[0] == 200
        database = tmp_path / "data-3" / "db"
        assert cluster.kill(3, signal.SIGTERM) == 0

        for damage in ("removed", "emptied"):
            shutil.rmtree(database, ignore_errors=True)
            if damage == "emptied":
                database.mkdir()
            started = subprocess.run(
                cluster.serve_command(3),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            assert started.returncode == 1, started.stderr
            lines = started.stderr.strip().splitlines()
            assert len(lines) == 1, started.stderr
            assert "node 3 lost its Raft state" in lines[0]
            assert "raftkv member remove 3" in lines[0]
            assert '"started"' not in started.stdout

        # The two others still serve what was acknowledged.
        status, body = cluster.request(2, "GET", "/v1/kv/kept")
        assert status == 200
        assert body["kv"]["value"] == "v"
