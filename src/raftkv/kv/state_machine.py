"""`KvStateMachine`: the MVCC store behind Raft (the `StateMachine` protocol).

Each committed command is a msgpack `KvCommand`. Applying one:
1. decode it and check its exactly-once fields; a command that does not decode or breaks a
   rule fails with an InvalidRequest result;
2. with a client id: a retry of the client's last sequence returns the stored result without
   applying; an older sequence fails with StaleSequence; a sequence above 1 from a client
   with no session (forgotten, or never recorded) fails with SessionExpired;
3. execute the request on the `MvccStore`; a refused request fails with its KvError and
   changes nothing;
4. with a client id, remember the result (refused requests are not remembered: they changed
   nothing, so a retry cannot apply anything twice).
A failed command's result is the KvError instance (never raised: raising stops the node).
All commands of one `apply` call, and the applied index covering them, land in one
`AppData` commit, so after a crash the state machine resumes exactly at `applied_index()`.

Leases (`raftkv.kv.leases`): grants, keep-alives, checkpoints and revokes are commands like
the others; once one applies, this node's `lease_timers` (its own clock, outside the
replicated state) restart that lease's countdown. After each apply call `watch_hub.notify()`
wakes the watches (O(1): they read the new revisions themselves, later).

Hash checks (`raftkv.kv.hash_checks`): a `HashCheck` entry commits the state as of itself
(the commands before it in the same `apply` call included) and freezes it (a RocksDB
checkpoint) for this node's `CorruptChecker` to hash off the event loop
(`take_pending_hash`); reports and alarm clearings are commands like the others. The
CORRUPT alarms are replicated state (`corrupt_alarms`).

NOSPACE alarms (`raftkv.kv.space_alarms`): raised and disarmed by commands; while one is
raised, every write that adds data is refused at apply time with `NoSpace`, alike on every
member (`nospace_alarms`).

Users, roles and permissions (`raftkv.kv.auth_state`, `auth`): changed by commands; a
client's command stamped with the auth revision its permissions were checked at is refused
with `AuthRevisionChanged` if that revision is no longer the current one.

Reads (`range`, `current_revision`, `compacted_revision`, `oldest_watch_revision`,
`read_view`) see committed state: the driver calls everything on its event loop, never
during an `apply`. For a linearizable read the server reads after the node's `read_index`;
`read_view` gives a snapshot a worker thread can read while applies go on (KvService reads
long scans that way).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import assert_never

import msgspec
import zstandard

from raftkv.kv.auth_commands import AuthRequest
from raftkv.kv.auth_state import AuthState
from raftkv.kv.commands import (
    AuthChangeResponse,
    ClearCorruptAlarm,
    Compact,
    DeleteRange,
    DisarmNoSpaceAlarm,
    HashCheck,
    HashCheckRequest,
    HashCheckResponse,
    HashReport,
    KvCommand,
    LeaseCheckpoint,
    LeaseCheckpointResponse,
    LeaseExpire,
    LeaseGrant,
    LeaseGrantResponse,
    LeaseKeepAlive,
    LeaseKeepAliveResponse,
    LeaseRequest,
    LeaseRevoke,
    LeaseRevokeResponse,
    NoSpaceAlarmRequest,
    NoSpaceAlarmResponse,
    PublishMember,
    PublishMemberResponse,
    Put,
    RaiseNoSpaceAlarm,
    Range,
    RangeResponse,
    ResponseHeader,
    Txn,
    WriteRequest,
    WriteResponse,
    decode_command,
    decode_result,
    encode_result,
)
from raftkv.kv.errors import (
    AuthRevisionChanged,
    KvError,
    NoSpace,
    SessionExpired,
    StaleSequence,
)
from raftkv.kv.events import EventReader
from raftkv.kv.hash_checks import HashChecks, PendingHash
from raftkv.kv.layout import (
    AUTH_KEY,
    ESCAPE_TERMINATOR,
    FORMAT_VERSION,
    HASH_CHECK_KEY,
    HISTORY_PREFIX,
    INDEX_PREFIX,
    LEASE_KEYS_PREFIX,
    LEASE_PREFIX,
    MEMBER_PREFIX,
    MVCC_META_KEY,
    NOSPACE_ALARMS_KEY,
    REVISION_PREFIX,
    SESSION_AGE_PREFIX,
    SESSION_PREFIX,
    SESSIONS_META_KEY,
    AuthRecord,
    CorruptAlarm,
    HashCheckRecord,
    HistoryRecord,
    IndexRecord,
    LeaseRecord,
    MemberRecord,
    MvccMeta,
    NoSpaceAlarm,
    NoSpaceAlarmsRecord,
    SessionRecord,
    SessionsMeta,
    unescape,
)
from raftkv.kv.lease_timers import LeaseTimers
from raftkv.kv.members import MemberDirectory
from raftkv.kv.mvcc import MvccStore, MvccView
from raftkv.kv.sessions import SessionTable
from raftkv.kv.settings import KvSettings
from raftkv.kv.space_alarms import SpaceAlarms, adds_data
from raftkv.kv.validation import check_request, check_session
from raftkv.kv.watch import WatchHub, WatchSettings
from raftkv.raft.clock import Clock, SystemClock
from raftkv.raft.driver.state_machine import Command, SnapshotInvalid
from raftkv.raft.snapshot_chunks import (
    ChunkingPolicy,
    ChunksInvalid,
    chunk_items,
    container_pieces,
    read_container,
)
from raftkv.raft.storage.base import AppBatch, AppData, StorageCorrupt

# The version of the snapshot format below; a newer one is refused rather than misread.
# 1: msgpack _Snapshot; 2: the same, zstd-compressed (a zstd frame: the magic number tells
# them apart); 3: chunked (raftkv.raft.snapshot_chunks): _CHUNKED_MAGIC, then a container
# whose chunks are each a zstd-compressed msgpack _SnapshotChunk, a run of items cut by
# SNAPSHOT_CHUNKING. Versions 1 and 2 still restore.
#
# Why version 3: a follower that needs a snapshot usually holds most of it already. The
# items are cut where their keys say (content-defined), and each run is encoded on its own
# and deterministically, so runs of items two nodes agree on are byte-identical chunks
# with the same SHA-256, and the transport sends only the chunks the receiver lacks.
SNAPSHOT_FORMAT_VERSION = 3
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNKED_MAGIC = b"RAFTKVS3"
# Fast and a good ratio for keys and values alike; decompression speed barely depends on it.
# Part of the format's determinism: nodes share chunks only if they compress alike (the
# same level and zstd library version), which costs bytes when they differ, never
# correctness.
_ZSTD_LEVEL = 3
# Where snapshot chunks are cut. Like the level, changing it only costs sharing.
SNAPSHOT_CHUNKING = ChunkingPolicy()
# The largest decompressed snapshot accepted (a bound on what a hostile or damaged frame
# can make this node allocate).
MAX_SNAPSHOT_BYTES = 64 << 30
# The largest decompressed chunk accepted: a run of items stops growing at
# SNAPSHOT_CHUNKING.max_chunk_bytes plus one item, and an item (a key and its history
# record) is bounded far below this by the largest Raft entry a node accepts.
_MAX_CHUNK_BYTES = 128 << 20


class _Snapshot(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """Every item of the app space, in key order (versions 1 and 2)."""

    format_version: int
    items: list[tuple[bytes, bytes]]


class _SnapshotChunk(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """A run of items of the app space, in key order (version 3: one per chunk)."""

    format_version: int
    items: list[tuple[bytes, bytes]]


_SNAPSHOT_ENCODER = msgspec.msgpack.Encoder()
_SNAPSHOT_DECODER = msgspec.msgpack.Decoder(_Snapshot)
_CHUNK_DECODER = msgspec.msgpack.Decoder(_SnapshotChunk)


@dataclass(frozen=True, slots=True)
class FrozenSnapshot:
    """A state captured at Raft `index`/`term` (MVCC `revision`); `produce()` encodes it
    (the bytes `snapshot()` would have returned then), once, on any thread."""

    index: int
    term: int
    revision: int
    produce: Callable[[], bytes]


class KvStateMachine:
    """`clock`: where lease countdowns and watch progress intervals take their time (the
    node's clock; a ManualClock in tests)."""

    def __init__(
        self,
        app: AppData,
        settings: KvSettings | None = None,
        *,
        clock: Clock | None = None,
        watch_settings: WatchSettings | None = None,
    ) -> None:
        self.app = app
        self.settings = settings if settings is not None else KvSettings()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.lease_timers = LeaseTimers(self.clock.now)
        # Alarms raised by reports this node applied, since it started (for metrics).
        self.corrupt_alarms_raised = 0
        # The state frozen at the last HashCheck applied, until the checker takes it.
        self._pending_hash: PendingHash | None = None
        self._open()
        self.watch_hub = WatchHub(
            EventReader(app),
            self.current_revision,
            self.compacted_revision,
            self.oldest_watch_revision,
            settings=watch_settings,
            clock=self.clock,
        )

    def _open(self) -> None:
        """(Re)read the store's meta records and the leases (O(leases)), and start every
        lease's countdown from its stored remaining time. Each record's owner below reads
        its record once and keeps it in memory; all of them stage into the store's one
        `StagedWrites`, so whatever one `apply` call changes commits together."""
        store = MvccStore(self.app, self.settings)
        self._store = store
        self._sessions = SessionTable(store.staged, self.settings.max_exactly_once_clients)
        self._members = MemberDirectory(store.staged)
        self._hash_checks = HashChecks(store.staged)
        self._space_alarms = SpaceAlarms(store.staged)
        self._auth = AuthState(store.staged)
        self.lease_timers.clear()
        for lease_id, record in store.leases.load():
            self.lease_timers.set(lease_id, record.remaining_ms, record.ttl, record.renewed_index)

    # -- StateMachine ---------------------------------------------------------------------

    def applied_index(self) -> int:
        return self.app.applied()[0]

    def apply(
        self, commands: Sequence[Command], applied_index: int, applied_term: int
    ) -> list[WriteResponse | KvError]:
        results = [self._apply_one(command) for command in commands]
        self._store.commit(applied_index, applied_term)
        self.watch_hub.notify()
        return results

    def snapshot(self) -> bytes:
        """Every item of the app space, in chunks (format version 3, O(data) in memory).
        On the event loop; the driver prefers `snapshot_later`."""
        return _encode_snapshot(self.app.scan())

    def snapshot_pieces(self) -> Iterator[bytes]:
        """The bytes of `snapshot()`, a piece at a time (O(one chunk) in memory): for a
        state too large to encode whole (the stored snapshot of a restored data dir)."""
        return _snapshot_pieces(self.app.scan())

    def snapshot_later(self) -> Callable[[], bytes]:
        """BackgroundSnapshots: freeze the app space now (a RocksDB checkpoint: hard
        links, milliseconds), encode it later on a worker thread."""
        return self.frozen_snapshot().produce

    def frozen_snapshot(self) -> FrozenSnapshot:
        """The state as of now, to encode later on any thread (see FrozenSnapshot)."""
        view = self.app.freeze()
        index, term = view.applied

        def produce() -> bytes:
            try:
                return _encode_snapshot(view.scan())
            finally:
                view.close()

        return FrozenSnapshot(index, term, self.current_revision(), produce)

    def restore(
        self,
        data: bytes | memoryview,
        index: int,
        term: int,
    ) -> None:
        """Replace the whole state with a `snapshot()` (any format version this build
        reads), in one atomic write with the applied index; SnapshotInvalid (before
        changing anything) if it is not one."""
        items = [item for run in _snapshot_runs(data) for item in run]
        if any(items[position][0] >= items[position + 1][0] for position in range(len(items) - 1)):
            raise SnapshotInvalid("KV snapshot items are not in strictly increasing key order")
        self._store.close()  # its background count reads the state being replaced
        self.app.replace_all(iter(items), index, term)
        self._open()
        self.watch_hub.reset()

    def restore_in_batches(
        self,
        data: bytes | memoryview,
        index: int,
        term: int,
        *,
        batch_bytes: int,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """`restore` for a state too large to hold in memory, into an EMPTY space (a backup
        restored into a new data dir): the items are validated as by `validate_snapshot`
        and written in batches of about `batch_bytes` of keys and values (plus the item
        that crosses it), one `AppData.commit` each, so at most one batch and one decoded
        chunk are in memory. Only the last commit records `index`/`term`; the ones before
        record (0, 0). Not atomic, and not synced: a failure or crash midway leaves part of
        the items, so the caller marks its data dir unfinished until a later synced write
        (raftkv.server.restore). `progress(items written)` follows each batch."""
        if self.app.applied() != (0, 0) or next(self.app.scan(), None) is not None:
            raise ValueError("restore_in_batches writes into an empty space only")
        self._store.close()  # its background count reads the state being replaced
        batch, size, written = AppBatch(), 0, 0
        for key, value in _valid_items(data):
            batch.put(key, value)
            size += len(key) + len(value)
            if size >= batch_bytes:
                self.app.commit(batch, 0, 0)
                written += len(batch.puts)
                if progress is not None:
                    progress(written)
                batch, size = AppBatch(), 0
        self.app.commit(batch, index, term)
        if progress is not None:
            progress(written + len(batch.puts))
        self._open()
        self.watch_hub.reset()

    def validate_snapshot(self, data: bytes | memoryview) -> None:
        """ValidatesSnapshots: SnapshotInvalid unless `restore(data)` would succeed and
        leave a store this build can open and apply to: every chunk decodes, the items are
        in strictly increasing key order, and each is a record of the layout
        (raftkv.kv.layout) that decodes. O(data), one chunk in memory at a time; reads
        nothing but `data` (it runs on a transport's worker thread)."""
        self.count_snapshot_items(data)

    def count_snapshot_items(self, data: bytes | memoryview) -> int:
        """`validate_snapshot`, and how many items `data` holds."""
        return sum(1 for _ in _valid_items(data))

    # -- reads ----------------------------------------------------------------------------

    def range(self, request: Range) -> RangeResponse:
        """Committed keys in the request's range. Raises a KvError if refused."""
        return self._store.range(request)

    def read_view(self, *, threaded: bool) -> MvccView:
        """The committed state as it is now, for reads served outside the log (see
        MvccStore.view); never during an `apply`."""
        return self._store.view(threaded=threaded)

    def live_keys(self) -> int | None:
        """The number of live keys, None until the store has counted them after it opened
        (raftkv.kv.key_count)."""
        return self._store.live_keys.total()

    def wait_for_live_key_count(self, timeout: float) -> bool:
        """Whether the store's count of its live keys is done within `timeout` seconds
        (blocking: for tests and benchmarks, which need the counted cost of a range)."""
        return self._store.live_keys.wait(timeout)

    def current_revision(self) -> int:
        return self._store.current_revision()

    def compacted_revision(self) -> int:
        return self._store.compacted_revision()

    def oldest_watch_revision(self) -> int:
        """See MvccStore.oldest_watch_revision."""
        return self._store.oldest_watch_revision()

    def member_client_urls(self) -> dict[int, str]:
        """Every published member client URL by member id (see MemberDirectory)."""
        return self._members.client_urls()

    def member_records(self) -> dict[int, MemberRecord]:
        """Everything each member published about itself, by member id."""
        return self._members.records()

    def state_hash(self) -> str:
        """See MvccStore.state_hash (a full scan)."""
        return self._store.state_hash()

    def corrupt_alarms(self) -> list[CorruptAlarm]:
        """The CORRUPT alarms, by member id (replicated: the same on every member)."""
        return self._hash_checks.alarms()

    def is_corrupt(self, member_id: int) -> bool:
        """Whether a CORRUPT alarm names `member_id`."""
        return self._hash_checks.is_corrupt(member_id)

    def hash_check_record(self) -> HashCheckRecord:
        """The last hash check, its reports and the alarms."""
        return self._hash_checks.record

    def take_pending_hash(self) -> PendingHash | None:
        """The state frozen at the last HashCheck applied, if not taken yet; the caller
        closes its view."""
        pending, self._pending_hash = self._pending_hash, None
        return pending

    def nospace_alarms(self) -> list[NoSpaceAlarm]:
        """The NOSPACE alarms, by member id (replicated: the same on every member)."""
        return list(self._space_alarms.alarms)

    @property
    def auth(self) -> AuthState:
        """Users, roles and permissions as applied (replicated; read-only to callers:
        every change is a command)."""
        return self._auth

    def forget_checks_and_alarms(self) -> None:
        """Drop every hash check and alarm, CORRUPT and NOSPACE (HashChecks.forget,
        SpaceAlarms.forget), committed at the current applied index: for a backup restored
        into a new cluster, on every founder alike."""
        self._hash_checks.forget()
        self._space_alarms.forget()
        self._store.commit(*self.app.applied())

    def lease(self, lease_id: int) -> LeaseRecord | None:
        return self._store.leases.get(lease_id)

    def lease_ids(self) -> list[int]:
        """Every live lease's id, in increasing order (O(leases))."""
        return [lease_id for lease_id, _ in self._store.leases.records()]

    def lease_keys(self, lease_id: int) -> list[bytes]:
        """The keys attached to the lease, in key order."""
        return [unescape(escaped) for escaped in self._store.leases.attached(lease_id)]

    # -- internals ------------------------------------------------------------------------

    def _apply_one(self, command: Command) -> WriteResponse | KvError:
        try:
            kv_command = decode_command(command.data)
            check_session(kv_command, self.settings)
            client_id, sequence = kv_command.client_id, kv_command.sequence
            if client_id:
                last = self._sessions.last(client_id)
                if last is not None and sequence == last.sequence:
                    return _stored_result(client_id, last.result)
                if last is not None and sequence < last.sequence:
                    raise StaleSequence(client_id, sequence, last.sequence)
                if last is None and sequence > 1:
                    raise SessionExpired(client_id, sequence)
            request = kv_command.request
            self._refuse_if_auth_moved(kv_command)
            if isinstance(request, (Put, DeleteRange, Txn, Compact)):  # MvccStore's own
                self._refuse_if_out_of_space(request)
                result: WriteResponse = self._store.execute(request)
            elif isinstance(request, PublishMember):
                check_request(request, self.settings)
                self._members.publish(request)
                result = PublishMemberResponse(ResponseHeader(self._store.current_revision()))
            elif isinstance(request, LeaseRequest):
                check_request(request, self.settings)
                self._refuse_if_out_of_space(request)
                result = self._apply_lease(request, command.index)
            elif isinstance(request, HashCheckRequest):
                check_request(request, self.settings)
                result = self._apply_hash_check(request, command)
            elif isinstance(request, NoSpaceAlarmRequest):
                check_request(request, self.settings)
                self._space_alarms.apply(request, command.index)
                result = NoSpaceAlarmResponse(
                    ResponseHeader(self._store.current_revision()), self._space_alarms.members()
                )
            elif isinstance(request, AuthRequest):
                check_request(request, self.settings)
                self._auth.apply(request)
                result = AuthChangeResponse(
                    ResponseHeader(self._store.current_revision()), self._auth.revision
                )
            else:
                assert_never(request)
        except KvError as error:
            return error
        if client_id:
            self._sessions.record(client_id, sequence, command.index, encode_result(result))
        return result

    def _refuse_if_auth_moved(self, command: KvCommand) -> None:
        """AuthRevisionChanged unless `command` was checked against the auth state in force
        (its stamp is the current one). Unstamped (0) commands pass only while auth was
        never used, or when they are the node's own bookkeeping, which its components
        propose directly: a client's command stamped 0 was checked by a member that had
        applied no auth change yet, and auth is in use now."""
        stamp, expected = command.auth_revision, self._auth.stamp
        if stamp != expected and (stamp != 0 or not isinstance(command.request, _NODE_OWN)):
            raise AuthRevisionChanged(stamp, expected)

    def _refuse_if_out_of_space(self, request: WriteRequest) -> None:
        """NoSpace if a NOSPACE alarm is raised and `request` adds data (space_alarms)."""
        if self._space_alarms.alarms and adds_data(request):
            raise NoSpace(self._space_alarms.members())

    def _apply_lease(self, request: LeaseRequest, index: int) -> WriteResponse:
        """Apply one lease command, then move this node's timer for the lease."""
        store, timers = self._store, self.lease_timers
        header = ResponseHeader(store.current_revision())
        match request:
            case LeaseGrant():
                record = store.leases.grant(request.id, request.ttl, index)
                timers.set(request.id, record.remaining_ms, record.ttl, index)
                return LeaseGrantResponse(header, request.id, record.ttl)
            case LeaseKeepAlive():
                record = store.leases.keep_alive(request.id, index)
                timers.set(request.id, record.remaining_ms, record.ttl, index)
                return LeaseKeepAliveResponse(header, request.id, record.ttl)
            case LeaseRevoke():
                revoked = store.revoke_lease(request.id)
                timers.remove(request.id)
                return revoked
            case LeaseExpire():
                current = store.leases.get(request.id)
                if current is None or current.renewed_index != request.renewed_index:
                    # Renewed (or re-granted) after the leader decided: not expired.
                    return LeaseRevokeResponse(header, revoked=False)
                revoked = store.revoke_lease(request.id)
                timers.remove(request.id)
                return revoked
            case LeaseCheckpoint():
                for lease in request.leases:
                    kept = store.leases.checkpoint(
                        lease.id, lease.remaining_ms, lease.renewed_index
                    )
                    if kept is not None:
                        timers.set(lease.id, kept.remaining_ms, kept.ttl, kept.renewed_index)
                return LeaseCheckpointResponse(header)
            case _:
                assert_never(request)

    def _apply_hash_check(self, request: HashCheckRequest, command: Command) -> HashCheckResponse:
        header = ResponseHeader(self._store.current_revision())
        match request:
            case HashCheck():
                self._hash_checks.open(command.index, request)
                # The state as of this entry: commit what this apply call staged so far
                # (an AppData commit at this index keeps applied_index() exact), freeze.
                self._store.commit(command.index, command.term)
                frozen = PendingHash(command.index, tuple(request.members), self.app.freeze())
                if self._pending_hash is not None:
                    self._pending_hash.view.close()  # never taken: superseded
                self._pending_hash = frozen
            case HashReport():
                self.corrupt_alarms_raised += len(self._hash_checks.report(request))
            case ClearCorruptAlarm():
                self._hash_checks.clear(request.member_id)
            case _:
                assert_never(request)
        return HashCheckResponse(header)


def _encode_snapshot(items: Iterator[tuple[bytes, bytes]]) -> bytes:
    """Version 3: the items cut by SNAPSHOT_CHUNKING, each run a compressed chunk."""
    return b"".join(_snapshot_pieces(items))


def _snapshot_pieces(items: Iterator[tuple[bytes, bytes]]) -> Iterator[bytes]:
    """_encode_snapshot's bytes, a chunk at a time."""
    compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
    chunks = (
        compressor.compress(_SNAPSHOT_ENCODER.encode(_SnapshotChunk(SNAPSHOT_FORMAT_VERSION, run)))
        for run in chunk_items(items, SNAPSHOT_CHUNKING)
    )
    return container_pieces(chunks, prefix=_CHUNKED_MAGIC)


def _valid_items(data: bytes | memoryview) -> Iterator[tuple[bytes, bytes]]:
    """The items of a snapshot, each checked as validate_snapshot says before it is
    yielded (SnapshotInvalid at the first that fails)."""
    previous: bytes | None = None
    for run in _snapshot_runs(data):
        for key, value in run:
            if previous is not None and key <= previous:
                raise SnapshotInvalid(
                    f"KV snapshot items are not in strictly increasing key order at {key[:64]!r}"
                )
            problem = _item_problem(key, value)
            if problem is not None:
                raise SnapshotInvalid(f"KV snapshot item {key[:64]!r}: {problem}")
            yield key, value
            previous = key


def _snapshot_runs(data: bytes | memoryview) -> Iterator[list[tuple[bytes, bytes]]]:
    """The items of a snapshot of any version this build reads, in their stored order: one
    run per chunk (version 3), or all of them at once (versions 1 and 2). `data` may be a
    view (of a backup file mapped into memory)."""
    if bytes(data[: len(_CHUNKED_MAGIC)]) == _CHUNKED_MAGIC:
        yield from _chunked_runs(data)
        return
    if bytes(data[: len(_ZSTD_MAGIC)]) == _ZSTD_MAGIC:
        data = _decompress(data, MAX_SNAPSHOT_BYTES, "KV snapshot")
    try:
        snapshot = _SNAPSHOT_DECODER.decode(data)
    except msgspec.DecodeError as error:
        raise SnapshotInvalid(f"KV snapshot does not decode: {error}") from error
    if snapshot.format_version not in (1, 2):
        raise SnapshotInvalid(
            f"KV snapshot format {snapshot.format_version}; this build reads 1 to "
            f"{SNAPSHOT_FORMAT_VERSION}"
        )
    yield snapshot.items


def _chunked_runs(data: bytes | memoryview) -> Iterator[list[tuple[bytes, bytes]]]:
    try:
        container = read_container(data, verify=True)
    except ChunksInvalid as error:
        raise SnapshotInvalid(f"KV snapshot: {error}") from error
    if container.prefix_bytes != len(_CHUNKED_MAGIC):
        raise SnapshotInvalid(
            f"KV snapshot has {container.prefix_bytes} bytes before its first chunk"
        )
    budget = MAX_SNAPSHOT_BYTES
    for position in range(len(container.chunks)):
        what = f"KV snapshot chunk {position}"
        raw = _decompress(container.chunk(data, position), min(budget, _MAX_CHUNK_BYTES), what)
        budget -= len(raw)
        try:
            chunk = _CHUNK_DECODER.decode(raw)
        except msgspec.DecodeError as error:
            raise SnapshotInvalid(f"{what} does not decode: {error}") from error
        if chunk.format_version != SNAPSHOT_FORMAT_VERSION:
            raise SnapshotInvalid(f"{what} has format {chunk.format_version}")
        yield chunk.items


# What validate_snapshot checks of each item: the record each key space holds (see the
# table in raftkv.kv.layout) decodes, and keys have the shape their space gives them.
_HISTORY_RECORD = msgspec.msgpack.Decoder(HistoryRecord)
_INDEX_RECORD = msgspec.msgpack.Decoder(IndexRecord)
_CHANGED_KEYS = msgspec.msgpack.Decoder(list[bytes])
_SESSION_RECORD = msgspec.msgpack.Decoder(SessionRecord)
_LEASE_RECORD = msgspec.msgpack.Decoder(LeaseRecord)
_MEMBER_RECORD = msgspec.msgpack.Decoder(MemberRecord)
_MVCC_META = msgspec.msgpack.Decoder(MvccMeta)
_SESSIONS_META = msgspec.msgpack.Decoder(SessionsMeta)
_HASH_CHECK_RECORD = msgspec.msgpack.Decoder(HashCheckRecord)
# What the node's own components propose without a stamp (KvStateMachine._refuse_if_auth_moved).
_NODE_OWN = (
    PublishMember,
    LeaseExpire,
    LeaseCheckpoint,
    HashCheck,
    HashReport,
    ClearCorruptAlarm,
    RaiseNoSpaceAlarm,
    DisarmNoSpaceAlarm,
)
_NOSPACE_ALARMS_RECORD = msgspec.msgpack.Decoder(NoSpaceAlarmsRecord)
_AUTH_RECORD = msgspec.msgpack.Decoder(AuthRecord)
_U64_BYTES = 8


def _item_problem(key: bytes, value: bytes) -> str | None:
    """Why (key, value) is not an item of this build's layout, or None if it is one."""
    space = key[:1]
    try:
        if space == HISTORY_PREFIX:
            if not key[:-_U64_BYTES].endswith(ESCAPE_TERMINATOR):
                return "a history key without an escaped key and a revision"
            _HISTORY_RECORD.decode(value)
        elif space == INDEX_PREFIX:
            if not key.endswith(ESCAPE_TERMINATOR):
                return "an index key without an escaped key"
            _INDEX_RECORD.decode(value)
        elif space == REVISION_PREFIX:
            if len(key) != 1 + _U64_BYTES:
                return "a revision key without a revision"
            _CHANGED_KEYS.decode(value)
        elif space == SESSION_PREFIX:
            key[1:].decode()
            decode_result(_SESSION_RECORD.decode(value).result)
        elif space == SESSION_AGE_PREFIX:
            if len(key) < 1 + _U64_BYTES or value:
                return "a session age key without an index, or with a value"
            key[1 + _U64_BYTES :].decode()
        elif space == LEASE_PREFIX:
            if len(key) != 1 + _U64_BYTES:
                return "a lease key without a lease id"
            _LEASE_RECORD.decode(value)
        elif space == LEASE_KEYS_PREFIX:
            if not key.endswith(ESCAPE_TERMINATOR) or len(key) < 1 + _U64_BYTES + 2 or value:
                return "a lease attachment without a lease id and an escaped key, or with a value"
        elif key == MVCC_META_KEY:
            meta = _MVCC_META.decode(value)
            if meta.format_version != FORMAT_VERSION:
                return f"layout version {meta.format_version}; this build reads {FORMAT_VERSION}"
            if not 0 <= meta.compacted_revision <= meta.revision:
                return f"compacted revision {meta.compacted_revision} of {meta.revision}"
        elif key == SESSIONS_META_KEY:
            _SESSIONS_META.decode(value)
        elif key == HASH_CHECK_KEY:
            _HASH_CHECK_RECORD.decode(value)
        elif key == NOSPACE_ALARMS_KEY:
            _NOSPACE_ALARMS_RECORD.decode(value)
        elif key == AUTH_KEY:
            _AUTH_RECORD.decode(value)
        elif key.startswith(MEMBER_PREFIX) and len(key) == len(MEMBER_PREFIX) + _U64_BYTES:
            _MEMBER_RECORD.decode(value)
        else:
            return "in no key space of the layout"
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        return str(error)
    return None


def _decompress(frame: bytes | memoryview, limit: int, what: str) -> bytes:
    """One zstd frame, refused before anything is allocated if it would decompress to
    more than `limit` bytes. (max_output_size alone is no bound: zstandard ignores it for
    a frame that declares its content size, and allocates what the frame declares.)"""
    try:
        declared = zstandard.frame_content_size(frame)
        if declared < 0:  # -1: the frame does not declare its size
            return zstandard.ZstdDecompressor().decompress(frame, max_output_size=limit)
        if declared > limit:
            raise SnapshotInvalid(f"{what} declares {declared} bytes, over the limit of {limit}")
        return zstandard.ZstdDecompressor().decompress(frame)
    except zstandard.ZstdError as error:
        raise SnapshotInvalid(f"{what} does not decompress: {error}") from error


def _stored_result(client_id: str, data: bytes) -> WriteResponse:
    try:
        return decode_result(data)
    except msgspec.DecodeError as error:
        raise StorageCorrupt(f"session of client {client_id!r}: {error}") from error
