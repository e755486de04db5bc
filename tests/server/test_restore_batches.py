"""`raftkv snapshot restore` writes a backup in bounded batches: its memory does not grow
with the backup, a restore killed halfway leaves a data dir `raftkv serve` refuses, and a
whole one holds the source's data."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from raftkv.kv import KvCommand, KvStateMachine, Put, encode_command
from raftkv.raft.driver.envelope import encode_snapshot, encode_snapshot_head
from raftkv.raft.driver.state_machine import Command
from raftkv.raft.storage.memory import MemoryAppData
from raftkv.raft.storage.rocks import RocksStorage
from raftkv.server.backup import BackupHeader, backup_chunks
from raftkv.server.identity import read_identity
from raftkv.server.restore import restore
from raftkv.server.settings import ServerSettings
from raftkv.testing.processes import free_port

VALUE_BYTES = 4 << 10
BATCH_BYTES = 1 << 20


def make_backup(path: Path, keys: int) -> KvStateMachine:
    """A backup of `keys` keys of VALUE_BYTES random bytes each; the machine it came from."""
    machine = KvStateMachine(MemoryAppData())
    rng = random.Random(14)
    commands = [
        Command(
            index,
            1,
            encode_command(KvCommand(Put(b"key/%06d" % index, rng.randbytes(VALUE_BYTES)))),
        )
        for index in range(1, keys + 1)
    ]
    machine.apply(commands, keys, 1)
    payload = machine.snapshot()
    header = BackupHeader(1, keys, 1, machine.current_revision(), 1, len(payload))
    path.write_bytes(b"".join(backup_chunks(header, payload, 1 << 20)))
    return machine


def settings(data_dir: Path) -> ServerSettings:
    return ServerSettings(data_dir=data_dir, id=1, initial_cluster={1: "127.0.0.1:7999"})


# Runs a restore in a fresh interpreter: what it allocates is its own, nothing else's.
RESTORE = """
import json, os, sys, tracemalloc
from pathlib import Path
from raftkv.raft.storage.rocks_app_data import RocksAppData
from raftkv.server.restore import restore
from raftkv.server.settings import ServerSettings

backup, data_dir = sys.argv[1], sys.argv[2]
batch_bytes, die_after = int(sys.argv[3]), int(sys.argv[4])
if die_after:
    commit = RocksAppData.commit
    commits = []

    def dying(*arguments):
        if len(commits) == die_after:
            os._exit(9)  # as a kill: no cleanup runs
        commits.append(None)
        commit(*arguments)

    RocksAppData.commit = dying
settings = ServerSettings(data_dir=Path(data_dir), id=1, initial_cluster={1: "127.0.0.1:7999"})
tracemalloc.start()
restore(Path(backup), settings, batch_bytes=batch_bytes)
print(json.dumps({"peak": tracemalloc.get_traced_memory()[1]}))
"""


def run_restore(
    backup: Path, data_dir: Path, die_after: int = 0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            RESTORE,
            str(backup),
            str(data_dir),
            str(BATCH_BYTES),
            str(die_after),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_restoring_a_large_backup_holds_a_bounded_part_of_it_in_memory(tmp_path: Path) -> None:
    keys = 8000  # 32 MiB of values, 32 batches
    source = make_backup(tmp_path / "big.raftkv", keys)
    ran = run_restore(tmp_path / "big.raftkv", tmp_path / "restored")
    assert ran.returncode == 0, ran.stderr
    peak = json.loads(ran.stdout)["peak"]
    # One batch, a decoded chunk, a scan page (1024 items) and a stored snapshot chunk:
    # about 11 MiB here, for 8 MiB of values as for 64. A restore that holds the state (as
    # one write batch did) peaks above all of it.
    assert peak < keys * VALUE_BYTES // 2, f"peak {peak} bytes"
    storage = RocksStorage(tmp_path / "restored" / "db", create=False)
    try:
        restored = KvStateMachine(storage.app_data())
        assert (
            restored.read_view(threaded=False).state_and_data_hashes()[1]
            == (source.read_view(threaded=False).state_and_data_hashes()[1])
        )
        assert restored.applied_index() == keys
        assert storage.snapshot().metadata.index == keys
    finally:
        storage.close()
    identity = read_identity(tmp_path / "restored")
    assert identity is not None and identity.has_raft_state and not identity.restoring


def test_a_restore_killed_halfway_leaves_a_data_dir_serve_refuses(tmp_path: Path) -> None:
    make_backup(tmp_path / "b.raftkv", 2000)  # 8 batches
    data_dir = tmp_path / "restored"
    killed = run_restore(tmp_path / "b.raftkv", data_dir, die_after=3)
    assert killed.returncode == 9
    identity = read_identity(data_dir)
    assert identity is not None and identity.restoring
    assert (data_dir / "db").exists()
    client, peer = free_port(), free_port()
    served = subprocess.run(
        [
            sys.executable, "-m", "raftkv", "serve", "--data-dir", str(data_dir), "--id", "1",
            "--initial-cluster", f"1=127.0.0.1:{peer}", "--listen-peer", f"127.0.0.1:{peer}",
            "--listen-client", f"127.0.0.1:{client}",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert served.returncode == 2
    assert "Traceback" not in served.stderr
    errors = [line for line in served.stderr.splitlines() if " INFO " not in line]
    assert len(errors) == 1, served.stderr
    assert errors[0].startswith(f"raftkv serve: data dir {data_dir} holds a restore that did not")
    assert errors[0].endswith("run raftkv snapshot restore again")


def test_a_restore_that_fails_halfway_removes_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_backup(tmp_path / "b.raftkv", 600)
    commit = KvStateMachine.forget_checks_and_alarms

    def failing(self: KvStateMachine) -> None:
        commit(self)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(KvStateMachine, "forget_checks_and_alarms", failing)
    for data_dir in (tmp_path / "new", tmp_path / "empty"):
        if data_dir.name == "empty":
            data_dir.mkdir()
        with pytest.raises(OSError, match="No space left"):
            restore(tmp_path / "b.raftkv", settings(data_dir), batch_bytes=BATCH_BYTES)
        assert not data_dir.exists() or list(data_dir.iterdir()) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["b.raftkv", "empty"]


@pytest.mark.parametrize("app_bytes", [0, 1, 255, 256, 65_535, 65_536, 100_000])
def test_a_snapshot_head_is_what_encode_snapshot_puts_before_the_app(app_bytes: int) -> None:
    peers = {1: "127.0.0.1:7001", 2: "127.0.0.1:7002"}
    app = bytes(app_bytes)
    assert encode_snapshot_head(peers, app_bytes) + app == encode_snapshot(peers, app)
