"""Hash checks: how the members of a cluster find out that their states diverged (etcd's
corruption check, `corrupt.go`), and the CORRUPT alarms they raise.

Theory of operation. Every member applies the same log, so at the same log index every
member's state must be byte-identical: the whole `AppData` space of the KV store (the MVCC
history down to the compacted revision, the latest index, the revision log, leases,
exactly-once sessions, member records, and this module's own record). A member whose state
differs applied something the others did not, or lost or damaged something: a forged or
buggy peer's append, a disk that flipped or dropped data, a bug. It is CORRUPT: what it
serves may be wrong, and no later entry repairs it.

A check runs through the log, so that every member hashes the same state at the same point:
1. a `HashCheck(members)` entry at log index I opens check I (ending the previous one);
   applying it, each member commits its state as of I and freezes it (`AppData.freeze`, a
   RocksDB checkpoint); its `CorruptChecker` hashes the frozen copy off the event loop
   (`hash_state`) and proposes `HashReport(I, its id, hash)`;
2. every member applies every report, in log order, and judges them alike (`judge`):
   - a hash reported by a majority of the check's `members` is the cluster's state; each
     member that reported another hash is CORRUPT ("minority");
   - if no hash can reach a majority any more, each member that reported is CORRUPT
     ("no_majority": the members cannot tell which state is right; an operator must);
   - a member that never reports (down, or past I through a snapshot) is no evidence
     either way; a report for an earlier check (another one opened since) is ignored;
3. the verdict is part of the replicated state (`HashCheckRecord.alarms`), so every member
   lists the same alarms, a restart keeps them and a snapshot carries them.

What is hashed, and why it is the same on healthy members whatever happened to each of
them: in raftkv, compaction is a log command (`Compact`) applied at the same index by
every member, so history is dropped at the same point everywhere, however long a member
was down; and a snapshot carries the whole space byte for byte, so a member that restored
one holds exactly what the sender held at that index, history included. Hence the whole
space is hashed, history too (as etcd's HashKV hashes down to the compacted revision),
except (`hash_state`):
- this module's own record: it is the checks' bookkeeping, not the data they protect, and
  a backup restored into a new cluster drops it, yet hashes like its source;
- the revision log at or below the compacted revision: the entry this version's compaction
  keeps for watches from the compacted revision (layout.py) is one a raftkv before it
  dropped, or left below a later compaction, so members of both versions would differ by
  it during a rolling upgrade. Left out, they hash alike; what it costs is that a damaged
  kept entry goes unnoticed (at worst a watch from the compacted revision fails).

An alarm stays until the member it names leaves the cluster (the leader's checker then
proposes `ClearCorruptAlarm`) or the state is restored from a backup into a new cluster
(`forget`). The remedy for a CORRUPT member is to remove it and join it again with a new
id and an empty data dir: its log holds what it should not, so no restart mends it.

Bounds: a check names at most MAX_CHECK_MEMBERS members; the record holds one check's
reports (one per member) and at most one alarm per member id named by a check.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, assert_never

import msgspec

from raftkv.kv.commands import ClearCorruptAlarm, HashCheck, HashCheckRequest, HashReport
from raftkv.kv.errors import InvalidRequest, LimitExceeded
from raftkv.kv.layout import (
    HASH_CHECK_KEY,
    MEMBER_PREFIX,
    MVCC_META_KEY,
    NOSPACE_ALARMS_KEY,
    REVISION_PREFIX,
    SESSION_AGE_PREFIX,
    SESSION_PREFIX,
    SESSIONS_META_KEY,
    CorruptAlarm,
    HashCheckRecord,
    MvccMeta,
    decode_integer,
    decode_record,
    encode_record,
)
from raftkv.kv.staging import StagedWrites
from raftkv.raft.storage.base import FrozenAppData

# Members one check may name (far above any sane cluster: Raft clusters have a few voters
# and some learners). Bounds the record's size.
MAX_CHECK_MEMBERS = 256
# A report's hash: a SHA-256 digest.
HASH_BYTES = 32
_MAX_MEMBER_ID = (1 << 63) - 1
# Items are hashed in slices of about this many bytes: one digest update per slice, which
# hashlib runs without the GIL (it releases it for updates over 2 KiB).
_SLICE_BYTES = 1 << 16

_NO_CHECKS = HashCheckRecord(check_index=0, members=[], reports=[], majority=b"", alarms=[])
_RECORD_DECODER = msgspec.msgpack.Decoder(HashCheckRecord)
_META_DECODER = msgspec.msgpack.Decoder(MvccMeta)
# `_compared` learns the compacted revision before it meets the revision log.
assert MVCC_META_KEY < REVISION_PREFIX

Reason = Literal["minority", "no_majority"]


class _ItemHasher:
    """SHA-256 over items, each as a 4-byte big-endian length and the bytes of its key,
    then of its value (so no two different sequences of items hash alike)."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._buffer = bytearray()

    def update(self, key: bytes, value: bytes) -> None:
        buffer = self._buffer
        buffer += len(key).to_bytes(4, "big")
        buffer += key
        buffer += len(value).to_bytes(4, "big")
        buffer += value
        if len(buffer) >= _SLICE_BYTES:
            self._digest.update(buffer)
            buffer.clear()

    def digest(self) -> bytes:
        self._digest.update(self._buffer)
        self._buffer.clear()
        return self._digest.digest()


