"""A txn compare over a key range (TxnCompare.range_end, etcd's Compare.range_end): it
holds when every key live in the range satisfies it; a range with no live key compares as
one missing key (etcd's applyCompare). Evaluated in the apply and in read views, bounded
like a txn's ranges, and encoded as before when range_end is empty."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from kv_helpers import last_indexes, started, stop

from raftkv.kv import (
    CompareOp,
    CompareTarget,
    DeleteRange,
    EmptyKey,
    KvCommand,
    MvccStore,
    Put,
    Range,
    ReadLimits,
    RequestOp,
    ScanTooLarge,
    Txn,
    TxnCompare,
    decode_command,
    encode_command,
)
from raftkv.kv.errors import InvalidRequest, LimitExceeded
from raftkv.kv.read_budget import ReadBudget
from raftkv.raft.storage.memory import MemoryAppData
from raftkv.testing.local_cluster import run_scenario


@pytest.fixture
def store() -> MvccStore:
    """k/a (rev 2, lease 5), k/b (rev 3, then 4: version 2), k/c (rev 5, deleted at 6),
    and z (rev 7) outside the k/ prefix."""
    store = MvccStore(MemoryAppData())
    store.leases.grant(5, 10, 1)
    store.put(Put(b"k/a", b"apple", lease=5))
    store.put(Put(b"k/b", b"banana"))
    store.put(Put(b"k/b", b"blueberry"))
    store.put(Put(b"k/c", b"cherry"))
    store.delete_range(DeleteRange(b"k/c"))
    store.put(Put(b"z", b"zucchini"))
    return store


def holds(store: MvccStore, compare: TxnCompare) -> bool:
    return store.txn(Txn([compare])).succeeded


PREFIX = (b"k/", b"k0")


@pytest.mark.parametrize(
    ("target", "op", "value", "expected"),
    [
        # k/a = apple, k/b = blueberry (k/c is deleted: not compared).
        ("value", ">", b"a", True),
        ("value", ">", b"b", False),
        ("value", "<", b"c", True),
        ("value", "!=", b"apple", False),
        ("value", "=", b"apple", False),
        # versions 1 and 2
        ("version", ">", 0, True),
        ("version", "=", 1, False),
        ("version", "<", 3, True),
        # create revisions 2 and 3
        ("create", "<", 4, True),
        ("create", "=", 2, False),
        ("create", "!=", 5, True),
        # mod revisions 2 and 4
        ("mod", "<", 5, True),
        ("mod", "<", 4, False),
        ("mod", ">", 1, True),
        # leases 5 and 0
        ("lease", "=", 0, False),
        ("lease", "<", 6, True),
        ("lease", "!=", 5, False),
    ],
)
def test_a_range_compare_holds_when_every_live_key_in_the_range_satisfies_it(
    store: MvccStore, target: CompareTarget, op: CompareOp, value: bytes | int, expected: bool
) -> None:
    compare = TxnCompare(PREFIX[0], target, op, value, range_end=PREFIX[1])
    assert holds(store, compare) is expected


@pytest.mark.parametrize(
    "case",
    [
        ("value", "=", b"", False),
        ("value", "!=", b"x", False),
        ("value", ">", b"", False),
        ("version", "=", 0, True),
        ("version", ">", 0, False),
        ("create", "=", 0, True),
        ("mod", "<", 1, True),
        ("lease", "=", 0, True),
        ("lease", "!=", 0, False),
    ],
)
@pytest.mark.parametrize(
    "key_range",
    [
        (b"m/", b"m0"),  # no key ever
        (b"k/c", b"k/d"),  # only a deleted key
        (b"k/b", b"k/a"),  # range_end below key: empty by the range convention
    ],
)
def test_a_range_with_no_live_key_compares_as_one_missing_key(
    store: MvccStore,
    key_range: tuple[bytes, bytes],
    case: tuple[CompareTarget, CompareOp, bytes | int, bool],
) -> None:
    """etcd's applyCompare: no key in the range fails a VALUE compare and compares the
    others with a zero KeyValue."""
    target, op, value, expected = case
    compare = TxnCompare(key_range[0], target, op, value, range_end=key_range[1])
    assert holds(store, compare) is expected


def test_a_deleted_key_in_the_range_is_not_compared(store: MvccStore) -> None:
    # k/c was created at 5: a live k/c would fail create < 4.
    assert holds(store, TxnCompare(b"k/b", "create", "<", 4, range_end=b"k/d"))
    store.put(Put(b"k/c", b"again"))
    assert not holds(store, TxnCompare(b"k/b", "create", "<", 4, range_end=b"k/d"))


def test_range_end_nul_compares_every_key_from_key_on(store: MvccStore) -> None:
    assert not holds(store, TxnCompare(b"k/", "value", "<", b"c", range_end=b"\0"))  # z
    assert holds(store, TxnCompare(b"k/", "value", "<", b"zz", range_end=b"\0"))
    assert holds(store, TxnCompare(b"\0", "version", ">", 0, range_end=b"\0"))
    assert not holds(store, TxnCompare(b"\0", "lease", "=", 0, range_end=b"\0"))  # k/a


def test_a_range_compare_sees_the_state_before_the_txns_own_writes(store: MvccStore) -> None:
    """The compares choose the branch before it runs; then its writes apply atomically."""
    guarded = Txn(
        [TxnCompare(b"k/", "version", "<", 2, range_end=b"k0")],
        success=[Put(b"k/new", b"1")],
        failure=[Put(b"k/b", b"reset"), Range(b"k/", b"k0", count_only=True)],
    )
    result = store.txn(guarded)
    assert not result.succeeded
    assert result.header.revision == 8
    store.put(Put(b"k/b", b"x"))  # version 3 now: still fails
    store.delete_range(DeleteRange(b"k/b"))
    assert store.txn(guarded).succeeded


def test_a_read_view_answers_range_compares_like_the_apply(store: MvccStore) -> None:
    store.commit(1, 1)
    compares = [
        TxnCompare(b"k/", "mod", "<", 5, range_end=b"k0"),
        TxnCompare(b"k/", "value", "=", b"apple", range_end=b"k0"),
        TxnCompare(b"m/", "version", "=", 0, range_end=b"m0"),
    ]
    view = store.view(threaded=False)
    for compare in compares:
        read = view.txn(Txn([compare], [Range(b"z")]), ReadBudget()).succeeded
        assert read is holds(store, compare)
    view.close()


def test_a_range_compare_scans_within_the_budget(store: MvccStore) -> None:
    store.commit(1, 1)
    view = store.view(threaded=False)
    two_keys = Txn([TxnCompare(b"k/", "version", ">", 0, range_end=b"k0")])
    assert view.txn(two_keys, ReadBudget(max_scan_entries=2)).succeeded
    with pytest.raises(ScanTooLarge):
        view.txn(two_keys, ReadBudget(max_scan_entries=1))
    # A txn that writes is checked before it is proposed: its compare ranges count.
    writes = Txn([TxnCompare(b"\0", "version", ">", 0, range_end=b"\0")], [Put(b"x", b"1")])
    view.scan_txn_ranges(writes, ReadBudget(max_scan_entries=3))
    with pytest.raises(ScanTooLarge):
        view.scan_txn_ranges(writes, ReadBudget(max_scan_entries=2))
    view.close()


@pytest.mark.parametrize(
    ("compare", "error"),
    [
        (TxnCompare(b"", "version", "=", 0, range_end=b"\0"), EmptyKey),
        (TxnCompare(b"", "version", "=", 0, range_end=b"z"), EmptyKey),
        (TxnCompare(b"a", "version", "=", 0, range_end=b"z" * 5000), LimitExceeded),
        (TxnCompare(b"a", "value", "=", 1, range_end=b"z"), InvalidRequest),
    ],
)
def test_a_bad_range_compare_is_refused_with_nothing_applied(
    store: MvccStore, compare: TxnCompare, error: type[Exception]
) -> None:
    with pytest.raises(error):
        store.txn(Txn([compare], [Put(b"x", b"1")]))
    assert store.current_revision() == 7


# The encoding of a txn command with two single-key compares, as raftkv wrote it before
# TxnCompare had range_end (commit 57819e7).
_OLD_ENCODING = bytes.fromhex(
    "83a77265717565737484a474797065a374786ea8636f6d70617265739284a36b6579c4016ba674617267"
    "6574a576616c7565a26f70a13da576616c7565c4017684a36b6579c4026b32a6746172676574a36d6f"
    "64a26f70a13ca576616c756507a7737563636573739185a474797065a3707574a36b6579c4016ba576"
    "616c7565c40177a56c6561736500a7707265765f6b76c2a76661696c75726590a9636c69656e745f69"
    "64a163a873657175656e636503"
)


def test_a_single_key_compare_encodes_exactly_as_before_range_end_existed() -> None:
    command = KvCommand(
        Txn(
            [TxnCompare(b"k", "value", "=", b"v"), TxnCompare(b"k2", "mod", "<", 7)],
            success=[Put(b"k", b"w")],
        ),
        "c",
        3,
    )
    assert encode_command(command) == _OLD_ENCODING
    assert decode_command(_OLD_ENCODING) == command


def test_a_range_compare_round_trips_through_the_log_encoding() -> None:
    compare = TxnCompare(b"a", "lease", "!=", 0, range_end=b"\0")
    command = KvCommand(Txn([compare]))
    assert decode_command(encode_command(command)) == command
    # An older member's TxnCompare (no range_end, unknown fields forbidden) refuses it.

    class OldCompare(msgspec.Struct, forbid_unknown_fields=True):
        key: bytes
        target: str
        op: str
        value: bytes | int

    with pytest.raises(msgspec.ValidationError, match="range_end"):
        msgspec.msgpack.decode(msgspec.msgpack.encode(compare), type=OldCompare)


def test_a_txn_whose_compare_range_scans_too_much_is_refused_before_the_log(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        limits = ReadLimits(max_scan_entries=50, max_txn_scan_entries=20)
        cluster, services = await started(tmp_path, limits)
        service = services[3]
        batch: list[RequestOp] = [Put(b"k/%02d" % number, b"v") for number in range(40)]
        await cluster.complete(service.txn(Txn([], batch)))
        over = TxnCompare(b"k/", "version", "=", 1, range_end=b"k0")
        before = last_indexes(cluster)
        with pytest.raises(ScanTooLarge, match="max_txn_scan_entries=20"):
            await cluster.complete(service.txn(Txn([over], [Put(b"x", b"1")])))
        assert last_indexes(cluster) == before
        # A read-only txn: its compare range counts against max_scan_entries.
        read = await cluster.complete(service.txn(Txn([over], [Range(b"k/00")])))
        assert read.succeeded and len(read.responses) == 1
        with pytest.raises(ScanTooLarge, match="max_scan_entries=50"):
            await cluster.complete(service.txn(Txn([over, over], [Range(b"k/00")])))
        # Within the limit, it applies on every member alike.
        within = TxnCompare(b"k/", "version", "=", 1, range_end=b"k/10")
        written = await cluster.complete(service.txn(Txn([within], [Put(b"k/05", b"w")])))
        assert written.succeeded
        again = await cluster.complete(service.txn(Txn([within], [Put(b"k/05", b"w")])))
        assert not again.succeeded
        await stop(cluster, services)

    run_scenario(scenario)
