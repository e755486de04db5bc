"""`raftkv snapshot restore`: seed a new member's data dir from a backup file (or from the
manifest of a backup in an incremental backup directory, `raftkv.server.backup_store`).

Every founding member of the new cluster is restored from the same file with the same
`initial_cluster`: each then holds the backup's state at the backup's index, as a snapshot
whose membership is the new founders, and they start as one cluster (etcd's snapshot
restore). The data dir must not exist yet (or be empty): a restore never overwrites data.

Memory: the backup file is mapped, not read; every item is validated (a chunk decoded at a
time) before anything is written; then the items are written in batches of about
`RESTORE_BATCH_BYTES`, and the stored Raft snapshot a chunk at a time, so a restore holds
about one batch, one decoded chunk and RocksDB's own buffers in memory, whatever the
backup's size. Batches are not one atomic write, so the data dir's identity says
`restoring` from before the first batch until after a synced final write
(raftkv.server.identity): a restore killed halfway leaves a data dir `raftkv serve`
refuses, saying to restore again; one that fails removes what it wrote.

The new cluster gets a new cluster id (as etcd's restore does), so that its members and the
source's refuse each other's messages: derived from the backup's checksum and the
founders, every founder restored from the same file with the same `initial_cluster`
records the same one in its `member.json`. `raftkv serve` is then started with it
(`--cluster-id`, printed in the restore's JSON line).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import msgspec

from raftkv.kv import KvStateMachine
from raftkv.raft import SnapshotInvalid
from raftkv.raft.core.types import NodeId
from raftkv.raft.recovery import start_membership_in_pieces
from raftkv.raft.storage.memory import MemoryAppData
from raftkv.raft.storage.rocks import RocksStorage
from raftkv.server.backup import MAGIC, BackupHeader, BackupInvalid, open_backup
from raftkv.server.backup_store import read_manifest, write_assembled
from raftkv.server.identity import (
    DATABASE_DIR,
    MAX_CLUSTER_ID,
    derived_cluster_id,
    new_identity,
    write_identity,
)
from raftkv.server.runner import kv_settings
from raftkv.server.settings import ServerSettings, SettingsInvalid

# About how many bytes of keys and values a restore writes per RocksDB write batch: the
# bound on what it holds of the state at once (see the module docstring). Larger batches
# write a little faster and hold more.
RESTORE_BATCH_BYTES = 4 << 20


def restore(
    backup: Path,
    settings: ServerSettings,
    progress: Callable[[int, int], None] | None = None,
    *,
    batch_bytes: int = RESTORE_BATCH_BYTES,
) -> str:
    """Restore `backup` into `settings.data_dir` as member `settings.id` of a new cluster
    of `settings.founders`; a JSON line saying what was restored. `progress(items written,
    items in all)` follows the writing of the state. BackupInvalid (and nothing written)
    if the file is not a whole backup or its state does not decode; OSError if it cannot
    be read."""
    data_dir = settings.data_dir
    if data_dir.exists() and any(data_dir.iterdir()):
        raise SettingsInvalid(f"data dir {data_dir} is not empty: restore into a new one")
    with _backup_file(backup, data_dir) as path, open_backup(path) as (header, payload):
        try:
            # Every item is validated before anything is written (a chunk at a time).
            machine = KvStateMachine(MemoryAppData(), kv_settings(settings))
            items = machine.count_snapshot_items(payload)
            cluster_id = new_cluster_id(_checksum_of(path), settings.founders, settings.cluster_id)
            restored = replace(settings, cluster_id=cluster_id)
            written = None if progress is None else lambda done: progress(done, items)
            revision = _build(restored, header, payload, written, batch_bytes)
        except SnapshotInvalid as error:
            raise BackupInvalid(f"the backup's state is damaged: {error}") from error
    return json.dumps(
        {
            "restored": str(backup),
            "data_dir": str(data_dir),
            "id": settings.id,
            "cluster_id": cluster_id,
            "members": sorted(settings.founders),
            "index": header.index,
            "revision": revision,
        }
    )


def new_cluster_id(checksum: bytes, founders: Mapping[int, str], previous: int) -> int:
    """The restored cluster's id, in [1, 2**63 - 1]: the same for every founder restored
    from the backup whose SHA-256 is `checksum` with the same founders; never `previous`
    (the id in the settings, often the source's)."""
    cluster_id = derived_cluster_id(f"restored from {checksum.hex()}", founders)
    return cluster_id if cluster_id != previous else cluster_id % MAX_CLUSTER_ID + 1


def _checksum_of(path: Path) -> bytes:
    """A backup file's trailing SHA-256 (checked by open_backup)."""
    with path.open("rb") as file:
        file.seek(-32, os.SEEK_END)
        return file.read(32)


@contextlib.contextmanager
def _backup_file(backup: Path, data_dir: Path) -> Iterator[Path]:
    """The backup file itself, or the file a manifest of an incremental backup directory
    names, assembled beside the data dir (and removed after)."""
    with backup.open("rb") as file:
        if file.read(len(MAGIC)) == MAGIC:
            yield backup
            return
    manifest = read_manifest(backup)
    assembled = data_dir.with_name(f".{data_dir.name}.assembled")
    try:
        with assembled.open("wb") as output:
            write_assembled(backup, output)
        with open_backup(assembled) as (header, _):
            if header != manifest.header:
                raise BackupInvalid("the assembled backup's header differs from the manifest's")
        yield assembled
    finally:
        assembled.unlink(missing_ok=True)


def _build(
    settings: ServerSettings,
    header: BackupHeader,
    payload: memoryview,
    progress: Callable[[int], None] | None,
    batch_bytes: int,
) -> int:
    """Write the data dir in place: its identity first, marked `restoring`; the state in
    batches and the stored snapshot a chunk at a time; last, after the synced write that
    ends the stored snapshot, the identity without the mark (see the module docstring). A
    restore that fails removes what it wrote. The restored revision."""
    data_dir = settings.data_dir
    existed = data_dir.exists()
    identity = msgspec.structs.replace(new_identity(settings), has_raft_state=True)
    try:
        write_identity(data_dir, msgspec.structs.replace(identity, restoring=True))
        founders = {NodeId(peer): address for peer, address in settings.founders.items()}
        storage = RocksStorage(data_dir / DATABASE_DIR)
        try:
            machine = KvStateMachine(storage.app_data(), kv_settings(settings))
            machine.restore_in_batches(
                payload, header.index, header.term, batch_bytes=batch_bytes, progress=progress
            )
            # Hash checks and CORRUPT alarms name members of the old cluster, not these
            # ones. Every founder drops them alike, and the snapshot it starts from says so.
            machine.forget_checks_and_alarms()
            start_membership_in_pieces(
                storage,
                founders,
                index=header.index,
                term=header.term,
                app_pieces=machine.snapshot_pieces,
                current_term=header.term,
            )
            revision = machine.current_revision()
        finally:
            storage.close()
        write_identity(data_dir, identity)
    except BaseException:
        if existed:  # empty before (checked in restore): empty again
            for path in data_dir.iterdir():
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return revision
