"""KvStateMachine: applying log commands, exactly-once writes, bad input, snapshots."""

from __future__ import annotations

from random import Random

import msgspec
import pytest
from kv_helpers import (
    CountingAppData,
    apply_in_batches,
    comparable,
    log_command,
    random_workload,
)

from raftkv.kv import (
    Compact,
    DuplicateKey,
    EmptyKey,
    FutureRevision,
    KvCommand,
    KvError,
    KvSettings,
    KvStateMachine,
    MvccKeyValue,
    Put,
    PutResponse,
    Range,
    RequestOp,
    ResponseHeader,
    Txn,
    TxnCompare,
    TxnResponse,
    encode_command,
)
from raftkv.kv.errors import InvalidRequest, LimitExceeded, SessionExpired, StaleSequence
from raftkv.raft import SnapshotInvalid
from raftkv.raft.core.errors import ConfigInvalid
from raftkv.raft.driver.state_machine import Command
from raftkv.raft.snapshot_chunks import encode_container, read_container
from raftkv.raft.storage.memory import MemoryAppData


def machine(settings: KvSettings | None = None) -> KvStateMachine:
    return KvStateMachine(MemoryAppData(), settings)


def value_of(machine: KvStateMachine, key: bytes) -> bytes | None:
    kvs = machine.range(Range(key)).kvs
    return kvs[0].value if kvs else None


# -- applying -------------------------------------------------------------------------------


def test_one_apply_call_is_one_commit_with_the_applied_index() -> None:
    app = CountingAppData(MemoryAppData())
    kv = KvStateMachine(app)
    results = kv.apply([log_command(1, Put(b"a", b"1")), log_command(2, Put(b"b", b"2"))], 3, 1)
    assert results == [PutResponse(ResponseHeader(2)), PutResponse(ResponseHeader(3))]
    assert app.commits == 1
    assert kv.applied_index() == 3
    kv.apply([], 4, 2)  # entries without commands still move the applied index
    assert (app.commits, app.applied()) == (2, (4, 2))


def test_commands_of_one_apply_call_see_each_other() -> None:
    kv = machine()
    swap = Txn([TxnCompare(b"k", "value", "=", b"1")], success=[Put(b"k", b"2")])
    results = kv.apply([log_command(1, Put(b"k", b"1")), log_command(2, swap)], 2, 1)
    assert results[1] == TxnResponse(ResponseHeader(3), True, [PutResponse(ResponseHeader(3))])
    assert value_of(kv, b"k") == b"2"


def test_reads_see_committed_state_and_the_revisions() -> None:
    kv = machine()
    kv.apply([log_command(1, Put(b"k", b"v")), log_command(2, Compact(2))], 2, 1)
    assert kv.range(Range(b"k")).kvs == [MvccKeyValue(b"k", b"v", 2, 2, 1)]
    assert (kv.current_revision(), kv.compacted_revision()) == (2, 2)
    with pytest.raises(FutureRevision):
        kv.range(Range(b"k", revision=3))


# -- exactly-once ---------------------------------------------------------------------------


def test_a_retried_write_returns_the_first_result_and_applies_once() -> None:
    kv = machine()
    put = Put(b"counter", b"1", prev_kv=True)
    first, retry_in_batch = kv.apply(
        [log_command(1, put, "client", 1), log_command(2, put, "client", 1)], 2, 1
    )
    assert first == retry_in_batch == PutResponse(ResponseHeader(2))
    (retry_later,) = kv.apply([log_command(3, put, "client", 1)], 3, 1)
    assert retry_later == first
    assert kv.current_revision() == 2
    assert kv.range(Range(b"counter")).kvs[0].version == 1


def test_an_older_sequence_is_refused_as_stale() -> None:
    kv = machine()
    kv.apply([log_command(1, Put(b"k", b"1"), "client", 1)], 1, 1)
    kv.apply([log_command(2, Put(b"k", b"2"), "client", 2)], 2, 1)
    (result,) = kv.apply([log_command(3, Put(b"k", b"1"), "client", 1)], 3, 1)
    assert isinstance(result, StaleSequence)
    assert (result.sequence, result.last_sequence) == (1, 2)
    assert value_of(kv, b"k") == b"2"


