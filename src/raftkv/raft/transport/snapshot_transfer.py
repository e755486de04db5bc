"""Snapshot transfer, both ends, without I/O: what a sender offers and streams, and how a
receiver checks it, reuses the chunks it already holds and puts the data back together.
Both network transports run it over a stream per snapshot (snapshot_streams.py): gRPC's
`Raft.SnapshotTransfer` calls, the TCP transport's SNAPSHOT connections.

Theory of operation.

1. Offer. The sender cuts the snapshot data with `transfer_chunks` (at the chunk boundaries
   of a chunked container, raftkv.raft.snapshot_chunks, or into fixed-size pieces) and
   names each chunk by its SHA-256. The offer carries the MsgSnap without its data, the
   size and SHA-256 of the whole, and that manifest.
2. Wants. The receiver checks the offer against its limits, then looks each distinct chunk
   up: in its `ChunkCache` (chunks verified in earlier transfers, finished or cut off, so a
   transfer that lost its connection resumes where it stopped), then optionally in its own
   state cut the same way (a follower that was down holds most of the leader's state
   already). It asks for the rest, by position.
3. Chunks. The sender streams what was asked for, each chunk compressed on its own (zstd,
   or raw when that is not smaller), never more than `max_chunks_in_flight` ahead of the
   receiver's acknowledgements (the connection's flow control bounds the bytes below that).
4. Delivery. The receiver decompresses each chunk within its announced size, checks its
   SHA-256, keeps it and acknowledges it. With every chunk in hand it joins the data,
   checks its size and SHA-256, and only then delivers the MsgSnap (installing it is the
   node's business, atomic as before).

Rules:
- Nothing from a peer is trusted. Every failed check raises MalformedMessage (or
  SnapshotTooLarge), names what was wrong, and ends the transfer: nothing is delivered from
  a transfer that failed once; chunks it had verified stay in the cache.
- Memory is bounded by the limits: an offer of at most `max_snapshot_bytes` in at most
  `max_chunks` chunks of at most `max_chunk_bytes` each; a compressed chunk is refused
  before decompression unless its frame declares exactly the announced size.
- The objects are not thread-safe. Their O(data) calls (`OutgoingSnapshot.build`,
  `chunk`, `IncomingSnapshot.add`, `reuse_local`, `finish`) may run on a worker thread,
  one call at a time.

This module, `codec.py` and the network transports' modules are the only users of
`raft_pb2` (see codec.py).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

import msgspec
import zstandard
from google.protobuf.message import DecodeError

from raftkv.raft.core.errors import InvalidArgument, MalformedMessage
from raftkv.raft.core.types import Message, MessageType
from raftkv.raft.snapshot_chunks import transfer_chunks
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport.base import TransportError
from raftkv.raft.transport.codec import decode_message, encode_message

__all__ = [
    "TRANSFER_VERSION",
    "ChunkCache",
    "IncomingSnapshot",
    "OutgoingSnapshot",
    "SnapshotTooLarge",
    "TransferLimits",
]

TRANSFER_VERSION: Final = 1
_DIGEST_BYTES: Final = 32
# Level 3: zstd's default, fast for both ends. Chunks already compressed (the KV store's)
# do not shrink and go raw.
_WIRE_ZSTD_LEVEL: Final = 3


class SnapshotTooLarge(TransportError):
    """A peer offered a snapshot beyond this node's limits (`max_snapshot_bytes`,
    `max_snapshot_chunks`)."""


@dataclass(frozen=True, slots=True)
class TransferLimits:
    """What a receiver accepts (PeerTransportSettings fields of the same names)."""

    max_snapshot_bytes: int
    max_snapshot_chunks: int
    max_snapshot_chunk_bytes: int


class ChunkCache:
    """Verified chunks by SHA-256, the least recently used evicted beyond `max_bytes`.

    Invariant: `size_bytes` is the sum of the held chunks' sizes and never exceeds
    `max_bytes` (a chunk larger than that is not kept).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size_bytes = 0
        self._chunks: OrderedDict[bytes, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._chunks)

    def get(self, digest: bytes) -> bytes | None:
        chunk = self._chunks.get(digest)
        if chunk is not None:
            self._chunks.move_to_end(digest)
        return chunk

    def put(self, digest: bytes, chunk: bytes) -> None:
        """Keep `chunk`, whose SHA-256 the caller has checked is `digest`."""
        if len(chunk) > self.max_bytes or digest in self._chunks:
            return
        self._chunks[digest] = chunk
        self.size_bytes += len(chunk)
        while self.size_bytes > self.max_bytes:
            _, evicted = self._chunks.popitem(last=False)
            self.size_bytes -= len(evicted)