def hash_items(items: Iterable[tuple[bytes, bytes]]) -> bytes:
    """SHA-256 over every item in order (see _ItemHasher). Pure and thread-safe: run it on
    a worker thread over a frozen copy."""
    hasher = _ItemHasher()
    for key, value in items:
        hasher.update(key, value)
    return hasher.digest()


def hash_state(items: Iterable[tuple[bytes, bytes]]) -> bytes:
    """`hash_items` over a store's items (its whole AppData space, in key order) but this
    module's record and the revision log at or below the compacted revision (see the
    module docstring): what members compare."""
    return hash_items(_compared(items))


def _compared(items: Iterable[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
    """`items` (in key order) less what `hash_state` leaves out."""
    compacted = 0
    for item in items:
        key = item[0]
        if key == HASH_CHECK_KEY:
            continue
        if key == MVCC_META_KEY:
            # A damaged record is hashed as it is, with the whole revision log: the member
            # differs from the others, which is what the checks are for (not a crash here).
            with contextlib.suppress(msgspec.DecodeError):
                compacted = _META_DECODER.decode(item[1]).compacted_revision
        elif key[:1] == REVISION_PREFIX and decode_integer(key[1:]) <= compacted:
            continue
        yield item


def is_cluster_record(key: bytes) -> bool:
    """Whether the stored `key` is the cluster's own bookkeeping rather than the user's
    data: a member's published client URL, the hash checks, the NOSPACE alarms, a client
    session."""
    return (
        key.startswith(MEMBER_PREFIX)
        or key in (HASH_CHECK_KEY, NOSPACE_ALARMS_KEY, SESSIONS_META_KEY)
        or key[:1] in (SESSION_PREFIX, SESSION_AGE_PREFIX)
    )


def hash_state_and_data(items: Iterable[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    """In one pass over a store's items: `hash_state`, and the hash of the user's data only
    (keys, their history, leases, the MVCC revision: what `hash_state` hashes but
    `is_cluster_record`'s).
    The state hash is what members compare; the data hash is what a backup restored into a
    new cluster keeps once its members serve and publish their own client URLs."""
    state, data = _ItemHasher(), _ItemHasher()
    for key, value in _compared(items):
        state.update(key, value)
        if not is_cluster_record(key):
            data.update(key, value)
    return state.digest(), data.digest()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the reports of one check say so far. `majority`: the hash a majority of the
    members reported (b"" if none has, or none can); `corrupt`: the members found CORRUPT,
    for `reason`."""

    majority: bytes
    corrupt: tuple[int, ...]
    reason: Reason


def judge(members: Sequence[int], reports: Sequence[tuple[int, bytes]]) -> Verdict:
    """The verdict on `reports` ((member id, hash), each member at most once, every one of
    `members`) of a check of `members` (see the module docstring). Pure: every member
    judges the same reports alike."""
    quorum = len(members) // 2 + 1
    counts = Counter(digest for _, digest in reports)
    best_hash, best = counts.most_common(1)[0] if counts else (b"", 0)
    if best >= quorum:
        minority = tuple(member for member, digest in reports if digest != best_hash)
        return Verdict(best_hash, minority, "minority")
    if best + len(members) - len(reports) < quorum:
        # Not even the reports still missing can give any hash a majority.
        return Verdict(b"", tuple(member for member, _ in reports), "no_majority")
    return Verdict(b"", (), "minority")


@dataclass(frozen=True, slots=True)
class PendingHash:
    """A member's state frozen at check `check_index` (the HashCheck entry's index), for
    its checker to hash and report; `members` are the check's. Close `view` when done."""

    check_index: int
    members: tuple[int, ...]
    view: FrozenAppData


class HashChecks:
    """The hash-check record of a store (see the module docstring): read once when the
    store opens, kept in memory, every change staged with the `apply` call's other writes
    (so it commits with them). Single-threaded, like the store."""

    def __init__(self, staged: StagedWrites) -> None:
        self.staged = staged
        data = staged.get(HASH_CHECK_KEY)
        # Invariant: what HASH_CHECK_KEY holds, staged writes included.
        self.record = (
            _NO_CHECKS if data is None else decode_record(_RECORD_DECODER, HASH_CHECK_KEY, data)
        )

    def alarms(self) -> list[CorruptAlarm]:
        return list(self.record.alarms)

    def is_corrupt(self, member_id: int) -> bool:
        return any(alarm.member_id == member_id for alarm in self.record.alarms)

    def open(self, check_index: int, request: HashCheck) -> None:
        """Start check `check_index` (validated by check_hash_request); the previous
        check's reports are dropped (a late report for it is ignored)."""
        self._write(
            msgspec.structs.replace(
                self.record,
                check_index=check_index,
                members=sorted(request.members),
                reports=[],
                majority=b"",
            )
        )

    def report(self, request: HashReport) -> list[CorruptAlarm]:
        """Record a member's hash for the current check and judge; the alarms this raised.
        Ignored (nothing changes) if it is for another check, from a member the check did
        not name, or a repeat."""
        record = self.record
        if (
            request.check_index != record.check_index
            or request.member_id not in record.members
            or any(member == request.member_id for member, _ in record.reports)
        ):
            return []
        reports = [*record.reports, (request.member_id, request.hash)]
        verdict = judge(record.members, reports)
        named = {alarm.member_id for alarm in record.alarms}
        raised = [
            CorruptAlarm(member, record.check_index, verdict.reason)
            for member in verdict.corrupt
            if member not in named
        ]
        alarms = sorted([*record.alarms, *raised], key=lambda alarm: alarm.member_id)
        self._write(
            msgspec.structs.replace(
                record, reports=reports, majority=verdict.majority, alarms=alarms
            )
        )
        return raised

    def clear(self, member_id: int) -> bool:
        """End the alarm naming `member_id`; whether there was one."""
        alarms = [alarm for alarm in self.record.alarms if alarm.member_id != member_id]
        if len(alarms) == len(self.record.alarms):
            return False
        self._write(msgspec.structs.replace(self.record, alarms=alarms))
        return True

    def forget(self) -> None:
        """Drop the record: no check, no alarm (a backup restored into a new cluster,
        whose member ids say nothing of the old one's)."""
        if self.record != _NO_CHECKS:
            self.staged.delete(HASH_CHECK_KEY)
            self.record = _NO_CHECKS

    def _write(self, record: HashCheckRecord) -> None:
        self.staged.put(HASH_CHECK_KEY, encode_record(record))
        self.record = record


def check_hash_request(request: HashCheckRequest) -> None:
    """Raise an InvalidRequest naming the first rule `request` breaks."""
    match request:
        case HashCheck():
            count = len(request.members)
            if count > MAX_CHECK_MEMBERS:
                raise LimitExceeded(
                    "hash check members", count, "MAX_CHECK_MEMBERS", MAX_CHECK_MEMBERS
                )
            if count == 0:
                raise InvalidRequest("a hash check names at least one member")
            if len(set(request.members)) != count:
                raise InvalidRequest("a hash check names a member twice")
            for member in request.members:
                check_member_id(member)
        case HashReport():
            check_member_id(request.member_id)
            if not 1 <= request.check_index <= _MAX_MEMBER_ID:
                raise InvalidRequest(f"check_index must be >= 1, got {request.check_index}")
            if len(request.hash) != HASH_BYTES:
                raise InvalidRequest(
                    f"a hash report carries {HASH_BYTES} bytes, got {len(request.hash)}"
                )
        case ClearCorruptAlarm():
            check_member_id(request.member_id)
        case _:
            assert_never(request)


def check_member_id(member_id: int) -> None:
    """InvalidRequest unless `member_id` is one a member can have (1..2**63-1)."""
    if not 1 <= member_id <= _MAX_MEMBER_ID:
        raise InvalidRequest(f"a member id is in 1..2**63-1, got {member_id}")
