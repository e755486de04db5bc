"""`NodeBuilder`: put a node together from its parts (skiff / zlayer-consensus style).

    node = await (
        NodeBuilder(1)
        .peers({1: "127.0.0.1:7001", 2: "127.0.0.1:7002", 3: "127.0.0.1:7003"})
        .data_dir("data/node-1")
        .state_machine(lambda storage: MyMachine(storage.app_data()))
        .bootstrap()
    )

Defaults: RocksDB storage in `data_dir`, the TCP peer transport listening on this node's
own address in `peers`, `NodeSettings()`, the system clock. Each can be replaced.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self

from raftkv.raft.clock import Clock
from raftkv.raft.core.errors import ConfigInvalid
from raftkv.raft.core.types import NodeId
from raftkv.raft.driver.node import Node
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.driver.state_machine import StateMachine
from raftkv.raft.storage.base import RaftStorage
from raftkv.raft.transport.base import Transport
from raftkv.raft.transport.settings import PeerTransportSettings

StateMachineFactory = Callable[[RaftStorage], StateMachine]
# The peer transports a builder makes: TcpTransport (the default) or GrpcTransport.
PeerTransportKind = Literal["tcp", "grpc"]
PEER_TRANSPORT_KINDS: tuple[PeerTransportKind, ...] = ("tcp", "grpc")


class NodeBuilder:
    def __init__(self, node_id: int) -> None:
        if node_id <= 0:
            raise ConfigInvalid("node_id must be a positive integer")
        self._node_id = NodeId(node_id)
        self._peers: dict[NodeId, str] = {}
        self._data_dir: Path | None = None
        self._storage: RaftStorage | None = None
        self._transport: Transport | None = None
        self._peer_transport_kind: PeerTransportKind = "tcp"
        self._peer_transport_options: dict[str, Any] = {}
        self._state_machine: StateMachineFactory | None = None
        self._settings = NodeSettings()
        self._clock: Clock | None = None

    def peers(self, peers: Mapping[int, str]) -> Self:
        """Peer addresses by node id, this node's own included (it listens there). For a
        new cluster these are the founding voters."""
        self._peers = {NodeId(peer): address for peer, address in peers.items()}
        return self

    def data_dir(self, path: str | os.PathLike[str]) -> Self:
        """Keep everything in a RocksDB under `path` (created if missing)."""
        self._data_dir = Path(path)
        return self

    def storage(self, storage: RaftStorage) -> Self:
        """Use `storage` instead of RocksDB in `data_dir` (e.g. MemoryStorage)."""
        self._storage = storage
        return self

    def transport(self, transport: Transport) -> Self:
        """Use `transport` instead of a peer transport the builder makes (e.g. an
        InProcessTransport)."""
        self._transport = transport
        return self

    def peer_transport(self, kind: PeerTransportKind = "tcp", **options: Any) -> Self:
        """Which peer transport to make, "tcp" (TcpTransport, the default) or "grpc"
        (GrpcTransport), and its options: any PeerTransportSettings field, such as
        `listen_address`, `cluster_id`, `ca_file`, `cert_file`, `key_file` (mutual TLS)."""
        if kind not in PEER_TRANSPORT_KINDS:
            raise ConfigInvalid(f"peer transport {kind!r}: choose one of {PEER_TRANSPORT_KINDS}")
        self._peer_transport_kind = kind
        self._peer_transport_options = dict(options)
        return self

    def state_machine(self, machine: StateMachine | StateMachineFactory) -> Self:
        """The state machine, or a factory given the storage (to reach `app_data()`)."""
        if callable(machine) and not hasattr(machine, "apply"):
            self._state_machine = machine
        else:
            instance = machine

            def given(_: RaftStorage) -> StateMachine:
                return instance  # type: ignore[return-value]

            self._state_machine = given
        return self

    def settings(self, settings: NodeSettings) -> Self:
        self._settings = settings
        return self

    def clock(self, clock: Clock) -> Self:
        self._clock = clock
        return self

    def build(self) -> Node:
        """The node, not started. Prefer `bootstrap()` or `join()`."""
        if self._state_machine is None:
            raise ConfigInvalid("a state machine is required (.state_machine(...))")
        owns_storage = self._storage is None
        storage = self._storage if self._storage is not None else self._open_storage()
        try:
            transport = self._transport if self._transport is not None else self._peer()
            return Node(
                node_id=self._node_id,
                storage=storage,
                transport=transport,
                state_machine=self._state_machine(storage),
                settings=self._settings,
                clock=self._clock,
                peers=self._peers,
                owns_storage=owns_storage,
            )
        except BaseException:
            if owns_storage:
                storage.close()
            raise

    async def bootstrap(self) -> Node:
        """Start a founding member of a new cluster whose voters are `peers`; on later
        starts (storage already holds Raft state) simply restart. The same call serves
        both, so a service can always start this way."""
        node = self.build()
        if not node.is_bootstrapped():
            if not self._peers:
                raise ConfigInvalid("bootstrapping a new cluster needs .peers({...})")
            node.bootstrap(self._peers)
        await node.start()
        return node

    async def join(
        self, seeds: Sequence[str], *, promote: bool = True, timeout: float | None = None
    ) -> Node:
        """Start and join a running cluster through any member's address in `seeds`:
        added as a learner, caught up, then promoted to voter (if `promote`). A node that
        joined before just restarts."""
        node = self.build()
        await node.start()
        try:
            await node.join(seeds, promote=promote, timeout=timeout)
        except BaseException:
            await node.stop(transfer_leadership=False)
            raise
        return node

    async def restart(self) -> Node:
        """Start from existing storage; refuses empty storage (a typo in the data dir
        would otherwise start a fresh, empty node)."""
        node = self.build()
        if not node.is_bootstrapped():
            if self._storage is None:
                node.storage.close()
            raise ConfigInvalid(f"no Raft state in {self._data_dir or 'the storage'}")
        await node.start()
        return node

    # -- defaults --------------------------------------------------------------------------

    def _open_storage(self) -> RaftStorage:
        if self._data_dir is None:
            raise ConfigInvalid("give .data_dir(path) or .storage(storage)")
        # Imported here: RocksDB's native library loads only for nodes that use it.
        from raftkv.raft.storage.rocks import RocksStorage  # noqa: PLC0415

        self._data_dir.mkdir(parents=True, exist_ok=True)
        return RocksStorage(self._data_dir)

    def _peer(self) -> Transport:
        options = dict(self._peer_transport_options)
        if "listen_address" not in options:
            own = self._peers.get(self._node_id)
            if own is None:
                raise ConfigInvalid(
                    f"node {self._node_id} has no address: add it to .peers() "
                    "or pass .peer_transport(listen_address=...)"
                )
            options["listen_address"] = own
        options.setdefault("cluster_id", 1)
        for name in ("ca_file", "cert_file", "key_file"):
            if options.get(name) is not None:
                options[name] = Path(options[name])
        settings = PeerTransportSettings(**options)
        # Imported here: each transport's libraries load only for nodes that use it.
        if self._peer_transport_kind == "grpc":
            from raftkv.raft.transport.grpc_transport import GrpcTransport  # noqa: PLC0415

            return GrpcTransport(settings)
        from raftkv.raft.transport.tcp_transport import TcpTransport  # noqa: PLC0415

        return TcpTransport(settings)