def test_a_refused_write_is_not_remembered_so_its_retry_runs_again() -> None:
    kv = machine()
    read_ahead = Txn(success=[Range(b"k", revision=3), Put(b"done", b"yes")])
    (refused,) = kv.apply([log_command(1, read_ahead, "client", 1)], 1, 1)
    assert isinstance(refused, FutureRevision)
    kv.apply([log_command(2, Put(b"k", b"v")), log_command(3, Put(b"k", b"w"))], 3, 1)
    (retried,) = kv.apply([log_command(4, read_ahead, "client", 1)], 4, 1)
    assert isinstance(retried, TxnResponse)
    assert value_of(kv, b"done") == b"yes"


@pytest.mark.parametrize(
    ("client_id", "sequence", "error"),
    [
        ("", 3, InvalidRequest),
        ("client", 0, InvalidRequest),
        ("client", -1, InvalidRequest),
        ("c" * 9, 1, LimitExceeded),
    ],
)
def test_exactly_once_fields_are_checked(
    client_id: str, sequence: int, error: type[KvError]
) -> None:
    kv = machine(KvSettings(max_client_id_bytes=8))
    (result,) = kv.apply([log_command(1, Put(b"k", b"v"), client_id, sequence)], 1, 1)
    assert type(result) is error
    assert kv.current_revision() == 1


def test_the_client_whose_last_write_is_oldest_is_forgotten_first() -> None:
    kv = machine(KvSettings(max_exactly_once_clients=2))

    def write(index: int, client_id: str, sequence: int) -> object:
        return kv.apply([log_command(index, Put(b"k", b"v"), client_id, sequence)], index, 1)[0]

    first_a = write(1, "a", 1)
    write(2, "b", 1)
    write(3, "c", 1)  # table full: "a" (index 1) is forgotten
    assert write(4, "b", 1) == PutResponse(ResponseHeader(3))  # "b" remembered: not applied
    assert write(5, "a", 1) != first_a  # "a" forgotten: a retry of sequence 1 applies again
    assert kv.current_revision() == 5
    # "a" came back at index 5 and evicted "b" (index 2, the oldest). A later sequence from
    # "b" cannot be told from a retry of a write that applied before the session went, so
    # it is refused (SessionExpired), not applied.
    assert isinstance(write(6, "b", 2), SessionExpired)
    assert kv.current_revision() == 5
    assert write(7, "c", 2) == PutResponse(ResponseHeader(6))  # "c" (index 3) is still held
    write(8, "d", 1)  # evicts "a" (index 5), the oldest now
    assert isinstance(write(9, "a", 2), SessionExpired)
    assert isinstance(write(10, "c", 1), StaleSequence)
    assert kv.current_revision() == 7


def test_a_session_never_recorded_is_expired_too() -> None:
    """A client whose first write was refused has no session; its next sequence is refused
    the same way (the client then starts a new session)."""
    kv = machine(KvSettings(max_key_bytes=4))
    refused = kv.apply([log_command(1, Put(b"too-long", b"v"), "x", 1)], 1, 1)[0]
    assert isinstance(refused, LimitExceeded)
    assert isinstance(kv.apply([log_command(2, Put(b"k", b"v"), "x", 2)], 2, 1)[0], SessionExpired)
    assert kv.current_revision() == 1


def test_eviction_is_the_same_on_every_replica_however_commands_are_batched() -> None:
    settings = KvSettings(max_exactly_once_clients=3)
    commands = random_workload(seed=11, count=400)
    one, other = (
        KvStateMachine(MemoryAppData(), settings),
        KvStateMachine(MemoryAppData(), settings),
    )
    one_results = apply_in_batches(one, commands, 1)
    assert comparable(one_results) == comparable(apply_in_batches(other, commands, 37))
    assert one.state_hash() == other.state_hash()
    sessions = [key for key, _ in one.app.scan(b"s", b"t")]
    assert len(sessions) == 3


# -- bad input ------------------------------------------------------------------------------

