"""snapshot_transfer.py without gRPC: an offer and its chunks round-trip; the receiver
reuses cached and local chunks and asks for the rest only; every malformed offer, chunk
and reply is refused with a clear error and nothing is delivered."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from random import Random

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from raftkv.raft.core.errors import InvalidArgument, MalformedMessage
from raftkv.raft.core.types import (
    ConfState,
    Message,
    MessageType,
    NodeId,
    Snapshot,
    SnapshotMetadata,
)
from raftkv.raft.snapshot_chunks import encode_container
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport.snapshot_transfer import (
    ChunkCache,
    IncomingSnapshot,
    OutgoingSnapshot,
    SnapshotTooLarge,
    TransferLimits,
    acknowledged,
)

CLUSTER = 5
LIMITS = TransferLimits(
    max_snapshot_bytes=1 << 20, max_snapshot_chunks=1000, max_snapshot_chunk_bytes=4096
)


def snapshot_message(data: bytes, sender: int = 1) -> Message:
    return Message(
        MessageType.SNAPSHOT,
        to=NodeId(2),
        sender=NodeId(sender),
        term=3,
        snapshot=Snapshot(
            SnapshotMetadata(
                index=7, term=3, conf_state=ConfState(voters=frozenset({NodeId(1), NodeId(2)}))
            ),
            data=data,
        ),
    )


def random_data(size: int, seed: int = 1) -> bytes:
    return Random(seed).randbytes(size)


def chunked_state(chunks: list[bytes]) -> bytes:
    return encode_container(chunks, prefix=b"STATE")


def outgoing(data: bytes, chunk_bytes: int = 1000) -> OutgoingSnapshot:
    return OutgoingSnapshot.build(CLUSTER, snapshot_message(data), chunk_bytes)


def incoming(sent: OutgoingSnapshot, limits: TransferLimits = LIMITS) -> IncomingSnapshot:
    return IncomingSnapshot(CLUSTER, limits, sent.upload().SerializeToString())


def deliver(
    sender: OutgoingSnapshot, receiver: IncomingSnapshot, cache: ChunkCache | None = None
) -> tuple[Message, list[int]]:
    """Run a whole transfer: wants, every wanted chunk, finish. (message, positions sent)"""
    positions = sender.wanted(receiver.wants())
    for position in positions:
        digest, chunk = receiver.add(sender.chunk(position).SerializeToString())
        if cache is not None:
            cache.put(digest, chunk)
    return receiver.finish(), positions


# -- round trips -------------------------------------------------------------------------------


@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=4096))
def test_any_snapshot_round_trips(data: bytes, chunk_bytes: int) -> None:
    message = snapshot_message(data)
    sender = OutgoingSnapshot.build(CLUSTER, message, chunk_bytes)
    received, _ = deliver(sender, incoming(sender))
    assert received == message


def test_the_offer_names_every_chunk_and_carries_no_data() -> None:
    data = random_data(2500)
    offer = outgoing(data).offer
    assert offer.total_bytes == len(data)
    assert offer.sha256 == hashlib.sha256(data).digest()
    assert list(offer.chunk_sizes) == [1000, 1000, 500]
    assert offer.chunk_sha256s == b"".join(
        hashlib.sha256(data[start : start + 1000]).digest() for start in (0, 1000, 2000)
    )
    assert offer.max_chunk_bytes == 1000
    assert offer.message.snapshot.data == b""


def test_a_snapshot_without_data_needs_no_chunk() -> None:
    sender = outgoing(b"")
    received, positions = deliver(sender, incoming(sender))
    assert positions == []
    assert received == snapshot_message(b"")


def test_compressible_chunks_go_compressed_and_others_raw() -> None:
    sender = outgoing(b"a" * 1000 + random_data(1000))
    compressible, incompressible = sender.chunk(0).chunk, sender.chunk(1).chunk
    assert compressible.encoding == wire.CHUNK_ENCODING_ZSTD and len(compressible.data) < 100
    assert incompressible.encoding == wire.CHUNK_ENCODING_RAW
    assert len(incompressible.data) == 1000


def test_identical_chunks_are_asked_for_once() -> None:
    sender = outgoing(b"x" * 3000 + b"y" * 10)
    receiver = incoming(sender)
    assert list(receiver.wants().wants.positions) == [0, 3]
    received, _ = deliver(sender, incoming(sender))
    assert received == sender.message


def test_a_message_without_a_snapshot_cannot_be_offered() -> None:
    with pytest.raises(InvalidArgument, match="carries no snapshot"):
        OutgoingSnapshot.build(CLUSTER, Message(MessageType.HEARTBEAT), 100)
    with pytest.raises(InvalidArgument, match="chunk size must be positive"):
        OutgoingSnapshot.build(CLUSTER, snapshot_message(b"x"), 0)


# -- reuse: the cache (resuming) and the receiver's own state (delta) -------------------------


def test_a_transfer_cut_off_resumes_with_what_was_received() -> None:
    data = random_data(10_000)
    cache = ChunkCache(max_bytes=1 << 20)
    first_sender = outgoing(data)
    first = incoming(first_sender)
    positions = first_sender.wanted(first.wants())
    assert positions == list(range(10))
    for position in positions[:4]:  # then the connection drops
        cache.put(*first.add(first_sender.chunk(position).SerializeToString()))
    with pytest.raises(MalformedMessage, match="ended after 4 of 10 chunks"):
        first.finish()

    retry_sender = outgoing(data)
    retry = incoming(retry_sender)
    retry.reuse_cached(cache)
    assert retry.from_cache == 4
    received, sent = deliver(retry_sender, retry, cache)
    assert sent == [4, 5, 6, 7, 8, 9]
    assert received.snapshot == first_sender.message.snapshot


def test_chunks_of_the_receivers_own_state_are_not_sent() -> None:
    rng = Random(3)
    chunks = [rng.randbytes(rng.randrange(500, 900)) for _ in range(30)]
    mine = chunked_state(chunks)
    # The leader's state: two chunks changed, one appended; wrapped in another envelope.
    theirs = [*chunks[:10], b"changed" * 90, *chunks[11:20], b"other" * 150, *chunks[21:]]
    theirs.append(b"new" * 200)
    data = b"an envelope" + chunked_state(theirs)
    sender = outgoing(data, chunk_bytes=1000)
    receiver = incoming(sender)
    receiver.reuse_local(mine)
    assert receiver.from_local == 28
    received, sent = deliver(sender, receiver)
    # The three new chunks, the prefix (the envelope) and the manifest (1132 bytes: two
    # pieces at this chunk size).
    assert len(sent) == 6
    assert sender.wanted_bytes(sent) < len(data) // 5
    assert received == sender.message


def test_local_data_is_not_cut_into_more_pieces_than_an_offer_may_have() -> None:
    data = random_data(5000)
    sender = outgoing(data)  # 5 chunks of 1000 bytes
    limits = TransferLimits(
        max_snapshot_bytes=1 << 20, max_snapshot_chunks=5, max_snapshot_chunk_bytes=4096
    )
    receiver = incoming(sender, limits)
    receiver.reuse_local(data + b"x" * 1000)  # would be 6 pieces: not even looked at
    assert receiver.from_local == 0
    receiver.reuse_local(data)
    assert receiver.from_local == 5


def test_local_data_in_another_format_costs_nothing_but_is_harmless() -> None:
    data = random_data(5000)
    sender = outgoing(data)
    receiver = incoming(sender)
    receiver.reuse_local(random_data(5000, seed=2))
    assert receiver.from_local == 0
    received, sent = deliver(sender, receiver)
    assert len(sent) == 5 and received == sender.message


def test_the_cache_evicts_the_least_recently_used_beyond_its_bytes() -> None:
    cache = ChunkCache(max_bytes=250)
    for name in (b"a", b"b"):
        cache.put(name, name * 100)
    assert cache.get(b"a") == b"a" * 100  # now b is the least recently used
    cache.put(b"c", b"c" * 100)
    assert (cache.get(b"a"), cache.get(b"b"), cache.get(b"c")) == (b"a" * 100, None, b"c" * 100)
    assert (len(cache), cache.size_bytes) == (2, 200)
    cache.put(b"d", b"d" * 251)  # larger than the whole cache: not kept
    assert cache.get(b"d") is None and cache.size_bytes == 200
    assert ChunkCache(max_bytes=0).get(b"a") is None


# -- malformed offers --------------------------------------------------------------------------

GOOD = outgoing(random_data(2500))


def offer_with(change: Callable[[wire.SnapshotOffer], object]) -> bytes:
    upload = wire.SnapshotUpload()
    upload.offer.CopyFrom(GOOD.offer)
    change(upload.offer)
    return upload.SerializeToString()


def set_field(name: str, value: object) -> Callable[[wire.SnapshotOffer], object]:
    return lambda offer: setattr(offer, name, value)


def set_sizes(sizes: list[int]) -> Callable[[wire.SnapshotOffer], object]:
    def change(offer: wire.SnapshotOffer) -> None:
        del offer.chunk_sizes[:]
        offer.chunk_sizes.extend(sizes)

    return change


@pytest.mark.parametrize(
    ("data", "error", "reason"),
    [
        (b"\xff\xff", MalformedMessage, "undecodable SnapshotUpload"),
        (b"", MalformedMessage, "sent nothing where offer was due"),
        (
            wire.SnapshotUpload(chunk=wire.SnapshotChunkData()).SerializeToString(),
            MalformedMessage,
            "sent chunk where offer was due",
        ),
        (offer_with(set_field("version", 2)), MalformedMessage, "version 2; this node speaks 1"),
        (offer_with(set_field("cluster_id", 9)), MalformedMessage, "cluster id 9"),
        (
            offer_with(set_field("total_bytes", (1 << 20) + 1)),
            SnapshotTooLarge,
            "1048577 bytes exceeds the limit of 1048576 \\(max_snapshot_bytes\\)",
        ),
        (
            offer_with(set_sizes([1] * 1001)),
            SnapshotTooLarge,
            "1001 chunks exceeds the limit of 1000 \\(max_snapshot_chunks\\)",
        ),
        (offer_with(set_field("sha256", b"short")), MalformedMessage, "SHA-256 has 5 bytes"),
        (
            offer_with(set_sizes([1000, 1500])),
            MalformedMessage,
            "2 chunk sizes and 96 bytes of SHA-256s",
        ),
        (offer_with(set_sizes([1000, 0, 1500])), MalformedMessage, "chunk 1 of 0 bytes is empty"),
        (
            offer_with(set_sizes([5000, 1000, 500])),
            MalformedMessage,
            "chunk 0 of 5000 bytes .* exceeds the limit of 4096 \\(max_snapshot_chunk_bytes\\)",
        ),
        (
            offer_with(set_sizes([1000, 1000, 400])),
            MalformedMessage,
            "chunks of 2400 bytes do not make the announced 2500",
        ),
        (
            offer_with(set_field("max_chunk_bytes", 999)),
            MalformedMessage,
            "chunk size of 999, not between its longest chunk \\(1000\\) and 4096",
        ),
        (
            offer_with(set_field("max_chunk_bytes", 5000)),
            MalformedMessage,
            "chunk size of 5000, not between .* and 4096 \\(max_snapshot_chunk_bytes\\)",
        ),
        (
            offer_with(lambda offer: setattr(offer.message, "type", wire.MSG_HEARTBEAT)),
            MalformedMessage,
            "carries a MsgHeartbeat",
        ),
        (
            offer_with(lambda offer: offer.message.ClearField("snapshot")),
            MalformedMessage,
            "MsgSnap without a snapshot",
        ),
        (offer_with(set_field("from_node", 3)), MalformedMessage, "from 1 in a stream from node 3"),
        (
            offer_with(lambda offer: setattr(offer.message.snapshot, "data", b"x")),
            MalformedMessage,
            "carries data outside the chunks",
        ),
    ],
    ids=[
        "undecodable",
        "empty",
        "a chunk first",
        "version",
        "cluster",
        "too large",
        "too many chunks",
        "short digest",
        "sizes and digests disagree",
        "empty chunk",
        "chunk too large",
        "sizes do not add up",
        "chunk size below a chunk",
        "chunk size over the limit",
        "not a MsgSnap",
        "no snapshot",
        "another sender",
        "data in the offer",
    ],
)
def test_a_malformed_offer_is_refused(data: bytes, error: type[Exception], reason: str) -> None:
    with pytest.raises(error, match=reason):
        IncomingSnapshot(CLUSTER, LIMITS, data)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_an_offer_are_refused(data: bytes) -> None:
    with pytest.raises((MalformedMessage, SnapshotTooLarge)):
        IncomingSnapshot(CLUSTER, LIMITS, data)


# -- malformed chunks --------------------------------------------------------------------------


def chunk_upload(position: int, data: bytes, encoding: int = wire.CHUNK_ENCODING_RAW) -> bytes:
    chunk = wire.SnapshotChunkData(position=position, encoding=encoding, data=data)  # type: ignore[arg-type]
    return wire.SnapshotUpload(chunk=chunk).SerializeToString()


DATA = b"a" * 1000 + random_data(1500)
SENDER = outgoing(DATA)
# A zstd frame header declaring 1 TiB of content, then a few bytes of a block.
BOMB = b"\x28\xb5\x2f\xfd\xe0" + (1 << 40).to_bytes(8, "little") + b"\x01\x00\x00"


def receiving() -> IncomingSnapshot:
    receiver = incoming(SENDER)
    receiver.wants()
    return receiver


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff", "undecodable SnapshotUpload"),
        (SENDER.upload().SerializeToString(), "sent offer where chunk was due"),
        (chunk_upload(7, b"x"), "chunk 7 was not asked for"),
        (chunk_upload(1, DATA[1000:2000], encoding=9), "chunk 1 has unknown encoding 9"),
        (chunk_upload(1, DATA[1000:1999]), "chunk 1 holds 999 bytes where 1000 were announced"),
        (chunk_upload(1, b"?" * 1000), "chunk 1 fails its SHA-256"),
        (
            chunk_upload(
                0, zstandard.ZstdCompressor().compress(b"a" * 999), wire.CHUNK_ENCODING_ZSTD
            ),
            "chunk 0 declares 999 where 1000 bytes were announced",
        ),
        (
            chunk_upload(
                0,
                zstandard.ZstdCompressor(write_content_size=False).compress(b"a" * 1000),
                wire.CHUNK_ENCODING_ZSTD,
            ),
            "chunk 0 declares no size",
        ),
        (chunk_upload(0, BOMB, wire.CHUNK_ENCODING_ZSTD), "chunk 0 declares 1099511627776"),
        (chunk_upload(0, b"not zstd at all", wire.CHUNK_ENCODING_ZSTD), "does not decompress"),
        (
            chunk_upload(
                0,
                zstandard.ZstdCompressor().compress(b"a" * 1000)[:-3],
                wire.CHUNK_ENCODING_ZSTD,
            ),
            "chunk 0 does not decompress",
        ),
        (
            chunk_upload(
                0,
                zstandard.ZstdCompressor().compress(b"a" * 1000) + b"junk",
                wire.CHUNK_ENCODING_ZSTD,
            ),
            "chunk 0 has 4 bytes after its zstd frame",
        ),
        (
            chunk_upload(
                0, zstandard.ZstdCompressor().compress(b"b" * 1000), wire.CHUNK_ENCODING_ZSTD
            ),
            "chunk 0 fails its SHA-256",
        ),
    ],
    ids=[
        "undecodable",
        "a second offer",
        "not asked for",
        "unknown encoding",
        "wrong raw size",
        "wrong content",
        "declares another size",
        "declares no size",
        "decompression bomb",
        "not a frame",
        "truncated frame",
        "bytes after the frame",
        "compressed wrong content",
    ],
)
def test_a_malformed_chunk_is_refused_and_changes_nothing(data: bytes, reason: str) -> None:
    receiver = receiving()
    with pytest.raises(MalformedMessage, match=reason):
        receiver.add(data)
    assert (receiver.received, receiver.received_bytes, receiver.complete) == (0, 0, False)
    with pytest.raises(MalformedMessage, match="ended after 0 of 3 chunks"):
        receiver.finish()


def test_a_chunk_sent_twice_is_refused() -> None:
    receiver = receiving()
    receiver.add(SENDER.chunk(1).SerializeToString())
    with pytest.raises(MalformedMessage, match="chunk 1 arrived twice"):
        receiver.add(SENDER.chunk(1).SerializeToString())
    assert receiver.received == 1


def test_a_sender_whose_manifest_disagrees_with_its_digest_delivers_nothing() -> None:
    lying = outgoing(DATA)
    lying.offer.sha256 = hashlib.sha256(b"something else").digest()
    receiver = incoming(lying)
    with pytest.raises(MalformedMessage, match="snapshot data fails its SHA-256"):
        deliver(lying, receiver)


# -- malformed replies (the sender checks the receiver too) ------------------------------------


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (wire.SnapshotReply(chunks_received=1), "answered chunks_received before its wants"),
        (wire.SnapshotReply(), "answered nothing before its wants"),
        (wire.SnapshotReply(wants=wire.SnapshotWants(positions=[3])), "wants chunk 3 of 3"),
        (
            wire.SnapshotReply(wants=wire.SnapshotWants(positions=[1, 1])),
            "wants chunk 1 of 3 after 1",
        ),
        (
            wire.SnapshotReply(wants=wire.SnapshotWants(positions=[2, 0])),
            "wants chunk 0 of 3 after 2",
        ),
    ],
    ids=["an acknowledgement first", "empty", "out of range", "twice", "out of order"],
)
def test_malformed_wants_are_refused(reply: wire.SnapshotReply, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        SENDER.wanted(reply)


def test_acknowledgements_count_up_one_chunk_at_a_time() -> None:
    assert acknowledged(wire.SnapshotReply(chunks_received=1), 0, 3) == 1
    with pytest.raises(MalformedMessage, match="acknowledged 1 chunks after 1, of 3 sent"):
        acknowledged(wire.SnapshotReply(chunks_received=1), 1, 3)
    with pytest.raises(MalformedMessage, match="acknowledged 4 chunks after 1, of 3 sent"):
        acknowledged(wire.SnapshotReply(chunks_received=4), 1, 3)
    with pytest.raises(MalformedMessage, match="answered wants mid-transfer"):
        acknowledged(wire.SnapshotReply(wants=wire.SnapshotWants()), 0, 3)
