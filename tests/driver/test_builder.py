"""NodeBuilder: the library's front door, on RocksDB and TCP over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from raftkv.raft import Command, ConfigInvalid, MemoryStorage, NodeBuilder, StateRole
from raftkv.raft.core.errors import ConfigInvalid as CoreConfigInvalid
from raftkv.testing.processes import free_port


class Counter:
    def __init__(self) -> None:
        self.value = 0
        self.applied = 0

    def applied_index(self) -> int:
        return self.applied

    def apply(
        self, commands: Sequence[Command], applied_index: int, applied_term: int
    ) -> list[object]:
        for command in commands:
            self.value += int(command.data)
        self.applied = applied_index
        return [self.value] * len(commands)

    def snapshot(self) -> bytes:
        return str(self.value).encode()

    def restore(self, data: bytes, index: int, term: int) -> None:
        self.value, self.applied = int(data), index


def free_address() -> str:
    return f"127.0.0.1:{free_port()}"


def test_config_invalid_is_the_core_error() -> None:
    assert ConfigInvalid is CoreConfigInvalid


def test_missing_parts_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid, match="state machine"):
        NodeBuilder(1).data_dir(tmp_path).build()
    with pytest.raises(ConfigInvalid, match="data_dir"):
        NodeBuilder(1).state_machine(Counter()).build()
    with pytest.raises(ConfigInvalid, match="positive"):
        NodeBuilder(0)

    async def bootstrap_without_peers() -> None:
        await (
            NodeBuilder(1)
            .data_dir(tmp_path / "a")
            .state_machine(Counter())
            .peer_transport(listen_address=free_address())
            .bootstrap()
        )

    with pytest.raises(ConfigInvalid, match="peers"):
        asyncio.run(bootstrap_without_peers())


def test_restart_refuses_an_empty_data_dir_and_releases_it(tmp_path: Path) -> None:
    address = free_address()

    async def scenario() -> None:
        builder = NodeBuilder(1).peers({1: address}).data_dir(tmp_path).state_machine(Counter())
        with pytest.raises(ConfigInvalid, match="no Raft state"):
            await builder.restart()
        # The database was closed: bootstrapping the same directory works.
        node = await builder.bootstrap()
        await node.stop()

    asyncio.run(scenario())


def test_bootstrap_serves_then_restarts_from_its_data_dir(tmp_path: Path) -> None:
    address = free_address()

    async def scenario() -> None:
        def builder() -> NodeBuilder:
            return (
                NodeBuilder(1)
                .peers({1: address})
                .data_dir(tmp_path / "node-1")
                .state_machine(Counter())
            )

        node = await builder().bootstrap()
        await node.wait_for_leader(timeout=10)
        assert node.status().role is StateRole.LEADER
        for _ in range(5):
            await node.propose(b"2")
        await node.stop()
        # Same call again: storage holds state, so this is a restart, not a new cluster.
        again = await builder().bootstrap()
        await again.wait_for_leader(timeout=10)
        assert await again.linearizable_read(lambda machine: machine.value) == 10
        await again.stop()
        assert again.status().stopped

    async def bounded() -> None:
        async with asyncio.timeout(60):
            await scenario()

    asyncio.run(bounded())


@pytest.mark.parametrize("kind", ["tcp", "grpc"])
def test_the_peer_transport_is_tcp_by_default_or_grpc_on_request(tmp_path: Path, kind: str) -> None:
    from raftkv.raft import GrpcTransport, TcpTransport

    builder = NodeBuilder(1).peers({1: free_address()}).storage(MemoryStorage())
    builder = builder.state_machine(Counter())
    if kind == "grpc":
        builder = builder.peer_transport("grpc", cluster_id=7)
    node = builder.build()
    expected = GrpcTransport if kind == "grpc" else TcpTransport
    assert type(node.transport) is expected
    assert node.transport.settings.cluster_id == (7 if kind == "grpc" else 1)


def test_an_unknown_peer_transport_is_refused() -> None:
    with pytest.raises(ConfigInvalid, match="peer transport 'udp'"):
        NodeBuilder(1).peer_transport("udp")  # type: ignore[arg-type]
