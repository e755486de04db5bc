"""End to end with real processes: every CLI verb (`python -m raftkv ...`) against a
3-process cluster, and the Python client writing through a leader kill and a graceful
leader shutdown with no write lost and none applied twice."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from kv_processes import KvProcessCluster, free_port, running_cluster, wait_until

from raftkv.cli import EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE
from raftkv.client import Client, ClientSettings, OutcomeUnknown


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KvProcessCluster]:
    with running_cluster(tmp_path_factory.mktemp("e2e-client")) as started:
        yield started


def raftkv(
    cluster: KvProcessCluster, *arguments: str, stdin: str = "", endpoints: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "raftkv",
            *arguments,
            "--endpoints",
            endpoints or ",".join(cluster.endpoints()),
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_cli_verb_and_its_exit_code(cluster: KvProcessCluster) -> None:
    put = raftkv(cluster, "put", "cli/a", "1", "--output", "json")
    assert put.returncode == EXIT_OK, put.stderr
    assert json.loads(put.stdout)["revision"] >= 2
    assert raftkv(cluster, "put", "cli/b", "-", stdin="from stdin").returncode == EXIT_OK

    got = raftkv(cluster, "get", "cli/b", "--output", "json")
    assert (got.returncode, json.loads(got.stdout)["value"]) == (EXIT_OK, "from stdin")
    table = raftkv(cluster, "get", "cli/a")
    assert table.returncode == EXIT_OK and "cli/a" in table.stdout
    missing = raftkv(cluster, "get", "cli/none")
    assert missing.returncode == EXIT_NOT_FOUND and "not_found" in missing.stderr

    ranged = raftkv(cluster, "range", "cli/", "--prefix", "--output", "json")
    assert ranged.returncode == EXIT_OK
    assert [kv["key"] for kv in json.loads(ranged.stdout)["kvs"]] == ["cli/a", "cli/b"]

    body = {
        "compares": [{"key": "cli/a", "target": "value", "op": "=", "value": "1"}],
        "success": [{"op": "put", "key": "cli/a", "value": "2"}],
    }
    txn = raftkv(cluster, "txn", "-", "--output", "json", stdin=json.dumps(body))
    assert txn.returncode == EXIT_OK, txn.stderr
    assert json.loads(txn.stdout)["succeeded"] is True

    deleted = raftkv(cluster, "del", "cli/", "--prefix", "--output", "json")
    assert (deleted.returncode, json.loads(deleted.stdout)["deleted"]) == (EXIT_OK, 2)

    # One endpoint is enough: status asks every member the cluster lists.
    status = raftkv(cluster, "status", "--output", "json", endpoints=cluster.url(1))
    assert status.returncode == EXIT_OK
    assert sorted(row["id"] for row in json.loads(status.stdout)) == [1, 2, 3]
    members = raftkv(cluster, "members", "--output", "json")
    assert members.returncode == EXIT_OK
    assert sorted(member["id"] for member in json.loads(members.stdout)["members"]) == [1, 2, 3]
    assert "peer_url" in raftkv(cluster, "members").stdout  # the table

    refused = raftkv(cluster, "put", "cli/big", "-", stdin="x" * (2 << 20))
    assert refused.returncode == EXIT_REFUSED
    assert refused.stderr.startswith("raftkv: ")
    unavailable = raftkv(
        cluster, "get", "cli/a", "--timeout", "1", endpoints=f"http://127.0.0.1:{free_port()}"
    )
    assert unavailable.returncode == EXIT_UNAVAILABLE, unavailable.stderr


def test_raftkv_runs_under_raftkv_lock(cluster: KvProcessCluster) -> None:
    """Issue 14, item 5: `raftkv lock` exports RAFTKV_LOCK_KEY/TOKEN, which are no settings:
    `raftkv config show` under the lock prints its settings (it used to exit 2), and the
    lock's options may follow its name."""
    ran = subprocess.run(
        [
            *(sys.executable, "-m", "raftkv", "lock", "e2e-lock"),
            *("--endpoints", cluster.endpoints()[0], "--ttl", "15", "--"),
            *(sys.executable, "-m", "raftkv", "config", "show", "--id", "7"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == EXIT_OK, ran.stderr
    held, *shown = ran.stdout.splitlines()
    assert json.loads(held)["lock"] == "e2e-lock"
    assert "id = 7" in shown
    assert ran.stderr == ""  # not even a warning


def test_the_client_writes_through_a_leader_kill_and_a_graceful_leader_stop(
    cluster: KvProcessCluster,
) -> None:
    """Writers keep writing while the leader is killed (-9), restarted, and then the next
    leader is stopped with SIGTERM. Each acknowledged put is there, and the counter key's
    version equals the number of puts acknowledged: no retry applied twice."""

    async def scenario() -> tuple[int, int, int, set[str]]:
        settings = ClientSettings(deadline_s=30, request_timeout_s=5)
        acknowledged: set[str] = set()
        counter_puts = 0
        unknown = 0
        stop = asyncio.Event()
        async with Client(cluster.endpoints(), settings) as client:

            async def writer(number: int) -> None:
                nonlocal unknown, counter_puts
                sequence = 0
                while not stop.is_set():
                    sequence += 1
                    key = f"failover/{number}/{sequence}"
                    try:
                        await client.put("failover/counter", key)
                        counter_puts += 1
                        await client.put(key, "x")
                    except OutcomeUnknown:
                        unknown += 1
                        continue
                    acknowledged.add(key)

            writers = [asyncio.create_task(writer(number)) for number in range(8)]

            async def wait_for(condition: str, predicate: object) -> None:
                await asyncio.to_thread(wait_until, predicate, 60, condition)  # type: ignore[arg-type]

            await wait_for("some writes", lambda: len(acknowledged) >= 20)
            first = await asyncio.to_thread(cluster.wait_for_leader)
            assert await asyncio.to_thread(cluster.kill, first) == -signal.SIGKILL
            before = len(acknowledged)
            await wait_for("writes after the kill", lambda: len(acknowledged) >= before + 30)
            await asyncio.to_thread(cluster.start, first)
            second = await asyncio.to_thread(cluster.wait_for_leader)
            stopped = await asyncio.to_thread(cluster.kill, second, signal.SIGTERM)
            assert stopped == 0  # graceful: exit 0
            before = len(acknowledged)
            await wait_for("writes after the stop", lambda: len(acknowledged) >= before + 30)
            stop.set()
            await asyncio.gather(*writers)
            await asyncio.to_thread(cluster.start, second)
            counter = await client.get("failover/counter")
            assert counter is not None
            found = await client.range("failover/", prefix=True, keys_only=True)
            keys = {kv.key.decode() for kv in found.kvs}
        return counter.version, counter_puts, unknown, acknowledged - keys

    version, counter_puts, unknown, lost = asyncio.run(scenario())
    assert lost == set()  # every acknowledged write is there
    assert unknown == 0  # the client resolved every outcome by retrying exactly-once
    # Each acknowledged put of the counter bumped its version once: a retry applied twice
    # would make the version larger than the puts acknowledged.
    assert version == counter_puts
