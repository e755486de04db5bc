"""Translation between etcd's watch messages and raftkv's watches (`raftkv.kv.watch`), with
no I/O: what a create request asks for, and the responses a watch's outcomes become.

etcd's rules, as its server applies them (server/etcdserver/api/v3rpc/watch.go, mvcc):
- An empty key is b"\\0", the smallest key; a range_end of b"\\0" means every key >= key
  (raftkv's `WatchSpec` has the same convention); a range_end at or below the key is an
  empty range, refused ("mvcc: watcher range is empty").
- Filters NOPUT and NODELETE leave out puts and deletes; an unknown filter value is ignored.
- A DELETE event's kv carries the key and its deletion's revision as mod_revision.
- `fragment`: a response over the server's request limit (with gRPC's overhead) holding
  more than one event is split into several with `fragment` set on every one but the last
  (each as large as fits, at least one event each).
"""

from __future__ import annotations

from typing import Final

from raftkv.etcd.kv_translation import key_value
from raftkv.etcd.proto import kv_pb2, rpc_pb2
from raftkv.kv.events import Event
from raftkv.kv.watch import WatchSpec

_Create = rpc_pb2.WatchCreateRequest

# etcd's cancel reasons (mvcc's errors, which its server sends as they are).
EMPTY_RANGE: Final = "mvcc: watcher range is empty"
DUPLICATE_ID: Final = "mvcc: duplicate watch ID provided on the WatchStream"
# The reason etcd gives a create with a negative start revision (its client's ErrCompacted).
NEGATIVE_START: Final = "etcdserver: mvcc: required revision has been compacted"
# The watch id of an answer that belongs to no watch: a refused create, a stream's progress.
NO_WATCH_ID: Final = -1


def spec_of(request: rpc_pb2.WatchCreateRequest) -> WatchSpec | None:
    """The watch `request` asks for; None if its range is empty (etcd refuses it)."""
    key = request.key or b"\0"
    range_end = request.range_end
    if range_end not in (b"", b"\0") and key >= range_end:
        return None
    filters = set(request.filters)
    return WatchSpec(
        key=key,
        range_end=range_end,
        prev_kv=request.prev_kv,
        no_put=_Create.NOPUT in filters,
        no_delete=_Create.NODELETE in filters,
        from_compaction_revision=True,
    )


def event_of(event: Event) -> kv_pb2.Event:
    kind = kv_pb2.Event.PUT if event.type == "put" else kv_pb2.Event.DELETE
    answer = kv_pb2.Event(type=kind, kv=key_value(event.kv))
    if event.prev_kv is not None:
        answer.prev_kv.CopyFrom(key_value(event.prev_kv))
    return answer


def fragments(response: rpc_pb2.WatchResponse, limit_bytes: int) -> list[rpc_pb2.WatchResponse]:
    """`response` split as etcd's `fragment` option does (see the module docstring)."""
    if response.ByteSize() < limit_bytes or len(response.events) < 2:
        return [response]
    events = list(response.events)
    parts: list[rpc_pb2.WatchResponse] = []
    index = 0
    while index < len(events):
        part = rpc_pb2.WatchResponse()
        part.CopyFrom(response)
        del part.events[:]
        part.fragment = True
        # Invariant: `part` holds events[start:index]; at least one, then while it fits.
        part.events.append(events[index])
        index += 1
        while index < len(events):
            part.events.append(events[index])
            if part.ByteSize() >= limit_bytes:
                del part.events[-1]
                break
            index += 1
        parts.append(part)
    parts[-1].fragment = False
    return parts
