"""A data dir's identity file (`member.json`): whose data dir it is, and whether its
database ever held Raft state.

The file lives beside the database (`<data_dir>/db`), not in it, so it outlives the loss of
the database. That is what makes a lost database visible:

- `node_id` and `cluster_id`: a data dir written by another node or cluster is refused
  rather than silently served under the wrong identity.
- `has_raft_state`: set (durably) once the database holds Raft state: before a founding
  member first starts, and before a joining member may be promoted to voter. From then on
  the member may have voted, and acknowledged entries the leader counts as stored here. A
  data dir whose identity says so but whose database is gone or empty lost that memory:
  started again under the same id it would vote a second time in a term it already voted
  in, or count towards a quorum for entries it no longer has — committed writes could be
  lost and members diverge for good, silently. So it is refused: such a node must be
  removed and join again with a new id (etcd's rule for a member that lost its data dir).

Files written before `has_raft_state` existed read as False; the first start whose database
holds state sets it.

`peer_address`: the address the other members were told to reach this one at (its entry in
`initial_cluster`, else `listen_peer`), recorded when the data dir is made (or restored). A
start whose `listen_peer` cannot be that address logs one warning: the node would listen
where nobody calls (a restored node started with another `--listen-peer` than its
`--initial-cluster` entry). Files written before it existed record "" and are not checked.

`restoring`: `raftkv snapshot restore` writes the identity with it set before anything
else, writes the database in many batches (raftkv.server.restore), and clears it last, after
a synced final write. A data dir whose identity still says so was cut off halfway (the
process was killed, the machine lost power): it holds part of a backup, and is refused by
`raftkv serve` and `raftkv recover` until it is deleted and restored again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from raftkv.server.setting_values import split_address
from raftkv.server.settings import (
    NO_CLUSTER_ID,
    ServerSettings,
    SettingsInvalid,
)

logger = logging.getLogger("raftkv.server")

IDENTITY_FILE = "member.json"
# Derived cluster ids are below 2**63 (signed 64-bit everywhere they travel).
MAX_CLUSTER_ID = (1 << 63) - 1
DATABASE_DIR = "db"


class Identity(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    node_id: int
    cluster_id: int
    has_raft_state: bool = False
    peer_address: str = ""
    restoring: bool = False


class StateLost(Exception):
    """The data dir's identity says its database held Raft state, and the state is gone."""


def read_identity(data_dir: Path) -> Identity | None:
    """The identity of `data_dir`, or None if it has no identity file yet."""
    path = data_dir / IDENTITY_FILE
    if not path.exists():
        return None
    try:
        return msgspec.json.decode(path.read_bytes(), type=Identity)
    except (OSError, msgspec.DecodeError) as error:
        raise SettingsInvalid(f"cannot read {path}: {error}") from error


