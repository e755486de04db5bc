"""`raftkv.kv`'s public names are pinned (trio's test_exports)."""

from __future__ import annotations

import raftkv.kv


def test_kv_all_is_pinned() -> None:
    assert sorted(raftkv.kv.__all__) == sorted(
        [
            "ClearCorruptAlarm",
            "Compact",
            "CompactResult",
            "Compacted",
            "Compare",
            "CompareOp",
            "CompareTarget",
            "CorruptChecker",
            "CorruptCheckerSettings",
            "DeleteRange",
            "DeleteResult",
            "DuplicateKey",
            "EmptyKey",
            "FutureRevision",
            "HashCheck",
            "HashCheckResult",
            "HashReport",
            "InvalidRequest",
            "KeyValue",
            "KvCommand",
            "KvService",
            "KvError",
            "KvSettings",
            "KvStateMachine",
            "LimitExceeded",
            "LeaseCheckpoint",
            "LeaseCheckpointResult",
            "LeaseExpire",
            "LeaseGrant",
            "LeaseGrantResult",
            "LeaseKeepAlive",
            "LeaseKeepAliveResult",
            "LeaseRemaining",
            "LeaseRequest",
            "LeaseRevoke",
            "LeaseRevokeResult",
            "LeaseExists",
            "LeaseNotFound",
            "Event",
            "TooManyWatches",
            "Watch",
            "WatchBatch",
            "WatchCanceled",
            "WatchHub",
            "WatchProgress",
            "WatchSettings",
            "WatchSpec",
            "LeaseKeeper",
            "MvccStore",
            "PublishMember",
            "PublishMemberResult",
            "Put",
            "PutResult",
            "Range",
            "RangeResult",
            "ReadLimits",
            "RequestOp",
            "ResponseHeader",
            "ResponseOp",
            "ScanTooLarge",
            "SessionExpired",
            "SnapshotInvalid",
            "StaleSequence",
            "Txn",
            "TxnResult",
            "WriteRequest",
            "WriteResult",
            "check_request",
            "decode_command",
            "encode_command",
        ]
    )
    for name in raftkv.kv.__all__:
        assert getattr(raftkv.kv, name) is not None, name


def test_every_kv_error_has_its_own_code() -> None:
    errors = [
        getattr(raftkv.kv, name)
        for name in raftkv.kv.__all__
        if isinstance(getattr(raftkv.kv, name), type)
        and issubclass(getattr(raftkv.kv, name), raftkv.kv.KvError)
    ]
    assert len(errors) == 12
    assert len({error.code for error in errors}) == len(errors)
