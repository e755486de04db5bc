"""NOSPACE alarms in the state machine (`raftkv.kv.space_alarms`): raised and disarmed
through the log; while one is raised, every member refuses the writes that add data, alike
and without changing anything, and lets through what frees space."""

from __future__ import annotations

import msgspec
import pytest
from kv_helpers import log_command

from raftkv.kv import (
    Compact,
    DeleteRange,
    DisarmNoSpaceAlarm,
    KvStateMachine,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRevoke,
    NoSpaceAlarmResponse,
    Put,
    PutResponse,
    RaiseNoSpaceAlarm,
    Range,
    Txn,
    TxnCompare,
)
from raftkv.kv.commands import WriteRequest
from raftkv.kv.errors import InvalidRequest, LimitExceeded, NoSpace
from raftkv.kv.hash_checks import is_cluster_record
from raftkv.kv.layout import NOSPACE_ALARMS_KEY, NoSpaceAlarm
from raftkv.kv.space_alarms import MAX_ALARMS, adds_data
from raftkv.raft.driver.state_machine import Command, SnapshotInvalid
from raftkv.raft.storage.memory import MemoryAppData


class Applier:
    """A state machine fed one log entry at a time, with increasing indexes."""

    def __init__(self) -> None:
        self.machine = KvStateMachine(MemoryAppData())
        self.index = 0

    def apply(self, request: WriteRequest, client_id: str = "", sequence: int = 0) -> object:
        self.index += 1
        command = log_command(self.index, request, client_id, sequence)
        [result] = self.machine.apply([command], self.index, 1)
        return result


def test_only_writes_that_may_add_data_are_counted() -> None:
    put = Put(key=b"a", value=b"1")
    read = Range(key=b"a")
    assert adds_data(put)
    assert adds_data(LeaseGrant(1, 60))
    assert adds_data(Txn(success=[read], failure=[put]))  # either branch counts
    assert not adds_data(Txn(compares=[TxnCompare(b"a", "version", "=", 0)], success=[read]))
    assert not adds_data(Txn(success=[DeleteRange(key=b"a")]))
    for frees in (DeleteRange(key=b"a"), Compact(revision=1), LeaseRevoke(1), LeaseKeepAlive(1)):
        assert not adds_data(frees)


def test_while_an_alarm_is_raised_writes_that_add_data_are_refused_and_change_nothing() -> None:
    kv = Applier()
    kv.apply(LeaseGrant(5, 60))
    kv.apply(Put(key=b"a", value=b"1", lease=5))
    kv.apply(Put(key=b"b", value=b"2"))
    raised = kv.apply(RaiseNoSpaceAlarm(2, "quota"))
    assert isinstance(raised, NoSpaceAlarmResponse)
    assert raised.members == [2]
    before = kv.machine.state_hash()

    for refused in (
        Put(key=b"c", value=b"3"),
        Txn(compares=[TxnCompare(b"a", "value", "=", b"no")], failure=[Put(key=b"d", value=b"")]),
        LeaseGrant(6, 60),
    ):
        result = kv.apply(refused)
        assert isinstance(result, NoSpace), refused
        assert result.code == "no_space"
        assert result.members == [2]
        assert "NOSPACE alarm of member 2" in str(result)
        assert "raftkv alarm disarm" in str(result)
    # Refusals change nothing (the alarm record and the applied index aside).
    assert kv.machine.state_hash() == before

    # What frees space still applies.
    assert not isinstance(kv.apply(DeleteRange(key=b"b")), NoSpace)
    assert not isinstance(kv.apply(LeaseKeepAlive(5)), NoSpace)
    assert not isinstance(kv.apply(Compact(revision=kv.machine.current_revision())), NoSpace)
    assert not isinstance(kv.apply(LeaseRevoke(5)), NoSpace)
    assert kv.machine.range(Range(b"\0", b"\0")).count == 0


def test_a_refused_exactly_once_write_is_not_remembered_so_its_retry_applies_once_disarmed() -> (
    None
):
    kv = Applier()
    kv.apply(RaiseNoSpaceAlarm(1, "disk_free"))
    assert isinstance(kv.apply(Put(key=b"k", value=b"v"), "client", 1), NoSpace)
    disarmed = kv.apply(DisarmNoSpaceAlarm(0))
    assert isinstance(disarmed, NoSpaceAlarmResponse)
    assert disarmed.members == []
    first = kv.apply(Put(key=b"k", value=b"v"), "client", 1)
    assert isinstance(first, PutResponse)
    # The retry of the same sequence returns the first result without applying again.
    assert kv.apply(Put(key=b"k", value=b"v"), "client", 1) == first
    assert kv.machine.range(Range(b"k")).kvs[0].version == 1


