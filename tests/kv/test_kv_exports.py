"""`raftkv.kv`'s public names are pinned (trio's test_exports)."""

from __future__ import annotations

import raftkv.kv
import raftkv.kv.errors


def test_kv_all_is_pinned() -> None:
    assert sorted(raftkv.kv.__all__) == sorted(
        [
            "ClearCorruptAlarm",
            "DisarmNoSpaceAlarm",
            "NoSpaceAlarmResponse",
            "RaiseNoSpaceAlarm",
            "SpaceMonitor",
            "SpaceSettings",
            "Compact",
            "CompactResponse",
            "TxnCompare",
            "CompareOp",
            "CompareTarget",
            "CorruptChecker",
            "CorruptCheckerSettings",
            "DeleteRange",
            "DeleteRangeResponse",
            "DuplicateKey",
            "EmptyKey",
            "FutureRevision",
            "HashCheck",
            "HashCheckResponse",
            "HashReport",
            "MvccKeyValue",
            "KvCommand",
            "KvService",
            "KvError",
            "KvSettings",
            "KvStateMachine",
            "LeaseCheckpoint",
            "LeaseCheckpointResponse",
            "LeaseExpire",
            "LeaseGrant",
            "LeaseGrantResponse",
            "LeaseKeepAlive",
            "LeaseKeepAliveResponse",
            "LeaseRemaining",
            "LeaseRequest",
            "LeaseRevoke",
            "LeaseRevokeResponse",
            "Event",
            "TooManyWatches",
            "Watch",
            "EventBatch",
            "WatchCanceled",
            "WatchHub",
            "WatchProgress",
            "WatchSettings",
            "WatchSpec",
            "LeaseKeeper",
            "MvccStore",
            "PublishMember",
            "PublishMemberResponse",
            "Put",
            "PutResponse",
            "Range",
            "RangeResponse",
            "ReadLimits",
            "RequestOp",
            "ResponseHeader",
            "ResponseOp",
            "ScanTooLarge",
            "Txn",
            "TxnResponse",
            "WriteRequest",
            "WriteResponse",
            "check_request",
            "decode_command",
            "encode_command",
        ]
    )
    for name in raftkv.kv.__all__:
        assert getattr(raftkv.kv, name) is not None, name


def test_every_kv_error_has_its_own_code() -> None:
    # A subclass that names a case of its parent's refusal for etcd's API (UserExists of
    # AuthConflict) keeps the parent's code; every class that sets a code sets its own.
    errors = [
        value
        for value in vars(raftkv.kv.errors).values()
        if isinstance(value, type)
        and issubclass(value, raftkv.kv.KvError)
        and "code" in vars(value)
    ]
    assert len(errors) == 23
    assert len({error.code for error in errors}) == len(errors)
