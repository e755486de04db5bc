"""etcdctl 3.5's users, roles and auth against a cluster of 3 real `raftkv serve` processes
serving etcd's gRPC API, each command compared with a real single-member etcd 3.5
(tests/e2e/etcd_differential.py): etcdctl's usual setup (user root with role root, a role
with prefix permissions, a user holding it), `auth enable`, then `--user NAME:PASSWORD`
commands allowed and refused with etcd's own error lines, root's administration (and
`snapshot save`, root's only), `auth status` and `auth disable`. One flow, in order: auth
is the cluster's state.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_differential import Differential
from kv_processes import running_cluster

from raftkv.testing.etcd_tools import Etcdctl, running_etcd

pytestmark = pytest.mark.slow

ROOT = "--user=root:rootpw"
ALICE = "--user=alice:alicepw"
# The auth revision each store counts from its own history (etcdctl's `auth enable`
# creates the role root at etcd, where raftkv's is built in).
AUTH_REVISION = (r"^AuthRevision: \d+$", "AuthRevision: <n>")


@pytest.fixture(scope="module")
def diff(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Differential]:
    root = tmp_path_factory.mktemp("etcdctl-auth")
    with (
        running_cluster(root / "raftkv", etcd_grpc=True) as cluster,
        running_etcd(root / "etcd") as etcd,
    ):
        differential = Differential(Etcdctl(cluster.grpc_endpoints()), Etcdctl([etcd.endpoint]))
        yield differential


def printed(diff: Differential, *args: str, stdin: str = "") -> str:
    """What both stores' etcdctl printed alike (asserted), exit code 0."""
    return diff.run(*args, stdin=stdin).check().stdout


def refused(diff: Differential, *args: str) -> list[str]:
    """etcdctl's error lines, alike at both stores (asserted), for a command that fails."""
    result = diff.run(*args)
    assert result.returncode != 0, result
    return result.errors


def test_etcdctls_auth_flow_prints_what_etcd_prints(diff: Differential, tmp_path: Path) -> None:
    raftkv = diff.stores["raftkv"]
    # Set up, auth disabled.
    assert printed(diff, "user", "add", "root", "--new-user-password=rootpw") == (
        "User root created\n"
    )
    assert printed(diff, "user", "grant-role", "root", "root") == (
        "Role root is granted to user root\n"
    )
    assert printed(diff, "role", "add", "reader") == "Role reader created\n"
    assert printed(diff, "role", "grant-permission", "reader", "--prefix", "read", "app/") == (
        "Role reader updated\n"
    )
    printed(diff, "role", "grant-permission", "reader", "--prefix", "readwrite", "app/alice/")
    printed(diff, "role", "grant-permission", "reader", "write", "single")
    # --interactive=false reads the password from stdin.
    assert printed(diff, "user", "add", "alice", "--interactive=false", stdin="alicepw\n") == (
        "User alice created\n"
    )
    printed(diff, "user", "grant-role", "alice", "reader")
    assert printed(diff, "role", "get", "reader") == (
        "Role reader\n"
        "KV Read:\n"
        "\t[app/, app0) (prefix app/)\n"
        "\t[app/alice/, app/alice0) (prefix app/alice/)\n"
        "KV Write:\n"
        "\t[app/alice/, app/alice0) (prefix app/alice/)\n"
        "\tsingle\n"
    )
    assert printed(diff, "user", "get", "alice") == "User: alice\nRoles: reader\n"
    assert printed(diff, "user", "list") == "alice\nroot\n"
    # Refusals, auth disabled.
    assert refused(diff, "user", "add", "alice", "--new-user-password=x") == [
        "Error: etcdserver: user name already exists"
    ]
    assert refused(diff, "role", "get", "writer") == ["Error: etcdserver: role name not found"]
    assert refused(diff, "user", "revoke-role", "alice", "writer") == [
        "Error: etcdserver: role is not granted to the user"
    ]
    assert refused(diff, "role", "revoke-permission", "reader", "nothing") == [
        "Error: etcdserver: permission is not granted to the role"
    ]
    assert printed(diff, "auth", "enable") == "Authentication Enabled\n"

    # Auth enabled: alice may write under app/alice/ and read under app/.
    assert printed(diff, ALICE, "put", "app/alice/k", "v1") == "OK\n"
    assert printed(diff, ALICE, "get", "app/", "--prefix") == "app/alice/k\nv1\n"
    assert printed(diff, ALICE, "put", "single", "s") == "OK\n"
    denied = ["Error: etcdserver: permission denied"]
    assert refused(diff, ALICE, "put", "app/other", "v") == denied
    assert refused(diff, ALICE, "get", "single") == denied
    assert refused(diff, ALICE, "del", "app/", "--prefix") == denied
    assert refused(diff, ALICE, "user", "list") == denied
    assert refused(diff, ALICE, "auth", "disable") == denied
    assert refused(diff, "put", "app/alice/k", "v") == ["Error: etcdserver: user name is empty"]
    assert refused(diff, "--user=alice:wrong", "get", "app/") == [
        "Error: etcdserver: authentication failed, invalid user ID or password"
    ]
    # A user reads its own record.
    assert printed(diff, ALICE, "user", "get", "alice") == "User: alice\nRoles: reader\n"
    # Root administers, on any member (the token is good on every one).
    assert printed(diff, ROOT, "get", "app/alice/k", "--print-value-only") == "v1\n"
    assert printed(diff, ROOT, "user", "list") == "alice\nroot\n"
    assert printed(diff, ROOT, "role", "revoke-permission", "reader", "single") == (
        "Permission of key single is revoked from role reader\n"
    )
    assert refused(diff, ALICE, "put", "single", "s") == denied
    assert refused(diff, ROOT, "user", "delete", "root") == [
        "Error: etcdserver: invalid auth management"
    ]
    # Backups need the role root (etcd: admin permission).
    # (snapshot save takes one endpoint: run at each store by hand.) etcd 3.5 answers
    # its Snapshot stream's refusal unconverted, code Unknown "auth: permission denied";
    # raftkv answers etcd's PermissionDenied, as for every other call (docs/etcd.md).
    refusals = {}
    for store, etcdctl in diff.stores.items():
        path = str(tmp_path / f"{store}.snapshot")
        first = etcdctl.endpoints[:1]
        alices = etcdctl.run(ALICE, "snapshot", "save", path, endpoints=first)
        refusals[store] = (alices.returncode, alices.errors)
        etcdctl.run(ROOT, "snapshot", "save", path, endpoints=first).check()
    assert refusals == {
        "raftkv": (5, denied),
        "etcd": (5, ["Error: rpc error: code = Unknown desc = auth: permission denied"]),
    }
    listed = raftkv.run(ROOT, "role", "list").check().stdout
    assert listed == "reader\nroot\n"
    status = diff.run(ROOT, "auth", "status", masks=[AUTH_REVISION]).check().stdout
    assert status.startswith("Authentication Status: true\nAuthRevision: ")
    for endpoint in raftkv.endpoints:
        one = raftkv.run(ALICE, "get", "app/alice/k", "--print-value-only", endpoints=[endpoint])
        assert one.check().stdout == "v1\n", endpoint
    assert printed(diff, ROOT, "auth", "disable") == "Authentication Disabled\n"
    status = diff.run("auth", "status", masks=[AUTH_REVISION]).check().stdout
    assert status.startswith("Authentication Status: false\nAuthRevision: ")
    assert printed(diff, "put", "anything", "goes") == "OK\n"