PUT_MAP = {"type": "put", "key": b"k", "value": b"v"}
BAD_COMMANDS: list[tuple[str, bytes, type[KvError]]] = [
    ("not msgpack", b"\xc1", InvalidRequest),
    ("truncated", msgspec.msgpack.encode({"request": PUT_MAP})[:-3], InvalidRequest),
    ("not a map", msgspec.msgpack.encode([1, 2]), InvalidRequest),
    ("no request", msgspec.msgpack.encode({"client_id": "c"}), InvalidRequest),
    (
        "unknown command field",
        msgspec.msgpack.encode({"request": PUT_MAP, "priority": 1}),
        InvalidRequest,
    ),
    (
        "unknown request field",
        msgspec.msgpack.encode({"request": {**PUT_MAP, "ttl": 5}}),
        InvalidRequest,
    ),
    ("unknown tag", msgspec.msgpack.encode({"request": {"type": "watch"}}), InvalidRequest),
    ("range is not a write", encode_command(KvCommand(Range(b"k"))), InvalidRequest),  # type: ignore[arg-type]
    (
        "key as a string",
        msgspec.msgpack.encode({"request": {**PUT_MAP, "key": "k"}}),
        InvalidRequest,
    ),
    (
        "sequence as a string",
        msgspec.msgpack.encode({"request": PUT_MAP, "client_id": "c", "sequence": "1"}),
        InvalidRequest,
    ),
    ("empty key", encode_command(KvCommand(Put(b"", b"v"))), EmptyKey),
    ("oversize key", encode_command(KvCommand(Put(b"k" * 9, b"v"))), LimitExceeded),
    ("oversize value", encode_command(KvCommand(Put(b"k", b"v" * 17))), LimitExceeded),
    ("negative lease", encode_command(KvCommand(Put(b"k", b"v", lease=-1))), InvalidRequest),
    ("negative compact", encode_command(KvCommand(Compact(-5))), InvalidRequest),
    (
        "huge revision",
        encode_command(KvCommand(Txn(success=[Range(b"k", revision=1 << 63)]))),
        InvalidRequest,
    ),
    (
        "too many txn ops",
        encode_command(KvCommand(Txn(success=[Put(bytes([i + 1]), b"") for i in range(5)]))),
        LimitExceeded,
    ),
    (
        "too many compares",
        encode_command(KvCommand(Txn([TxnCompare(b"k", "version", "=", 0)] * 5))),
        LimitExceeded,
    ),
    (
        "compare value of the wrong type",
        encode_command(KvCommand(Txn([TxnCompare(b"k", "version", "=", b"1")]))),
        InvalidRequest,
    ),
    (
        "duplicate key in the unused branch",
        encode_command(KvCommand(Txn(failure=[Put(b"k", b"1"), Put(b"k", b"2")]))),
        DuplicateKey,
    ),
]


@pytest.mark.parametrize(
    ("data", "error"),
    [(data, error) for _, data, error in BAD_COMMANDS],
    ids=[name for name, _, _ in BAD_COMMANDS],
)
def test_bad_input_fails_its_command_and_changes_nothing(data: bytes, error: type[KvError]) -> None:
    kv = machine(KvSettings(max_key_bytes=8, max_value_bytes=16, max_txn_ops=4))
    kv.apply([log_command(1, Put(b"k", b"v"))], 1, 1)
    before = (kv.state_hash(), kv.current_revision())
    results = kv.apply([Command(index=2, term=1, data=data)], 2, 1)
    assert type(results[0]) is error
    assert (kv.state_hash(), kv.current_revision()) == before
    assert kv.applied_index() == 2


def test_bad_commands_do_not_disturb_the_good_ones_around_them() -> None:
    kv = machine()
    results = kv.apply(
        [
            log_command(1, Put(b"a", b"1")),
            Command(index=2, term=1, data=b"\xc1"),
            log_command(3, Put(b"b", b"2")),
        ],
        3,
        1,
    )
    assert isinstance(results[1], InvalidRequest)
    assert (value_of(kv, b"a"), value_of(kv, b"b"), kv.current_revision()) == (b"1", b"2", 3)


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigInvalid, match="max_txn_ops"):
        KvSettings(max_txn_ops=0)


