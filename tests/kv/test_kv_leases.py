"""Leases in the KV state machine: grants, attachments, revokes, expiries, checkpoints, and
what survives a snapshot or a restart (countdowns on a ManualClock)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from kv_helpers import log_command

from raftkv.kv import (
    DeleteRange,
    KvError,
    KvSettings,
    KvStateMachine,
    LeaseCheckpoint,
    LeaseCheckpointResponse,
    LeaseExpire,
    LeaseGrant,
    LeaseGrantResponse,
    LeaseKeepAlive,
    LeaseKeepAliveResponse,
    LeaseRemaining,
    LeaseRevoke,
    LeaseRevokeResponse,
    MvccKeyValue,
    Put,
    PutResponse,
    Range,
    ResponseHeader,
    Txn,
    WriteRequest,
)
from raftkv.kv.errors import InvalidRequest, LeaseExists, LeaseNotFound, LimitExceeded
from raftkv.kv.layout import LeaseRecord, revision_key
from raftkv.kv.lease_timers import LeaseTimer
from raftkv.kv.validation import MAX_CHECKPOINT_LEASES
from raftkv.raft.clock import ManualClock
from raftkv.raft.storage.base import AppData
from raftkv.raft.storage.memory import MemoryAppData
from raftkv.raft.storage.rocks import RocksStorage

EVERY_KEY = Range(b"\0", b"\0")


class Log:
    """A state machine fed one log entry at a time, at consecutive indexes."""

    def __init__(
        self,
        settings: KvSettings | None = None,
        *,
        app: AppData | None = None,
        clock: ManualClock | None = None,
    ) -> None:
        self.clock = clock if clock is not None else ManualClock()
        self.machine = KvStateMachine(
            app if app is not None else MemoryAppData(), settings, clock=self.clock
        )
        self.index = self.machine.applied_index()

    def apply(self, request: WriteRequest, client_id: str = "", sequence: int = 0) -> object:
        """Apply one command as one entry; its result."""
        self.index += 1
        (result,) = self.machine.apply(
            [log_command(self.index, request, client_id, sequence)], self.index, 1
        )
        return result

    def ok(self, request: WriteRequest) -> object:
        result = self.apply(request)
        assert not isinstance(result, KvError), result
        return result

    def keys(self) -> dict[bytes, MvccKeyValue]:
        return {kv.key: kv for kv in self.machine.range(EVERY_KEY).kvs}

    def state(self) -> tuple[str, int, list[int]]:
        machine = self.machine
        return machine.state_hash(), machine.current_revision(), machine.lease_ids()


def changed_at(machine: KvStateMachine, revision: int) -> list[bytes] | None:
    """The revision log's entry: the user keys changed at `revision`."""
    data = machine.app.get(revision_key(revision))
    return None if data is None else msgspec.msgpack.decode(data, type=list[bytes])


# -- grants ---------------------------------------------------------------------------------


def test_a_grant_creates_the_lease_and_its_countdown_but_no_revision() -> None:
    log = Log()
    assert log.apply(LeaseGrant(5, 30)) == LeaseGrantResponse(ResponseHeader(1), 5, 30)
    assert log.machine.lease(5) == LeaseRecord(ttl=30, remaining_ms=30_000, renewed_index=1)
    assert log.machine.lease_ids() == [5]
    assert log.machine.lease_keys(5) == []
    assert log.machine.current_revision() == 1
    assert log.machine.lease_timers.get(5) == LeaseTimer(deadline=30.0, ttl=30, renewed_index=1)


def test_a_short_ttl_is_raised_to_min_lease_ttl() -> None:
    log = Log(KvSettings(min_lease_ttl_s=5))
    assert log.apply(LeaseGrant(1, 1)) == LeaseGrantResponse(ResponseHeader(1), 1, 5)
    assert log.machine.lease(1) == LeaseRecord(5, 5000, 1)
    assert log.machine.lease_timers.remaining_s(1) == 5.0
    assert log.apply(LeaseGrant(2, 6)) == LeaseGrantResponse(ResponseHeader(1), 2, 6)


