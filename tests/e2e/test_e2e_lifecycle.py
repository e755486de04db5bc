"""Lifecycle of `raftkv serve` processes: a bad setting fails at start naming it (exit 2);
JSON logs are one object per line naming node and term; SIGTERM waits for in-flight
requests (bounded) and exits 0; a second signal exits at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from kv_processes import KvProcessCluster, running_cluster, wait_until


def test_a_bad_setting_fails_at_start_naming_it(tmp_path: Path) -> None:
    answer = subprocess.run(
        [sys.executable, "-m", "raftkv", "serve", "--listen-client", "nowhere"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={"RAFTKV_ELECTION_TICKS": "3", "PATH": "/usr/bin:/bin"},
    )
    assert answer.returncode == 2
    assert "setting listen_client (from flag --listen-client)" in answer.stderr
    assert not (tmp_path / "data").exists()  # nothing was created


def test_json_logs_and_a_clean_exit_on_sigterm(tmp_path: Path) -> None:
    cluster = KvProcessCluster(tmp_path, nodes=1)
    try:
        cluster.start(1, environ={"RAFTKV_LOG_FORMAT": "json"})
        cluster.wait_for_leader()
        assert cluster.request(1, "PUT", "/v1/kv/a", json={"value": "1"})[0] == 200
        assert cluster.kill(1, signal.SIGTERM) == 0
    finally:
        cluster.stop()
    lines = [json.loads(line) for line in cluster.log(1).splitlines()]
    assert {line["node"] for line in lines} == {1}
    assert any(line["term"] >= 1 for line in lines)
    assert lines[-1]["message"] == "node 1 stopped"


def test_sigterm_waits_for_in_flight_requests_and_a_second_signal_exits_at_once(
    tmp_path: Path,
) -> None:
    # The start-up hash check is a proposal of the node's own: off, so that once the
    # client URL is published, the one pending on the follower below is the test's write.
    with running_cluster(tmp_path, environ={"RAFTKV_CORRUPT_CHECK_AT_START": "false"}) as cluster:
        leader = cluster.wait_for_leader()
        follower = next(node for node in cluster.ids if node != leader)

        def quiet() -> bool:
            status = cluster.status(follower)
            return status is not None and status.get("pending_proposals", 0) == 0

        wait_until(quiet, 10, "the follower's own proposals to end")
        for node in cluster.ids:
            if node != follower:
                cluster.kill(node)
        # A write the lone follower cannot commit: it stays in flight until its timeout.
        results: list[int] = []

        def write() -> None:
            try:
                response = httpx.put(
                    f"{cluster.url(follower)}/v1/kv/stuck", json={"value": "x"}, timeout=30
                )
                results.append(response.status_code)
            except httpx.TransportError:
                results.append(-1)

        writer = threading.Thread(target=write)
        writer.start()
        process = cluster.processes[follower]

        def in_flight() -> bool:
            status = cluster.status(follower)
            return status is not None and status.get("pending_proposals", 0) >= 1

        wait_until(in_flight, 10, "the write to be in flight on the follower")
        process.send_signal(signal.SIGTERM)
        wait_until(lambda: "shutting down" in cluster.log(follower), 10, "the first signal")
        assert process.poll() is None  # still waiting for the in-flight write
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 1
        assert time.monotonic() - began < 5
        writer.join(timeout=30)
        assert "second signal" in cluster.log(follower)
