"""`PeerTransportSettings` (validated on construction) and `PeerTransportStats`: what
GrpcTransport can be told, and what it counts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

_MIB: Final = 1024 * 1024
# Room for a snapshot chunk message's own fields around its data, and for the offer's
# fields besides its manifest (the MsgSnap message with its conf state).
_CHUNK_ENVELOPE_BYTES: Final = 64 * 1024


class TransportSettingsInvalid(ValueError):
    """A `PeerTransportSettings` field is out of range, or a TLS file cannot be read."""


# A snapshot offer lists every chunk (a 32-byte SHA-256 and a size of up to 10 varint
# bytes) beside the MsgSnap without its data; 64 KiB is room enough for the rest.
_OFFER_BYTES_PER_CHUNK = 42
_MESSAGE_OVERHEAD_BYTES = 64 * 1024
# The default first reconnect backoff; a reconnect_backoff_max_seconds chosen from other
# settings (the server's election timeout) must not go below it.
RECONNECT_BACKOFF_INITIAL_SECONDS: Final = 0.1


@dataclass(frozen=True, slots=True)
class PeerTransportSettings:
    """Everything GrpcTransport can be told. Validated on construction.

    Defaults suit a LAN cluster; every limit bounds memory or time a peer can make us spend.
    """

    # Nodes only talk within one cluster: a frame, snapshot or member request with another
    # id is rejected. Must be >= 1, so a frame that forgot to set it is rejected too.
    cluster_id: int
    # host:port to listen on; port 0 picks a free port (see `GrpcTransport.address`).
    listen_address: str = "127.0.0.1:0"
    # Messages queued per peer before `send` drops (and reports the peer unreachable). More
    # absorbs longer stalls; less bounds memory and staleness (Raft retransmits anyway).
    max_queue_messages: int = 4096
    # Per Send frame. Bigger frames cost fewer writes; smaller ones keep latency even.
    max_batch_messages: int = 512
    max_batch_bytes: int = 4 * _MIB
    # Largest gRPC message this node accepts (frames, snapshot chunks). Must hold a full
    # frame; a single message larger than this can never be delivered.
    max_receive_message_bytes: int = 64 * _MIB
    # The longest chunk this node cuts snapshot data into for sending. Data in the chunked
    # format (raftkv.raft.snapshot_chunks; the KV store's snapshots) is cut at its own
    # chunk boundaries and only chunks longer than this are cut further; other data is cut
    # into pieces of this size. Smaller finds more in common with what the receiver holds
    # for data in no chunked format; larger costs fewer messages.
    snapshot_chunk_bytes: int = 1 * _MIB
    # The longest chunk this node accepts from a peer (at least snapshot_chunk_bytes, so
    # members with the same settings always agree; more lets peers cut longer). A chunk
    # message must also fit max_receive_message_bytes.
    max_snapshot_chunk_bytes: int = 16 * _MIB
    # The most chunks one snapshot may be offered in: bounds the bookkeeping of a transfer
    # and the offer's manifest (42 bytes a chunk on the wire, 11 MiB at this default; the
    # offer must also fit max_receive_message_bytes).
    max_snapshot_chunks: int = 256 * 1024
    # The largest snapshot this node accepts; a peer announcing more is refused.
    max_snapshot_bytes: int = 1024 * _MIB
    # Snapshots being received at once (each may hold up to max_snapshot_bytes in memory).
    max_incoming_snapshots: int = 2
    # Chunks a sender streams ahead of the receiver's acknowledgements. More keeps a long
    # fat link busy; fewer bounds what a slow receiver buffers (gRPC's flow control bounds
    # the bytes in flight below this).
    max_snapshot_chunks_in_flight: int = 8
    # Memory for chunks this node received in earlier snapshot transfers, finished or cut
    # off, least recently used evicted first. A transfer that lost its connection resumes
    # with what is still here; 0 keeps nothing (every retry starts over).
    snapshot_cache_bytes: int = 64 * _MIB
    # Time to establish a stream to a peer before it counts as unreachable.
    connect_timeout_seconds: float = 5.0
    # Time one frame write may take before the stream counts as failed (a stalled peer).
    request_timeout_seconds: float = 5.0
    # Time a whole snapshot transfer may take.
    snapshot_timeout_seconds: float = 300.0
    # Reconnect backoff: after the n-th consecutive failure wait uniform(0, min(max,
    # initial * 2**n)) ("full jitter", so peers that failed together do not retry together).
    # Hearing from the peer (a frame it sent us) starts the backoff over and ends a wait in
    # progress: a restarted peer is redialled as soon as it speaks, not when a backoff grown
    # while it was down runs out. Keep max near the election timeout (a server passes its
    # own): a peer back from a failure may be needed for a quorum a moment later, and a
    # longer wait stops writes although a majority is up; a shorter one costs only more
    # connection attempts to a peer that is down (cheap, one each time).
    reconnect_backoff_initial_seconds: float = RECONNECT_BACKOFF_INITIAL_SECONDS
    reconnect_backoff_max_seconds: float = 1.0
    # HTTP/2 keepalive pings: a silent dead peer is noticed within interval + timeout.
    keepalive_interval_seconds: float = 10.0
    keepalive_timeout_seconds: float = 5.0
    # Mutual TLS: all three or none. The server requires client certificates signed by
    # the CA; clients verify the server's certificate against it.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # The name to expect in the server's certificate instead of the dialled host (tests).
    server_name_override: str | None = None
    # With TLS: certificate common names accepted for any node id (etcd's
    # --peer-cert-allowed-cn: one certificate shared by every node). Any other certificate
    # must name its node (CN node-<id>), and binds its connection to that node
    # (raftkv.raft.transport.peer_identity).
    allowed_common_names: tuple[str, ...] = ()
    # How long `stop` lets in-flight RPCs finish before cancelling them.
    shutdown_grace_seconds: float = 0.2

    def __post_init__(self) -> None:
        if not 1 <= self.cluster_id < 2**64:
            raise TransportSettingsInvalid(f"cluster_id must be in [1, 2**64): {self.cluster_id}")
        split_address(self.listen_address)
        positive_integers = {
            "max_queue_messages": self.max_queue_messages,
            "max_batch_messages": self.max_batch_messages,
            "max_batch_bytes": self.max_batch_bytes,
            "max_receive_message_bytes": self.max_receive_message_bytes,
            "snapshot_chunk_bytes": self.snapshot_chunk_bytes,
            "max_snapshot_chunk_bytes": self.max_snapshot_chunk_bytes,
            "max_snapshot_chunks": self.max_snapshot_chunks,
            "max_snapshot_bytes": self.max_snapshot_bytes,
            "max_incoming_snapshots": self.max_incoming_snapshots,
            "max_snapshot_chunks_in_flight": self.max_snapshot_chunks_in_flight,
        }
        for name, value in positive_integers.items():
            if value < 1:
                raise TransportSettingsInvalid(f"{name} must be >= 1: {value}")
        positive_seconds = {
            "connect_timeout_seconds": self.connect_timeout_seconds,
            "request_timeout_seconds": self.request_timeout_seconds,
            "snapshot_timeout_seconds": self.snapshot_timeout_seconds,
            "reconnect_backoff_initial_seconds": self.reconnect_backoff_initial_seconds,
            "reconnect_backoff_max_seconds": self.reconnect_backoff_max_seconds,
            "keepalive_interval_seconds": self.keepalive_interval_seconds,
            "keepalive_timeout_seconds": self.keepalive_timeout_seconds,
        }
        for name, seconds in positive_seconds.items():
            if not seconds > 0:
                raise TransportSettingsInvalid(f"{name} must be > 0: {seconds}")
        if self.shutdown_grace_seconds < 0:
            raise TransportSettingsInvalid(
                f"shutdown_grace_seconds must be >= 0: {self.shutdown_grace_seconds}"
            )
        if self.reconnect_backoff_initial_seconds > self.reconnect_backoff_max_seconds:
            raise TransportSettingsInvalid(
                "reconnect_backoff_initial_seconds exceeds reconnect_backoff_max_seconds"
            )
        if self.max_batch_bytes > self.max_receive_message_bytes:
            raise TransportSettingsInvalid(
                "max_batch_bytes exceeds max_receive_message_bytes: a full frame would be "
                "refused by a peer with the same settings"
            )
        # Refused here, with a message naming the setting, rather than by gRPC at run time
        # (RESOURCE_EXHAUSTED) when a large snapshot is offered.
        offer_bytes = self.max_snapshot_chunks * _OFFER_BYTES_PER_CHUNK + _MESSAGE_OVERHEAD_BYTES
        if offer_bytes > self.max_receive_message_bytes:
            raise TransportSettingsInvalid(
                f"max_snapshot_chunks ({self.max_snapshot_chunks}): an offer of that many "
                f"chunks ({offer_bytes} bytes) would exceed max_receive_message_bytes"
            )
        if self.max_snapshot_chunk_bytes + _MESSAGE_OVERHEAD_BYTES > self.max_receive_message_bytes:
            raise TransportSettingsInvalid(
                "max_snapshot_chunk_bytes: a chunk that long would exceed max_receive_message_bytes"
            )
        if self.snapshot_cache_bytes < 0:
            raise TransportSettingsInvalid(
                f"snapshot_cache_bytes must be >= 0: {self.snapshot_cache_bytes}"
            )
        if self.snapshot_chunk_bytes > self.max_snapshot_chunk_bytes:
            raise TransportSettingsInvalid(
                "snapshot_chunk_bytes exceeds max_snapshot_chunk_bytes: a peer with the same "
                "settings would refuse this node's chunks"
            )

        tls_files = (self.ca_file, self.cert_file, self.key_file)
        if any(path is not None for path in tls_files) and None in tls_files:
            raise TransportSettingsInvalid("TLS needs ca_file, cert_file and key_file together")
        if self.server_name_override is not None and self.ca_file is None:
            raise TransportSettingsInvalid("server_name_override applies to TLS only")

    @property
    def tls(self) -> bool:
        return self.ca_file is not None


@dataclass(slots=True)
class PeerTransportStats:
    """Counters, for metrics and tests. Only ever increase."""

    messages_sent: int = 0
    frames_sent: int = 0
    # Dropped before reaching the wire: queue full, unknown peer, or queued when a stream
    # failed.
    messages_dropped: int = 0
    stream_failures: int = 0
    messages_received: int = 0
    frames_received: int = 0
    # Incoming streams (Send, SnapshotTransfer, Member) aborted because of what the peer sent.
    streams_rejected: int = 0
    snapshots_sent: int = 0
    snapshots_failed: int = 0
    snapshots_received: int = 0
    # Received whole but refused: the handler found the data unusable (ChecksSnapshots).
    snapshots_refused: int = 0
    # Sending snapshots: the data size of every snapshot offered (what sending all of it
    # would cost), the chunk bytes written on the wire (compressed), and the data the
    # receivers already held (not sent); chunks sent and chunks the receivers held.
    snapshot_full_bytes: int = 0
    snapshot_bytes_sent: int = 0
    snapshot_bytes_reused: int = 0
    snapshot_chunks_sent: int = 0
    snapshot_chunks_reused: int = 0
    # Receiving snapshots: chunk bytes received on the wire, chunks received, and chunks
    # found in the cache of earlier transfers or in this node's own state.
    snapshot_bytes_received: int = 0
    snapshot_chunks_received: int = 0
    snapshot_chunks_from_cache: int = 0
    snapshot_chunks_from_local: int = 0


def split_address(address: str) -> tuple[str, int]:
    host, separator, port_text = address.rpartition(":")
    if not separator or not host or not port_text.isdigit() or not 0 <= int(port_text) < 2**16:
        raise TransportSettingsInvalid(f"not a host:port address: {address!r}")
    return host, int(port_text)