# -- snapshots ------------------------------------------------------------------------------


def test_a_restored_snapshot_has_the_same_state_and_sessions() -> None:
    source = machine()
    commands = random_workload(seed=5, count=200)
    apply_in_batches(source, commands, 10)
    target = machine()
    target.apply([log_command(1, Put(b"stale", b"data"))], 1, 1)
    target.restore(source.snapshot(), 200, 3)
    assert target.state_hash() == source.state_hash()
    assert (target.current_revision(), target.compacted_revision()) == (
        source.current_revision(),
        source.compacted_revision(),
    )
    assert target.applied_index() == 200
    assert value_of(target, b"stale") is None
    # The exactly-once sessions came along: a retry is answered, not applied.
    write = log_command(201, Put(b"k", b"v"), "client", 1)
    (first,) = source.apply([write], 201, 3)
    (retried,) = KvStateMachine(source.app).apply([write], 202, 3)
    assert retried == first


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",
        msgspec.msgpack.encode([99, []]),
        msgspec.msgpack.encode([1, [[b"b", b""], [b"a", b""]]]),
        msgspec.msgpack.encode([1, [[b"a", b""], [b"a", b""]]]),
    ],
    ids=["not msgpack", "newer format", "unsorted", "duplicate key"],
)
def test_an_invalid_snapshot_is_refused_before_anything_changes(data: bytes) -> None:
    kv = machine()
    kv.apply([log_command(1, Put(b"k", b"v"))], 1, 1)
    before = kv.state_hash()
    with pytest.raises(SnapshotInvalid):
        kv.restore(data, 5, 1)
    assert (kv.state_hash(), kv.applied_index()) == (before, 1)


def test_a_lowered_client_limit_shrinks_the_table_at_the_next_new_client() -> None:
    app = MemoryAppData()
    kv = KvStateMachine(app, KvSettings(max_exactly_once_clients=4))
    for index, client_id in enumerate(["a", "b", "c", "d"], start=1):
        kv.apply([log_command(index, Put(b"k", b"v"), client_id, 1)], index, 1)
    kv = KvStateMachine(app, KvSettings(max_exactly_once_clients=2))
    kv.apply([log_command(5, Put(b"k", b"v"), "e", 1)], 5, 1)
    assert [key for key, _ in app.scan(b"s", b"t")] == [b"sd", b"se"]


def test_snapshots_are_chunked_and_compressed_and_versions_1_and_2_still_restore() -> None:
    import zstandard

    from raftkv.kv.state_machine import _Snapshot

    source = machine()
    source.apply([log_command(1, Put(b"k%d" % i, b"v" * 100)) for i in range(1, 200)], 200, 1)
    data = source.snapshot()
    assert data.startswith(b"RAFTKVS3")
    container = read_container(data, verify=True)
    assert len(container.chunks) == 1  # 20 KB of items: one chunk
    raw_bytes = sum(len(key) + len(value) for key, value in source.app.scan())
    assert len(data) * 5 < raw_bytes  # each chunk is zstd-compressed
    restored = machine()
    restored.restore(data, 200, 1)
    assert restored.state_hash() == source.state_hash()
    version_1 = msgspec.msgpack.encode(_Snapshot(1, list(source.app.scan())))
    version_2 = zstandard.ZstdCompressor().compress(
        msgspec.msgpack.encode(_Snapshot(2, list(source.app.scan())))
    )
    for older_format in (version_1, version_2):
        older = machine()
        older.restore(older_format, 200, 1)
        assert older.state_hash() == source.state_hash()
    with pytest.raises(SnapshotInvalid, match="does not decompress"):
        machine().restore(version_2[:-8], 200, 1)


def big_machine(keys: int = 4000) -> KvStateMachine:
    """About 2 MB of state: a few dozen snapshot chunks."""
    source = machine()
    rng = Random(7)
    for start in range(0, keys, 100):
        puts: list[RequestOp] = [
            Put(b"data/%06d" % i, rng.randbytes(400)) for i in range(start, start + 100)
        ]
        index = start // 100 + 1
        source.apply([log_command(index, Txn(success=puts))], index, 1)
    return source


