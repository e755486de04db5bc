"""Chunked snapshot data: a deterministic state cut into content-addressed chunks, so that
two nodes holding mostly the same state produce mostly the same chunks, and a snapshot
transfer sends only the chunks its receiver lacks.

Why chunks of a deterministic encoding, not the database's files. RocksDB's SST files are
immutable, but each node flushes and compacts its LSM tree on its own schedule, so two
nodes holding identical data hold different files (other names, boundaries and sizes):
offering files by name, size and checksum would find nothing in common between nodes.
What replicas do share is their logical state, item for item. Encoded deterministically
and cut where the content says (not at fixed offsets, which one inserted item would shift
for everything after it), identical key ranges give byte-identical chunks, with the same
SHA-256, on every node; a localized change (a few keys written) changes only the chunks
holding those keys.

Rules of the container (integers big-endian):

    prefix | chunk 0 | ... | chunk n-1 | manifest | trailer

- manifest: for each chunk in order, its SHA-256 (32 bytes) and its size (u32);
- trailer (16 bytes): n (u32), the container version (u32, CONTAINER_VERSION), the magic
  b"RKVCHUNK";
- prefix: whatever precedes the first chunk (an application's own header). The container
  is read from its end, so an envelope that ends with it (the driver's msgpack snapshot
  envelope ends with the application's bytes) leaves it readable in place;
- chunks are never empty; what they hold is the application's business.

`chunk_items` is the content-defined cut for a sorted key-value state: a chunk ends after
an item whose key hashes below a threshold proportional to the item's size (so chunks
average `average_chunk_bytes` whatever the item sizes), once it holds `min_chunk_bytes`,
or as soon as it reaches `max_chunk_bytes`. Two states that agree on a run of items cut it
alike as soon as both have passed a shared cut point.

`transfer_chunks` is how a transport cuts any snapshot data for sending: at the container's
chunk boundaries when the data ends with a readable container, into pieces of a fixed size
otherwise (other state machines, older formats), and never into a piece longer than the
transport's limit. The cut only decides how much is shared; every chunk is checked by its
SHA-256 and the whole data by its own, so a poor cut costs bytes, never correctness.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CONTAINER_VERSION",
    "MAX_CONTAINER_CHUNK_BYTES",
    "ChunkingPolicy",
    "ChunksInvalid",
    "Container",
    "ContainerChunk",
    "chunk_items",
    "container_pieces",
    "encode_container",
    "is_container",
    "read_container",
    "transfer_chunks",
]

CONTAINER_VERSION: Final = 1
_MAGIC: Final = b"RKVCHUNK"
_TRAILER: Final = struct.Struct(">II8s")
_MANIFEST_ENTRY: Final = struct.Struct(">32sI")
_DIGEST_BYTES: Final = 32
# A chunk's size is a u32 in the manifest.
MAX_CONTAINER_CHUNK_BYTES: Final = 2**32 - 1


class ChunksInvalid(ValueError):
    """Data is not a well-formed chunked container (or a chunk fails its SHA-256)."""


@dataclass(frozen=True, slots=True)
class ChunkingPolicy:
    """Where `chunk_items` cuts (sizes are the items' key + value bytes, before any
    encoding). Nodes share chunks only if they use the same policy: a different one costs
    bytes on the wire, never correctness.

    Smaller chunks find more in common after scattered writes but cost a manifest entry
    (36 bytes, 44 on the wire) and a round of compression each; larger ones compress
    better.
    """

    min_chunk_bytes: int = 64 * 1024
    average_chunk_bytes: int = 128 * 1024
    max_chunk_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        if not 1 <= self.min_chunk_bytes <= self.average_chunk_bytes <= self.max_chunk_bytes:
            raise ValueError(
                "chunking policy needs 1 <= min_chunk_bytes <= average_chunk_bytes <= "
                f"max_chunk_bytes: {self.min_chunk_bytes}, {self.average_chunk_bytes}, "
                f"{self.max_chunk_bytes}"
            )


def chunk_items(
    items: Iterable[tuple[bytes, bytes]], policy: ChunkingPolicy
) -> Iterator[list[tuple[bytes, bytes]]]:
    """Consecutive non-empty runs of `items` (in their order; the caller sorts them).

    A run ends after an item once it holds at least min_chunk_bytes and the item's key
    is a cut point, or as soon as it holds max_chunk_bytes (so it exceeds that by less
    than its last item). An item of s bytes is a cut point when crc32(key) / 2**32 <
    s / (average - min): per byte of data, cut points come at a rate of 1 / (average -
    min), so runs average about average_chunk_bytes whatever the item sizes. The decision
    depends only on the item and the size of the run so far, never on anything before
    the run: two states that agree on a range of items cut it identically from the first
    cut point both pass.
    """
    spread = policy.average_chunk_bytes - policy.min_chunk_bytes
    minimum, maximum = policy.min_chunk_bytes, policy.max_chunk_bytes
    run: list[tuple[bytes, bytes]] = []
    size = 0
    for item in items:
        key, value = item
        item_bytes = len(key) + len(value)
        run.append(item)
        size += item_bytes
        if size >= maximum or (size >= minimum and zlib.crc32(key) * spread < item_bytes << 32):
            yield run
            run = []
            size = 0
    if run:
        yield run


def encode_container(chunks: Iterable[bytes], prefix: bytes = b"") -> bytes:
    """`prefix`, then the chunks, their manifest and the trailer (see the module
    docstring). Raises ValueError for an empty or oversized chunk (a caller's bug)."""
    return b"".join(container_pieces(chunks, prefix))


def container_pieces(chunks: Iterable[bytes], prefix: bytes = b"") -> Iterator[bytes]:
    """encode_container's bytes a piece at a time, holding one chunk and the manifest (36
    bytes a chunk) in memory: for a container too large to build whole."""
    yield prefix
    manifest = bytearray()
    count = 0
    for chunk in chunks:
        if not 0 < len(chunk) <= MAX_CONTAINER_CHUNK_BYTES:
            raise ValueError(f"a container chunk holds 1 to 2**32 - 1 bytes, not {len(chunk)}")
        manifest += _MANIFEST_ENTRY.pack(hashlib.sha256(chunk).digest(), len(chunk))
        count += 1
        yield chunk
    yield bytes(manifest) + _TRAILER.pack(count, CONTAINER_VERSION, _MAGIC)


@dataclass(frozen=True, slots=True)
class ContainerChunk:
    sha256: bytes
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class Container:
    """Where things are in a container's data (offsets into it)."""

    # Bytes before the first chunk.
    prefix_bytes: int
    chunks: tuple[ContainerChunk, ...]
    # Where the manifest starts; the manifest and the trailer run to the end of the data.
    manifest_offset: int

    def chunk(self, data: bytes | memoryview, position: int) -> memoryview:
        found = self.chunks[position]
        return memoryview(data)[found.offset : found.offset + found.size]


def is_container(data: bytes | memoryview) -> bool:
    """Whether `data` ends with a container trailer (it may still be malformed)."""
    return len(data) >= _TRAILER.size and bytes(data[-len(_MAGIC) :]) == _MAGIC


def read_container(
    data: bytes | memoryview, *, max_chunks: int | None = None, verify: bool = False
) -> Container:
    """The layout of the container `data` ends with. Raises ChunksInvalid if it does not
    end with one, if the manifest and chunks do not fit the data, if it has more than
    `max_chunks` chunks, or (with `verify`) if a chunk fails its SHA-256."""
    view = memoryview(data)
    if not is_container(view):
        raise ChunksInvalid("data does not end with a chunked container trailer")
    count, version, _ = _TRAILER.unpack_from(view, len(view) - _TRAILER.size)
    if version != CONTAINER_VERSION:
        raise ChunksInvalid(f"chunked container version {version} is unknown")
    if max_chunks is not None and count > max_chunks:
        raise ChunksInvalid(f"container of {count} chunks exceeds the limit of {max_chunks}")
    manifest_offset = len(view) - _TRAILER.size - count * _MANIFEST_ENTRY.size
    if manifest_offset < 0:
        raise ChunksInvalid(f"manifest of {count} chunks does not fit in {len(view)} bytes of data")
    entries = [
        _MANIFEST_ENTRY.unpack_from(view, manifest_offset + position * _MANIFEST_ENTRY.size)
        for position in range(count)
    ]
    total = sum(size for _, size in entries)
    if total > manifest_offset:
        raise ChunksInvalid(
            f"{count} chunks of {total} bytes do not fit before the manifest at {manifest_offset}"
        )
    if any(size == 0 for _, size in entries):
        raise ChunksInvalid("container holds an empty chunk")
    offset = prefix_bytes = manifest_offset - total
    chunks = []
    for digest, size in entries:
        chunks.append(ContainerChunk(digest, offset, size))
        offset += size
    container = Container(prefix_bytes, tuple(chunks), manifest_offset)
    if verify:
        for position, chunk in enumerate(chunks):
            if hashlib.sha256(container.chunk(view, position)).digest() != chunk.sha256:
                raise ChunksInvalid(f"container chunk {position} fails its SHA-256")
    return container


def transfer_chunks(data: bytes | memoryview, max_chunk_bytes: int) -> list[tuple[int, int]]:
    """(offset, size) of each piece `data` is sent in, in order, covering it exactly: the
    container's prefix, chunks, and manifest with trailer when `data` ends with a readable
    container, else pieces of `max_chunk_bytes`; anything longer than `max_chunk_bytes`
    is cut into pieces of that size. Empty data has no pieces."""
    if max_chunk_bytes < 1:
        raise ValueError(f"max_chunk_bytes must be >= 1: {max_chunk_bytes}")
    regions: list[tuple[int, int]]
    try:
        container = read_container(data)
    except ChunksInvalid:
        regions = [(0, len(data))]
    else:
        regions = [(0, container.prefix_bytes)]
        regions += [(chunk.offset, chunk.size) for chunk in container.chunks]
        regions.append((container.manifest_offset, len(data) - container.manifest_offset))
    pieces: list[tuple[int, int]] = []
    for start, length in regions:
        for offset in range(start, start + length, max_chunk_bytes):
            pieces.append((offset, min(max_chunk_bytes, start + length - offset)))
    return pieces