class OutgoingSnapshot:
    """The sender's side of one transfer of a MsgSnap."""

    def __init__(self, message: Message, offer: wire.SnapshotOffer, pieces: list[tuple[int, int]]):
        self.message = message
        self.offer = offer
        self._pieces = pieces
        snapshot = message.snapshot
        assert snapshot is not None
        self._data = memoryview(snapshot.data)

    @classmethod
    def build(cls, cluster_id: int, message: Message, max_chunk_bytes: int) -> OutgoingSnapshot:
        """Cut and hash the snapshot data (O(data)). InvalidArgument for a message that
        is no MsgSnap or cannot be encoded (a local bug)."""
        snapshot = message.snapshot
        if message.type is not MessageType.SNAPSHOT or snapshot is None:
            raise InvalidArgument(f"{message.type.value} carries no snapshot")
        if max_chunk_bytes < 1:
            raise InvalidArgument(f"chunk size must be positive, not {max_chunk_bytes}")
        data = memoryview(snapshot.data)
        pieces = transfer_chunks(data, max_chunk_bytes)
        offer = wire.SnapshotOffer(
            version=TRANSFER_VERSION,
            cluster_id=cluster_id,
            from_node=message.sender,
            message=encode_message(message, with_snapshot_data=False),
            total_bytes=len(data),
            sha256=hashlib.sha256(data).digest(),
            chunk_sha256s=b"".join(
                hashlib.sha256(data[offset : offset + size]).digest() for offset, size in pieces
            ),
            chunk_sizes=[size for _, size in pieces],
            max_chunk_bytes=max_chunk_bytes,
        )
        return cls(message, offer, pieces)

    @property
    def total_bytes(self) -> int:
        return len(self._data)

    @property
    def chunk_count(self) -> int:
        return len(self._pieces)

    def upload(self) -> wire.SnapshotUpload:
        """The stream's first message."""
        return wire.SnapshotUpload(offer=self.offer)

    def wanted(self, reply: wire.SnapshotReply) -> list[int]:
        """The positions the receiver asks for, checked. MalformedMessage if the reply is
        no wants or names positions out of order or out of range."""
        if reply.WhichOneof("kind") != "wants":
            raise MalformedMessage(f"snapshot receiver answered {_kind(reply)} before its wants")
        positions = list(reply.wants.positions)
        previous = -1
        for position in positions:
            if not previous < position < len(self._pieces):
                raise MalformedMessage(
                    f"snapshot receiver wants chunk {position} of {len(self._pieces)} "
                    f"after {previous}"
                )
            previous = position
        return positions

    def wanted_bytes(self, positions: list[int]) -> int:
        return sum(self._pieces[position][1] for position in positions)

    def chunk(self, position: int) -> wire.SnapshotUpload:
        """The chunk at `position`, compressed when that makes it smaller (O(chunk))."""
        offset, size = self._pieces[position]
        raw = self._data[offset : offset + size]
        compressed = zstandard.ZstdCompressor(level=_WIRE_ZSTD_LEVEL).compress(raw)
        if len(compressed) < size:
            encoding, data = wire.CHUNK_ENCODING_ZSTD, compressed
        else:
            encoding, data = wire.CHUNK_ENCODING_RAW, bytes(raw)
        return wire.SnapshotUpload(
            chunk=wire.SnapshotChunkData(position=position, encoding=encoding, data=data)
        )


