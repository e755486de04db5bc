"""`raftkv recover --force-new-cluster`: turn a stopped member's data dir into a one-node
cluster after a quorum is lost for good (see `raftkv.raft.recovery`)."""

from __future__ import annotations

import json
from pathlib import Path

from raftkv.kv import KvStateMachine
from raftkv.raft.core.types import MAX_TERM, NodeId
from raftkv.raft.recovery import force_new_cluster
from raftkv.raft.storage.rocks import RocksStorage, StorageOpenError
from raftkv.server.identity import DATABASE_DIR, read_identity, restore_unfinished
from raftkv.server.settings import SettingsInvalid


async def recover(data_dir: Path, peer_address: str = "") -> str:
    """Recover the node in `data_dir`; a JSON report (one line) of what was kept."""
    identity = read_identity(data_dir)
    if identity is None:
        raise SettingsInvalid(f"{data_dir} is not a raftkv data dir (it has no identity file)")
    if identity.restoring:
        raise restore_unfinished(data_dir)
    database = data_dir / DATABASE_DIR
    if not database.exists():
        raise SettingsInvalid(f"{data_dir} holds no database ({database} is missing)")
    try:
        storage = RocksStorage(database, create=False)
    except StorageOpenError as error:
        if error.in_use:  # RocksDB's lock: a running node holds the database
            raise StorageOpenError(
                f"{data_dir} is in use by a running node: stop the node first (recover "
                "rewrites a stopped member's data)",
                in_use=True,
            ) from error
        raise
    try:
        machine = KvStateMachine(storage.app_data())
        report = await force_new_cluster(
            storage, NodeId(identity.node_id), machine, peer_address=peer_address
        )
    finally:
        storage.close()
    result: dict[str, object] = {
        "recovered": report.node_id,
        "index": report.index,
        "term": report.term,
        "previous_voters": list(report.previous_voters),
        "previous_learners": list(report.previous_learners),
        "dropped_uncommitted_entries": report.dropped_entries,
    }
    if report.term_reset_from is not None:
        result["term_reset"] = (
            f"term {report.term_reset_from} is at or past the largest usable term "
            f"({MAX_TERM}): no election could succeed; the new cluster starts at term "
            f"{report.term}"
        )
    return json.dumps(result)
