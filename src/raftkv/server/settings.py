"""`ServerSettings`: everything `raftkv serve` can be told, and where it can be told it.

Each setting has one name, spelled three ways:
- a command-line flag: `--listen-client 127.0.0.1:8080`;
- an environment variable: `RAFTKV_LISTEN_CLIENT=127.0.0.1:8080`;
- a key of a TOML file given with `--config FILE` (or `RAFTKV_CONFIG`): `listen_client = "..."`.
Precedence, highest first: flag, environment, file, default. `raftkv serve` with none of them
runs a one-node store: clients on 127.0.0.1:8080, peers on 127.0.0.1:7080, data in ./data.

Every value is checked when the server starts; a bad one fails with `SettingsInvalid` naming
the setting and where it came from (flag, environment, file or default), before anything is
opened. Values that can never work are refused too: ticks too long or an election timeout
too short to elect, a key limit above the body limit, a body limit no peer message could
carry. A check between two settings blames the one given with the highest precedence.
Unknown keys in the TOML file are refused (a typo must not be silently ignored).

The environment is shared with other programs (`raftkv lock` exports RAFTKV_LOCK_KEY and
RAFTKV_LOCK_TOKEN to its command, which may be raftkv itself), so the rule for it is:
settings come from `RAFTKV_<SETTING>` names only; other `RAFTKV_*` variables are ignored
without an error, except near-misses of a setting name (RAFTKV_LISTEN_CLEINT), which
`environment_warnings` reports in one line each.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from raftkv.server.browser_policy import parse_cors, parse_host_whitelist
from raftkv.server.setting_values import (
    parse_address,
    parse_bool,
    parse_cluster,
    parse_common_names,
    parse_event_loop,
    parse_float,
    parse_int,
    parse_level,
    parse_log_format,
    parse_optional_address,
    parse_optional_path,
    parse_path,
    parse_peer_transport,
    parse_str,
    port_of,
    split_address,
)

if TYPE_CHECKING:
    from raftkv.raft.builder import PeerTransportKind

# raftkv.kv.space_monitor's defaults, not imported from it: importing raftkv.kv loads the
# whole store, and the CLI's client verbs import this module (raftkv.server's docstring).
# tests/server/test_server_settings.py checks they agree.
DEFAULT_QUOTA_BYTES = 2 << 30
DEFAULT_MIN_FREE_BYTES = 64 << 20

ENV_PREFIX = "RAFTKV_"
CONFIG_ENV = "RAFTKV_CONFIG"
# Variables with the prefix that are not settings but are read by raftkv: never a
# near-miss warning, however close to a setting name.
_OTHER_ENV = frozenset(
    {CONFIG_ENV, "RAFTKV_ENDPOINTS", "RAFTKV_LOCK_KEY", "RAFTKV_LOCK_TOKEN", "RAFTKV_REWRITE"}
)
_NEAR_MISS_CUTOFF = 0.8  # difflib's similarity ratio: LISTEN_CLEINT, LOG_LEVLE, DATADIR
# Bounds of what can work. A tick is the unit of every Raft timeout; an election timeout
# (tick_interval_ms x election_ticks) below the floor cannot outlast one round trip plus an
# fsync, so elections would never settle; above the ceiling a lost leader is not replaced
# for minutes. A request body larger than the ceiling could not travel to a peer in one
# peer frame (max_receive_message_bytes, 64 MiB).
MAX_TICK_INTERVAL_MS = 10_000
MIN_ELECTION_TIMEOUT_MS = 100
MAX_ELECTION_TIMEOUT_MS = 60_000
MAX_BODY_BYTES_CEILING = 64 << 20


class SettingsInvalid(ValueError):
    """A setting has a bad value; the message names it and its source. (A ValueError, not
    the Raft library's ConfigInvalid, so the CLI can read settings without loading it.)

    `blame` maps each setting the problem could be pinned on to what to say about it
    (first: the default choice); `load_settings` blames the one given with the highest
    precedence and adds where it came from."""

    def __init__(self, message: str, blame: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.blame: dict[str, str] = dict(blame or {})


def _invalid(name: str, problem: str, **others: str) -> SettingsInvalid:
    """The problem with setting `name`, or (`others`: setting -> problem) with another."""
    blame = {name: problem, **others}
    return SettingsInvalid(f"setting {name}: {problem}", blame)


def _setting(
    default: Any, parse: Callable[[object], Any], doc: str, *, factory: bool = False
) -> Any:
    metadata = {"parse": parse, "doc": doc}
    if factory:
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


# The cluster id of a new data dir when none is given (an existing one keeps its own).
NO_CLUSTER_ID = 0


@dataclass(frozen=True)
class ServerSettings:
    id: int = _setting(1, parse_int, "This node's id (a positive integer, unique in the cluster).")
    data_dir: Path = _setting(Path("data"), parse_path, "Where this node keeps its data.")
    listen_client: str = _setting(
        "127.0.0.1:8080", parse_address, "host:port the HTTP API listens on."
    )
    listen_peer: str = _setting(
        "127.0.0.1:7080", parse_address, "host:port the peer transport listens on."
    )
    listen_client_grpc: str = _setting(
        "",
        parse_optional_address,
        "host:port etcd's v3 gRPC API listens on, for etcdctl and etcd's client libraries "
        "(empty: not served; raftkv dev serves it on 2379 and up). See docs/etcd.md.",
    )
    listen_metrics: str = _setting(
        "",
        parse_optional_address,
        "host:port serving GET /metrics on a port of its own (etcd's --listen-metrics-urls); "
        "the client port then no longer serves it. Empty: /metrics on the client port.",
    )
    peer_transport: PeerTransportKind = _setting(
        "tcp",
        parse_peer_transport,
        "How members talk: tcp (length-prefixed frames on TCP, the fastest) or grpc. Every "
        "member of a cluster must use the same.",
    )
    event_loop: str = _setting(
        "asyncio",
        parse_event_loop,
        "The event loop the node runs on: asyncio (the standard library's) or uvloop "
        "(libuv's: less CPU per request, but a long latency tail with hundreds of clients "
        "connecting at once; docs/performance.md).",
    )
    advertise_client_url: str = _setting(
        "",
        parse_str,
        "The URL other members and clients use for this node's HTTP API "
        "(default: http://<listen_client>, https:// with cert_file).",
    )
    initial_cluster: dict[int, str] = _setting(
        dict,
        parse_cluster,
        "The founding voters, id=host:port,... of their peer addresses "
        "(default: this node alone at listen_peer). Read only when the data dir is new.",
        factory=True,
    )
    join: str = _setting(
        "",
        parse_str,
        "Join a running cluster through any member's client URL (comma-"
        "separated list to try several) when the data dir is new, instead of founding one. "
        "The node is added as a learner (raftkv member promote makes it a voter).",
    )
    auto_promote: bool = _setting(
        False, parse_bool, "With join: become a voter automatically once caught up."
    )
    join_timeout_s: float = _setting(
        300.0, parse_float, "With join: how long joining (and catching up) may take."
    )
    cluster_id: int = _setting(
        NO_CLUSTER_ID,
        parse_int,
        "Shared by every member; peers with another cluster id are refused. Not given: a new "
        "cluster's founders derive it from initial_cluster_token and initial_cluster, a node "
        "joining asks the cluster, an existing data dir keeps its own.",
    )
    initial_cluster_token: str = _setting(
        "raftkv-cluster",
        parse_str,
        "With initial_cluster, what a new cluster's id is derived from (etcd's "
        "--initial-cluster-token): give clusters on the same addresses tokens of their own.",
    )
    log_level: str = _setting("info", parse_level, "debug, info, warning or error.")
    log_format: str = _setting(
        "text", parse_log_format, "text (one line per event) or json (one object per line)."
    )
    tick_interval_ms: int = _setting(100, parse_int, "Raft tick length in milliseconds.")
    election_ticks: int = _setting(10, parse_int, "Ticks without a leader before an election.")
    heartbeat_ticks: int = _setting(1, parse_int, "Ticks between leader heartbeats.")
    snapshot_every_entries: int = _setting(
        100_000,
        parse_int,
        "Take a snapshot after this many applied entries (etcd's snapshot-count default).",
    )
    snapshot_keep_entries: int = _setting(
        5_000, parse_int, "Log entries kept behind a snapshot for slow followers."
    )
    snapshot_every_bytes: int = _setting(
        64 << 20,
        parse_int,
        "Also take a snapshot once the entries applied since the last one hold this many "
        "bytes (0: by count only).",
    )
    batch_proposals: bool = _setting(
        True,
        parse_bool,
        "Writes proposed together share one log entry, appended, fsynced and applied as one "
        "by every member: once every member has declared it reads such entries (an older "
        "raftkv never does, so a cluster with one does not batch). false: never batch.",
    )
    request_timeout_s: float = _setting(
        10.0, parse_float, "How long a request waits for its outcome (then 504 timeout)."
    )
    shutdown_timeout_s: float = _setting(
        10.0, parse_float, "On SIGTERM, how long in-flight requests may take to finish."
    )
    auto_compaction_retention: int = _setting(
        100_000,
        parse_int,
        "Keep this many revisions of history; the leader compacts older ones (0: never).",
    )
    auto_compaction_interval_s: float = _setting(
        10.0, parse_float, "How often the leader checks whether to compact."
    )
    max_body_bytes: int = _setting(2 << 20, parse_int, "Largest HTTP request body.")
    etcd_max_request_bytes: int = _setting(
        1536 * 1024,
        parse_int,
        "Largest request on the etcd gRPC port (etcd's --max-request-bytes, 1.5 MiB).",
    )
    max_concurrent_backups: int = _setting(
        1, parse_int, "Backups (GET /v1/snapshot) made at once; more are refused (503 busy)."
    )
    auth_token_ttl_s: int = _setting(
        300,
        parse_int,
        "Seconds an auth token is valid (etcd's default, 5 minutes); clients holding a "
        "password log in again when theirs expires.",
    )
    max_failed_logins: int = _setting(
        5,
        parse_int,
        "Failed logins an address may make in a row; then one more per 10 s (429 "
        "too_many_auth_failures).",
    )
    # -- the client port's limits: no request, connection or client may stall the node (its
    # event loop also runs Raft: a stall past the election timeout costs an election).
    max_client_connections: int = _setting(
        1000,
        parse_int,
        "Client (HTTP) connections open at once; more are closed as soon as accepted "
        "(raftkv_limit_hits_total). The open-files limit must leave room beyond it for "
        "RocksDB and peers: the server raises its soft limit to the hard one and refuses to "
        "start if that is below this + 1024.",
    )
    http_workers: int = _setting(
        0,
        parse_int,
        "Front processes serving the client port beside the node's own (0: none). They parse "
        "and answer the KV routes off the node's event loop and forward the rest to it "
        "(docs/operations.md#front-processes). Up to 16; not with cert_file yet.",
    )
    http_keepalive_timeout_s: float = _setting(
        10.0,
        parse_float,
        "A client connection idle this long, or whose next request's headers are not all in "
        "by then (slowloris), is closed. Clients reconnect; longer keeps idle ones longer.",
    )
    http_body_timeout_s: float = _setting(
        10.0,
        parse_float,
        "A request body must arrive whole within this long (else 408 body_timeout).",
    )
    # -- what keeps web pages out of the HTTP API (raftkv.server.browser_guards).
    host_whitelist: tuple[str, ...] = _setting(
        (),
        parse_host_whitelist,
        "Host names, IPs and networks the HTTP API answers to (comma-separated; *: any); "
        "others get 421 (DNS rebinding). Empty: on loopback, localhost, 127.0.0.0/8, ::1 and "
        "advertise_client_url's host; elsewhere any.",
    )
    cors: tuple[str, ...] = _setting(
        (),
        parse_cors,
        "Origins (scheme://host:port, comma-separated; *: any) whose web pages may use the "
        "HTTP API; other cross-origin requests get 403. Empty: none (same-origin only).",
    )
    max_response_bytes: int = _setting(
        4 << 20,
        parse_int,
        "Key-values one read answers, in bytes (keys and values, plus 80 each); past it a "
        "range answers what fits with more: true, as with limit (the first always fits).",
    )
    max_scan_entries: int = _setting(
        2_000_000,
        parse_int,
        "MVCC entries one read may scan (a range or a read-only txn's ranges, count "
        "included; ~2 µs each, off the event loop); more: 413 scan_too_large.",
    )
    max_txn_scan_entries: int = _setting(
        10_000,
        parse_int,
        "The same for the ranges of a txn that writes, which every member reads on its event "
        "loop when it applies (checked before proposing).",
    )
    read_threads: int = _setting(
        2,
        parse_int,
        "Threads reading long scans (ranges, read-only txns, the state hash) off the event "
        "loop; at most this many run at once.",
    )
    max_key_bytes: int = _setting(4096, parse_int, "Largest key (same on every member).")
    max_value_bytes: int = _setting(1 << 20, parse_int, "Largest value (same on every member).")
    max_txn_ops: int = _setting(
        128, parse_int, "Most compares / ops per txn branch (same on every member)."
    )
    max_exactly_once_clients: int = _setting(
        10_000,
        parse_int,
        "Client sessions remembered for exactly-once writes (same on every member).",
    )
    max_leases: int = _setting(
        100_000, parse_int, "Live leases at most; more grants are refused (same on every member)."
    )
    min_lease_ttl_s: int = _setting(
        2,
        parse_int,
        "A lease granted with a shorter TTL gets this one (same on every member); keep it "
        "above a few election timeouts.",
    )
    lease_check_interval_s: float = _setting(
        0.25, parse_float, "How often the leader looks for expired leases."
    )
    lease_checkpoint_interval_s: float = _setting(
        5.0,
        parse_float,
        "How often the leader records remaining lease TTLs in the log: the most extra life a "
        "lease can get from a restart of the node that then leads.",
    )
    max_watches: int = _setting(10_000, parse_int, "Watches one node serves at once.")
    watch_no_leader_timeout_s: float = _setting(
        3.0,
        parse_float,
        "End watches (no_leader) on a member that has had no leader this long, so clients "
        "resume on another member (0: never).",
    )
    corrupt_check_interval_s: float = _setting(
        300.0,
        parse_float,
        "How often the leader has every member hash its state at the same log index and "
        "compare (a member whose hash differs from the majority's raises a CORRUPT alarm "
        "and stops serving clients; 0: never, members still answer checks others start). "
        "Each check costs every member a checkpoint and a full scan of its state on a "
        "worker thread (about 1 s per 200 k keys): shorter finds divergence sooner.",
    )
    corrupt_check_at_start: bool = _setting(
        True,
        parse_bool,
        "Run a hash check once this node has caught up after starting, so a member damaged "
        "while it was down is found at once (etcd's initial corruption check).",
    )
    quota_backend_bytes: int = _setting(
        DEFAULT_QUOTA_BYTES,
        parse_int,
        "Most bytes of <data_dir>/db before this node raises a NOSPACE alarm: the cluster "
        "refuses writes that add data until it is disarmed (etcd's --quota-backend-bytes; "
        "0: no quota).",
    )
    min_free_disk_bytes: int = _setting(
        DEFAULT_MIN_FREE_BYTES,
        parse_int,
        "Least free bytes on the data dir's disk before it raises one (0: not checked).",
    )
    max_snapshot_bytes: int = _setting(
        1 << 30, parse_int, "Largest snapshot this node sends or accepts from a peer (bytes)."
    )
    snapshot_cache_bytes: int = _setting(
        64 << 20,
        parse_int,
        "Snapshot chunks kept from transfers, so a retried one sends only what is missing "
        "(bytes; 0: none).",
    )
    max_snapshot_chunks_in_flight: int = _setting(
        8, parse_int, "Snapshot chunks sent ahead of the receiver's acknowledgements."
    )
    watch_send_timeout_s: float = _setting(
        10.0,
        parse_float,
        "A watch whose client does not read for this long is ended with too_slow.",
    )
    watch_progress_interval_s: float = _setting(
        10.0, parse_float, "Default interval of watch progress notifications (bookmarks)."
    )
    watch_max_buffered_bytes: int = _setting(
        16 << 20,
        parse_int,
        "Bytes of events (keys, values, prev_kv) one watch holds until its client has taken "
        "them: a message is cut to fit (a larger revision goes alone). Larger: faster "
        "catch-up; smaller: less memory per slow client.",
    )
    watch_max_total_buffered_bytes: int = _setting(
        256 << 20,
        parse_int,
        "The same summed over this node's watches; past it the watch holding the most is "
        "ended too_slow (its client resumes). The ceiling of watch fan-out memory (the "
        "process holds about twice this); below watchers x message size it ends healthy "
        "watchers during bursts.",
    )
    cert_file: Path | None = _setting(
        None,
        parse_optional_path,
        "This node's certificate (PEM) for TLS on the client port: with key_file, the HTTP "
        "API and etcd's gRPC API serve https only (reloaded on SIGHUP or when it changes).",
    )
    key_file: Path | None = _setting(
        None, parse_optional_path, "The private key of cert_file (PEM, unencrypted)."
    )
    client_ca_file: Path | None = _setting(
        None,
        parse_optional_path,
        "With cert_file: clients must present a certificate signed by this CA (mutual TLS).",
    )
    allow_insecure_peers: bool = _setting(
        False,
        parse_bool,
        "Serve peers without TLS on a non-loopback listen_peer: anyone who reaches it could "
        "append entries or change the membership. Only on a network you trust.",
    )
    allow_insecure_clients: bool = _setting(
        False,
        parse_bool,
        "A non-loopback client port without TLS or client certificates is logged as an INFO "
        "line, not a WARNING (the choice is in the config; /v1/status still lists it).",
    )
    peer_cert_allowed_cn: tuple[str, ...] = _setting(
        (),
        parse_common_names,
        "Peer certificate common names accepted for any node (etcd's "
        "--peer-cert-allowed-cn, comma-separated); any other peer certificate must be "
        "node-<id> (as raftkv certs issues) and speaks only for that node.",
    )
    peer_ca_file: Path | None = _setting(
        None, parse_optional_path, "CA certificate for mutual TLS between peers."
    )
    peer_cert_file: Path | None = _setting(
        None, parse_optional_path, "This node's certificate for mutual TLS between peers."
    )
    peer_key_file: Path | None = _setting(
        None, parse_optional_path, "This node's private key for mutual TLS between peers."
    )

    def __post_init__(self) -> None:
        listeners = {"listen_client": self.listen_client, "listen_peer": self.listen_peer}
        if self.listen_client_grpc:
            listeners["listen_client_grpc"] = self.listen_client_grpc
        if self.listen_metrics:
            listeners["listen_metrics"] = self.listen_metrics
        owners: dict[str, str] = {}
        for name, address in listeners.items():
            if address in owners and port_of(address) != 0:  # port 0: each picks its own
                raise _invalid(name, f"{address} is also {owners[address]}: give each its own port")
            owners[address] = name
        if not 1 <= self.id < 2**64:
            raise _invalid("id", f"must be a positive integer below 2**64, got {self.id}")
        if not 0 <= self.cluster_id < 2**64:
            raise _invalid(
                "cluster_id",
                f"must be a positive integer below 2**64 (0: not given), got {self.cluster_id}",
            )
        if not 0 < len(self.initial_cluster_token.encode()) <= 256:
            raise _invalid("initial_cluster_token", "must be 1..256 bytes")
        for name in (
            "tick_interval_ms",
            "election_ticks",
            "heartbeat_ticks",
            "snapshot_every_entries",
            "max_body_bytes",
            "etcd_max_request_bytes",
            "max_concurrent_backups",
            "auth_token_ttl_s",
            "max_failed_logins",
            "max_key_bytes",
            "max_value_bytes",
            "max_txn_ops",
            "max_exactly_once_clients",
            "max_leases",
            "min_lease_ttl_s",
            "max_watches",
            "watch_max_buffered_bytes",
            "watch_max_total_buffered_bytes",
            "max_snapshot_bytes",
            "max_snapshot_chunks_in_flight",
            "max_client_connections",
            "max_response_bytes",
            "max_scan_entries",
            "max_txn_scan_entries",
            "read_threads",
        ):
            if getattr(self, name) < 1:
                raise _invalid(name, f"must be >= 1, got {getattr(self, name)}")
        for name in (
            "snapshot_cache_bytes",
            "quota_backend_bytes",
            "min_free_disk_bytes",
            "snapshot_keep_entries",
            "snapshot_every_bytes",
            "auto_compaction_retention",
            "http_workers",
        ):
            if getattr(self, name) < 0:
                raise _invalid(name, f"must be >= 0, got {getattr(self, name)}")
        for name in (
            "watch_no_leader_timeout_s",
            "lease_checkpoint_interval_s",
            "corrupt_check_interval_s",
        ):
            if not 0 <= getattr(self, name) < float("inf"):
                raise _invalid(name, f"must be >= 0 (0: never), got {getattr(self, name)}")
        for name in (
            "request_timeout_s",
            "shutdown_timeout_s",
            "auto_compaction_interval_s",
            "join_timeout_s",
            "lease_check_interval_s",
            "watch_send_timeout_s",
            "watch_progress_interval_s",
            "http_keepalive_timeout_s",
            "http_body_timeout_s",
        ):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise _invalid(name, f"must be a positive number, got {value}")
        self._check_timing()
        self._check_limits()
        if self.join and self.initial_cluster:
            raise SettingsInvalid(
                "settings join and initial_cluster: give one (join a cluster, or found one)"
            )
        for url in self.join_urls:
            if not url.startswith(("http://", "https://")):
                raise _invalid("join", f"{url!r} is not an http:// URL")
        if (self.cert_file is None) != (self.key_file is None):
            raise SettingsInvalid("settings cert_file and key_file: give both or neither")
        if self.client_ca_file is not None and self.cert_file is None:
            raise _invalid("client_ca_file", "needs cert_file and key_file (TLS on the port)")
        if self.http_workers > 16 or (self.http_workers and self.cert_file is not None):
            raise _invalid("http_workers", "must be 0-16, and 0 with cert_file (TLS)")
        tls = [self.peer_ca_file, self.peer_cert_file, self.peer_key_file]
        if any(tls) and not all(tls):
            raise SettingsInvalid(
                "settings peer_ca_file, peer_cert_file, peer_key_file: give all three or none"
            )
        if self.initial_cluster and self.id not in self.initial_cluster:
            raise _invalid(
                "initial_cluster",
                f"must list this node (id {self.id}), got {format_cluster(self.initial_cluster)}",
                id=f"must be one of the ids in initial_cluster "
                f"({format_cluster(self.initial_cluster)}), got {self.id}",
            )

    def _check_timing(self) -> None:
        tick, election, heartbeat = self.tick_interval_ms, self.election_ticks, self.heartbeat_ticks
        if tick > MAX_TICK_INTERVAL_MS:
            raise _invalid(
                "tick_interval_ms", f"must be at most {MAX_TICK_INTERVAL_MS} ms, got {tick}"
            )
        if election <= heartbeat:
            raise _invalid(
                "election_ticks",
                f"must be greater than heartbeat_ticks ({election} <= {heartbeat})",
                heartbeat_ticks=f"must be less than election_ticks ({heartbeat} >= {election})",
            )
        timeout_ms = tick * election
        if not MIN_ELECTION_TIMEOUT_MS <= timeout_ms <= MAX_ELECTION_TIMEOUT_MS:
            problem = (
                f"the election timeout tick_interval_ms x election_ticks ({tick} x {election} "
                f"= {timeout_ms} ms) must be in {MIN_ELECTION_TIMEOUT_MS}.."
                f"{MAX_ELECTION_TIMEOUT_MS} ms"
            )
            raise _invalid("election_ticks", problem, tick_interval_ms=problem)

    def _check_limits(self) -> None:
        if self.max_body_bytes > MAX_BODY_BYTES_CEILING:
            raise _invalid(
                "max_body_bytes",
                f"must be at most {MAX_BODY_BYTES_CEILING} (64 MiB: a write travels to peers "
                f"in one peer frame), got {self.max_body_bytes}",
            )
        if self.max_key_bytes > self.max_body_bytes:
            raise _invalid(
                "max_key_bytes",
                f"must be at most max_body_bytes ({self.max_key_bytes} > "
                f"{self.max_body_bytes}): no request could carry such a key",
                max_body_bytes=f"must be at least max_key_bytes ({self.max_body_bytes} < "
                f"{self.max_key_bytes}): no request could carry the largest key",
            )
        if self.watch_max_total_buffered_bytes < self.watch_max_buffered_bytes:
            raise _invalid(
                "watch_max_total_buffered_bytes",
                "must be at least watch_max_buffered_bytes "
                f"({self.watch_max_total_buffered_bytes} < {self.watch_max_buffered_bytes})",
                watch_max_buffered_bytes="must be at most watch_max_total_buffered_bytes "
                f"({self.watch_max_buffered_bytes} > {self.watch_max_total_buffered_bytes})",
            )

    # -- derived values ------------------------------------------------------------------

    @property
    def client_url(self) -> str:
        if self.advertise_client_url:
            return self.advertise_client_url
        host, port = split_address(self.listen_client)
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"{self.client_scheme}://{_bracket(host)}:{port}"

    @property
    def client_scheme(self) -> str:
        """https with TLS on the client port (cert_file), else http."""
        return "https" if self.cert_file is not None else "http"

    @property
    def etcd_url(self) -> str:
        """Where etcd clients reach this node's gRPC API ("" when it is not served): the
        host of listen_client_grpc, or, for a wildcard one, the host clients use for the
        HTTP API."""
        if not self.listen_client_grpc:
            return ""
        host, port = split_address(self.listen_client_grpc)
        if host in ("0.0.0.0", "::", ""):
            host = urlsplit(self.client_url).hostname or "127.0.0.1"
        return f"{self.client_scheme}://{_bracket(host)}:{port}"

    @property
    def join_urls(self) -> list[str]:
        return [url.strip().rstrip("/") for url in self.join.split(",") if url.strip()]

    @property
    def founders(self) -> dict[int, str]:
        return self.initial_cluster or {self.id: self.listen_peer}


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def format_cluster(cluster: Mapping[int, str]) -> str:
    return ",".join(f"{node_id}={address}" for node_id, address in sorted(cluster.items()))


SETTING_NAMES: tuple[str, ...] = tuple(item.name for item in dataclasses.fields(ServerSettings))


def setting_doc(name: str) -> str:
    return str(_field(name).metadata["doc"])


def setting_type(name: str) -> object:
    """The setting's type (annotations are strings under `from __future__ import
    annotations`: "bool" counts as bool)."""
    annotation = _field(name).type
    return bool if annotation in (bool, "bool") else annotation


def _field(name: str) -> dataclasses.Field[Any]:
    return next(item for item in dataclasses.fields(ServerSettings) if item.name == name)


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def load_settings(
    flags: Mapping[str, object],
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> ServerSettings:
    """The effective settings: `flags` (name -> text, only those given) over `environ`'s
    RAFTKV_<SETTING> variables over `config_file` (or the file RAFTKV_CONFIG names) over
    defaults. Other RAFTKV_* variables are ignored (see `environment_warnings`)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    # Where each given value came from, and that source's precedence (higher wins).
    sources: dict[str, tuple[int, str]] = {}
    if config_file is None and environ.get(CONFIG_ENV):
        config_file = Path(environ[CONFIG_ENV])
    if config_file is not None:
        for name, raw in _read_file(config_file).items():
            sources[name] = (1, f"{config_file}")
            values[name] = _parse(name, raw, sources[name][1])
    for variable, raw in environ.items():
        setting = _setting_of_variable(variable)
        if setting is not None:
            sources[setting] = (2, f"environment variable {variable}")
            values[setting] = _parse(setting, raw, sources[setting][1])
    for name, raw in flags.items():
        if name not in SETTING_NAMES:
            raise SettingsInvalid(f"unknown setting {name!r}")
        sources[name] = (3, f"flag {flag_of(name)}")
        values[name] = _parse(name, raw, sources[name][1])
    try:
        return ServerSettings(**values)
    except SettingsInvalid as error:
        raise _with_source(error, sources) from None


def _with_source(error: SettingsInvalid, sources: Mapping[str, tuple[int, str]]) -> SettingsInvalid:
    """`error` blaming the setting given with the highest precedence (the first it names
    on a tie), saying where that value came from."""
    if not error.blame:
        return error
    name = max(error.blame, key=lambda candidate: sources.get(candidate, (0, ""))[0])
    source = sources.get(name, (0, "the default"))[1]
    return SettingsInvalid(f"setting {name} (from {source}): {error.blame[name]}", error.blame)


def _setting_of_variable(variable: str) -> str | None:
    """The setting `variable` sets (RAFTKV_LISTEN_CLIENT: listen_client), or None."""
    if not variable.startswith(ENV_PREFIX) or variable in _OTHER_ENV:
        return None
    name = variable[len(ENV_PREFIX) :].lower()
    return name if name in SETTING_NAMES else None


def environment_warnings(environ: Mapping[str, str] | None = None) -> list[str]:
    """One line for each RAFTKV_* variable that sets nothing but is a near-miss of a setting
    name (a typo that would otherwise be ignored silently)."""
    environ = os.environ if environ is None else environ
    warnings = []
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable in _OTHER_ENV:
            continue
        if _setting_of_variable(variable) is not None:
            continue
        name = variable[len(ENV_PREFIX) :].lower()
        close = difflib.get_close_matches(name, SETTING_NAMES, n=1, cutoff=_NEAR_MISS_CUTOFF)
        if close:
            warnings.append(
                f"ignoring environment variable {variable}: not a setting; did you mean "
                f"{ENV_PREFIX}{close[0].upper()}?"
            )
    return warnings


def _parse(name: str, raw: object, source: str) -> object:
    parse: Callable[[object], object] = _field(name).metadata["parse"]
    try:
        return parse(raw)
    except (ValueError, TypeError) as error:
        raise SettingsInvalid(f"setting {name} (from {source}): {error}") from error


def _read_file(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise SettingsInvalid(f"cannot read the config file {path}: {error}") from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        # tomllib decodes the file as UTF-8 itself: a binary file fails before parsing.
        raise SettingsInvalid(f"the config file {path} is not valid TOML: {error}") from error
    unknown = sorted(set(document) - set(SETTING_NAMES))
    if unknown:
        raise SettingsInvalid(f"unknown setting(s) in {path}: {', '.join(unknown)}")
    return document


def render_settings(settings: ServerSettings) -> str:
    """The settings as a TOML document (what `raftkv config show` prints), each with its
    description; `load_settings(config_file=...)` reads it back to the same settings."""
    lines = []
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        lines.append(f"# {item.metadata['doc']}")
        if value is None:
            lines.append(f'# {item.name} = ""')
            continue
        lines.append(f"{item.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return '"' + format_cluster(value) + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