def acknowledged(reply: wire.SnapshotReply, previous: int, sent: int) -> int:
    """The count of chunks a receiver's acknowledgement says it has verified (between
    `previous` and `sent`). MalformedMessage for anything else."""
    if reply.WhichOneof("kind") != "chunks_received":
        raise MalformedMessage(f"snapshot receiver answered {_kind(reply)} mid-transfer")
    count = reply.chunks_received
    if not previous < count <= sent:
        raise MalformedMessage(
            f"snapshot receiver acknowledged {count} chunks after {previous}, of {sent} sent"
        )
    return count


@dataclass(frozen=True, slots=True)
class _Offer:
    message: Message
    total_bytes: int
    sha256: bytes
    digests: tuple[bytes, ...]
    sizes: tuple[int, ...]
    max_chunk_bytes: int


class IncomingSnapshot:
    """The receiver's side of one transfer, from its offer to the delivered MsgSnap.

    Invariants: `_held` maps digests of the offer to their verified chunks; every position
    is either held or wanted, never both, once `wants()` has been called; `received` counts
    wanted chunks that arrived (each exactly once).
    """

    def __init__(self, cluster_id: int, limits: TransferLimits, data: bytes) -> None:
        """Parse and check the stream's first message (an offer)."""
        self._offer = _read_offer(_parse_upload(data, "offer"), cluster_id, limits)
        self._limits = limits
        self._held: dict[bytes, bytes] = {}
        self._wanted: dict[int, bool] | None = None  # position -> arrived
        self.received = 0
        self.received_bytes = 0
        self.from_cache = 0
        self.from_local = 0

    @property
    def message(self) -> Message:
        """The offered MsgSnap, without its data."""
        return self._offer.message

    @property
    def total_bytes(self) -> int:
        return self._offer.total_bytes

    @property
    def chunk_count(self) -> int:
        return len(self._offer.sizes)

    def missing(self) -> set[bytes]:
        """Digests of the offer's chunks not held yet."""
        return {digest for digest in self._offer.digests if digest not in self._held}

    def reuse_cached(self, cache: ChunkCache) -> None:
        """Take every offered chunk that `cache` holds."""
        for digest in self.missing():
            chunk = cache.get(digest)
            if chunk is not None:
                self._held[digest] = chunk
                self.from_cache += 1

    def reuse_local(self, data: bytes) -> None:
        """Take every offered chunk found in `data` (this node's own state, in the same
        format) when cut like the sender cuts (O(data): hashes the pieces whose size
        matches a missing chunk's). Skipped if that cut would make more pieces than an
        offer may have chunks (a peer's tiny chunk size must not cost this node
        O(state) pieces of bookkeeping)."""
        max_chunk_bytes = self._offer.max_chunk_bytes
        if not self._offer.sizes or len(data) // max_chunk_bytes > self._limits.max_snapshot_chunks:
            return
        missing = self.missing()
        sizes = {
            size
            for digest, size in zip(self._offer.digests, self._offer.sizes, strict=True)
            if digest in missing
        }
        view = memoryview(data)
        for offset, size in transfer_chunks(view, max_chunk_bytes):
            if size not in sizes:
                continue
            piece = view[offset : offset + size]
            digest = hashlib.sha256(piece).digest()
            if digest in missing:
                missing.discard(digest)
                self._held[digest] = bytes(piece)
                self.from_local += 1

    def wants(self) -> wire.SnapshotReply:
        """The answer to the offer: the first position of each chunk not held."""
        asked: set[bytes] = set()
        positions = []
        for position, digest in enumerate(self._offer.digests):
            if digest not in self._held and digest not in asked:
                asked.add(digest)
                positions.append(position)
        self._wanted = dict.fromkeys(positions, False)
        return wire.SnapshotReply(wants=wire.SnapshotWants(positions=positions))

    @property
    def wanted_count(self) -> int:
        assert self._wanted is not None, "wants() first"
        return len(self._wanted)

    @property
    def complete(self) -> bool:
        return self._wanted is not None and self.received == len(self._wanted)

    def add(self, data: bytes) -> tuple[bytes, bytes]:
        """Check and keep one chunk message; (digest, chunk) for the cache (O(chunk))."""
        wanted = self._wanted
        assert wanted is not None, "wants() first"
        chunk = _parse_upload(data, "chunk").chunk
        position = chunk.position
        arrived = wanted.get(position)
        if arrived is None:
            raise MalformedMessage(f"snapshot chunk {position} was not asked for")
        if arrived:
            raise MalformedMessage(f"snapshot chunk {position} arrived twice")
        size = self._offer.sizes[position]
        raw = _decode_chunk(chunk, size)
        digest = self._offer.digests[position]
        if hashlib.sha256(raw).digest() != digest:
            raise MalformedMessage(f"snapshot chunk {position} fails its SHA-256")
        wanted[position] = True
        self._held[digest] = raw
        self.received += 1
        self.received_bytes += len(chunk.data)
        return digest, raw

    def progress(self) -> wire.SnapshotReply:
        return wire.SnapshotReply(chunks_received=self.received)

    def finish(self) -> Message:
        """The MsgSnap with the whole data, checked against the offer (O(data))."""
        if not self.complete:
            raise MalformedMessage(
                f"snapshot stream ended after {self.received} of "
                f"{0 if self._wanted is None else len(self._wanted)} chunks"
            )
        offer = self._offer
        data = b"".join(self._held[digest] for digest in offer.digests)
        self._held = {}
        # Each chunk matched its size and digest, so only a sender whose manifest
        # disagrees with its own data can fail here.
        if len(data) != offer.total_bytes or hashlib.sha256(data).digest() != offer.sha256:
            raise MalformedMessage("snapshot data fails its SHA-256")
        snapshot = offer.message.snapshot
        assert snapshot is not None  # _read_offer checked it
        return msgspec.structs.replace(
            offer.message, snapshot=msgspec.structs.replace(snapshot, data=data)
        )


