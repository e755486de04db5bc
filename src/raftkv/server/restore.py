"""`raftkv snapshot restore`: seed a new member's data dir from a backup file (or from the
manifest of a backup in an incremental backup directory, `raftkv.server.backup_store`).

Every founding member of the new cluster is restored from the same file with the same
`initial_cluster`: each then holds the backup's state at the backup's index, as a snapshot
whose membership is the new founders, and they start as one cluster (etcd's snapshot
restore). The data dir must not exist yet (or be empty): a restore never overwrites data.

The new cluster gets a new cluster id (as etcd's restore does), so that its members and the
source's refuse each other's messages: derived from the backup's checksum and the
founders, every founder restored from the same file with the same `initial_cluster`
records the same one in its `member.json`. `raftkv serve` is then started with it
(`--cluster-id`, printed in the restore's JSON line).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

from raftkv.kv import KvStateMachine
from raftkv.raft import SnapshotInvalid
from raftkv.raft.core.types import NodeId
from raftkv.raft.recovery import start_membership
from raftkv.raft.storage.memory import MemoryAppData
from raftkv.raft.storage.rocks import RocksStorage
from raftkv.server.backup import MAGIC, BackupHeader, BackupInvalid, open_backup
from raftkv.server.backup_store import read_manifest, write_assembled
from raftkv.server.identity import DATABASE_DIR, check_identity, mark_raft_state
from raftkv.server.runner import kv_settings
from raftkv.server.settings import ServerSettings, SettingsInvalid

_MAX_CLUSTER_ID = 2**63 - 1


def restore(
    backup: Path,
    settings: ServerSettings,
    progress: Callable[[int, int], None] | None = None,
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
            # Every item decodes before anything is written (O(data), a chunk at a time).
            KvStateMachine(MemoryAppData(), kv_settings(settings)).validate_snapshot(payload)
        except SnapshotInvalid as error:
            raise BackupInvalid(f"the backup's state is damaged: {error}") from error
        cluster_id = new_cluster_id(_checksum_of(path), settings.founders, settings.cluster_id)
        restored = replace(settings, cluster_id=cluster_id)
        revision = _build(data_dir, restored, header, payload, progress)
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
    members = ",".join(f"{peer}={address}" for peer, address in sorted(founders.items()))
    seed = hashlib.sha256(b"raftkv restored cluster\0" + checksum + members.encode()).digest()
    cluster_id = int.from_bytes(seed[:8], "big") % _MAX_CLUSTER_ID + 1
    return cluster_id if cluster_id != previous else cluster_id % _MAX_CLUSTER_ID + 1


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
    data_dir: Path,
    settings: ServerSettings,
    header: BackupHeader,
    payload: memoryview,
    progress: Callable[[int, int], None] | None,
) -> int:
    """Write the data dir: built beside it and renamed at the end, so a restore that fails
    halfway leaves no data dir a `raftkv serve` could mistake for a real one (and nothing
    behind). The restored revision."""
    building = data_dir.with_name(f".{data_dir.name}.restoring")
    shutil.rmtree(building, ignore_errors=True)
    try:
        identity = check_identity(replace(settings, data_dir=building))
        founders = {NodeId(peer): address for peer, address in settings.founders.items()}
        storage = RocksStorage(building / DATABASE_DIR)
        try:
            machine = KvStateMachine(storage.app_data(), kv_settings(settings))
            machine.restore(payload, header.index, header.term, progress=progress)
            # Hash checks and CORRUPT alarms name members of the old cluster, not these
            # ones. Every founder drops them alike, and the snapshot it starts from says so.
            machine.forget_hash_checks()
            start_membership(
                storage,
                founders,
                index=header.index,
                term=header.term,
                app=machine.snapshot(),
                current_term=header.term,
            )
            revision = machine.current_revision()
        finally:
            storage.close()
        mark_raft_state(building, identity)
        if data_dir.exists():
            data_dir.rmdir()  # empty (checked above)
        os.replace(building, data_dir)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return revision