def test_granting_a_taken_id_fails_with_lease_exists_and_changes_nothing() -> None:
    log = Log()
    log.ok(LeaseGrant(1, 10))
    log.clock.advance(4)
    before = log.state()
    result = log.apply(LeaseGrant(1, 50))
    assert isinstance(result, LeaseExists) and result.lease_id == 1
    assert log.state() == before
    assert log.machine.lease(1) == LeaseRecord(10, 10_000, 1)
    assert log.machine.lease_timers.get(1) == LeaseTimer(10.0, 10, 1)  # not restarted


def test_grants_beyond_max_leases_are_refused_until_one_goes() -> None:
    log = Log(KvSettings(max_leases=3))
    for lease_id in (1, 2, 3):
        log.ok(LeaseGrant(lease_id, 10))
    before = log.state()
    refused = log.apply(LeaseGrant(4, 10))
    assert isinstance(refused, LimitExceeded)
    assert (refused.setting, refused.limit) == ("max_leases", 3)
    assert log.state() == before
    assert 4 not in log.machine.lease_timers
    log.ok(LeaseRevoke(2))
    log.ok(LeaseGrant(4, 10))
    log.ok(LeaseExpire(1, renewed_index=1))
    log.ok(LeaseGrant(5, 10))
    assert log.machine.lease_ids() == [3, 4, 5]
    assert isinstance(log.apply(LeaseGrant(6, 10)), LimitExceeded)


def test_a_grant_and_a_put_in_one_apply_call_see_each_other() -> None:
    log = Log()
    results = log.machine.apply(
        [log_command(1, LeaseGrant(9, 10)), log_command(2, Put(b"k", b"v", lease=9))], 2, 1
    )
    assert results == [LeaseGrantResponse(ResponseHeader(1), 9, 10), PutResponse(ResponseHeader(2))]
    assert log.machine.lease_keys(9) == [b"k"]


# -- attaching keys -------------------------------------------------------------------------


def test_a_put_with_a_lease_attaches_the_key() -> None:
    log = Log()
    log.ok(LeaseGrant(1, 10))
    key = b"a\x00b\xff"  # escaped in the attachment: comes back as it was
    log.ok(Put(key, b"1", lease=1))
    log.ok(Put(b"plain", b"2"))
    assert log.machine.lease_keys(1) == [key]
    assert log.keys()[key].lease == 1
    assert log.keys()[b"plain"].lease == 0


def test_a_put_with_an_unknown_lease_fails_and_changes_nothing() -> None:
    log = Log()
    log.ok(Put(b"k", b"old"))
    before = log.state()
    result = log.apply(Put(b"k", b"new", lease=7))
    assert isinstance(result, LeaseNotFound) and result.lease_id == 7
    assert log.state() == before
    assert log.keys()[b"k"].value == b"old"
    assert log.machine.lease_keys(7) == []


def test_a_txn_whose_put_names_an_unknown_lease_fails_whole() -> None:
    log = Log()
    log.ok(LeaseGrant(1, 10))
    log.ok(Put(b"gone", b"x"))
    before = log.state()
    txn = Txn(
        success=[
            Put(b"a", b"1", lease=1),
            DeleteRange(b"gone"),
            Put(b"b", b"2", lease=99),
        ]
    )
    assert isinstance(log.apply(txn), LeaseNotFound)
    assert log.state() == before
    assert set(log.keys()) == {b"gone"}
    assert log.machine.lease_keys(1) == []


def test_a_failing_txn_leaves_the_attachments_as_they_were() -> None:
    log = Log()
    log.ok(LeaseGrant(1, 10))
    log.ok(LeaseGrant(2, 10))
    log.ok(Put(b"k", b"v", lease=1))
    before = log.state()
    txn = Txn(
        success=[
            Put(b"k", b"moved", lease=2),
            Put(b"new", b"x", lease=2),
            Range(b"k", revision=1000),  # a future revision: the whole txn fails
        ]
    )
    assert isinstance(log.apply(txn), KvError)
    assert log.state() == before
    assert (log.machine.lease_keys(1), log.machine.lease_keys(2)) == ([b"k"], [])


