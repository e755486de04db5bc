"""Incremental backups (`raftkv.server.backup_store`): backups in one directory share
unchanged chunks, restore byte for byte, and refuse anything missing or damaged."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from raftkv.kv import KvCommand, KvStateMachine, Put, encode_command
from raftkv.raft.driver.state_machine import Command
from raftkv.raft.storage.memory import MemoryAppData
from raftkv.server.backup import BackupHeader, BackupInvalid, backup_chunks, read_backup
from raftkv.server.backup_store import assemble, prune, save_increment


class Store:
    def __init__(self) -> None:
        self.machine = KvStateMachine(MemoryAppData())
        self.index = 0

    def put(self, key: bytes, value: bytes) -> None:
        self.index += 1
        command = Command(self.index, 1, encode_command(KvCommand(Put(key, value))))
        self.machine.apply([command], self.index, 1)

    def backup(self) -> bytes:
        payload = self.machine.snapshot()
        header = BackupHeader(1, self.index, 1, self.machine.current_revision(), 1, len(payload))
        return b"".join(backup_chunks(header, payload, 1 << 16))


def filled(count: int = 12_000) -> Store:
    store = Store()
    rng = random.Random(7)
    for number in range(count):
        store.put(f"key/{number:06d}".encode(), rng.randbytes(400))
    return store


def test_a_second_backup_writes_only_what_changed_and_both_restore(tmp_path: Path) -> None:
    store = filled()
    first_file = store.backup()
    first = save_increment(tmp_path, first_file, clock=lambda: 1_000_000.0)
    assert first.written_bytes == first.file_bytes and first.reused_pieces == 0
    for number in range(5):
        store.put(f"key/{number * 2000:06d}".encode(), b"changed")
    second_file = store.backup()
    second = save_increment(tmp_path, second_file, clock=lambda: 1_000_100.0)
    # Five keys changed: most of the state is shared with the first backup.
    assert second.reused_bytes > 0.5 * second.file_bytes
    assert second.written_bytes < 0.5 * second.file_bytes
    print(
        f"\nincremental backup: {second.written_bytes} of {second.file_bytes} bytes written "
        f"({second.written_bytes / second.file_bytes:.1%}), {second.reused_pieces} of "
        f"{second.pieces} pieces reused"
    )
    assert assemble(first.manifest) == first_file
    assert assemble(second.manifest) == second_file
    restored = KvStateMachine(MemoryAppData())
    header, payload = read_backup(assemble(second.manifest))
    reports: list[int] = []
    restored.restore_in_batches(
        payload, header.index, header.term, batch_bytes=64 << 10, progress=reports.append
    )
    assert restored.state_hash() == store.machine.state_hash()
    # Progress: a report a batch, in order, up to every item.
    total = restored.count_snapshot_items(payload)
    assert reports[-1] == total > 12_000 and len(reports) > 2 and reports == sorted(reports)
    # The same backup again costs nothing.
    again = save_increment(tmp_path, second_file, clock=lambda: 1_000_200.0)
    assert again.written_bytes == 0


def test_missing_damaged_or_foreign_pieces_are_refused(tmp_path: Path) -> None:
    saved = save_increment(tmp_path, filled(800).backup())
    chunks = sorted((tmp_path / "chunks").iterdir())
    victim = chunks[len(chunks) // 2]
    original = victim.read_bytes()
    victim.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(BackupInvalid, match="damaged"):
        assemble(saved.manifest)
    victim.unlink()
    with pytest.raises(BackupInvalid, match="missing"):
        assemble(saved.manifest)
    victim.write_bytes(original)
    assert read_backup(assemble(saved.manifest))
    bad = tmp_path / "backups" / "bad.json"
    for text in (b"not json", b'{"format_version": 1}', b"[]"):
        bad.write_bytes(text)
        with pytest.raises(BackupInvalid):
            assemble(bad)
    with pytest.raises(BackupInvalid):
        save_increment(tmp_path, b"RAFTKVBK truncated")


def test_prune_keeps_what_a_backup_names(tmp_path: Path) -> None:
    store = filled(800)
    first = save_increment(tmp_path, store.backup(), clock=lambda: 1.0)
    store.put(b"key/000001", b"changed")
    second = save_increment(tmp_path, store.backup(), clock=lambda: 2.0)
    assert prune(tmp_path) == (0, 0)
    # A manifest that cannot be read stops the prune before it removes anything.
    broken = tmp_path / "backups" / "broken.json"
    broken.write_bytes(b"not a manifest")
    chunks = sorted((tmp_path / "chunks").iterdir())
    first.manifest.unlink()
    with pytest.raises(BackupInvalid, match="not an incremental backup manifest"):
        prune(tmp_path)
    assert sorted((tmp_path / "chunks").iterdir()) == chunks
    broken.unlink()
    removed, size = prune(tmp_path)
    assert removed >= 1 and size > 0
    assert read_backup(assemble(second.manifest))