def chunk_hashes(data: bytes) -> set[bytes]:
    return {chunk.sha256 for chunk in read_container(data).chunks}


def test_a_few_writes_change_few_snapshot_chunks() -> None:
    source = big_machine()
    before = source.snapshot()
    index = source.applied_index()
    source.apply([log_command(index + 1, Put(b"data/002000", b"rewritten"))], index + 1, 1)
    source.apply([log_command(index + 2, Put(b"zz/new", b"appended"))], index + 2, 1)
    after = source.snapshot()
    old, new = chunk_hashes(before), chunk_hashes(after)
    assert len(old) > 10
    # Each write touches its key's history and index entries, the revision log and the
    # MVCC meta record: a handful of chunks, whatever the size of the state.
    assert len(new - old) <= 6, (len(new - old), len(new))
    restored = machine()
    restored.restore(after, index + 2, 1)
    assert restored.state_hash() == source.state_hash()


def test_the_same_state_gives_the_same_snapshot_bytes() -> None:
    assert big_machine(1000).snapshot() == big_machine(1000).snapshot()


def chunked(*chunks: bytes, prefix: bytes = b"RAFTKVS3") -> bytes:
    return encode_container(chunks, prefix=prefix)


def chunk_of(items: list[tuple[bytes, bytes]], version: int = 3) -> bytes:
    import zstandard

    from raftkv.kv.state_machine import _SnapshotChunk

    return zstandard.ZstdCompressor().compress(
        msgspec.msgpack.encode(_SnapshotChunk(version, items))
    )


# A zstd frame header declaring 1 TiB of content, then a few bytes of a block.
DECOMPRESSION_BOMB = b"\x28\xb5\x2f\xfd\xe0" + (1 << 40).to_bytes(8, "little") + b"\x01\x00\x00"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (chunked(chunk_of([(b"a", b"1")]))[:-1], "does not end with a chunked container"),
        (
            b"RAFTKVS3" + chunked(chunk_of([(b"a", b"1")]), prefix=b"")[-52:],
            "do not fit before the manifest",
        ),
        (
            encode_container([chunk_of([(b"a", b"1")])], prefix=b"RAFTKVS3extra"),
            "13 bytes before its first chunk",
        ),
        (chunked(b"not zstd"), "chunk 0 does not decompress"),
        (chunked(DECOMPRESSION_BOMB), "chunk 0 declares 1099511627776 bytes, over the limit"),
        (chunked(chunk_of([(b"a", b"1")], version=4)), "chunk 0 has format 4"),
        (chunked(chunk_of([(b"b", b"1")]), chunk_of([(b"a", b"1")])), "increasing key order"),
        (
            chunked(chunk_of([(b"a", b"1")]), b"\x28\xb5\x2f\xfd" + b"junk"),
            "chunk 1 does not decompress",
        ),
    ],
    ids=[
        "truncated",
        "chunk missing",
        "prefix",
        "not zstd",
        "decompression bomb",
        "chunk version",
        "unsorted across chunks",
        "damaged frame",
    ],
)
def test_an_invalid_chunked_snapshot_is_refused_before_anything_changes(
    data: bytes, reason: str
) -> None:
    kv = machine()
    kv.apply([log_command(1, Put(b"k", b"v"))], 1, 1)
    before = kv.state_hash()
    with pytest.raises(SnapshotInvalid, match=reason):
        kv.restore(data, 5, 1)
    assert (kv.state_hash(), kv.applied_index()) == (before, 1)


def test_a_damaged_chunk_fails_its_hash() -> None:
    good = chunk_of([(b"a", b"1")])
    data = bytearray(chunked(good))
    data[len(b"RAFTKVS3") + len(good) - 1] ^= 0xFF
    with pytest.raises(SnapshotInvalid, match="chunk 0 fails its SHA-256"):
        machine().restore(bytes(data), 5, 1)


def test_a_version_2_frame_declaring_too_much_is_refused_before_allocating() -> None:
    with pytest.raises(SnapshotInvalid, match="declares 1099511627776 bytes"):
        machine().validate_snapshot(DECOMPRESSION_BOMB)


