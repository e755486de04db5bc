"""`FrontedClientPort`: the client port served by front processes (`http_workers` > 0).

The member listens on the client address itself, and hands that one listening socket to
`count` front processes (`raftkv.server.fronts.front`), which accept its connections
between them; the member's event loop then does no HTTP parsing for the KV routes, only
one framed call per request (`raftkv.server.fronts.gateway`). The member's own app is
served on a private Unix socket, for what the fronts forward (every other route).

Both Unix sockets live in a private directory (mode 0700), `fronts` in the data directory
(or a temporary one when that path is too long for a Unix socket's), made anew at start
and removed at close: only this user's processes can reach them.

Each front is supervised: one that exits while the port is open is logged in one line and
started again (after a second, so a front that cannot start does not spin). Closing
closes each front's stdin, which stops it after its in-flight requests (up to
`shutdown_timeout_s`), then kills what is left. A member killed with SIGKILL takes its
fronts with it: their stdin pipe ends with the member's process.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import sys
import tempfile
from contextlib import suppress
from pathlib import Path

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from raftkv.raft.tasks import cancel_and_wait
from raftkv.server.fronts.front import PEER_HEADER, FrontConfig
from raftkv.server.fronts.gateway import FrontGateway
from raftkv.server.listener import ClientPort, ClientPortSettings

__all__ = ["FrontSettings", "FrontedClientPort", "FrontsFailed", "trust_front_peer"]

logger = logging.getLogger(__name__)

# A Unix socket's path, with its terminating NUL, fits in 108 bytes on Linux.
_MAX_SOCKET_PATH_BYTES = 100
# How long the fronts may take to start and connect, and how often that is looked at.
_START_TIMEOUT_S = 30.0
_START_POLL_S = 0.05
# How long a front that exited waits before it is started again.
_RESTART_DELAY_S = 1.0


class FrontSettings(msgspec.Struct, frozen=True):
    """The member's settings its fronts apply (see ServerSettings for each)."""

    count: int
    max_body_bytes: int
    body_timeout_s: float
    request_timeout_s: float
    hosts: tuple[str, ...]
    origins: tuple[str, ...]


class FrontsFailed(Exception):
    """The front processes could not start: the node does not serve."""


