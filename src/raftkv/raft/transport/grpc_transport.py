"""GrpcTransport: Raft messages between processes over gRPC (`grpc.aio`), optionally mTLS.

Theory of operation. The transport is a composition of four parts, one module each:
- sending (grpc_sender.py): per peer, one long-lived channel, a bounded queue and a sender
  task that writes frames on one long-lived `Raft.Send` stream, backing off from a peer
  that is down and redialling one that speaks;
- outgoing snapshots (grpc_snapshot_sender.py): each MsgSnap on its own
  `Raft.SnapshotTransfer` stream, only the chunks the receiver lacks;
- the servicer (grpc_servicer.py): the gRPC server, which checks everything a peer sends
  before the handler sees it;
- connection set-up (grpc_options.py): channel and server options, mTLS credentials.
What they share (the lifecycle, the peers and their senders, the handler, the counters)
is `PeerTransport`'s (peer_transport.py), as for TcpTransport; this module adds member
requests and the snapshot streams.

Stopping. `stop` cancels the sender and snapshot tasks and closes the channels, ends every
incoming call with UNAVAILABLE ("the node is stopping"), then stops the server, letting
anything left finish for `shutdown_grace_seconds`. It may be called more than once.
"""

from __future__ import annotations

import logging
from collections import deque
from random import Random

import grpc
import grpc.aio

from raftkv.raft.core.errors import MalformedMessage
from raftkv.raft.core.types import Message, NodeId
from raftkv.raft.transport import raft_pb2 as wire
from raftkv.raft.transport.base import (
    MemberRequest,
    MemberResponse,
    NotDelivered,
    TransportError,
)
from raftkv.raft.transport.codec import decode_member_response, encode_member_request
from raftkv.raft.transport.grpc_options import GrpcOptions
from raftkv.raft.transport.grpc_sender import GrpcPeerSender, SenderContext
from raftkv.raft.transport.grpc_service import (
    MEMBER_METHOD,
    SEND_METHOD,
    SNAPSHOT_TRANSFER_METHOD,
)
from raftkv.raft.transport.grpc_servicer import RaftServicer
from raftkv.raft.transport.grpc_snapshot_sender import GrpcUploadStream
from raftkv.raft.transport.peer_transport import PeerTransport
from raftkv.raft.transport.settings import PeerTransportSettings, PeerTransportStats
from raftkv.raft.transport.snapshot_streams import UploadStream

# The transport's public surface: the method paths are defined in grpc_service.py, the
# settings (shared with TcpTransport) in settings.py.
__all__ = ["MEMBER_METHOD", "SEND_METHOD", "SNAPSHOT_TRANSFER_METHOD", "GrpcTransport"]

logger = logging.getLogger("raftkv.transport.grpc")


class GrpcTransport(PeerTransport):
    """A `Transport` over gRPC. Start once, stop once; `stop` is safe to repeat."""

    def __init__(self, settings: PeerTransportSettings, *, rng: Random | None = None) -> None:
        stats = PeerTransportStats()
        # Reads the TLS files, if any: a missing one fails here, not at start.
        self._options = GrpcOptions(settings)
        servicer = RaftServicer(settings, stats, self._options, self._heard_from)
        super().__init__(settings, servicer, logger, stats=stats, rng=rng)

    def _new_sender(self, peer: NodeId, address: str, queue: deque[Message]) -> GrpcPeerSender:
        context = SenderContext(
            settings=self.settings,
            stats=self.stats,
            options=self._options,
            rng=self._rng,
            local_address=self._address,
            report_unreachable=self._report_unreachable,
            close_later=self._track_closing,
        )
        return GrpcPeerSender(context, peer, address, queue)

    async def member_request(
        self, address: str, request: MemberRequest, timeout: float
    ) -> MemberResponse:
        wire_request = encode_member_request(self.settings.cluster_id, request)
        channel = self._options.open_channel(address)
        try:
            call = channel.unary_unary(
                MEMBER_METHOD,
                request_serializer=wire.MemberRequest.SerializeToString,
                response_deserializer=wire.MemberResponse.FromString,
            )
            response: wire.MemberResponse = await call(wire_request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TransportError(f"{address} did not answer in {timeout}s") from None
            if error.code() is grpc.StatusCode.UNAVAILABLE and "failed to connect" in str(
                error.details()
            ):
                # No connection was made: the request was never sent.
                raise NotDelivered(
                    f"member request to {address} not sent: {error.details()}"
                ) from None
            raise TransportError(
                f"member request to {address} failed: {error.code().name}: {error.details()}"
            ) from None
        finally:
            await channel.close()
        try:
            return decode_member_response(response)
        except MalformedMessage as error:
            raise TransportError(f"member answer from {address}: {error}") from None

    async def _open_snapshot_stream(self, peer: NodeId) -> UploadStream:
        sender = self._senders.get(peer)
        if not isinstance(sender, GrpcPeerSender):
            raise NotDelivered(f"peer {peer} was removed")
        return GrpcUploadStream(sender.channel)
