"""`GET /v1/snapshot`: a backup file (`raftkv.server.backup`) of the whole state at a
linearizable point, streamed (`raftkv snapshot save`)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from raftkv.kv.service import KvService
from raftkv.server.backup import FORMAT_VERSION as BACKUP_FORMAT_VERSION
from raftkv.server.backup import BackupHeader, backup_chunks, encode_prefix
from raftkv.server.http_common import ApiError

__all__ = ["BackupHandlers"]


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
        if self.backups_in_progress >= self.max_concurrent_backups:
            raise ApiError(
                503,
                "busy",
                f"{self.backups_in_progress} backup(s) in progress on this node "
                f"(max_concurrent_backups={self.max_concurrent_backups}); retry later",
            )
        self.backups_in_progress += 1
        try:
            return await self._stream_backup(request)
        finally:
            self.backups_in_progress -= 1

    async def _stream_backup(self, request: web.Request) -> web.StreamResponse:
        frozen = await self.service.backup_snapshot(timeout=self.timeout)
        payload = await asyncio.get_running_loop().run_in_executor(None, frozen.produce)
        header = BackupHeader(
            format_version=BACKUP_FORMAT_VERSION,
            index=frozen.index,
            term=frozen.term,
            revision=frozen.revision,
            node_id=int(self.service.member_id),
            payload_bytes=len(payload),
        )
        total = len(encode_prefix(header)) + len(payload) + 32
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(total),
                "X-Raftkv-Index": str(frozen.index),
                "X-Raftkv-Revision": str(frozen.revision),
            }
        )
        await response.prepare(request)
        for chunk in backup_chunks(header, payload, 1 << 20):
            await response.write(chunk)
        await response.write_eof()
        return response