def test_one_alarm_per_member_kept_from_its_first_raise_and_disarmed_one_or_all() -> None:
    kv = Applier()
    kv.apply(RaiseNoSpaceAlarm(3, "quota"))
    kv.apply(RaiseNoSpaceAlarm(1, "disk_free"))
    kv.apply(RaiseNoSpaceAlarm(3, "disk_free"))  # a repeat: changes nothing
    assert kv.machine.nospace_alarms() == [
        NoSpaceAlarm(1, "disk_free", 2),
        NoSpaceAlarm(3, "quota", 1),
    ]
    kv.apply(DisarmNoSpaceAlarm(3))
    assert [alarm.member_id for alarm in kv.machine.nospace_alarms()] == [1]
    kv.apply(DisarmNoSpaceAlarm(7))  # not raised: nothing to do
    assert [alarm.member_id for alarm in kv.machine.nospace_alarms()] == [1]
    kv.apply(DisarmNoSpaceAlarm(0))
    assert kv.machine.nospace_alarms() == []
    # No alarm left: the record is gone, as on a store that never raised one.
    assert kv.machine.app.get(NOSPACE_ALARMS_KEY) is None
    assert isinstance(kv.apply(Put(key=b"a", value=b"")), PutResponse)


def test_the_alarms_are_bounded() -> None:
    kv = Applier()
    for member in range(1, MAX_ALARMS + 1):
        kv.apply(RaiseNoSpaceAlarm(member, "quota"))
    refused = kv.apply(RaiseNoSpaceAlarm(MAX_ALARMS + 1, "quota"))
    assert isinstance(refused, LimitExceeded)
    assert len(kv.machine.nospace_alarms()) == MAX_ALARMS


@pytest.mark.parametrize(
    "request_",
    [RaiseNoSpaceAlarm(0, "quota"), RaiseNoSpaceAlarm(1 << 63, "quota"), DisarmNoSpaceAlarm(-1)],
)
def test_absurd_member_ids_are_refused(request_: WriteRequest) -> None:
    kv = Applier()
    result = kv.apply(request_)
    assert isinstance(result, InvalidRequest)
    assert "member id" in str(result)
    assert kv.machine.nospace_alarms() == []


def test_an_unknown_reason_does_not_decode() -> None:
    kv = Applier()
    kv.index += 1
    data = msgspec.msgpack.encode(
        {"request": {"type": "raise_nospace_alarm", "member_id": 1, "reason": "bored"}}
    )
    [result] = kv.machine.apply([Command(index=kv.index, term=1, data=data)], kv.index, 1)
    assert isinstance(result, InvalidRequest)
    assert kv.machine.nospace_alarms() == []


def test_the_alarms_travel_in_snapshots_and_a_damaged_record_is_refused() -> None:
    kv = Applier()
    kv.apply(Put(key=b"a", value=b"1"))
    kv.apply(RaiseNoSpaceAlarm(2, "quota"))
    snapshot = kv.machine.snapshot()
    follower = KvStateMachine(MemoryAppData())
    follower.validate_snapshot(snapshot)
    follower.restore(snapshot, kv.index, 1)
    assert follower.nospace_alarms() == kv.machine.nospace_alarms()
    assert follower.state_hash() == kv.machine.state_hash()
    assert isinstance(
        follower.apply([log_command(kv.index + 1, Put(key=b"b", value=b""))], kv.index + 1, 1)[0],
        NoSpace,
    )

    bad = Applier()
    bad.machine.app.replace_all(iter([(NOSPACE_ALARMS_KEY, b"\xc1")]), 1, 1)
    with pytest.raises(SnapshotInvalid, match="nospace"):
        KvStateMachine(MemoryAppData()).validate_snapshot(bad.machine.snapshot())


def test_the_alarms_are_the_clusters_own_record_and_a_restore_into_a_new_cluster_drops_them() -> (
    None
):
    assert is_cluster_record(NOSPACE_ALARMS_KEY)
    kv = Applier()
    kv.apply(RaiseNoSpaceAlarm(2, "quota"))
    kv.machine.forget_checks_and_alarms()
    assert kv.machine.nospace_alarms() == []
    assert isinstance(kv.apply(Put(key=b"a", value=b"")), PutResponse)