def test_a_put_with_another_lease_moves_the_key_and_lease_0_detaches_it() -> None:
    log = Log()
    log.ok(LeaseGrant(1, 10))
    log.ok(LeaseGrant(2, 10))
    log.ok(Put(b"k", b"1", lease=1))
    log.ok(Put(b"k", b"2", lease=2))
    assert (log.machine.lease_keys(1), log.machine.lease_keys(2)) == ([], [b"k"])
    log.ok(Put(b"k", b"3", lease=2))  # same lease again: still attached once
    assert log.machine.lease_keys(2) == [b"k"]
    log.ok(Put(b"k", b"4"))
    assert (log.machine.lease_keys(1), log.machine.lease_keys(2)) == ([], [])
    assert log.keys()[b"k"].lease == 0
    # Neither revoke touches the key any more.
    revision = log.machine.current_revision()
    assert log.ok(LeaseRevoke(1)) == LeaseRevokeResponse(ResponseHeader(revision), True, 0)
    assert log.ok(LeaseRevoke(2)) == LeaseRevokeResponse(ResponseHeader(revision), True, 0)
    assert log.keys()[b"k"].value == b"4"


def test_a_delete_detaches_the_key() -> None:
    log = Log()
    log.ok(LeaseGrant(1, 10))
    log.ok(Put(b"a", b"1", lease=1))
    log.ok(Put(b"b", b"1", lease=1))
    log.ok(Put(b"c", b"1", lease=1))
    log.ok(Put(b"d", b"1", lease=1))
    log.ok(DeleteRange(b"a"))
    assert log.machine.lease_keys(1) == [b"b", b"c", b"d"]
    log.ok(Txn(success=[DeleteRange(b"b", b"d")]))  # a range, inside a txn
    assert log.machine.lease_keys(1) == [b"d"]
    log.ok(Put(b"a", b"again"))  # recreated without a lease
    result = log.ok(LeaseRevoke(1))
    assert isinstance(result, LeaseRevokeResponse) and result.deleted == 1
    assert set(log.keys()) == {b"a"}


# -- revoke and expiry ----------------------------------------------------------------------


def test_a_revoke_deletes_every_attached_key_in_one_revision() -> None:
    log = Log()
    log.ok(LeaseGrant(1, 10))
    log.ok(Put(b"a", b"1", lease=1))
    log.ok(Put(b"b", b"2", lease=1))
    log.ok(Put(b"c", b"3", lease=1))
    log.ok(Put(b"other", b"4"))
    log.ok(Put(b"b", b"2b", lease=1))
    before = log.machine.current_revision()
    result = log.apply(LeaseRevoke(1))
    revision = before + 1
    assert result == LeaseRevokeResponse(ResponseHeader(revision), revoked=True, deleted=3)
    assert log.machine.current_revision() == revision
    assert changed_at(log.machine, revision) == [b"a", b"b", b"c"]
    assert set(log.keys()) == {b"other"}
    # The revision before still has them; the revoke's revision has none of them.
    past = log.machine.range(Range(b"\0", b"\0", revision=before)).kvs
    assert [(kv.key, kv.value) for kv in past] == [
        (b"a", b"1"),
        (b"b", b"2b"),
        (b"c", b"3"),
        (b"other", b"4"),
    ]
    assert [kv.key for kv in log.machine.range(Range(b"a", b"d", revision=revision)).kvs] == []
    # The lease, its attachments and its countdown are gone.
    assert log.machine.lease(1) is None
    assert log.machine.lease_keys(1) == []
    assert list(log.machine.app.scan(b"L", b"M")) == []
    assert 1 not in log.machine.lease_timers
    # A new key is version 1 again after the revoke's tombstone.
    log.ok(Put(b"a", b"new"))
    assert log.keys()[b"a"].version == 1


def test_revoking_a_lease_without_keys_creates_no_revision() -> None:
    log = Log()
    log.ok(Put(b"k", b"v"))
    log.ok(LeaseGrant(1, 10))
    assert log.apply(LeaseRevoke(1)) == LeaseRevokeResponse(ResponseHeader(2), True, 0)
    assert log.machine.current_revision() == 2
    assert changed_at(log.machine, 3) is None
    assert log.machine.lease_ids() == []