def test_snapshot_later_captures_the_state_when_called() -> None:
    source = machine()
    source.apply([log_command(1, Put(b"a", b"1"))], 1, 1)
    produce = source.snapshot_later()
    expected = source.snapshot()
    source.apply([log_command(2, Put(b"a", b"2"))], 2, 1)
    assert produce() == expected


# -- validate_snapshot: what a peer's snapshot must be before anything of it is stored ------


def every_kind_of_record() -> KvStateMachine:
    """A store holding an item of every key space of the layout."""
    from raftkv.kv import DeleteRange, LeaseGrant, PublishMember

    source = machine()
    commands = [
        log_command(1, LeaseGrant(7, 60)),
        log_command(2, Put(b"leased\x00key", b"v", lease=7)),
        log_command(3, Put(b"k", b"1"), "client", 1),
        log_command(4, Put(b"k", b"2")),
        log_command(5, DeleteRange(b"k")),
        log_command(6, PublishMember(3, "http://127.0.0.1:2379")),
        log_command(7, Compact(2)),
    ]
    source.apply(commands, 7, 1)
    spaces = {key[:1] for key, _ in source.app.scan()}
    assert spaces == {b"a", b"h", b"k", b"l", b"L", b"m", b"r", b"s"}, spaces
    return source


def test_validate_snapshot_accepts_every_format_of_a_real_store() -> None:
    import zstandard

    from raftkv.kv.state_machine import _Snapshot

    source = every_kind_of_record()
    items = list(source.app.scan())
    for data in (
        source.snapshot(),
        msgspec.msgpack.encode(_Snapshot(1, items)),
        zstandard.ZstdCompressor().compress(msgspec.msgpack.encode(_Snapshot(2, items))),
    ):
        machine().validate_snapshot(data)


GOOD_META = msgspec.msgpack.encode([1, 5, 2])


@pytest.mark.parametrize(
    ("items", "reason"),
    [
        ([(b"meta:mvcc", b"\xc1")], "meta:mvcc"),
        ([(b"meta:mvcc", msgspec.msgpack.encode([9, 5, 2]))], "layout version 9"),
        ([(b"meta:mvcc", msgspec.msgpack.encode([1, 2, 5]))], "compacted revision 5 of 2"),
        ([(b"hkey\x00\x01" + bytes(8), b"junk")], "hkey"),
        ([(b"hkey" + bytes(8), msgspec.msgpack.encode([b"v", 1, 1, 0, False]))], "history key"),
        ([(b"kkey\x00\x01", msgspec.msgpack.encode([1]))], "kkey"),
        ([(b"r" + bytes(8), msgspec.msgpack.encode([1]))], "r"),
        ([(b"sclient", msgspec.msgpack.encode([1, 3, b"not a result"]))], "sclient"),
        ([(b"l" + bytes(8), msgspec.msgpack.encode(["ttl", 1, 1]))], "l"),
        ([(b"L" + bytes(8) + b"k\x00\x01", b"x")], "lease attachment"),
        ([(b"meta:member:" + bytes(8), msgspec.msgpack.encode([42]))], "meta:member"),
        ([(b"zebra", b"")], "in no key space"),
        ([(b"meta:mvcc", GOOD_META), (b"meta:mvcc", GOOD_META)], "increasing key order"),
    ],
)
def test_validate_snapshot_refuses_an_item_the_layout_does_not_write(
    items: list[tuple[bytes, bytes]], reason: str
) -> None:
    """Issue 12 A5: a snapshot that decodes but holds garbage was installed; restore (or
    the next open of the store) failed after the old state was gone, at every start.
    validate_snapshot refuses it first, as it does what restore refuses."""
    with pytest.raises(SnapshotInvalid, match=reason):
        machine().validate_snapshot(chunked(chunk_of(items)))


def test_validate_snapshot_refuses_what_restore_refuses() -> None:
    for data in (b"\xc1", msgspec.msgpack.encode([99, []]), chunked(b"junk")):
        with pytest.raises(SnapshotInvalid):
            machine().validate_snapshot(data)
