"""A follower whose disk fills up while it forwards writes: it stops serving and exits
non-zero (no zombie answering from a closed store), and no write it answered is
misreported — 200 was applied, 503 (or 408) was not, 504 may have been (the writes it had forwarded
when it failed are 504 `outcome_unknown`, never 503 `stopped`).

The follower's data dir is a small tmpfs mounted for the test (root only)."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from kv_processes import KvProcessCluster, wait_until

DISK_BYTES = 24 * 1024 * 1024
VALUE = "x" * (48 * 1024)
WRITERS = 8


@pytest.fixture
def small_disk(tmp_path: Path) -> object:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as a full disk needs root (CI runs as root)")
    mount_point = tmp_path / "data-3"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount_point)],
        check=True,
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_follower_whose_disk_fills_up_exits_and_misreports_no_write(
    tmp_path: Path, small_disk: Path
) -> None:
    # No free-space reserve: this is the crash path a full disk takes without one (the
    # NOSPACE alarm that stops writes before it is tests/e2e/test_e2e_nospace.py's).
    cluster = KvProcessCluster(tmp_path, arguments=["--min-free-disk-bytes", "0"])
    try:
        cluster.start_all()
        leader = cluster.wait_for_leader()
        if leader == 3:
            status, _ = cluster.request(3, "POST", "/v1/leader/transfer", json={"to": 1})
            assert status == 200
            leader = cluster.wait_for_leader()
        answers: dict[str, tuple[int, str]] = {}
        lock = threading.Lock()

        def write(writer: int) -> None:
            with httpx.Client(timeout=10.0) as http:
                for sequence in range(10_000):
                    if cluster.processes[3].poll() is not None:
                        return
                    key = f"w{writer}-{sequence}"
                    try:
                        response = http.put(f"{cluster.url(3)}/v1/kv/{key}", json={"value": VALUE})
                    except httpx.TransportError:
                        return  # the node is gone: this write's outcome is unknown
                    code = response.json().get("error", {}).get("code", "")
                    with lock:
                        answers[key] = (response.status_code, code)

        threads = [threading.Thread(target=write, args=(writer,)) for writer in range(WRITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        wait_until(lambda: cluster.processes[3].poll() is not None, 60, "node 3 to exit")

        assert cluster.processes[3].returncode == 1
        log = cluster.log(3)
        assert "failed and stopped" in log
        assert "Traceback" not in log

        statuses = {status for status, _ in answers.values()}
        assert 200 in statuses
        # 408: the body was still arriving when the node stopped (nothing was proposed).
        assert statuses <= {200, 408, 503, 504}, answers
        survivor = 1 if leader != 1 else 2
        for key, (status, code) in answers.items():
            found, _ = cluster.request(survivor, "GET", f"/v1/kv/{key}")
            if status == 200:
                assert found == 200, f"{key} was acknowledged and is lost"
            elif status in (408, 503):
                assert found == 404, f"{key} was answered {status} {code} and was applied"
        # The two others still make progress.
        assert cluster.request(survivor, "PUT", "/v1/kv/after", json={"value": "v"})[0] == 200
    finally:
        cluster.stop()