def test_revoking_or_renewing_an_unknown_lease_fails_and_changes_nothing() -> None:
    log = Log()
    log.ok(LeaseGrant(1, 10))
    log.ok(LeaseRevoke(1))
    before = log.state()
    for request in (LeaseRevoke(1), LeaseKeepAlive(1), LeaseRevoke(2)):
        result = log.apply(request)
        assert isinstance(result, LeaseNotFound), request
    assert log.state() == before
    assert len(log.machine.lease_timers) == 0


def test_an_expiry_applies_only_to_the_renewal_it_names() -> None:
    log = Log()
    log.ok(LeaseGrant(1, 10))  # index 1
    log.ok(Put(b"k", b"v", lease=1))  # index 2
    log.ok(LeaseKeepAlive(1))  # index 3: the leader decided on index 1 before seeing this
    before = log.state()
    stale = log.apply(LeaseExpire(1, renewed_index=1))
    assert stale == LeaseRevokeResponse(ResponseHeader(2), revoked=False, deleted=0)
    assert log.state() == before
    assert log.machine.lease_timers.get(1) == LeaseTimer(10.0, 10, 3)
    expired = log.apply(LeaseExpire(1, renewed_index=3))
    assert expired == LeaseRevokeResponse(ResponseHeader(3), revoked=True, deleted=1)
    assert log.keys() == {}
    assert log.machine.lease(1) is None and 1 not in log.machine.lease_timers
    # An expiry of a lease that is already gone is a no-op too.
    assert log.apply(LeaseExpire(1, renewed_index=3)) == LeaseRevokeResponse(
        ResponseHeader(3), revoked=False
    )


def test_an_expiry_of_an_earlier_grant_does_not_end_a_new_grant_of_the_same_id() -> None:
    log = Log()
    log.ok(LeaseGrant(1, 10))  # index 1
    log.ok(LeaseRevoke(1))
    log.ok(LeaseGrant(1, 10))  # index 3
    log.ok(Put(b"k", b"v", lease=1))
    result = log.apply(LeaseExpire(1, renewed_index=1))
    assert isinstance(result, LeaseRevokeResponse) and not result.revoked
    assert log.machine.lease(1) == LeaseRecord(10, 10_000, 3)
    assert set(log.keys()) == {b"k"}


def test_a_keep_alive_renews_to_the_full_ttl_as_of_its_index() -> None:
    log = Log()
    log.ok(LeaseGrant(1, 10))
    log.ok(LeaseCheckpoint([LeaseRemaining(1, 2000, 1)]))
    log.clock.advance(1.5)
    assert log.machine.lease_timers.remaining_s(1) == 0.5
    assert log.apply(LeaseKeepAlive(1)) == LeaseKeepAliveResponse(ResponseHeader(1), 1, 10)
    assert log.machine.lease(1) == LeaseRecord(10, 10_000, 3)
    assert log.machine.lease_timers.get(1) == LeaseTimer(11.5, 10, 3)


def test_a_retried_keep_alive_is_answered_without_renewing_again() -> None:
    log = Log()
    log.ok(LeaseGrant(1, 10))
    first = log.apply(LeaseKeepAlive(1), "client", 1)
    log.clock.advance(3)
    assert log.apply(LeaseKeepAlive(1), "client", 1) == first
    assert log.machine.lease(1) == LeaseRecord(10, 10_000, 2)
    assert log.machine.lease_timers.remaining_s(1) == 7.0


# -- checkpoints ----------------------------------------------------------------------------


