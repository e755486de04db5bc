"""`GET /v1/watch`'s messages.

The route answers 200 with a stream of newline-delimited JSON messages (NDJSON,
`application/x-ndjson`), one `WatchMessage` per line, tagged by "type". Every message
carries `revision`, a watermark: every matching event at or below it has been sent, so a
client that resumes with `start_revision = revision + 1` sees no gap and no duplicate.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from raftkv.api.errors import ErrorDetail
from raftkv.api.keys import Header, KeyValueAnswer

__all__ = [
    "WatchCanceled",
    "WatchCreated",
    "WatchEventAnswer",
    "WatchEvents",
    "WatchMessage",
    "WatchProgress",
]


class WatchEventAnswer(msgspec.Struct, frozen=True, omit_defaults=True):
    type: Literal["put", "delete"]
    # For a delete: the key, its mod_revision (the delete's revision) and zeros elsewhere.
    kv: KeyValueAnswer
    # The key before this event (prev_kv=true, and the key existed).
    prev_kv: KeyValueAnswer | None = None


class WatchCreated(msgspec.Struct, frozen=True, tag="created", tag_field="type"):
    """The first message: the watch starts at `start_revision` (`revision` is one less)."""

    revision: int
    start_revision: int
    # The answering node's revision and leader when the watch started.
    header: Header


class WatchEvents(msgspec.Struct, frozen=True, tag="events", tag_field="type"):
    """Events of one or more whole revisions, in revision order (the events of one
    revision are never split between messages); `revision` >= the last event's."""

    revision: int
    events: list[WatchEventAnswer]


class WatchProgress(msgspec.Struct, frozen=True, tag="progress", tag_field="type"):
    """A bookmark (progress_notify=true): nothing matched between the last message and
    `revision`; the watch has seen the store up to it."""

    revision: int


class WatchCanceled(msgspec.Struct, frozen=True, tag="canceled", tag_field="type"):
    """The last message: the server ended the watch. `error.code` says why: `compacted`
    (the watch fell behind the compacted history: start over from a fresh read), `too_slow`
    (the client did not read fast enough, or the node's watches held too many bytes),
    `stopping` (the node is shutting down), `removed` (the node was removed from the
    cluster) or `no_leader` (the node has had no leader for a while): resume on another
    member from `revision + 1`."""

    revision: int
    error: ErrorDetail


WatchMessage = WatchCreated | WatchEvents | WatchProgress | WatchCanceled
