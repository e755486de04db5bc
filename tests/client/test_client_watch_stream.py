"""The client's watch against a scripted server: how it reads streams, resumes, retries
and gives up (no cluster: `Stub` answers, `FakeTime` sleeps)."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest
from client_helpers import FakeTime, Stub, against_stub, error, refused

from raftkv.client import (
    Client,
    ClientSettings,
    Compacted,
    InvalidRequest,
    ServerError,
    Unavailable,
    WatchEvent,
)


def b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def kv(key: str, value: str, revision: int) -> dict[str, Any]:
    return {
        "key": b64(key),
        "value": b64(value),
        "create_revision": revision,
        "mod_revision": revision,
        "version": 1,
        "lease": 0,
    }


def created(revision: int) -> dict[str, Any]:
    return {
        "type": "created",
        "revision": revision,
        "start_revision": revision + 1,
        "header": {"revision": revision, "leader": 0},
    }


def events(revision: int, *changes: tuple[str, str, int]) -> dict[str, Any]:
    return {
        "type": "events",
        "revision": revision,
        "events": [{"type": "put", "kv": kv(key, value, at)} for key, value, at in changes],
    }


def stream(*messages: dict[str, Any], tail: bytes = b"") -> httpx.Response:
    body = b"".join(msgspec.json.encode(message) + b"\n" for message in messages) + tail
    return httpx.Response(200, content=body)


def watch_events(
    stub: Stub,
    count: int,
    fake: FakeTime | None = None,
    settings: ClientSettings | None = None,
    **options: Any,
) -> list[WatchEvent]:
    async def operation(client: Client) -> list[WatchEvent]:
        got: list[WatchEvent] = []
        async with client.watch("k", **options) as watcher:
            async for event in watcher:
                got.append(event)
                if len(got) == count:
                    break
        return got

    return against_stub(stub, operation, settings, fake)


def start_revisions(stub: Stub) -> list[str | None]:
    return [request.url.params.get("start_revision") for request in stub.requests]


def test_a_cut_stream_resumes_after_the_watermark_and_drops_the_cut_line() -> None:
    stub = Stub(
        stream(created(4), events(5, ("k", "a", 5)), tail=b'{"type": "events", "rev'),
        error(503, "too_many_watches"),
        stream(created(5), events(7, ("k", "b", 7))),
    )
    got = watch_events(stub, 2)
    assert [(event.kv.value, event.revision) for event in got] == [(b"a", 5), (b"b", 7)]
    assert start_revisions(stub) == [None, "6", "6"]
    # Every connection asks for progress (liveness); a 503 moved it to another node.
    assert all(r.url.params.get("progress_notify") == "true" for r in stub.requests)
    assert len(set(stub.hosts())) == 3


@pytest.mark.parametrize("reason", ["stopping", "no_leader", "too_slow", "removed"])
def test_canceled_stopping_resumes_and_compacted_ends_the_watch(reason: str) -> None:
    stopping = {"type": "canceled", "revision": 9, "error": {"code": reason, "message": "bye"}}
    compacted = {
        "type": "canceled",
        "revision": 9,
        "error": {
            "code": "compacted",
            "message": "gone",
            "compact_revision": 12,
            "oldest_revision": 13,
        },
    }
    stub = Stub(stream(created(4), stopping), stream(created(9), compacted))
    with pytest.raises(Compacted) as caught:
        watch_events(stub, 1, start_revision=5)
    assert (caught.value.compact_revision, caught.value.oldest_revision) == (12, 13)
    assert start_revisions(stub) == ["5", "10"]


def test_a_refusal_before_the_stream_ends_the_watch() -> None:
    with pytest.raises(InvalidRequest):
        watch_events(Stub(error(400, "invalid_request", "bad range")), 1)


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        msgspec.json.encode(events(5, ("k", "a", 5))) + b"\n",  # events before created
        msgspec.json.encode({"type": "unknown", "revision": 1}) + b"\n",
    ],
)
def test_an_unreadable_stream_is_a_server_error(line: bytes) -> None:
    with pytest.raises(ServerError) as caught:
        watch_events(Stub(httpx.Response(200, content=line)), 1)
    assert caught.value.code == "bad_answer"


def test_an_event_at_or_below_the_watermark_is_refused_not_delivered_twice() -> None:
    stub = Stub(stream(created(4), events(5, ("k", "a", 5)), events(6, ("k", "again", 5))))
    with pytest.raises(ServerError, match="outside"):
        watch_events(stub, 2)


def test_a_watch_nobody_serves_gives_up_after_the_deadline() -> None:
    fake = FakeTime()
    settings = ClientSettings(deadline_s=2.0, backoff_base_s=0.5, backoff_cap_s=0.5)
    stub = Stub(*[refused("http://node") for _ in range(200)])
    with pytest.raises(Unavailable, match="no endpoint served it"):
        watch_events(stub, 1, fake, settings)
    assert fake.now_s <= 2.0 and len(stub.requests) > 3


def test_events_before_a_cancel_in_the_same_read_are_delivered_before_it_resumes() -> None:
    stopping = {"type": "canceled", "revision": 5, "error": {"code": "stopping", "message": ""}}
    # One body: the events and the cancel after them arrive in one read.
    stub = Stub(stream(created(4), events(5, ("k", "a", 5)), stopping),
                stream(created(5), events(7, ("k", "b", 7))))  # fmt: skip
    got = watch_events(stub, 2)
    assert [(event.kv.value, event.revision) for event in got] == [(b"a", 5), (b"b", 7)]
    assert start_revisions(stub) == [None, "6"]
