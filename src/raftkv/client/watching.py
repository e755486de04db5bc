"""`WatchStream`: one client watch across any number of connections, without I/O.

A watch is `GET /v1/watch` answered by a stream of NDJSON messages (see
`raftkv.server.watch_api`), each carrying a watermark `revision`: every matching event at or
below it has been sent. The client keeps the highest watermark it has seen and, when a
connection ends for any reason but `compacted`, opens another (at the next endpoint of the
rotation) starting at `watermark + 1`. So across reconnections the caller sees every
matching revision once, in order, with no gap and no duplicate (the server sends whole
revisions per message, in order; the client checks that every event is above the
watermark and fails loudly if not).

Liveness: the client always asks for progress messages every `progress_interval_s` (they
are handed to the caller only if it asked for them), so a connection silent for
`read_timeout_s` is a dead node or a cut network, and is replaced. A watch served by a node
that lags behind (a partitioned follower) still answers progress; it catches up, or a
restart of the watch moves elsewhere — the guarantee is ordering and completeness, not
freshness.

Giving up: a watch is retried for as long as connections keep succeeding; once attempts
fail for `deadline_s` in a row with no watch started in between, it ends with Unavailable.
A refusal (400, 404, 410 `compacted`) ends it at once. The driver (the async or the sync
client) calls `connect_to()`, then `opened()` or `failed()` for the answer, then `line()`
for every line, and `ended()`/`failed()` when the connection ends.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import assert_never

import httpx
import msgspec

from raftkv.api.watches import (
    WatchCanceled,
    WatchCreated,
    WatchEventAnswer,
    WatchEvents,
    WatchMessage,
    WatchProgress,
)
from raftkv.client.call import describe
from raftkv.client.errors import ClientError, ServerError, Unavailable, refusal
from raftkv.client.protocol import BadAnswer, error_of, kv_of, range_params
from raftkv.client.results import WatchBatch, WatchEvent
from raftkv.client.routing import Router, backoff_delay
from raftkv.client.settings import ClientSettings

__all__ = ["WatchOptions", "WatchStream"]

_DECODER = msgspec.json.Decoder(WatchMessage)
# Cancel reasons after which the watch goes on from its watermark at the next endpoint:
# the node is stopping, was removed from the cluster, has no leader, or the connection
# could not keep up. Any other reason ends the watch.
_RESUME_ELSEWHERE = frozenset({"stopping", "removed", "too_slow", "no_leader"})
# The longest line the client accepts (a message holds at most the server's
# max_events_per_message events; each key/value is limited by the server too).
MAX_LINE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class WatchOptions:
    key: bytes
    range_end: bytes = b""
    prefix: bool = False
    # 0: from the next revision of the node that starts the watch.
    start_revision: int = 0
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False
    # Hand progress messages to the caller (as WatchBatch with no events).
    progress_notify: bool = False
    # How often the server is asked for progress; silence for three times as long ends
    # the connection (a dead node or network).
    progress_interval_s: float = 5.0

    def __post_init__(self) -> None:
        if self.start_revision < 0:
            raise ValueError(f"start_revision must be >= 0, got {self.start_revision}")
        if not 0.05 <= self.progress_interval_s <= 3600:
            raise ValueError(
                f"progress_interval_s must be in 0.05..3600, got {self.progress_interval_s}"
            )
        if self.prefix and self.range_end:
            raise ValueError("give range_end or prefix=True, not both")
        if not self.key and not self.prefix:
            raise ValueError("a watch needs a key (or prefix=True, where b'' means every key)")


@dataclass(frozen=True, slots=True)
class Retry:
    """Wait this long, then connect again."""

    seconds: float


class WatchStream:
    def __init__(
        self,
        options: WatchOptions,
        router: Router,
        settings: ClientSettings,
        rng: random.Random,
    ) -> None:
        self.options = options
        self._router = router
        self._settings = settings
        self._rng = rng
        # The highest watermark seen (None before the first `created`): every matching
        # event at or below it was handed out.
        self.watermark: int | None = None
        # Consecutive failed connections, when the first of them failed, and what happened.
        self._failures = 0
        self._failing_since: float | None = None
        self._failed: list[str] = []
        self._log: list[tuple[str, str]] = []
        # Connections that ended or failed, over the watch's life (for the caller's
        # metrics and for tests).
        self.reconnections = 0

    @property
    def read_timeout_s(self) -> float:
        return 3 * self.options.progress_interval_s

    def timeout(self, request_timeout_s: float) -> httpx.Timeout:
        """A connection's timeouts: the client's, except reads, which wait for a message
        (progress at the latest) for `read_timeout_s`."""
        return httpx.Timeout(request_timeout_s, read=self.read_timeout_s)

    def reader(self, endpoint: str) -> BatchReader:
        """What reads one connection's stream into batches for the caller."""
        return BatchReader(self, endpoint)

    def interrupted(
        self, endpoint: str, error: Reconnect | httpx.TransportError, now: float
    ) -> Retry:
        """A connection the server ended (Reconnect) or the network broke."""
        what = str(error) if isinstance(error, Reconnect) else describe(error)
        return self.lost(endpoint, what, now)

    @property
    def start_revision(self) -> int:
        """Where the next connection starts."""
        if self.watermark is None:
            return self.options.start_revision
        return self.watermark + 1

    def connect_to(self) -> str:
        """The endpoint of the next connection."""
        return self._router.pick(to_leader=False, avoid=self._failed)

    def params(self) -> tuple[tuple[str, str], ...]:
        options = self.options
        params = range_params(
            options.key, options.range_end, prefix=options.prefix, start=self.start_revision
        )
        flags = {"prev_kv": options.prev_kv, "no_put": options.no_put,
                 "no_delete": options.no_delete}  # fmt: skip
        extra = tuple((name, "true") for name, given in flags.items() if given)
        interval = ("progress_interval_s", f"{options.progress_interval_s:g}")
        return params + extra + (("progress_notify", "true"), interval)

    def refused(self, endpoint: str, status: int, content: bytes, now: float) -> Retry:
        """A connection answered `status` (not 200) before the stream: a 503 is retried
        elsewhere; any other status ends the watch (raises)."""
        detail = error_of(content)
        if detail is None:
            raise ServerError(
                "bad_answer",
                f"watch: HTTP {status} from {endpoint} with no error: {content[:200]!r}",
                status=status,
                endpoints=[endpoint],
            )
        if status == 503:
            self._router.not_serving(endpoint)
            return self.failed(endpoint, f"503 {detail.code}: {detail.message}", now)
        if 400 <= status < 500:
            raise refusal(
                status,
                detail.code,
                f"watch from revision {self.start_revision}: {detail.message}",
                endpoint,
                compact_revision=detail.compact_revision,
                oldest_revision=detail.oldest_revision,
            )
        raise ServerError(
            detail.code,
            f"watch: {detail.message} (HTTP {status} from {endpoint})",
            status=status,
            endpoints=[endpoint],
        )

    def line(self, endpoint: str, line: bytes | str) -> WatchBatch | None:
        """One line of the stream: the batch to hand out (None: nothing for the caller).
        Raises Compacted (or another ClientError) when the server ended the watch for
        good, `Reconnect` when it ended it but the watch goes on elsewhere."""
        if not line.strip():
            return None
        try:
            message = _DECODER.decode(line)
        except msgspec.DecodeError as error:
            raise self._bad(endpoint, f"not a watch message: {error}") from error
        match message:
            case WatchCreated():
                self._router.answered(endpoint, message.header.leader)
                self._failures = 0
                self._failing_since = None
                self._failed.clear()
                self._log.clear()
                self._advance(message.revision)
                return None
            case WatchEvents():
                watermark = self.watermark
                if watermark is None:
                    raise self._bad(endpoint, "events before the watch was created")
                try:
                    events = tuple(_event(answer) for answer in message.events)
                except BadAnswer as error:
                    raise self._bad(endpoint, str(error)) from error
                for event in events:
                    if event.revision <= watermark or event.revision > message.revision:
                        raise self._bad(
                            endpoint,
                            f"an event at revision {event.revision} outside "
                            f"({watermark}, {message.revision}]",
                        )
                self._advance(message.revision)
                return WatchBatch(self._current(), events)
            case WatchProgress():
                if self.watermark is None:
                    raise self._bad(endpoint, "progress before the watch was created")
                self._advance(message.revision)
                return WatchBatch(self._current(), ()) if self.options.progress_notify else None
            case WatchCanceled():
                self._advance(message.revision)
                why = message.error
                if why.code in _RESUME_ELSEWHERE:
                    raise Reconnect(f"canceled: {why.code}: {why.message}")
                raise refusal(
                    410 if why.code == "compacted" else 400,
                    why.code,
                    f"watch canceled at revision {message.revision}: {why.message}",
                    endpoint,
                    compact_revision=why.compact_revision,
                    oldest_revision=why.oldest_revision,
                )
            case _:
                assert_never(message)

    def failed(self, endpoint: str, what: str, now: float) -> Retry:
        """A connection failed or ended: how long to wait before the next one; raises
        Unavailable once connections have failed for `deadline_s` in a row."""
        self._log.append((endpoint, what))
        self._failed.append(endpoint)
        self.reconnections += 1
        if len(self._failed) >= len(self._router.endpoints):
            self._failed.clear()  # every endpoint tried: start the rotation over
        if self._failing_since is None:
            self._failing_since = now
        self._failures += 1
        delay = backoff_delay(
            self._failures - 1, self._settings.backoff_base_s, self._settings.backoff_cap_s,
            self._rng,
        )  # fmt: skip
        if now + delay - self._failing_since > self._settings.deadline_s:
            attempts = "; ".join(f"{url}: {why}" for url, why in self._log[-10:])
            raise Unavailable(
                "unavailable",
                f"watch from revision {self.start_revision}: no endpoint served it for "
                f"{self._settings.deadline_s:g}s ({self._failures} attempts): {attempts}",
                status=None,
                endpoints=list(dict.fromkeys(url for url, _ in self._log)),
            )
        return Retry(delay)

    def lost(self, endpoint: str, what: str, now: float) -> Retry:
        """A connection that had started the watch ended (or one that never answered)."""
        self._router.not_serving(endpoint)
        return self.failed(endpoint, what, now)

    def _advance(self, revision: int) -> None:
        # Never backwards: a node that lags may name an older revision than one seen.
        if self.watermark is None or revision > self.watermark:
            self.watermark = revision

    def _current(self) -> int:
        assert self.watermark is not None
        return self.watermark

    def _bad(self, endpoint: str, why: str) -> ClientError:
        return ServerError(
            "bad_answer", f"watch: unreadable stream from {endpoint}: {why}",
            status=200, endpoints=[endpoint],
        )  # fmt: skip