def test_a_checkpoint_records_remaining_time_capped_at_the_ttl() -> None:
    log = Log()
    log.ok(LeaseGrant(1, 10))  # index 1
    log.ok(LeaseGrant(2, 4))  # index 2
    log.clock.advance(3)
    result = log.apply(
        LeaseCheckpoint(
            [
                LeaseRemaining(1, 7000, 1),
                LeaseRemaining(2, 60_000, 2),  # more than its TTL: capped at 4 s
                LeaseRemaining(3, 5000, 3),  # no such lease: skipped
            ]
        )
    )
    assert result == LeaseCheckpointResponse(ResponseHeader(1))
    assert log.machine.lease(1) == LeaseRecord(10, 7000, 1)
    assert log.machine.lease(2) == LeaseRecord(4, 4000, 2)
    assert log.machine.lease(3) is None and 3 not in log.machine.lease_timers
    # The countdowns restart from the recorded times, as of this apply.
    assert log.machine.lease_timers.get(1) == LeaseTimer(10.0, 10, 1)
    assert log.machine.lease_timers.get(2) == LeaseTimer(7.0, 4, 2)


def test_a_checkpoint_read_before_a_keep_alive_does_not_shorten_it() -> None:
    log = Log()
    log.ok(LeaseGrant(1, 10))  # index 1
    log.clock.advance(8)
    log.ok(LeaseKeepAlive(1))  # index 2, applied after the leader read 2 s left
    log.ok(LeaseCheckpoint([LeaseRemaining(1, 2000, 1)]))
    assert log.machine.lease(1) == LeaseRecord(10, 10_000, 2)
    assert log.machine.lease_timers.get(1) == LeaseTimer(18.0, 10, 2)


# -- snapshots and restarts -----------------------------------------------------------------


def leased_source(clock: ManualClock, app: AppData | None = None) -> Log:
    """Leases 1 (two keys, checkpointed at 6 s left), 2 (one key) and 3 (no keys); the
    lease table is full (max_leases=3)."""
    log = Log(KvSettings(max_leases=3), app=app, clock=clock)
    log.ok(LeaseGrant(1, 10))  # index 1
    log.ok(LeaseGrant(2, 20))  # index 2
    log.ok(LeaseGrant(3, 30))  # index 3
    log.ok(Put(b"a", b"1", lease=1))
    log.ok(Put(b"b", b"2", lease=1))
    log.ok(Put(b"c", b"3", lease=2))
    log.ok(Put(b"d", b"4"))
    clock.advance(4)
    log.ok(LeaseCheckpoint([LeaseRemaining(1, 6000, 1)]))
    return log


def test_leases_survive_a_snapshot_and_their_countdowns_restart_from_the_record() -> None:
    source = leased_source(ManualClock())
    target = Log(KvSettings(max_leases=3), clock=ManualClock(1000.0))
    target.ok(LeaseGrant(99, 5))
    target.ok(Put(b"z", b"target only", lease=99))
    target.machine.restore(source.machine.snapshot(), source.index, 1)
    target.index = source.index

    machine = target.machine
    assert machine.state_hash() == source.machine.state_hash()
    assert machine.lease_ids() == [1, 2, 3]
    for lease_id in (1, 2, 3):
        assert machine.lease(lease_id) == source.machine.lease(lease_id)
        assert machine.lease_keys(lease_id) == source.machine.lease_keys(lease_id)
    assert 99 not in machine.lease_timers
    assert (machine.lease_keys(99), set(target.keys())) == ([], {b"a", b"b", b"c", b"d"})
    # Countdowns from the stored remaining time, on the target's clock.
    assert machine.lease_timers.get(1) == LeaseTimer(1006.0, 10, 1)
    assert machine.lease_timers.get(2) == LeaseTimer(1020.0, 20, 2)
    assert machine.lease_timers.get(3) == LeaseTimer(1030.0, 30, 3)
    # The lease count came along: the limit holds, and the leases work as before.
    assert isinstance(target.apply(LeaseGrant(4, 10)), LimitExceeded)
    revoked = target.apply(LeaseExpire(1, renewed_index=1))
    assert isinstance(revoked, LeaseRevokeResponse) and revoked.deleted == 2
    assert set(target.keys()) == {b"c", b"d"}
    target.ok(LeaseGrant(4, 10))