def _kind(reply: wire.SnapshotReply) -> str:
    return reply.WhichOneof("kind") or "nothing"


def _parse_upload(data: bytes, expected: str) -> wire.SnapshotUpload:
    try:
        upload = wire.SnapshotUpload.FromString(data)
    except DecodeError as error:
        raise MalformedMessage(f"undecodable SnapshotUpload ({len(data)} bytes): {error}") from None
    kind = upload.WhichOneof("kind")
    if kind != expected:
        raise MalformedMessage(f"snapshot stream sent {kind or 'nothing'} where {expected} was due")
    return upload


def _read_offer(upload: wire.SnapshotUpload, cluster_id: int, limits: TransferLimits) -> _Offer:
    offer = upload.offer
    if offer.version != TRANSFER_VERSION:
        raise MalformedMessage(
            f"snapshot transfer version {offer.version}; this node speaks {TRANSFER_VERSION}"
        )
    if offer.cluster_id != cluster_id:
        raise MalformedMessage(
            f"cluster id {offer.cluster_id} is not this cluster's ({cluster_id})"
        )
    if offer.total_bytes > limits.max_snapshot_bytes:
        raise SnapshotTooLarge(
            f"snapshot of {offer.total_bytes} bytes exceeds the limit of "
            f"{limits.max_snapshot_bytes} (max_snapshot_bytes)"
        )
    sizes = tuple(offer.chunk_sizes)
    if len(sizes) > limits.max_snapshot_chunks:
        raise SnapshotTooLarge(
            f"snapshot in {len(sizes)} chunks exceeds the limit of "
            f"{limits.max_snapshot_chunks} (max_snapshot_chunks)"
        )
    if len(offer.sha256) != _DIGEST_BYTES:
        raise MalformedMessage(f"snapshot SHA-256 has {len(offer.sha256)} bytes")
    hashes = offer.chunk_sha256s
    if len(hashes) != _DIGEST_BYTES * len(sizes):
        raise MalformedMessage(
            f"snapshot offer lists {len(sizes)} chunk sizes and {len(hashes)} bytes of SHA-256s"
        )
    for position, size in enumerate(sizes):
        if not 0 < size <= limits.max_snapshot_chunk_bytes:
            raise MalformedMessage(
                f"snapshot chunk {position} of {size} bytes is empty or exceeds the limit of "
                f"{limits.max_snapshot_chunk_bytes} (max_snapshot_chunk_bytes)"
            )
    if sum(sizes) != offer.total_bytes:
        raise MalformedMessage(
            f"snapshot chunks of {sum(sizes)} bytes do not make the announced {offer.total_bytes}"
        )
    if sizes and not max(sizes) <= offer.max_chunk_bytes <= limits.max_snapshot_chunk_bytes:
        raise MalformedMessage(
            f"snapshot offer names a chunk size of {offer.max_chunk_bytes}, not between its "
            f"longest chunk ({max(sizes)}) and {limits.max_snapshot_chunk_bytes} "
            "(max_snapshot_chunk_bytes)"
        )
    message = decode_message(offer.message)
    if message.type is not MessageType.SNAPSHOT:
        raise MalformedMessage(f"snapshot stream carries a {message.type.value}")
    if message.sender != offer.from_node:
        raise MalformedMessage(
            f"snapshot from {message.sender} in a stream from node {offer.from_node}"
        )
    assert message.snapshot is not None  # check_peer_message requires it for MsgSnap
    if message.snapshot.data:
        raise MalformedMessage("snapshot offer carries data outside the chunks")
    digests = tuple(
        hashes[start : start + _DIGEST_BYTES] for start in range(0, len(hashes), _DIGEST_BYTES)
    )
    return _Offer(message, offer.total_bytes, offer.sha256, digests, sizes, offer.max_chunk_bytes)


