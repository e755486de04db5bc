"""raftkv.raft.snapshot_chunks: the content-defined cut of sorted items, the chunked
container, and how a transport cuts any snapshot data for sending."""

from __future__ import annotations

import hashlib
import struct
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.raft.snapshot_chunks import (
    ChunkingPolicy,
    ChunksInvalid,
    chunk_items,
    encode_container,
    is_container,
    read_container,
    transfer_chunks,
)

SMALL = ChunkingPolicy(min_chunk_bytes=1024, average_chunk_bytes=4096, max_chunk_bytes=8192)


def random_items(seed: int, count: int, *, value_bytes: int = 100) -> list[tuple[bytes, bytes]]:
    rng = Random(seed)
    keys = sorted({b"key/%012d" % rng.randrange(10**12) for _ in range(count)})
    return [(key, rng.randbytes(rng.randrange(1, 2 * value_bytes))) for key in keys]


def item_bytes(run: list[tuple[bytes, bytes]]) -> int:
    return sum(len(key) + len(value) for key, value in run)


def chunk_digests(items: list[tuple[bytes, bytes]], policy: ChunkingPolicy = SMALL) -> list[bytes]:
    return [hashlib.sha256(repr(run).encode()).digest() for run in chunk_items(items, policy)]


# -- the content-defined cut ------------------------------------------------------------------


def test_runs_cover_the_items_in_order() -> None:
    items = random_items(1, 3000)
    runs = list(chunk_items(items, SMALL))
    assert [item for run in runs for item in run] == items
    assert all(runs)


def test_the_same_items_are_cut_the_same_way() -> None:
    items = random_items(2, 3000)
    assert list(chunk_items(items, SMALL)) == list(chunk_items(list(items), SMALL))


def test_runs_respect_the_minimum_and_maximum_and_average_near_the_target() -> None:
    items = random_items(3, 20_000)
    runs = list(chunk_items(items, SMALL))
    sizes = [item_bytes(run) for run in runs]
    largest_item = max(len(key) + len(value) for key, value in items)
    assert all(size >= SMALL.min_chunk_bytes for size in sizes[:-1])
    assert all(size < SMALL.max_chunk_bytes + largest_item for size in sizes)
    average = sum(sizes) / len(sizes)
    # Cut points come once per (average - min) bytes past the minimum, capped by max.
    assert 0.75 * SMALL.average_chunk_bytes < average < 1.1 * SMALL.average_chunk_bytes


def test_the_average_does_not_depend_on_the_item_size() -> None:
    for value_bytes in (20, 200, 1000):
        runs = list(
            chunk_items(random_items(4, 40_000 // value_bytes * 10, value_bytes=value_bytes), SMALL)
        )
        sizes = [item_bytes(run) for run in runs[:-1]]
        average = sum(sizes) / len(sizes)
        assert 0.7 * SMALL.average_chunk_bytes < average < 1.2 * SMALL.average_chunk_bytes, (
            value_bytes
        )


def test_a_run_ends_as_soon_as_it_reaches_the_maximum() -> None:
    items = [(b"a", b"x" * 100), (b"b", b"y" * 20_000), (b"c", b"z" * 100)]
    runs = list(chunk_items(items, SMALL))
    assert runs[0][-1][0] == b"b"
    assert runs[1][0][0] == b"c"


def test_no_items_give_no_runs() -> None:
    assert list(chunk_items([], SMALL)) == []


@pytest.mark.parametrize(
    "change",
    ["one value rewritten", "ten keys inserted together", "one key deleted", "keys appended"],
)
def test_a_localized_change_touches_few_chunks(change: str) -> None:
    items = random_items(5, 20_000)
    changed = list(items)
    middle = len(items) // 2
    match change:
        case "one value rewritten":
            changed[middle] = (changed[middle][0], b"new value")
        case "ten keys inserted together":
            key = changed[middle][0]
            changed[middle + 1 : middle + 1] = [(key + b"/%d" % i, b"v" * 50) for i in range(10)]
        case "one key deleted":
            del changed[middle]
        case "keys appended":
            changed += [(b"zz/%d" % i, b"v" * 50) for i in range(50)]
    before, after = chunk_digests(items), chunk_digests(changed)
    assert len(before) > 200
    new, lost = set(after) - set(before), set(before) - set(after)
    # The chunk holding the change, and at most a couple around it until the cuts agree.
    assert 1 <= len(new) <= 3, len(new)
    assert len(lost) <= 3, len(lost)


def test_an_insertion_at_the_front_resynchronizes() -> None:
    items = random_items(6, 20_000)
    changed = [(b"aaa/%d" % i, b"v" * 300) for i in range(40)] + items
    before, after = chunk_digests(items), chunk_digests(changed)
    # 12 KB inserted make a few new chunks; of the old ones, only the first is lost
    # (maybe a second, until the cuts agree again).
    assert len(set(before) - set(after)) <= 2


@pytest.mark.parametrize(
    ("minimum", "average", "maximum"), [(0, 10, 20), (10, 5, 20), (10, 30, 20)]
)
def test_an_inconsistent_policy_is_refused(minimum: int, average: int, maximum: int) -> None:
    with pytest.raises(ValueError, match="chunking policy"):
        ChunkingPolicy(minimum, average, maximum)


def test_a_policy_may_cut_at_every_item_past_the_minimum() -> None:
    fixed = ChunkingPolicy(min_chunk_bytes=100, average_chunk_bytes=100, max_chunk_bytes=100)
    runs = list(chunk_items([(b"k%d" % i, b"v" * 48) for i in range(10)], fixed))
    assert [len(run) for run in runs] == [2] * 5


# -- the container ----------------------------------------------------------------------------


def test_a_container_lists_its_chunks_after_any_prefix() -> None:
    chunks = [b"first", b"second chunk", b"3"]
    data = encode_container(chunks, prefix=b"HEADER")
    container = read_container(data, verify=True)
    assert container.prefix_bytes == len(b"HEADER")
    assert [bytes(container.chunk(data, i)) for i in range(3)] == chunks
    assert [chunk.sha256 for chunk in container.chunks] == [
        hashlib.sha256(chunk).digest() for chunk in chunks
    ]
    assert container.manifest_offset == len(b"HEADER") + sum(map(len, chunks))
    # Wrapped in an envelope that ends with it, it is still found, at its offset.
    wrapped = b"envelope" + data
    assert read_container(wrapped).prefix_bytes == len(b"envelope") + len(b"HEADER")


def test_an_empty_container_is_just_a_trailer() -> None:
    data = encode_container([])
    assert len(data) == 16 and is_container(data)
    assert read_container(data).chunks == ()


def test_an_empty_chunk_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="1 to 2"):
        encode_container([b"a", b""])


GOOD = encode_container([b"alpha", b"beta"], prefix=b"P")
TRAILER = struct.Struct(">II8s")
ENTRY = struct.Struct(">32sI")


def container_of(
    body: bytes, sizes: list[int], count: int | None = None, version: int = 1
) -> bytes:
    manifest = b"".join(ENTRY.pack(b"\0" * 32, size) for size in sizes)
    count = len(sizes) if count is None else count
    return body + manifest + TRAILER.pack(count, version, b"RKVCHUNK")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "does not end with"),
        (b"RKVCHUNK", "does not end with"),
        (GOOD[:-1], "does not end with"),
        (container_of(b"alphabeta", [5, 4], version=2), "version 2 is unknown"),
        (container_of(b"alphabeta", [5, 4], count=1000), "manifest of 1000 chunks does not fit"),
        (container_of(b"alphabeta", [99, 99]), "do not fit before the manifest"),
        (container_of(b"x", [0]), "empty chunk"),
    ],
    ids=["empty", "only the magic", "truncated", "version", "count", "sizes", "empty chunk"],
)
def test_a_malformed_container_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ChunksInvalid, match=reason):
        read_container(data)


