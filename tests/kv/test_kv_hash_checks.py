"""Hash checks (`raftkv.kv.hash_checks`): the hash, the verdict on a check's reports, and
how the state machine applies checks, reports and alarm clearings."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from kv_helpers import apply_in_batches, log_command, random_workload

from raftkv.kv import (
    ClearCorruptAlarm,
    Compact,
    HashCheck,
    HashCheckResponse,
    HashReport,
    KvCommand,
    KvStateMachine,
    Put,
    encode_command,
)
from raftkv.kv.errors import InvalidRequest, LimitExceeded
from raftkv.kv.hash_checks import (
    MAX_CHECK_MEMBERS,
    hash_items,
    hash_state,
    hash_state_and_data,
    judge,
)
from raftkv.kv.layout import (
    HASH_CHECK_KEY,
    MVCC_META_KEY,
    SESSIONS_META_KEY,
    CorruptAlarm,
    member_key,
    revision_key,
    session_age_key,
    session_key,
)
from raftkv.raft.storage.base import AppBatch
from raftkv.raft.storage.memory import MemoryAppData
from raftkv.raft.storage.rocks import RocksStorage

A, B, C, D = (bytes([byte]) * 32 for byte in b"abcd")


def machine() -> KvStateMachine:
    return KvStateMachine(MemoryAppData())


def framed(items: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(
        len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value
        for key, value in items
    )


# -- the hash ---------------------------------------------------------------------------------


def test_the_hash_frames_every_key_and_value_so_no_two_item_lists_collide() -> None:
    items = [(b"k" * 70_000, b"v" * 100_000), (b"a", b""), (b"", b"b")]
    # Sliced updates give the hash of the whole framed stream.
    assert hash_items(items) == hashlib.sha256(framed(items)).digest()
    assert hash_items([(b"ab", b"c")]) != hash_items([(b"a", b"bc")])
    assert hash_items([(b"a", b"b"), (b"c", b"d")]) != hash_items([(b"c", b"d"), (b"a", b"b")])
    assert hash_items([]) == hashlib.sha256(b"").digest()


def test_the_state_hash_leaves_out_the_checks_own_record() -> None:
    items = [(b"h\x01", b"x"), (HASH_CHECK_KEY, b"record"), (b"k\x01", b"y")]
    assert hash_state(items) == hash_items([items[0], items[2]])


def test_the_data_hash_leaves_out_what_each_cluster_writes_for_itself() -> None:
    # A restored member publishes its own client URL: the state hash changes, the hash of
    # the user's data does not (issue 14: "restored hash equals the source's").
    user = [(b"h\x01", b"x"), (b"k\x01", b"y"), (b"l" + bytes(8), b"lease")]
    user.append((MVCC_META_KEY, b"revision"))
    own = [(member_key(1), b"http://source:8080"), (HASH_CHECK_KEY, b"check")]
    own += [(SESSIONS_META_KEY, b"s"), (session_key("c"), b"r"), (session_age_key(3, "c"), b"")]
    items = sorted(user + own)
    state, data = hash_state_and_data(items)
    assert state == hash_state(items)
    assert data == hash_items(sorted(user))
    moved = sorted([*user, (member_key(1), b"http://restored:9080")])
    assert hash_state_and_data(moved)[1] == data
    assert hash_state_and_data(moved)[0] != state


def test_the_hashes_leave_out_the_revision_log_at_or_below_the_compacted_revision() -> None:
    """This build's compaction at C keeps C's revision log entry (for watches from C); an
    older raftkv's dropped it, and one that installed a snapshot of this one's leaves that
    entry below its own later compactions. Members of both versions hash alike."""
    newer, older = machine(), machine()
    commands = [log_command(index, Put(b"k", b"%d" % index)) for index in range(1, 6)]
    for kv in (newer, older):
        kv.apply(commands, 5, 1)  # revisions 2..6
        kv.apply([log_command(6, Compact(4))], 6, 1)
    kept = revision_key(4)
    assert newer.app.get(kept) is not None
    older.app.commit(AppBatch(deletes=[kept]), 6, 1)  # as an older raftkv leaves it
    assert newer.state_hash() == older.state_hash()
    assert hash_state_and_data(newer.app.scan()) == hash_state_and_data(older.app.scan())
    # A stale entry below C is left out too; the log above C is hashed.
    stale = sorted([*newer.app.scan(), (revision_key(2), b"\x90")])
    assert hash_state(stale) == hash_state(newer.app.scan())
    changed = [(key, b"\x90" if key == revision_key(5) else value) for key, value in stale]
    assert hash_state(changed) != hash_state(newer.app.scan())


def test_a_damaged_mvcc_meta_record_changes_the_state_hash_rather_than_failing_it() -> None:
    kv = machine()
    kv.apply([log_command(1, Put(b"k", b"v")), log_command(2, Compact(2))], 2, 1)
    items = list(kv.app.scan())
    damaged = [(key, b"\xc1" if key == MVCC_META_KEY else value) for key, value in items]
    assert hash_state(damaged) != hash_state(items)


def test_state_hash_is_the_hash_members_compare() -> None:
    kv = machine()
    apply_in_batches(kv, random_workload(1, 100), 7)
    assert kv.state_hash() == hash_state(kv.app.scan()).hex()


# -- the verdict ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "reports", "majority", "corrupt", "reason"),
    [
        # Everyone agrees, or the one who disagrees is outvoted.
        ([1, 2, 3], [(1, A), (2, A), (3, A)], A, (), "minority"),
        ([1, 2, 3], [(1, A), (2, B), (3, A)], A, (2,), "minority"),
        ([1, 2, 3], [(1, B), (2, A), (3, A)], A, (1,), "minority"),
        # A majority decides at once; the missing member is no evidence.
        ([1, 2, 3], [(1, A), (3, A)], A, (), "minority"),
        # Undecided: the third report decides.
        ([1, 2, 3], [(1, A), (2, B)], b"", (), "minority"),
        # No hash can reach a majority any more.
        ([1, 2, 3], [(1, A), (2, B), (3, C)], b"", (1, 2, 3), "no_majority"),
        ([1, 2], [(1, A), (2, B)], b"", (1, 2), "no_majority"),
        ([1, 2, 3, 4, 5], [(1, A), (2, B), (3, C), (4, D)], b"", (1, 2, 3, 4), "no_majority"),
        # Four members: a majority is three.
        ([1, 2, 3, 4], [(1, A), (2, A), (3, B)], b"", (), "minority"),
        ([1, 2, 3, 4], [(1, A), (2, A), (3, B), (4, A)], A, (3,), "minority"),
        ([1, 2, 3, 4], [(1, A), (2, A), (3, B), (4, B)], b"", (1, 2, 3, 4), "no_majority"),
        # One member: its own report is the majority.
        ([7], [(7, A)], A, (), "minority"),
    ],
)
def test_judge(
    members: list[int],
    reports: list[tuple[int, bytes]],
    majority: bytes,
    corrupt: tuple[int, ...],
    reason: str,
) -> None:
    verdict = judge(members, reports)
    assert (verdict.majority, verdict.corrupt) == (majority, corrupt)
    if corrupt:
        assert verdict.reason == reason


# -- applying checks --------------------------------------------------------------------------


def apply_one(kv: KvStateMachine, index: int, request: object) -> object:
    command = log_command(index, request)  # type: ignore[arg-type]
    return kv.apply([command], index, 1)[0]


def test_a_check_hashes_the_state_as_of_its_entry_even_inside_a_batch() -> None:
    kv, reference = machine(), machine()
    before = [log_command(1, Put(b"a", b"1")), log_command(2, Put(b"b", b"2"))]
    check = log_command(3, HashCheck([1, 2, 3]))
    after = [log_command(4, Put(b"a", b"changed")), log_command(5, Compact(2))]
    results = kv.apply([*before, check, *after], 5, 1)
    assert isinstance(results[2], HashCheckResponse)
    assert kv.applied_index() == 5
    pending = kv.take_pending_hash()
    assert pending is not None and kv.take_pending_hash() is None
    assert (pending.check_index, pending.members, pending.view.applied) == (3, (1, 2, 3), (3, 1))
    # What a replica holds after applying exactly entries 1..3, one per call.
    for command in [*before, check]:
        reference.apply([command], command.index, 1)
    assert hash_state(pending.view.scan()).hex() == reference.state_hash()
    assert hash_state(pending.view.scan()).hex() != kv.state_hash()
    pending.view.close()


def test_the_checked_state_does_not_depend_on_how_entries_were_batched() -> None:
    commands = random_workload(5, 60)
    commands.insert(40, encode_command(KvCommand(HashCheck([1, 2]))))
    hashes = set()
    for batch_size in (1, 7, 100):
        kv = machine()
        apply_in_batches(kv, commands, batch_size)
        pending = kv.take_pending_hash()
        assert pending is not None and pending.check_index == 41
        hashes.add((hash_state(pending.view.scan()), kv.state_hash()))
    assert len(hashes) == 1


def test_on_rocksdb_the_checked_state_is_a_checkpoint_hashed_like_memory(tmp_path: Path) -> None:
    commands = random_workload(3, 200)
    commands.insert(150, encode_command(KvCommand(HashCheck([1, 2, 3]))))
    in_memory = machine()
    apply_in_batches(in_memory, commands, 7)
    expected = in_memory.take_pending_hash()
    assert expected is not None
    storage = RocksStorage(tmp_path / "rocks")
    try:
        on_disk = KvStateMachine(storage.app_data())
        apply_in_batches(on_disk, commands, 64)
        pending = on_disk.take_pending_hash()
        assert pending is not None and pending.view.applied == (151, 1)
        assert hash_state(pending.view.scan()) == hash_state(expected.view.scan())
        pending.view.close()
        assert not any((tmp_path / "rocks.checkpoints").iterdir())
    finally:
        storage.close()


def test_an_unclaimed_frozen_state_is_closed_when_the_next_check_replaces_it() -> None:
    kv = machine()
    apply_one(kv, 1, HashCheck([1]))
    apply_one(kv, 2, HashCheck([1]))
    pending = kv.take_pending_hash()
    assert pending is not None and pending.check_index == 2


def test_a_minority_report_raises_an_alarm_naming_that_member_on_every_replica() -> None:
    replicas = [machine(), machine(), machine()]
    entries = [
        HashCheck([1, 2, 3]),
        HashReport(1, 1, A),
        HashReport(1, 3, B),  # undecided after two different hashes
        HashReport(1, 2, A),  # now A has a majority: 3 is CORRUPT
        HashReport(1, 3, A),  # a repeat is ignored
        HashReport(1, 9, A),  # not a member of the check
    ]
    for kv in replicas:
        for index, request in enumerate(entries, start=1):
            assert isinstance(apply_one(kv, index, request), HashCheckResponse)
        assert kv.corrupt_alarms() == [CorruptAlarm(3, 1, "minority")]
        assert kv.is_corrupt(3) and not kv.is_corrupt(1)
        assert kv.corrupt_alarms_raised == 1
        record = kv.hash_check_record()
        assert record.majority == A and record.reports == [(1, A), (3, B), (2, A)]
    assert len({kv.state_hash() for kv in replicas}) == 1


def test_reports_for_a_check_that_a_newer_one_replaced_are_ignored() -> None:
    kv = machine()
    apply_one(kv, 1, HashCheck([1, 2, 3]))
    apply_one(kv, 2, HashReport(1, 1, A))
    apply_one(kv, 3, HashCheck([1, 2, 3]))
    apply_one(kv, 4, HashReport(1, 2, B))
    apply_one(kv, 5, HashReport(1, 3, B))
    record = kv.hash_check_record()
    assert (record.check_index, record.reports, kv.corrupt_alarms()) == (3, [], [])


def test_no_majority_names_every_member_that_reported() -> None:
    kv = machine()
    for index, request in enumerate(
        [HashCheck([1, 2, 3]), HashReport(1, 1, A), HashReport(1, 2, B), HashReport(1, 3, C)],
        start=1,
    ):
        apply_one(kv, index, request)
    assert [alarm.member_id for alarm in kv.corrupt_alarms()] == [1, 2, 3]
    assert {alarm.reason for alarm in kv.corrupt_alarms()} == {"no_majority"}


def test_alarms_survive_a_restart_and_a_snapshot_and_end_when_cleared() -> None:
    app = MemoryAppData()
    kv = KvStateMachine(app)
    for index, request in enumerate(
        [HashCheck([1, 2, 3]), HashReport(1, 1, A), HashReport(1, 2, B), HashReport(1, 3, A)],
        start=1,
    ):
        apply_one(kv, index, request)
    assert KvStateMachine(app).corrupt_alarms() == [CorruptAlarm(2, 1, "minority")]
    installed = machine()
    installed.restore(kv.snapshot(), 4, 1)
    assert installed.corrupt_alarms() == kv.corrupt_alarms()
    apply_one(kv, 5, ClearCorruptAlarm(2))
    apply_one(kv, 6, ClearCorruptAlarm(2))  # nothing to clear: a no-op
    assert kv.corrupt_alarms() == [] and not kv.is_corrupt(2)


def test_a_snapshot_holding_a_check_record_is_a_valid_snapshot() -> None:
    """A peer's snapshot is validated item by item before it is stored: the checks' own
    record must pass, or no member could catch up once a check had run."""
    kv = machine()
    for index, request in enumerate([HashCheck([1, 2, 3]), HashReport(1, 2, B)], start=1):
        apply_one(kv, index, request)
    snapshot = kv.snapshot()
    kv.validate_snapshot(snapshot)
    installed = machine()
    installed.restore(snapshot, 2, 1)
    assert installed.hash_check_record() == kv.hash_check_record()


def test_forgetting_checks_keeps_the_state_hash() -> None:
    kv = machine()
    apply_one(kv, 1, Put(b"k", b"v"))
    for index, request in enumerate(
        [HashCheck([1, 2]), HashReport(2, 1, A), HashReport(2, 2, B)], start=2
    ):
        apply_one(kv, index, request)
    before = kv.state_hash()
    assert len(kv.corrupt_alarms()) == 2
    kv.forget_checks_and_alarms()
    assert kv.corrupt_alarms() == [] and kv.hash_check_record().check_index == 0
    assert kv.state_hash() == before and kv.applied_index() == 4
    assert kv.app.get(HASH_CHECK_KEY) is None


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (HashCheck([]), InvalidRequest),
        (HashCheck([1, 1]), InvalidRequest),
        (HashCheck([0, 1]), InvalidRequest),
        (HashCheck(list(range(1, MAX_CHECK_MEMBERS + 2))), LimitExceeded),
        (HashReport(1, 1, b"short"), InvalidRequest),
        (HashReport(0, 1, A), InvalidRequest),
        (HashReport(1, 0, A), InvalidRequest),
        (ClearCorruptAlarm(0), InvalidRequest),
    ],
)
def test_a_malformed_check_request_is_refused_and_changes_nothing(
    request_: object, error: type[Exception]
) -> None:
    kv = machine()
    apply_one(kv, 1, HashCheck([1, 2, 3]))
    assert kv.take_pending_hash() is not None
    before = (kv.state_hash(), kv.hash_check_record())
    result = apply_one(kv, 2, request_)
    assert type(result) is error
    assert (kv.state_hash(), kv.hash_check_record()) == before
    assert kv.take_pending_hash() is None
