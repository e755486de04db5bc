"""A member moves to a new peer address with real processes: `raftkv member update`, then
the member restarts listening there and catches up; a member restarted with the old
address still in its `--initial-cluster` reaches it at the new one (the stored membership
wins), so the two of them commit without the third; etcdctl's `member update` moves it
back."""

from __future__ import annotations

import signal
from pathlib import Path

from kv_processes import KvProcessCluster, cli, wait_until

from raftkv.testing.etcd_tools import Etcdctl
from raftkv.testing.processes import free_port


def test_a_member_moves_to_a_new_peer_address(tmp_path: Path) -> None:
    cluster = KvProcessCluster(tmp_path, etcd_grpc=True)
    try:
        cluster.start_all()
        leader = cluster.wait_for_leader()
        moving = next(node for node in cluster.ids if node != leader)
        other = next(node for node in cluster.ids if node not in (leader, moving))
        old_port, new_port = cluster.peer_ports[moving], free_port()
        old_command = cluster.serve_command(other)  # its --initial-cluster names the old port

        updated = cli(cluster, "member", "update", str(moving), f"127.0.0.1:{new_port}")
        assert updated.returncode == 0, updated.stderr
        assert f"127.0.0.1:{new_port}" in updated.stdout
        cluster.kill(moving, signal.SIGTERM)
        cluster.peer_ports[moving] = new_port
        cluster.start(moving)
        assert cli(cluster, "put", "moved", "yes").returncode == 0

        def caught_up() -> bool:
            mine, theirs = cluster.status(moving), cluster.status(leader)
            return (
                mine is not None and theirs is not None and mine["revision"] == theirs["revision"]
            )

        wait_until(caught_up, 30, f"member {moving} to catch up at its new port")

        # `other` restarts with its old flags (the old port in --initial-cluster), and the
        # leader stops: `other` and `moving` commit only if `other` reaches the new port.
        cluster.kill(other, signal.SIGTERM)
        cluster.start(other, command=old_command)
        cluster.kill(leader, signal.SIGTERM)
        wait_until(
            lambda: cli(cluster, "put", "after", "restart", "--timeout", "3").returncode == 0,
            60,
            "a write committed by the two members left",
        )

        # etcdctl's member update moves it back (its URL as etcd's: http://host:port).
        cluster.start(leader)
        etcdctl = Etcdctl(cluster.grpc_endpoints())
        moved_back = etcdctl.run(
            "member", "update", f"{moving:x}", f"--peer-urls=http://127.0.0.1:{old_port}"
        )
        assert moved_back.returncode == 0, moved_back.stderr
        members = cluster.request(other, "GET", "/v1/cluster")[1]["members"]
        (entry,) = [member for member in members if member["id"] == moving]
        assert entry["peer_url"] == f"127.0.0.1:{old_port}"
    finally:
        cluster.stop()
