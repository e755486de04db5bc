"""How a GrpcTransport's connections are set up, at both ends: channel options, server
options and, with `tls`, the mutual-TLS credentials (read once, when the transport is
made: a missing or unreadable file is a settings error, not a failure at the first call).
"""

from __future__ import annotations

from typing import Final

import grpc
import grpc.aio

from raftkv.raft.transport.settings import PeerTransportSettings, TransportSettingsInvalid

__all__ = ["GrpcOptions"]

# HTTP/2 streams one connection may have open at once (Send, snapshots, member requests).
_MAX_CONCURRENT_STREAMS: Final = 64


class GrpcOptions:
    """Channels to peers and the server peers call, set up from `settings`."""

    def __init__(self, settings: PeerTransportSettings) -> None:
        self._settings = settings
        self._server_credentials: grpc.ServerCredentials | None = None
        self._channel_credentials: grpc.ChannelCredentials | None = None
        if settings.tls:
            self._load_tls()

    def open_channel(self, address: str) -> grpc.aio.Channel:
        """A new channel to `address`: its own connection, never shared (see the options)."""
        options = self._channel_options()
        if self._channel_credentials is not None:
            return grpc.aio.secure_channel(address, self._channel_credentials, options=options)
        return grpc.aio.insecure_channel(address, options=options)

    def new_server(self) -> grpc.aio.Server:
        return grpc.aio.server(options=self._server_options())

    def listen(self, server: grpc.aio.Server, address: str) -> int:
        """Bind `server` to `address` (with TLS if set); the port bound. Raises RuntimeError
        if gRPC cannot bind it."""
        if self._server_credentials is not None:
            return server.add_secure_port(address, self._server_credentials)
        return server.add_insecure_port(address)

    def _keepalive_options(self) -> list[tuple[str, int]]:
        settings = self._settings
        interval_ms = int(settings.keepalive_interval_seconds * 1000)
        return [
            ("grpc.keepalive_time_ms", interval_ms),
            ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_seconds * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]

    def _channel_options(self) -> list[tuple[str, str | int]]:
        settings = self._settings
        initial_ms = int(settings.reconnect_backoff_initial_seconds * 1000)
        options: list[tuple[str, str | int]] = [
            *self._keepalive_options(),
            # gRPC reconnects channels on its own too; keep its backoff within ours so a
            # peer that comes back is reached within reconnect_backoff_max_seconds.
            ("grpc.initial_reconnect_backoff_ms", initial_ms),
            ("grpc.min_reconnect_backoff_ms", initial_ms),
            ("grpc.max_reconnect_backoff_ms", int(settings.reconnect_backoff_max_seconds * 1000)),
            # Each channel owns its connection: replacing or closing one never affects
            # another peer's (or another transport's in the same process).
            ("grpc.use_local_subchannel_pool", 1),
            # We retry by reconnecting; gRPC's transparent retries would hide failures.
            ("grpc.enable_retries", 0),
        ]
        if settings.server_name_override is not None:
            options.append(("grpc.ssl_target_name_override", settings.server_name_override))
        return options

    def _server_options(self) -> list[tuple[str, int]]:
        settings = self._settings
        return [
            *self._keepalive_options(),
            ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
            ("grpc.max_concurrent_streams", _MAX_CONCURRENT_STREAMS),
            # Peers ping at keepalive_interval_seconds; accept that (the default minimum
            # is 5 minutes, and gRPC would close the connection for "too many pings").
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                int(settings.keepalive_interval_seconds * 500),
            ),
            # Never share a port with another process: a second node on the same address
            # must fail to start, not silently receive half the connections.
            ("grpc.so_reuseport", 0),
        ]

    def _load_tls(self) -> None:
        settings = self._settings
        assert settings.ca_file and settings.cert_file and settings.key_file
        try:
            ca = settings.ca_file.read_bytes()
            certificate = settings.cert_file.read_bytes()
            key = settings.key_file.read_bytes()
        except OSError as error:
            raise TransportSettingsInvalid(f"cannot read a TLS file: {error}") from error
        self._server_credentials = grpc.ssl_server_credentials(
            [(key, certificate)], root_certificates=ca, require_client_auth=True
        )
        self._channel_credentials = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=certificate
        )