def test_a_chunk_that_fails_its_hash_is_found_when_verifying() -> None:
    damaged = GOOD.replace(b"alpha", b"alpHa")
    read_container(damaged)  # the layout is still readable
    with pytest.raises(ChunksInvalid, match="chunk 0 fails its SHA-256"):
        read_container(damaged, verify=True)


def test_the_chunk_count_is_limited() -> None:
    with pytest.raises(ChunksInvalid, match="2 chunks exceeds the limit of 1"):
        read_container(GOOD, max_chunks=1)


# -- transfer pieces --------------------------------------------------------------------------


def covers(pieces: list[tuple[int, int]], length: int) -> bool:
    position = 0
    for offset, size in pieces:
        if offset != position or size < 1:
            return False
        position += size
    return position == length


def test_other_data_is_cut_into_pieces_of_the_limit() -> None:
    assert transfer_chunks(b"x" * 10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert transfer_chunks(b"", 4) == []


def test_a_container_is_cut_at_its_chunks_and_long_ones_further() -> None:
    data = b"envelope" + encode_container([b"a" * 3, b"b" * 10], prefix=b"HDR")
    pieces = transfer_chunks(data, 4)
    assert covers(pieces, len(data))
    starts = {offset for offset, _ in pieces}
    prefix = len(b"envelope") + len(b"HDR")
    assert {prefix, prefix + 3, prefix + 3 + 4, prefix + 3 + 8, prefix + 13} <= starts
    assert all(size <= 4 for _, size in pieces)
    # With a large limit: the prefix, each chunk, the manifest with the trailer.
    assert [size for _, size in transfer_chunks(data, 1 << 20)] == [prefix, 3, 10, 2 * 36 + 16]


def test_a_malformed_container_is_cut_like_other_data() -> None:
    data = container_of(b"alphabeta", [5, 4], count=1000)
    assert transfer_chunks(data, 8) == transfer_chunks(b"\0" * len(data), 8)


def test_identical_chunks_in_different_envelopes_are_identical_pieces() -> None:
    chunks = [bytes([i]) * (100 + i) for i in range(20)]
    first = b"one envelope" + encode_container(chunks[:15], prefix=b"H")
    second = b"another, longer envelope" + encode_container(chunks, prefix=b"H")

    def digests(data: bytes) -> set[bytes]:
        return {
            hashlib.sha256(data[offset : offset + size]).digest()
            for offset, size in transfer_chunks(data, 64)
        }

    shared = digests(first) & digests(second)
    # Every piece of the 15 common chunks (two pieces each at this limit).
    assert len(shared) >= 15 * 2


@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=300))
def test_pieces_of_any_data_cover_it_exactly(data: bytes, limit: int) -> None:
    pieces = transfer_chunks(data, limit)
    assert covers(pieces, len(data))
    assert all(size <= limit for _, size in pieces)


@given(
    st.binary(max_size=50),
    st.lists(st.binary(min_size=1, max_size=300), max_size=20),
    st.integers(min_value=1, max_value=300),
)
def test_pieces_of_any_container_cover_it_exactly(
    prefix: bytes, chunks: list[bytes], limit: int
) -> None:
    data = encode_container(chunks, prefix=prefix)
    pieces = transfer_chunks(data, limit)
    assert covers(pieces, len(data))
    assert all(size <= limit for _, size in pieces)