def _decode_chunk(chunk: wire.SnapshotChunkData, size: int) -> bytes:
    """The chunk's bytes, exactly `size` of them, or MalformedMessage. A compressed chunk
    must declare its size in its frame header, checked before anything is allocated
    (zstandard allocates what a frame declares, whatever max_output_size says)."""
    position = chunk.position
    if chunk.encoding == wire.CHUNK_ENCODING_RAW:
        raw = chunk.data
    elif chunk.encoding == wire.CHUNK_ENCODING_ZSTD:
        try:
            declared = zstandard.frame_content_size(chunk.data)
            if declared != size:
                shown = "no size" if declared < 0 else declared  # -1: not declared
                raise MalformedMessage(
                    f"snapshot chunk {position} declares {shown} where {size} bytes were announced"
                )
            decompressor = zstandard.ZstdDecompressor().decompressobj()
            raw = decompressor.decompress(chunk.data)
            if not decompressor.eof:
                raise MalformedMessage(
                    f"snapshot chunk {position} does not decompress: its zstd frame is cut short"
                )
            # One frame, nothing after it: bytes past the frame are not ours to ignore.
            if decompressor.unused_data:
                raise MalformedMessage(
                    f"snapshot chunk {position} has {len(decompressor.unused_data)} bytes "
                    "after its zstd frame"
                )
        except zstandard.ZstdError as error:
            raise MalformedMessage(
                f"snapshot chunk {position} does not decompress: {error}"
            ) from None
    else:
        raise MalformedMessage(f"snapshot chunk {position} has unknown encoding {chunk.encoding}")
    if len(raw) != size:
        raise MalformedMessage(
            f"snapshot chunk {position} holds {len(raw)} bytes where {size} were announced"
        )
    return raw