@web.middleware
async def trust_front_peer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On the private socket every request comes from a front: its client is the one the
    front names (the auth API counts failed logins per client address)."""
    peer = request.headers.get(PEER_HEADER)
    if peer is not None:
        request = request.clone(remote=peer)
    return await handler(request)


class FrontedClientPort:
    """The client port, as `raftkv.server.listener.ClientPort` (start, close, port and
    the connection counters), served by front processes (see the module docstring)."""

    def __init__(
        self,
        app: web.Application,
        gateway: FrontGateway,
        host: str,
        port: int,
        *,
        settings: ClientPortSettings,
        fronts: FrontSettings,
        data_dir: Path,
    ) -> None:
        self.settings = settings
        self._data_dir = data_dir
        self.fronts = fronts
        self._host, self._port = host, port
        self._gateway = gateway
        self._directory: Path | None = None
        # The member's app, for what the fronts forward.
        self._member_port: ClientPort | None = None
        self._member_app = app
        self._gateway_server: asyncio.Server | None = None
        self._listening: socket.socket | None = None
        self._supervisors: list[asyncio.Task[None]] = []
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        # Set once every front started: from then on one that exits is started again.
        self._serving = False
        self._closing = False

    # The clients' connections are the fronts': as they report them (FrontCounters).
    @property
    def open_connections(self) -> int:
        return self._gateway.connections.open

    @property
    def refused_connections(self) -> int:
        return self._gateway.connections.refused

    @property
    def accept_errors(self) -> int:
        return self._gateway.connections.accept_errors

    @property
    def port(self) -> int:
        if self._listening is None:
            return self._port
        return int(self._listening.getsockname()[1])

    async def start(self) -> None:
        try:
            self._directory = _private_directory(self._data_dir)
            gateway_path = str(self._directory / "gateway.sock")
            http_path = str(self._directory / "http.sock")
            self._gateway_server = await asyncio.start_unix_server(
                self._gateway.serve, gateway_path, limit=1 << 16
            )
            self._member_app.middlewares.append(trust_front_peer)
            self._member_port = ClientPort(
                self._member_app, "", 0, self.settings, unix_path=http_path
            )
            await self._member_port.start()
            self._listening = _listen(self._host, self._port, self.settings.max_connections)
            config = self._config(gateway_path, http_path, self._listening.fileno())
            for number in range(self.fronts.count):
                self._supervisors.append(
                    asyncio.create_task(
                        self._supervise(number, config), name=f"raftkv-front-{number}"
                    )
                )
            await self._wait_for_fronts()
            self._serving = True
        except BaseException:
            await self.close()
            raise

    async def _wait_for_fronts(self) -> None:
        """Until every front is connected to the gateway; FrontsFailed if one exits first
        or they take over `_START_TIMEOUT_S` (their own stderr, the node's, says why)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT_S
        while self._gateway.fronts_connected < self.fronts.count:
            for number, process in self._processes.items():
                if process.returncode is not None:
                    raise FrontsFailed(
                        f"front process {number} exited with code {process.returncode} "
                        "as it started (its error is logged above)"
                    )
            if loop.time() > deadline:
                raise FrontsFailed(
                    f"{self._gateway.fronts_connected} of {self.fronts.count} front processes "
                    f"started within {_START_TIMEOUT_S:.0f} s"
                )
            await asyncio.sleep(_START_POLL_S)

    async def close(self) -> None:
        self._closing = True
        for task in self._supervisors:  # none starts a front any more
            await cancel_and_wait(task)
        for process in self._processes.values():
            if process.stdin is not None:
                process.stdin.close()
        with suppress(TimeoutError):
            async with asyncio.timeout(self.settings.shutdown_timeout_s + 1.0):
                await asyncio.gather(*(process.wait() for process in self._processes.values()))
        for process in self._processes.values():
            if process.returncode is None:
                process.kill()
                await process.wait()
        if self._listening is not None:
            self._listening.close()
        if self._member_port is not None:
            await self._member_port.close()
        if self._gateway_server is not None:
            self._gateway_server.close()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    def _config(self, gateway_path: str, http_path: str, listen_fd: int) -> bytes:
        fronts, settings = self.fronts, self.settings
        config = FrontConfig(
            listen_fd=listen_fd,
            gateway_path=gateway_path,
            http_path=http_path,
            max_body_bytes=fronts.max_body_bytes,
            body_timeout_s=fronts.body_timeout_s,
            request_timeout_s=fronts.request_timeout_s,
            hosts=fronts.hosts,
            origins=fronts.origins,
            # The connection cap is the node's: each front takes its share.
            max_connections=max(1, settings.max_connections // fronts.count),
            keepalive_timeout_s=settings.keepalive_timeout_s,
            shutdown_timeout_s=settings.shutdown_timeout_s,
        )
        return msgspec.json.encode(config) + b"\n"

    async def _supervise(self, number: int, config: bytes) -> None:
        assert self._listening is not None
        while True:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "raftkv.server.fronts.front",
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(self._listening.fileno(),),
            )
            self._processes[number] = process
            assert process.stdin is not None
            process.stdin.write(config)
            code = await process.wait()
            if self._closing or not self._serving:  # at start: _wait_for_fronts says it
                return
            logger.error(
                "front process %d (pid %d) exited with code %d: starting another",
                number,
                process.pid,
                code,
            )
            await asyncio.sleep(_RESTART_DELAY_S)


def _private_directory(data_dir: Path) -> Path:
    """`<data_dir>/fronts`, emptied (a killed member leaves its sockets behind), mode
    0700; or, if its socket paths would pass the 108-byte limit of a Unix socket's path, a
    new temporary directory (mode 0700 too)."""
    directory = data_dir.absolute() / "fronts"
    if len(str(directory / "gateway.sock").encode()) >= _MAX_SOCKET_PATH_BYTES:
        return Path(tempfile.mkdtemp(prefix="raftkv-fronts-"))
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700)
    return directory


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    """The client address's listening socket (SO_REUSEADDR, as asyncio makes one). A name
    is bound at its first address only (asyncio binds each: "localhost" to 127.0.0.1 and
    ::1)."""
    family, _, _, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    listening = socket.socket(family, socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
        listening.listen(backlog)
        listening.set_inheritable(True)
    except BaseException:
        listening.close()
        raise
    return listening
