"""`KvSettings`: the KV state machine's limits, validated once.

The limits are checked when a command is applied, so they are part of the replicated state
machine's definition: every member must use the same values, or members could disagree on
which commands apply. The server should take them from the cluster's configuration rather
than per node, and check the same limits before proposing (`check_request`) so that an
oversize request is refused without reaching the log.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.raft.core.errors import ConfigInvalid


@dataclass(frozen=True, slots=True)
class KvSettings:
    # etcd bounds keys only through its 1.5 MiB request limit. Keys are stored twice (in
    # the latest index and in each history entry) and compared on every lookup, so they get
    # a much smaller bound of their own; 4 KiB is ample for path-like keys.
    max_key_bytes: int = 4096
    # One value; etcd's default request limit is 1.5 MiB for the whole request. A larger
    # value makes every Raft entry, snapshot and history entry that carries it larger.
    max_value_bytes: int = 1 << 20
    # etcd's --max-txn-ops default: the most compares, and the most ops in each branch.
    max_txn_ops: int = 128
    # Exactly-once sessions kept; beyond it the client whose last write is the oldest (by
    # log index) is forgotten, and a retry of that write would apply again. Each session
    # holds the client's last result, so memory in RocksDB grows with this × result size.
    max_exactly_once_clients: int = 10_000
    # A client id's UTF-8 length (it is a key of the session table).
    max_client_id_bytes: int = 128
    # Live leases at most (a grant beyond is refused). Every node keeps a timer per lease
    # in memory and reads them all when it opens the store.
    max_leases: int = 100_000
    # A grant asking for less gets this TTL: a lease shorter than a few election timeouts
    # could expire while the cluster elects a leader and no keep-alive can be applied.
    min_lease_ttl_s: int = 2
    # The longest TTL a grant may ask for (etcd's MaxLeaseTTL: 9e9 s; one year is ample).
    max_lease_ttl_s: int = 365 * 24 * 3600

    def __post_init__(self) -> None:
        for name in (
            "max_key_bytes",
            "max_value_bytes",
            "max_txn_ops",
            "max_exactly_once_clients",
            "max_client_id_bytes",
            "max_leases",
            "min_lease_ttl_s",
            "max_lease_ttl_s",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigInvalid(f"KvSettings.{name} must be a positive integer, got {value!r}")
        if self.min_lease_ttl_s > self.max_lease_ttl_s:
            raise ConfigInvalid("KvSettings.min_lease_ttl_s must be <= max_lease_ttl_s")