class WatcherBase:
    """What the async and the blocking watcher share: the stream's state, read by the
    caller, and the rule that a watcher is iterated once."""

    def __init__(self, stream: WatchStream, request_timeout_s: float) -> None:
        self._stream = stream
        self._request_timeout_s = request_timeout_s
        self._iterated = False

    @property
    def revision(self) -> int | None:
        """The watermark: every matching event at or below it was delivered (None before
        the watch started)."""
        return self._stream.watermark

    @property
    def reconnections(self) -> int:
        """How many times a connection ended or failed and the watch moved on."""
        return self._stream.reconnections

    def _claim(self) -> None:
        if self._iterated:
            raise RuntimeError(f"a {type(self).__name__} is iterated once")
        self._iterated = True


class BatchReader:
    """One connection's bytes, in the chunks they arrive in, to the batches they hold."""

    def __init__(self, stream: WatchStream, endpoint: str) -> None:
        self._stream = stream
        self._endpoint = endpoint
        self._lines = LineSplitter(endpoint)

    def feed(self, chunk: bytes) -> Iterator[WatchBatch]:
        """The chunk's batches, each handed out before the next line is read: a line that
        ends the watch (a cancel) must not keep the batches before it from the caller,
        whose watermark already covers them."""
        for line in self._lines.feed(chunk):
            batch = self._stream.line(self._endpoint, line)
            if batch is not None:
                yield batch


class LineSplitter:
    """Cuts a stream's bytes into complete lines, each bounded by MAX_LINE_BYTES. The
    server ends every message with a newline: bytes after the last one when the stream
    ends are a message cut off by a lost connection, and are dropped (the watch resumes
    from the watermark)."""

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        pending = self._pending
        pending += chunk
        lines: list[bytes] = []
        start = 0
        while (cut := pending.find(b"\n", start)) >= 0:
            lines.append(bytes(pending[start:cut]))
            start = cut + 1
        del pending[:start]
        if len(pending) > MAX_LINE_BYTES:
            raise ServerError(
                "bad_answer",
                f"watch: a line beyond {MAX_LINE_BYTES} bytes from {self._endpoint}",
                status=200,
                endpoints=[self._endpoint],
            )
        return lines


class Reconnect(Exception):
    """The server ended this connection's watch; the watch goes on from the watermark."""


def _event(answer: WatchEventAnswer) -> WatchEvent:
    prev_kv = None if answer.prev_kv is None else kv_of(answer.prev_kv)
    return WatchEvent(answer.type, kv_of(answer.kv), prev_kv)
