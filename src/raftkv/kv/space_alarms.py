"""NOSPACE alarms: how a cluster goes read-only before a member's disk fills (etcd's space
quota and its NOSPACE alarm).

Theory of operation. A member whose disk fills fails its next write and stops (it cannot
append or apply what it acknowledged it would); if the others' disks are as full, the
cluster is gone. A quota stops that earlier and on purpose:
1. each member's `SpaceMonitor` (`raftkv.kv.space_monitor`) measures its own storage and
   its disk's free space; past its quota or below its free-space reserve it proposes
   `RaiseNoSpaceAlarm(itself, reason)`;
2. the alarm is replicated state (this module's record), so every member holds the same
   alarms at the same log index, a restart keeps them and a snapshot carries them;
3. while any NOSPACE alarm is raised, every member refuses, at apply time and alike, each
   write that adds data (`adds_data`: a put, a txn with a put in either branch, a lease
   grant) with `NoSpace`; the refusal changes nothing and is not remembered by
   exactly-once sessions. Deletes, compactions, lease revokes and keep-alives, the
   cluster's own bookkeeping, and reads go on: they are how an operator frees space;
4. an operator frees space, then disarms (`DisarmNoSpaceAlarm`); a member still out of
   space raises its alarm again at its monitor's next round. Nothing disarms by itself
   (as in etcd): a cluster flapping between writable and read-only near its quota would
   be worse than one that stays read-only until someone looks. The one exception: the
   leader's monitor ends the alarm of a member that left the cluster.

Why at apply time and not only before proposing: the refusal must be the same on every
member, so it depends only on replicated state (the alarms), never on one member's own
measurement. A member that has not applied the alarm yet may still propose a write that
adds data; the apply refuses it. A write proposed before the alarm and applied after it is
refused too, which the client sees as `NoSpace`: nothing applied.

Bounds: at most one alarm per member id; the record holds at most MAX_ALARMS alarms (more
members than any cluster has: a raise beyond it is refused).
"""

from __future__ import annotations

from typing import assert_never

import msgspec

from raftkv.kv.commands import (
    DisarmNoSpaceAlarm,
    LeaseGrant,
    NoSpaceAlarmRequest,
    Put,
    RaiseNoSpaceAlarm,
    Txn,
    WriteRequest,
)
from raftkv.kv.errors import LimitExceeded
from raftkv.kv.hash_checks import check_member_id
from raftkv.kv.layout import (
    NOSPACE_ALARMS_KEY,
    NoSpaceAlarm,
    NoSpaceAlarmsRecord,
    decode_record,
    encode_record,
)
from raftkv.kv.staging import StagedWrites

# Alarms the record may hold (one per member id).
MAX_ALARMS = 256
_RECORD_DECODER = msgspec.msgpack.Decoder(NoSpaceAlarmsRecord)


def adds_data(request: WriteRequest) -> bool:
    """Whether `request` may add data to the store: a put, a txn with a put in either
    branch (which branch runs is not known before it runs, as etcd counts it), a lease
    grant. These are what a NOSPACE alarm refuses."""
    match request:
        case Put() | LeaseGrant():
            return True
        case Txn():
            return any(isinstance(op, Put) for op in (*request.success, *request.failure))
        case _:
            return False


class SpaceAlarms:
    """The NOSPACE alarms of a store (see the module docstring): read once when the store
    opens, kept in memory, every change staged with the `apply` call's other writes (so it
    commits with them). Single-threaded, like the store."""

    def __init__(self, staged: StagedWrites) -> None:
        self.staged = staged
        data = staged.get(NOSPACE_ALARMS_KEY)
        # Invariant: what NOSPACE_ALARMS_KEY holds, staged writes included (no alarms: the
        # key is absent, so a store that never raised one holds what it held before this
        # record existed).
        self.alarms: list[NoSpaceAlarm] = (
            [] if data is None else decode_record(_RECORD_DECODER, NOSPACE_ALARMS_KEY, data).alarms
        )

    def members(self) -> list[int]:
        """The members whose alarm is raised, by id."""
        return [alarm.member_id for alarm in self.alarms]

    def apply(self, request: NoSpaceAlarmRequest, index: int) -> None:
        """Raise or disarm, as the entry at log `index` asks (validated by
        `check_space_alarm_request`)."""
        match request:
            case RaiseNoSpaceAlarm():
                if request.member_id in self.members():
                    return
                if len(self.alarms) >= MAX_ALARMS:
                    raise LimitExceeded(
                        "NOSPACE alarms", len(self.alarms) + 1, "MAX_ALARMS", MAX_ALARMS
                    )
                raised = NoSpaceAlarm(request.member_id, request.reason, index)
                self._write(sorted([*self.alarms, raised], key=lambda alarm: alarm.member_id))
            case DisarmNoSpaceAlarm():
                kept = [
                    alarm for alarm in self.alarms if request.member_id not in (0, alarm.member_id)
                ]
                if len(kept) != len(self.alarms):
                    self._write(kept)
            case _:
                assert_never(request)

    def forget(self) -> None:
        """Drop every alarm (a backup restored into a new cluster, whose member ids say
        nothing of the old one's, and whose disks are others)."""
        if self.alarms:
            self._write([])

    def _write(self, alarms: list[NoSpaceAlarm]) -> None:
        if alarms:
            self.staged.put(NOSPACE_ALARMS_KEY, encode_record(NoSpaceAlarmsRecord(alarms)))
        else:
            self.staged.delete(NOSPACE_ALARMS_KEY)
        self.alarms = alarms


def check_space_alarm_request(request: NoSpaceAlarmRequest) -> None:
    """Raise an InvalidRequest naming the first rule `request` breaks."""
    match request:
        case RaiseNoSpaceAlarm():
            check_member_id(request.member_id)
        case DisarmNoSpaceAlarm():
            if request.member_id != 0:  # 0: every member's
                check_member_id(request.member_id)
        case _:
            assert_never(request)