def test_leases_survive_a_reopen_on_rocksdb(tmp_path: Path) -> None:
    path = tmp_path / "rocks"
    storage = RocksStorage(path)
    try:
        log = leased_source(ManualClock(), storage.app_data())
        expected = (log.state(), [log.machine.lease(i) for i in (1, 2, 3)], log.keys())
        assert log.machine.lease_timers.get(1) == LeaseTimer(10.0, 10, 1)
    finally:
        storage.close()

    storage = RocksStorage(path, create=False)
    try:
        reopened = Log(KvSettings(max_leases=3), app=storage.app_data(), clock=ManualClock(500.0))
        assert (
            reopened.state(),
            [reopened.machine.lease(i) for i in (1, 2, 3)],
            reopened.keys(),
        ) == expected
        assert reopened.machine.lease_keys(1) == [b"a", b"b"]
        timers = reopened.machine.lease_timers
        assert timers.get(1) == LeaseTimer(506.0, 10, 1)
        assert timers.get(2) == LeaseTimer(520.0, 20, 2)
        assert timers.get(3) == LeaseTimer(530.0, 30, 3)
        assert isinstance(reopened.apply(LeaseGrant(4, 10)), LimitExceeded)
        reopened.clock.advance(6)
        assert [lease_id for lease_id, _ in timers.expired(10)] == [1]
        result = reopened.apply(LeaseExpire(1, renewed_index=1))
        assert isinstance(result, LeaseRevokeResponse) and result.deleted == 2
    finally:
        storage.close()


# -- refused lease commands -----------------------------------------------------------------

MAX_TTL = 100
REFUSED: list[tuple[str, WriteRequest, type[KvError]]] = [
    ("grant id 0", LeaseGrant(0, 10), InvalidRequest),
    ("grant negative id", LeaseGrant(-1, 10), InvalidRequest),
    ("grant id beyond int64", LeaseGrant(1 << 63, 10), InvalidRequest),
    ("grant ttl 0", LeaseGrant(2, 0), InvalidRequest),
    ("grant negative ttl", LeaseGrant(2, -5), InvalidRequest),
    ("grant ttl beyond max_lease_ttl_s", LeaseGrant(2, MAX_TTL + 1), InvalidRequest),
    ("keep-alive id 0", LeaseKeepAlive(0), InvalidRequest),
    ("revoke id 0", LeaseRevoke(0), InvalidRequest),
    ("expire id 0", LeaseExpire(0, 1), InvalidRequest),
    ("expire negative index", LeaseExpire(1, -1), InvalidRequest),
    ("checkpoint id 0", LeaseCheckpoint([LeaseRemaining(0, 10, 1)]), InvalidRequest),
    ("checkpoint negative ms", LeaseCheckpoint([LeaseRemaining(1, -1, 1)]), InvalidRequest),
    (
        "checkpoint of too many leases",
        LeaseCheckpoint([LeaseRemaining(1, 10, 1)] * (MAX_CHECKPOINT_LEASES + 1)),
        LimitExceeded,
    ),
]


@pytest.mark.parametrize(
    ("request_", "error"),
    [(request, error) for _, request, error in REFUSED],
    ids=[name for name, _, _ in REFUSED],
)
def test_an_invalid_lease_command_is_refused_and_changes_nothing(
    request_: WriteRequest, error: type[KvError]
) -> None:
    log = Log(KvSettings(max_lease_ttl_s=MAX_TTL))
    log.ok(LeaseGrant(1, 10))
    log.ok(Put(b"k", b"v", lease=1))
    log.clock.advance(2)
    before = (log.state(), log.machine.lease(1), log.machine.lease_timers.get(1))
    assert type(log.apply(request_)) is error
    assert (log.state(), log.machine.lease(1), log.machine.lease_timers.get(1)) == before
    assert log.machine.lease_ids() == [1]


def test_the_largest_ttl_and_a_full_checkpoint_are_accepted() -> None:
    log = Log(KvSettings(max_lease_ttl_s=MAX_TTL))
    assert log.apply(LeaseGrant(1, MAX_TTL)) == LeaseGrantResponse(ResponseHeader(1), 1, MAX_TTL)
    full = LeaseCheckpoint([LeaseRemaining(1, 5000, 1)] * MAX_CHECKPOINT_LEASES)
    assert log.apply(full) == LeaseCheckpointResponse(ResponseHeader(1))
    assert log.machine.lease(1) == LeaseRecord(MAX_TTL, 5000, 1)
