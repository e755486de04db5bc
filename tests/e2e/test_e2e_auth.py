"""Users, roles and permissions end to end on 3 processes, through raftkv's CLI and HTTP
API: set up root and a reader and enable auth; without credentials nothing is read or
written; each user does what its roles permit; a member that was down while a permission
was revoked catches up through a snapshot and refuses what it must; the whole cluster
restarts with auth as it was (tokens included); a backup needs root and carries the users
into a restored cluster."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from kv_processes import KvProcessCluster, cli, wait_until

# Snapshot every 20 entries and keep 5: a member down for more misses a purged log.
SETTINGS = {"RAFTKV_SNAPSHOT_EVERY_ENTRIES": "20", "RAFTKV_SNAPSHOT_KEEP_ENTRIES": "5"}
ROOT = ("--user", "root:root-password")
ALICE = ("--user", "alice:alice-password")


def ok(cluster: KvProcessCluster, *arguments: str) -> str:
    done = cli(cluster, *arguments)
    assert done.returncode == 0, (arguments, done.stderr)
    return done.stdout


def refused(cluster: KvProcessCluster, code: str, *arguments: str) -> None:
    """The CLI exits 3 with one line naming `code`, no traceback."""
    done = cli(cluster, *arguments)
    assert done.returncode == 3, (arguments, done.stdout, done.stderr)
    assert code in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_users_roles_and_permissions_on_three_processes(tmp_path: Path) -> None:
    cluster = KvProcessCluster(tmp_path / "source")
    try:
        cluster.start_all(environ=SETTINGS)
        leader = cluster.wait_for_leader()
        # Set up over HTTP (each CLI start costs most of a second; the CLI's auth verbs
        # have their own tests in tests/cli), then enable auth with the CLI.
        for method, path, body in (
            ("POST", "/v1/auth/users", {"name": "root", "password": "root-password"}),
            ("POST", "/v1/auth/users/root/roles", {"role": "root"}),
            ("POST", "/v1/auth/roles", {"name": "reader"}),
            (
                "POST",
                "/v1/auth/roles/reader/permissions",
                {"kind": "read", "key": "app/", "prefix": True},
            ),
            (
                "POST",
                "/v1/auth/roles/reader/permissions",
                {"kind": "readwrite", "key": "app/alice/", "prefix": True},
            ),
            ("POST", "/v1/auth/users", {"name": "alice", "password": "alice-password"}),
            ("POST", "/v1/auth/users/alice/roles", {"role": "reader"}),
            ("PUT", "/v1/kv/app/x", {"value": "1"}),
            ("PUT", "/v1/kv/other/x", {"value": "1"}),
        ):
            assert cluster.request(leader, method, path, json=body)[0] == 200, path
        assert "enabled" in ok(cluster, "auth", "enable")

        # Without credentials: nothing (and one line saying how to log in).
        refused(cluster, "auth_required", "get", "app/x")
        refused(cluster, "auth_required", "put", "app/x", "2")
        status, body = cluster.request(leader, "GET", "/v1/kv/app/x")
        assert (status, body["error"]["code"]) == (401, "auth_required")
        assert cluster.request(leader, "GET", "/v1/cluster")[0] == 200
        refused(cluster, "auth_failed", "get", "app/x", "--user", "alice:wrong")

        # Alice reads app/, writes app/alice/ only; a txn comparing other/ is refused.
        assert json.loads(ok(cluster, "get", "app/x", *ALICE, "--output", "json"))["value"] == "1"
        ok(cluster, "put", "app/alice/k", "v", *ALICE)
        refused(cluster, "permission_denied", "put", "app/x", "2", *ALICE)
        refused(cluster, "permission_denied", "get", "other/x", *ALICE)
        refused(cluster, "permission_denied", "compact", "1", *ALICE)
        refused(cluster, "permission_denied", "user", "list", *ALICE)
        users = json.loads(ok(cluster, "user", "list", *ROOT, "--output", "json"))["users"]
        assert [user["name"] for user in users] == ["alice", "root"]
        token = httpx.post(
            f"{cluster.url(leader)}/v1/auth/authenticate",
            json={"name": "root", "password": "root-password"},
        ).json()["token"]

        # A member down while alice loses app/alice/ catches up from a snapshot, and
        # refuses her writes there on its own.
        lagging = next(node for node in cluster.ids if node != leader)
        missed_from = cluster.status(lagging)
        assert missed_from is not None
        cluster.kill(lagging)
        ok(cluster, "role", "revoke-permission", "reader", "app/alice/", "--prefix", *ROOT)
        for index in range(25):
            status, _ = cluster.request(
                leader,
                "PUT",
                f"/v1/kv/filler/{index}",
                json={"value": "x"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert status == 200
        cluster.start(lagging, environ=SETTINGS)

        def caught_up() -> bool:
            mine, theirs = cluster.status(lagging), cluster.status(leader)
            return (
                mine is not None
                and theirs is not None
                and mine["revision"] == theirs["revision"]
                and mine["snapshot_index"] > missed_from["last_index"]
            )

        wait_until(caught_up, 60, "the lagging member to catch up from a snapshot")
        only_lagging = ["--endpoints", cluster.url(lagging)]
        done = subprocess.run(
            [sys.executable, "-m", "raftkv", "put", "app/alice/k", "2", *ALICE, *only_lagging],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 3 and "permission_denied" in done.stderr, done.stderr

        # A restart of every member keeps auth as it was, tokens included.
        for node in cluster.ids:
            cluster.kill(node, signal.SIGTERM)
        cluster.start_all(environ=SETTINGS)
        leader = cluster.wait_for_leader()
        status, body = cluster.request(
            leader, "GET", "/v1/kv/app/x", headers={"Authorization": f"Bearer {token}"}
        )
        assert (status, body["kv"]["value"]) == (200, "1")
        refused(cluster, "auth_required", "get", "app/x")

        # A backup needs root, and carries the users.
        backup = tmp_path / "backup.raftkv"
        refused(cluster, "auth_required", "snapshot", "save", str(tmp_path / "no.raftkv"))
        refused(cluster, "permission_denied", "snapshot", "save", str(backup), *ALICE)
        ok(cluster, "snapshot", "save", str(backup), *ROOT)
    finally:
        cluster.stop()

    restored = KvProcessCluster(tmp_path / "restored", nodes=1)
    try:
        initial = f"1=127.0.0.1:{restored.peer_ports[1]}"
        done = subprocess.run(
            [
                sys.executable, "-m", "raftkv", "snapshot", "restore", str(backup),
                "--id", "1", "--data-dir", str(tmp_path / "restored" / "data-1"),
                "--initial-cluster", initial,
            ],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        restored.start_all()
        refused(restored, "auth_required", "get", "app/x")
        assert json.loads(ok(restored, "get", "app/x", *ALICE, "--output", "json"))["value"] == "1"
        refused(restored, "permission_denied", "put", "app/alice/k", "3", *ALICE)
    finally:
        restored.stop()
