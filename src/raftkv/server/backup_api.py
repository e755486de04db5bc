"""`GET /v1/snapshot`: a backup file (`raftkv.server.backup`) of the whole state at a
linearizable point, streamed (`raftkv snapshot save`); and the same file whole for etcd's
Maintenance.Snapshot (`backup_file`), under the same limit of backups at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from aiohttp import web

from raftkv.kv.service import KvService
from raftkv.raft.driver.errors import Overloaded
from raftkv.server.backup import FORMAT_VERSION as BACKUP_FORMAT_VERSION
from raftkv.server.backup import BackupHeader, backup_chunks, encode_prefix, padded_for_etcd
from raftkv.server.http_common import ApiError

__all__ = ["BackupHandlers"]


class _Busy(Overloaded):
    """max_concurrent_backups backups are under way."""


class BackupHandlers:
    def __init__(self, service: KvService, timeout: float, max_concurrent_backups: int) -> None:
        self.service = service
        # How long the read point may take to confirm.
        self.timeout = timeout
        # Backups made at once; more are refused with 503 `busy`.
        self.max_concurrent_backups = max_concurrent_backups
        # Backups being made now (each holds a whole encoded state in memory).
        self.backups_in_progress = 0

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        """A backup (raftkv.server.backup) of the state at a linearizable point: it holds
        every write acknowledged before the request. Frozen on the loop (a checkpoint),
        encoded on a worker thread, streamed in chunks."""
        try:
            with self._slot():
                return await self._stream_backup(request)
        except _Busy as busy:
            raise ApiError(503, "busy", str(busy)) from None

    async def backup_file(self, timeout: float) -> bytes:
        """The whole backup file, as the route streams it (etcd's Maintenance.Snapshot
        sends it). Overloaded when max_concurrent_backups are under way."""
        with self._slot():
            header, payload = await self._make(timeout)
            return b"".join(backup_chunks(padded_for_etcd(header), payload, 1 << 20))

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        if self.backups_in_progress >= self.max_concurrent_backups:
            raise _Busy(
                f"{self.backups_in_progress} backup(s) in progress on this node "
                f"(max_concurrent_backups={self.max_concurrent_backups}); retry later"
            )
        self.backups_in_progress += 1
        try:
            yield
        finally:
            self.backups_in_progress -= 1

    async def _make(self, timeout: float) -> tuple[BackupHeader, bytes]:
        frozen = await self.service.backup_snapshot(timeout=timeout)
        payload = await asyncio.get_running_loop().run_in_executor(None, frozen.produce)
        header = BackupHeader(
            format_version=BACKUP_FORMAT_VERSION,
            index=frozen.index,
            term=frozen.term,
            revision=frozen.revision,
            node_id=int(self.service.member_id),
            payload_bytes=len(payload),
        )
        return header, payload

    async def _stream_backup(self, request: web.Request) -> web.StreamResponse:
        header, payload = await self._make(self.timeout)
        total = len(encode_prefix(header)) + len(payload) + 32
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(total),
                "X-Raftkv-Index": str(header.index),
                "X-Raftkv-Revision": str(header.revision),
            }
        )
        await response.prepare(request)
        for chunk in backup_chunks(header, payload, 1 << 20):
            await response.write(chunk)
        await response.write_eof()
        return response
