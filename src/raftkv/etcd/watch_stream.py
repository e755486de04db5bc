"""One etcd watch stream (`Watch(stream WatchRequest) returns (stream WatchResponse)`): the
watches a client creates on it, each a `raftkv.kv.watch.Watch` of the node's hub.

Theory of operation:
- The stream owns its tasks: one reading requests, one per watch (waiting for the watch's
  next outcome and writing it), one answering a progress request once the watches are in
  sync, one watching for a leader when the client requires one. `serve()` returns (or is
  cancelled, when the client goes away) only after cancelling and awaiting every one of
  them and releasing every watch: nothing outlives the stream.
- Writes go one at a time under a lock (FIFO), each a whole response (a fragmented batch
  is written whole before anything else). A watch's "created" is written before its task
  starts, so its events follow it; a "canceled" is written after the watch's batch under
  way, never in the middle of it.
- Memory: a watch asks its `Watch` for the next outcome only once the last one is written
  (`Watch.next` counts a batch against the node's byte budgets until then), so a stream
  holds at most one batch per watch. A write that stays blocked for `send_timeout_s`
  (the client stopped reading) ends the whole stream with UNAVAILABLE: its client
  resumes every watch from the last revision it received, as after any lost connection,
  and nothing piles up meanwhile.
- How watches end, as etcd's clients expect it: canceled by the client (a "canceled"
  answer); start revision compacted ("created", then "canceled" with compact_revision:
  the oldest revision the member can watch from, as etcd's: the compaction revision, or
  the one after it on a store compacted by a raftkv that kept no events of it); ended by
  the node's byte budget (the watch holding the most when all of them together hold too
  much: "canceled" with a reason);
  the node stopping or removed (the stream ends UNAVAILABLE, so clients resume elsewhere);
  no leader for `no_leader_timeout_s` on a stream whose client requires one (etcd's
  "hasleader" metadata, set by etcdctl): the stream ends with etcd's "no leader".
- A progress request is answered with watch_id -1 and the current revision once every
  watch of the stream has written everything up to it (checked every 100 ms, as etcd's
  own sync loop does): the answer promises that nothing at or below it is still to come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Final

import grpc

from raftkv.etcd.calls import Context
from raftkv.etcd.context import EtcdContext
from raftkv.etcd.errors import NO_LEADER, STOPPED
from raftkv.etcd.proto import rpc_pb2
from raftkv.etcd.watch_translation import (
    DUPLICATE_ID,
    EMPTY_RANGE,
    NEGATIVE_START,
    NO_WATCH_ID,
    event_of,
    fragments,
    spec_of,
)
from raftkv.kv.errors import AuthError
from raftkv.kv.watch import EventBatch, TooManyWatches, Watch, WatchCanceled, WatchProgress
from raftkv.raft.core.errors import ConfigInvalid

logger = logging.getLogger("raftkv.etcd")

Status = tuple[grpc.StatusCode, str]

# How often a progress request waiting for the watches to be in sync checks them again.
_SYNC_CHECK_S: Final = 0.1
# etcd's metadata asking that the stream end when the member has no leader.
_REQUIRE_LEADER: Final = ("hasleader", "true")


@dataclass(frozen=True, slots=True)
class WatchStreamSettings:
    # Watches open at once on one stream; a create beyond it is refused (created and
    # canceled, with a reason). The node's own limit (max_watches) applies as well.
    max_watches_per_stream: int = 1000
    # A write blocked this long (the client stopped reading) ends the stream UNAVAILABLE;
    # its client resumes. Lower: memory freed sooner; higher: patience for slow clients.
    send_timeout_s: float = 10.0
    # How often a watch created with progress_notify hears of progress when it has had no
    # events (etcd's --experimental-watch-progress-notify-interval, 10 minutes).
    progress_notify_interval_s: float = 600.0
    # A member without a leader this long ends the streams whose client requires one
    # (etcd's "hasleader" metadata); 0: never.
    no_leader_timeout_s: float = 3.0

    def __post_init__(self) -> None:
        value = self.max_watches_per_stream
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigInvalid("WatchStreamSettings.max_watches_per_stream must be >= 1")
        for name in ("send_timeout_s", "progress_notify_interval_s"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ConfigInvalid(f"WatchStreamSettings.{name} must be a positive number")
        if not 0 <= self.no_leader_timeout_s < float("inf"):
            raise ConfigInvalid("WatchStreamSettings.no_leader_timeout_s must be >= 0")


class _StreamEnded(Exception):
    """End the stream: with `status`, or silently (None: the client is gone)."""

    def __init__(self, status: Status | None) -> None:
        super().__init__(status)
        self.status = status


@dataclass(eq=False, slots=True)
class _Watching:
    """One watch of the stream, as the stream tracks it."""

    id: int
    watch: Watch
    fragment: bool
    progress_interval_s: float | None
    task: asyncio.Task[None] | None = None
    # Handed an outcome by its Watch that is not written yet (a stream progress waits).
    holding: bool = False
    # Writing under the stream's lock (a client's cancel then waits for the write).
    writing: bool = False
    # Canceled by the client: its task writes nothing more.
    canceled: bool = False


class WatchStream:
    def __init__(
        self,
        context: EtcdContext,
        settings: WatchStreamSettings,
        call: Context,
        fragment_bytes: int,
    ) -> None:
        self.context = context
        self.settings = settings
        self._call = call
        self._fragment_bytes = fragment_bytes
        self._hub = context.service.watch_hub
        self._clock = context.service.clock
        # Invariant: the watches opened and not released, by id; each has a running task
        # once its "created" has been written.
        self._watches: dict[int, _Watching] = {}
        # The next id the server picks (etcd's: from 0, skipping ids the client took).
        self._next_id = 0
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._progress: asyncio.Task[None] | None = None
        self._end: asyncio.Future[Status | None] | None = None

    @property
    def watches(self) -> int:
        return len(self._watches)

    async def serve(self) -> None:
        """Serve until the stream ends (see the module docstring)."""
        self._end = asyncio.get_running_loop().create_future()
        self._spawn(self._receive())
        if _REQUIRE_LEADER in tuple(self._call.invocation_metadata() or ()):
            self._spawn(self._watch_leader())
        try:
            status = await self._end
        finally:
            await self._close()
        if status is not None:
            await self._call.abort(*status)

    # -- tasks -----------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        if isinstance(error, _StreamEnded):
            self._finish(error.status)
            return
        logger.error("etcd watch stream: unexpected error", exc_info=error)
        self._finish(
            (
                grpc.StatusCode.INTERNAL,
                f"raftkv: internal error: {type(error).__name__}: {error}",
            )
        )

    def _finish(self, status: Status | None) -> None:
        if self._end is not None and not self._end.done():
            self._end.set_result(status)

    async def _close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for watching in self._watches.values():
            watching.watch.release()
        self._watches.clear()

    # -- requests --------------------------------------------------------------------------

    async def _receive(self) -> None:
        """Read requests until the client closes its side (the watches go on, as etcd's).
        Reads through `call.read()`: a pending read of the request iterator, once
        cancelled, keeps gRPC from sending the stream's status afterwards."""
        try:
            while True:
                request = await self._call.read()
                if request is grpc.aio.EOF:
                    return
                assert isinstance(request, rpc_pb2.WatchRequest)
                match request.WhichOneof("request_union"):
                    case "create_request":
                        await self._create(request.create_request)
                    case "cancel_request":
                        await self._cancel(request.cancel_request.watch_id)
                    case "progress_request":
                        self._request_progress()
                    case _:
                        pass  # an empty request: ignored, as etcd does
        except (grpc.aio.AioRpcError, grpc.RpcError, asyncio.InvalidStateError) as error:
            raise _StreamEnded(None) from error

    async def _create(self, request: rpc_pb2.WatchCreateRequest) -> None:
        if request.start_revision < 0:
            await self._refuse(NEGATIVE_START)
            return
        spec = spec_of(request)
        if spec is None:
            await self._refuse(EMPTY_RANGE)
            return
        if request.watch_id != 0 and request.watch_id in self._watches:
            await self._refuse(DUPLICATE_ID)
            return
        limit = self.settings.max_watches_per_stream
        if len(self._watches) >= limit:
            await self._refuse(
                f"raftkv: too many watches on this stream ({len(self._watches)}, "
                f"max_watches_per_stream={limit}); cancel some or open another stream"
            )
            return
        try:
            watch = self.context.service.open_watch(spec, request.start_revision)
        except TooManyWatches as error:
            await self._refuse(f"raftkv: {error}")
            return
        except AuthError:
            # etcd creates and cancels such a watch with this reason.
            await self._refuse("etcdserver: permission denied")
            return
        watch_id = request.watch_id or self._pick_id()
        watching = _Watching(
            id=watch_id,
            watch=watch,
            fragment=request.fragment,
            progress_interval_s=(
                self.settings.progress_notify_interval_s if request.progress_notify else None
            ),
        )
        # Registered before the write, so that a stream ending meanwhile releases it.
        self._watches[watch_id] = watching
        created = rpc_pb2.WatchResponse(
            header=self.context.header(), watch_id=watch_id, created=True
        )
        await self._write([created])
        if self._watches.get(watch_id) is watching:
            watching.task = self._spawn(self._run(watching))

    def _pick_id(self) -> int:
        while self._next_id in self._watches:
            self._next_id += 1
        watch_id = self._next_id
        self._next_id += 1
        return watch_id

    async def _refuse(self, reason: str) -> None:
        """A create etcd refuses: created and canceled at once, under no watch id."""
        await self._write(
            [
                rpc_pb2.WatchResponse(
                    header=self.context.header(),
                    watch_id=NO_WATCH_ID,
                    created=True,
                    canceled=True,
                    cancel_reason=reason,
                )
            ]
        )

    async def _cancel(self, watch_id: int) -> None:
        """etcd: canceled if the watch exists; an unknown id is ignored (no answer)."""
        watching = self._watches.pop(watch_id, None)
        if watching is None:
            return
        watching.canceled = True
        if watching.task is not None and not watching.writing:
            watching.task.cancel()
        # Released before the answer: once the client reads "canceled", the watch holds
        # nothing of the node's (a batch under way was taken from it already).
        watching.watch.release()
        # Under the lock: after the batch the watch may be writing.
        canceled = rpc_pb2.WatchResponse(
            header=self.context.header(), watch_id=watch_id, canceled=True
        )
        await self._write([canceled])

    def _request_progress(self) -> None:
        if self._progress is None or self._progress.done():
            self._progress = self._spawn(self._stream_progress())

    async def _stream_progress(self) -> None:
        while not await self._write_progress():
            await self._clock.sleep(_SYNC_CHECK_S)

    async def _write_progress(self) -> bool:
        """Write the stream's progress if every watch has written everything up to the
        current revision (checked under the lock: nothing is being written meanwhile)."""
        async with self._lock:
            current = self._hub.current_revision()
            for watching in self._watches.values():
                if watching.holding or watching.watch.next_revision <= current:
                    return False
            response = rpc_pb2.WatchResponse(
                header=self.context.header(current), watch_id=NO_WATCH_ID
            )
            await self._send(response)
            return True

    async def _watch_leader(self) -> None:
        timeout = self.settings.no_leader_timeout_s
        if not timeout:
            return
        service = self.context.service
        while True:
            await self._clock.sleep(min(timeout, 1.0))
            if service.leaderless_seconds() >= timeout:
                raise _StreamEnded(NO_LEADER)

    # -- one watch -------------------------------------------------------------------------

    async def _run(self, watching: _Watching) -> None:
        watch = watching.watch
        while not watching.canceled:
            outcome = await watch.next(watching.progress_interval_s)
            watching.holding = True
            match outcome:
                case EventBatch():
                    response = rpc_pb2.WatchResponse(
                        header=self.context.header(outcome.revision),
                        watch_id=watching.id,
                        events=[event_of(event) for event in outcome.events],
                    )
                    del outcome  # its events live on in the response only
                    if watching.fragment:
                        await self._write(fragments(response, self._fragment_bytes), watching)
                    else:
                        await self._write([response], watching)
                case WatchProgress():
                    progress = rpc_pb2.WatchResponse(
                        header=self.context.header(outcome.revision), watch_id=watching.id
                    )
                    await self._write([progress], watching)
                case WatchCanceled():
                    await self._ended(watching, outcome)
                    return
            watching.holding = False

    async def _ended(self, watching: _Watching, canceled: WatchCanceled) -> None:
        """The watch ended on the server's side (see the module docstring)."""
        if canceled.code in ("stopping", "removed"):
            message = STOPPED[1] if canceled.code == "stopping" else canceled.message
            raise _StreamEnded((grpc.StatusCode.UNAVAILABLE, message))
        if canceled.oldest_revision is not None:
            # etcd's header here has revision 0 (its compaction notice carries none).
            response = rpc_pb2.WatchResponse(
                header=self.context.header(0),
                watch_id=watching.id,
                canceled=True,
                compact_revision=canceled.oldest_revision,
            )
        else:
            response = rpc_pb2.WatchResponse(
                header=self.context.header(),
                watch_id=watching.id,
                canceled=True,
                cancel_reason=(
                    f"raftkv: {canceled.code}: {canceled.message} "
                    f"(last revision written: {canceled.revision})"
                ),
            )
        # Released before the answer, as a client's cancel is.
        if self._watches.get(watching.id) is watching:
            del self._watches[watching.id]
            watching.watch.release()
        await self._write([response], watching)

    # -- writing ---------------------------------------------------------------------------

    async def _write(
        self, responses: list[rpc_pb2.WatchResponse], watching: _Watching | None = None
    ) -> None:
        """Write `responses` in order, nothing else in between. For a watch's responses:
        nothing once the client canceled it, and no events once the node's byte budget has
        ended it (their bytes are no longer counted; its cancel follows instead)."""
        async with self._lock:
            if watching is not None:
                if watching.canceled:
                    return
                ended = watching.watch.canceled
                if ended is not None and any(response.events for response in responses):
                    return
                watching.writing = True
            try:
                for response in responses:
                    await self._send(response)
            finally:
                if watching is not None:
                    watching.writing = False

    async def _send(self, response: rpc_pb2.WatchResponse) -> None:
        """One write, bounded by send_timeout_s (see the module docstring)."""
        write = asyncio.ensure_future(self._call.write(response))
        timer = asyncio.ensure_future(self._clock.sleep(self.settings.send_timeout_s))
        try:
            await asyncio.wait({write, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            blocked = not write.done()
            if blocked:
                write.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await write
        if blocked:
            raise _StreamEnded(
                (
                    grpc.StatusCode.UNAVAILABLE,
                    "raftkv: the watch stream's client read nothing for "
                    f"{self.settings.send_timeout_s:g} s (send_timeout_s); resume each "
                    "watch from the last revision received",
                )
            )
        error = write.exception()
        if error is not None:
            raise _StreamEnded(None) from error