def write_identity(data_dir: Path, identity: Identity) -> None:
    """Replace the identity file atomically and durably (file and directory synced)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / IDENTITY_FILE
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as file:
        file.write(msgspec.json.encode(identity))
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def check_identity(settings: ServerSettings) -> Identity:
    """The identity of `settings.data_dir`: written for a new data dir; refused if it
    belongs to another node or cluster, or if it lost its database (see the module
    docstring: `StateLost`)."""
    data_dir = settings.data_dir
    found = read_identity(data_dir)
    if found is None:
        if (data_dir / DATABASE_DIR).exists():
            raise SettingsInvalid(
                f"data dir {data_dir} holds a database but no {IDENTITY_FILE}: "
                "refusing to guess whose it is"
            )
        identity = new_identity(settings)
        write_identity(data_dir, identity)
        return identity
    if found.restoring:
        raise restore_unfinished(data_dir)
    if found.node_id != settings.id:
        given = "" if settings.cluster_id == NO_CLUSTER_ID else f" of cluster {settings.cluster_id}"
        raise SettingsInvalid(
            f"data dir {data_dir} belongs to node {found.node_id} of cluster "
            f"{found.cluster_id}, not node {settings.id}{given}"
        )
    if settings.cluster_id == NO_CLUSTER_ID:
        # No cluster id given: the data dir's holds (whatever the founders and token say
        # now), as etcd ignores its initial-cluster settings once a member has data.
        logger.info("node %d: cluster id %d, from %s", settings.id, found.cluster_id, IDENTITY_FILE)
    elif found.cluster_id != settings.cluster_id:
        raise SettingsInvalid(
            f"data dir {data_dir} belongs to cluster {found.cluster_id}, not "
            f"{settings.cluster_id}: start it with --cluster-id {found.cluster_id}, or with no "
            "cluster id (a cluster restored from a backup has a new id, printed by raftkv "
            "snapshot restore)"
        )
    if found.has_raft_state and not (data_dir / DATABASE_DIR).exists():
        raise state_lost(data_dir, found.node_id, "its database directory is gone")
    if not can_listen_at(settings.listen_peer, found.peer_address):
        logger.warning(
            "node %d: the other members reach it at %s (recorded in %s), but "
            "--listen-peer is %s: they cannot reach it; start it with --listen-peer %s",
            settings.id,
            found.peer_address,
            data_dir / IDENTITY_FILE,
            settings.listen_peer,
            found.peer_address,
        )
    return found


def new_identity(settings: ServerSettings) -> Identity:
    """The identity of a new data dir for `settings` (not written): the cluster id given,
    else the one its founders derive (`derived_cluster_id`). A node joining a cluster is
    given the cluster's own id before this (the runner asks the cluster)."""
    cluster_id = settings.cluster_id
    if cluster_id == NO_CLUSTER_ID:
        if settings.join_urls:
            raise SettingsInvalid(
                "setting cluster_id: a joining node needs the cluster's id (asked of the "
                "cluster at join, or given with --cluster-id)"
            )
        cluster_id = derived_cluster_id(settings.initial_cluster_token, settings.founders)
    return Identity(
        node_id=settings.id,
        cluster_id=cluster_id,
        peer_address=settings.founders.get(settings.id, settings.listen_peer),
    )


def derived_cluster_id(token: str, founders: Mapping[int, str]) -> int:
    """A new cluster's id (etcd derives its own so): a hash of the token and of the
    founding members (id and peer address, in id order), in 1..2**63-1. Every founder of a
    cluster computes the same; clusters with other founders or another token, another one
    (unless 63 bits collide), so their members refuse each other's messages: a node
    started by mistake with another cluster's addresses cannot disturb it."""
    members = ",".join(f"{node}={founders[node]}" for node in sorted(founders))
    digest = hashlib.sha256(f"raftkv cluster\n{token}\n{members}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % MAX_CLUSTER_ID + 1


def restore_unfinished(data_dir: Path) -> SettingsInvalid:
    return SettingsInvalid(
        f"data dir {data_dir} holds a restore that did not finish (raftkv snapshot restore "
        f"was stopped halfway): delete {data_dir} and run raftkv snapshot restore again"
    )


def can_listen_at(listen_peer: str, peer_address: str) -> bool:
    """Whether listening on `listen_peer` can serve calls to `peer_address` (True if
    `peer_address` is unknown): the same port, and the same host or every interface."""
    if not peer_address:
        return True
    try:
        listen_host, listen_port = split_address(listen_peer)
        host, port = split_address(peer_address)
    except ValueError:
        return True  # a malformed address is the settings' to refuse
    hosts = {host} | (_LOOPBACK if host in _LOOPBACK else set())
    return listen_port == port and listen_host in hosts | {"0.0.0.0", "::", ""}


_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def mark_raft_state(data_dir: Path, identity: Identity) -> Identity:
    """Record, durably, that the database of `data_dir` holds Raft state (idempotent)."""
    if identity.has_raft_state:
        return identity
    marked = msgspec.structs.replace(identity, has_raft_state=True)
    write_identity(data_dir, marked)
    return marked


def state_lost(data_dir: Path, node_id: int, what: str) -> StateLost:
    return StateLost(
        f"data dir {data_dir}: node {node_id} lost its Raft state ({what}), so it may have "
        f"voted or acknowledged writes it no longer remembers and must not rejoin as node "
        f"{node_id}: remove it (raftkv member remove {node_id}) and join again with a new "
        "id and an empty data dir"
    )
