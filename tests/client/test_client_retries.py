"""Retry, backoff and error rules, against scripted answers (httpx.MockTransport) on a fake
clock: which failures are retried, with which session, where, and what is raised."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from random import Random

import httpx
import pytest
from client_helpers import (
    PUT_OK,
    STUB_ENDPOINTS,
    TXN_OK,
    FakeTime,
    Stub,
    against_stub,
    answer,
    error,
    header,
    lost,
    refused,
)

from raftkv.client import (
    Client,
    ClientError,
    ClientSettings,
    Compacted,
    InvalidRequest,
    KeyValue,
    LimitExceeded,
    NoSpace,
    NotUtf8,
    OutcomeUnknown,
    PutResult,
    Refused,
    ServerError,
    StaleSequence,
    SyncClient,
    Unavailable,
    txn,
)
from raftkv.client.routing import Router, backoff_delay, parse_endpoints
from raftkv.client.sessions import AsyncSessions, LanePool

A, B, C = STUB_ENDPOINTS
GET_OK = answer(
    200,
    {
        "header": header(7),
        "kv": {
            "key": "aw==",
            "value": "dg==",
            "create_revision": 2,
            "mod_revision": 7,
            "version": 3,
        },
    },
)


# A txn that writes (an empty one, or one of ranges only, is a read and carries no session).
A_WRITE: tuple[list[txn.Compare], list[txn.Op]] = ([], [txn.put("k", "v")])


def put(client: Client) -> Awaitable[PutResult]:
    return client.put("k", "v")


def get(client: Client) -> Awaitable[KeyValue | None]:
    return client.get("k")


# -- what is retried -------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["not_leader", "proposal_dropped", "overloaded", "stopped"])
def test_a_503_is_retried_at_the_next_endpoint(code: str) -> None:
    stub = Stub(error(503, code), PUT_OK)
    fake, settings = FakeTime(), None
    assert against_stub(stub, put, settings, fake) == PutResult(5, 0)
    assert stub.hosts() == [A, B]
    # The same session both times: a 503 applied nothing, but the retry is a repeat.
    first, second = stub.bodies()
    assert (first["client_id"], first["sequence"]) == (second["client_id"], second["sequence"])
    (delay,) = fake.slept
    assert 0 <= delay <= ClientSettings().backoff_base_s


def test_refused_connections_move_on_and_mark_the_endpoint_down() -> None:
    stub = Stub(refused(A), refused(B), GET_OK, GET_OK)

    async def twice(client: Client) -> KeyValue | None:
        await client.get("k")
        return await client.get("k")

    kv = against_stub(stub, twice)
    assert kv is not None and (kv.key, kv.value, kv.version) == (b"k", b"v", 3)
    # The second call starts at C, where the first one succeeded.
    assert stub.hosts() == [A, B, C, C]


def test_a_read_is_retried_after_a_lost_connection_and_a_504() -> None:
    stub = Stub(lost(), error(504, "timeout"), GET_OK)
    fake, settings = FakeTime(), None
    kv = against_stub(stub, get, settings, fake)
    assert kv is not None
    assert stub.hosts() == [A, B, C]


@pytest.mark.parametrize("failure", ["504", "lost"])
def test_a_write_with_an_unknown_outcome_is_retried_with_the_same_session(failure: str) -> None:
    first = error(504, "timeout") if failure == "504" else lost()
    stub = Stub(first, error(503, "not_leader"), TXN_OK)
    fake, settings = FakeTime(), None
    result = against_stub(stub, lambda client: client.txn(*A_WRITE), settings, fake)
    assert result is not None
    sessions = {(body["client_id"], body["sequence"]) for body in stub.bodies()}
    assert len(sessions) == 1 and next(iter(sessions))[1] == 1


def test_an_expired_session_on_a_first_attempt_starts_the_lane_afresh() -> None:
    """409 session_expired before any attempt could have applied: nothing was applied, so
    the client renews the lane (a new client id, sequence 1) and sends the write again."""
    stub = Stub(TXN_OK, error(409, "session_expired"), TXN_OK, TXN_OK)
    fake, settings = FakeTime(), None

    async def three_writes(client: Client) -> object:
        await client.txn(*A_WRITE)  # lane 0, sequence 1
        await client.txn(*A_WRITE)  # sequence 2: "forgotten" by the server, so sent again afresh
        return await client.txn(*A_WRITE)  # the renewed lane goes on: sequence 2

    assert against_stub(stub, three_writes, settings, fake) is not None
    sessions = [(body["client_id"], body["sequence"]) for body in stub.bodies()]
    base = sessions[0][0]
    assert sessions == [(base, 1), (base, 2), (base + ".1", 1), (base + ".1", 2)]


def test_an_expired_session_after_an_unknown_outcome_is_outcome_unknown() -> None:
    """The first attempt may have applied before the server forgot the session: the write
    is neither resent afresh (it could apply twice) nor reported as refused."""
    stub = Stub(error(504, "timeout"), error(409, "session_expired"))
    fake, settings = FakeTime(), None
    with pytest.raises(OutcomeUnknown, match="no longer holds the write's session"):
        against_stub(stub, lambda client: client.txn(*A_WRITE), settings, fake)
    assert len(stub.requests) == 2


def test_a_nospace_refusal_after_an_unknown_outcome_is_outcome_unknown() -> None:
    """The first attempt may still be in the log, and apply once the alarm is disarmed:
    the refusal of the retry does not say the write will never apply."""
    stub = Stub(error(504, "timeout"), error(507, "no_space"))
    fake, settings = FakeTime(), None
    with pytest.raises(OutcomeUnknown, match="NOSPACE alarm refused a retry"):
        against_stub(stub, put, settings, fake)
    assert len(stub.requests) == 2


def test_a_write_whose_retries_run_out_after_an_unknown_outcome_is_outcome_unknown() -> None:
    settings = ClientSettings(max_attempts=3)
    stub = Stub(error(504, "timeout"), error(503, "not_leader"), refused(C))
    fake = FakeTime()
    with pytest.raises(OutcomeUnknown) as raised:
        against_stub(stub, put, settings, fake)
    message = str(raised.value)
    assert raised.value.code == "outcome_unknown" and raised.value.status is None
    assert raised.value.endpoints == (A, B, C)
    for part in (f"{A}: 504 timeout", f"{B}: 503 not_leader", f"{C}: not reached", "3 attempts"):
        assert part in message


def test_compact_is_not_retried_after_an_unknown_outcome() -> None:
    for failure in (error(504, "timeout"), lost()):
        stub = Stub(failure)
        fake, settings = FakeTime(), None
        with pytest.raises(OutcomeUnknown) as raised:
            against_stub(stub, lambda client: client.compact(5), settings, fake)
        assert len(stub.requests) == 1 and "carries no session" in str(raised.value)


def test_compact_is_retried_when_nothing_was_applied() -> None:
    stub = Stub(error(503, "not_leader"), refused(B), answer(200, {"header": header(9)}))
    fake, settings = FakeTime(), None
    result = against_stub(stub, lambda client: client.compact(5), settings, fake)
    assert result is not None and len(stub.requests) == 3


def test_only_503s_and_refused_connections_end_unavailable_listing_every_attempt() -> None:
    settings = ClientSettings(max_attempts=4)
    stub = Stub(error(503, "not_leader"), refused(B), error(503, "overloaded"), refused(A))
    fake = FakeTime()
    with pytest.raises(Unavailable) as raised:
        against_stub(stub, put, settings, fake)
    message = str(raised.value)
    assert "nothing was applied" in message and "4 attempts made" in message
    assert raised.value.endpoints == (A, B, C)
    assert message.count(f"; {A}: ") == 1  # A twice: first, then again after the others
    assert len(fake.slept) == 3  # no backoff after the last attempt


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    settings = ClientSettings(max_attempts=8, backoff_base_s=0.1, backoff_cap_s=0.5)
    stub = Stub(*[error(503, "not_leader")] * 8)
    fake = FakeTime()
    with pytest.raises(Unavailable):
        against_stub(stub, get, settings, fake)
    assert len(fake.slept) == 7
    for retry, delay in enumerate(fake.slept):
        assert 0 <= delay <= min(0.5, 0.1 * 2**retry)
    rng = Random(7)
    delays = [backoff_delay(10, 0.1, 0.5, rng) for _ in range(200)]
    assert max(delays) <= 0.5 and min(delays) < 0.05 and max(delays) > 0.45


def test_the_deadline_stops_retries_before_a_backoff_would_pass_it() -> None:
    settings = ClientSettings(deadline_s=1.0, backoff_base_s=0.4, backoff_cap_s=0.4)
    stub = Stub(*[refused(A)] * 10)
    fake = FakeTime()
    with pytest.raises(Unavailable) as raised:
        against_stub(stub, get, settings, fake)
    assert "deadline of 1s reached" in str(raised.value)
    assert sum(fake.slept) < 1.0 and len(stub.requests) == len(fake.slept) + 1


def test_each_attempt_gets_the_request_timeout_or_what_is_left_of_the_deadline() -> None:
    seen: list[float] = []
    fake = FakeTime()

    def handler(request: httpx.Request) -> httpx.Response:
        timeout = request.extensions["timeout"]
        seen.append(timeout["read"])
        fake.now_s += 2.0  # each attempt takes 2 s
        return error(503, "not_leader")

    settings = ClientSettings(request_timeout_s=3.0, deadline_s=5.0, backoff_base_s=0.01)
    client = SyncClient(
        STUB_ENDPOINTS,
        settings,
        transport=httpx.MockTransport(handler),
        rng=Random(0),
        sleep=fake.sleep_sync,
        clock=fake.now,
    )
    with client, pytest.raises(Unavailable):
        client.get("k")
    assert seen[0] == 3.0 and 2.9 < seen[1] < 3.0 and seen[2] < 1.0


# -- what is final ---------------------------------------------------------------------------

REFUSALS = [
    (400, "empty_key", InvalidRequest),
    (400, "future_revision", InvalidRequest),
    (400, "duplicate_key", InvalidRequest),
    (404, "not_found", InvalidRequest),  # a route: only a get reads a 404 as "no such key"
    (406, "not_utf8", NotUtf8),
    (409, "stale_sequence", StaleSequence),
    (410, "compacted", Compacted),
    (413, "limit_exceeded", LimitExceeded),
    (507, "no_space", NoSpace),
    (413, "body_too_large", LimitExceeded),
    (418, "teapot", Refused),
]


@pytest.mark.parametrize(("status", "code", "kind"), REFUSALS)
def test_a_4xx_is_a_typed_refusal_at_once(status: int, code: str, kind: type[Refused]) -> None:
    stub = Stub(error(status, code, "refused for a reason"))
    fake, settings = FakeTime(), None
    with pytest.raises(kind) as raised:
        against_stub(stub, put, settings, fake)
    refusal = raised.value
    assert type(refusal) is kind and (refusal.code, refusal.status) == (code, status)
    assert refusal.endpoints == (A,) and len(stub.requests) == 1
    assert str(refusal) == f"put 'k': refused for a reason (HTTP {status} from {A})"


def test_a_500_and_an_unreadable_answer_are_server_errors_at_once() -> None:
    cases = [
        (error(500, "internal", "internal error: RuntimeError"), "internal"),
        (answer(200, {"header": "nope"}), "bad_answer"),
        (answer(200, {"header": header(), "kv": {"key": "!!", "value": ""}}), "bad_answer"),
        (httpx.Response(502, content=b"<html>bad gateway</html>"), "bad_answer"),
    ]
    for reply, code in cases:
        stub = Stub(reply)
        fake, settings = FakeTime(), None
        with pytest.raises(ServerError) as raised:
            against_stub(stub, get, settings, fake)
        assert raised.value.code == code and A in str(raised.value)
        assert len(stub.requests) == 1


def test_a_get_of_a_missing_key_is_none() -> None:
    stub = Stub(error(404, "not_found", "key 'k' not found"))
    fake, settings = FakeTime(), None
    assert against_stub(stub, get, settings, fake) is None


def test_every_error_is_a_client_error() -> None:
    for kind in (Refused, Unavailable, OutcomeUnknown, ServerError):
        assert issubclass(kind, ClientError)


# -- requests on the wire --------------------------------------------------------------------


def test_requests_carry_base64_keys_in_the_path_and_values_in_the_body() -> None:
    empty = answer(200, {"header": header(), "kvs": [], "count": 0, "more": False})
    stub = Stub(PUT_OK, GET_OK, empty)

    async def three(client: Client) -> str:
        await client.put(b"a/b+?", "é", lease=3, prev_kv=True)
        await client.get("k", revision=4, serializable=True)
        await client.range("a", "b", limit=2, keys_only=True)
        return client.client_id

    client_id = against_stub(stub, three)
    put_request, get_request, range_request = stub.requests
    assert put_request.method == "PUT"
    assert put_request.url.raw_path == b"/v1/kv/YS9iKz8%3D?encoding=base64"
    assert put_request.headers["content-type"] == "application/json"
    assert stub.bodies()[0] == {
        "value": "w6k=",
        "lease": 3,
        "prev_kv": True,
        "client_id": f"{client_id}-0",
        "sequence": 1,
    }
    assert get_request.url.path == "/v1/kv/aw==" and dict(get_request.url.params) == {
        "encoding": "base64",
        "revision": "4",
        "consistency": "serializable",
    }
    assert dict(range_request.url.params) == {
        "encoding": "base64",
        "key": "YQ==",
        "range_end": "Yg==",
        "limit": "2",
        "keys_only": "true",
    }


def test_misuse_is_a_type_or_value_error_before_anything_is_sent() -> None:
    stub = Stub()
    with pytest.raises(TypeError, match="key must be str or bytes"):
        against_stub(stub, lambda client: client.put(5, "v"))  # type: ignore[arg-type]
    assert stub.requests == []


# -- settings, endpoints, lanes --------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"request_timeout_s": 0},
        {"deadline_s": float("inf")},
        {"deadline_s": True},
        {"max_attempts": 0},
        {"max_concurrent_writes": 1.5},
        {"backoff_base_s": 3.0},
        {"client_id": "x" * 101},
    ],
)
def test_settings_are_validated(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="ClientSettings"):
        ClientSettings(**bad)  # type: ignore[arg-type]


def test_endpoints_are_parsed_from_a_list_or_a_comma_separated_string() -> None:
    assert parse_endpoints(" http://a:1/, http://b:2,,http://a:1") == ("http://a:1", "http://b:2")
    assert parse_endpoints(["https://c"]) == ("https://c",)
    for bad in ("", "a:1", ["ftp://x"], "http://"):
        with pytest.raises(ValueError):
            parse_endpoints(bad)


def test_the_router_prefers_the_leader_and_skips_endpoints_that_failed() -> None:
    router = Router([A, B, C])
    assert router.pick(to_leader=True, avoid=()) == A
    router.answered(A, leader=2, client_urls={2: "http://leader:9"})
    assert router.pick(to_leader=True, avoid=()) == "http://leader:9"
    assert router.pick(to_leader=False, avoid=()) == A
    assert router.pick(to_leader=True, avoid=["http://leader:9"]) == A
    router.not_serving("http://leader:9")  # forgets the leader
    assert router.leader_id == 0 and router.pick(to_leader=True, avoid=()) == A
    router.unreachable(A)
    assert router.pick(to_leader=False, avoid=()) == B
    assert router.pick(to_leader=False, avoid=[B]) == C
    # After the configured endpoints, the members learnt from /v1/cluster.
    assert router.pick(to_leader=False, avoid=[B, C]) == "http://leader:9"
    router.unreachable("http://leader:9")
    assert router.pick(to_leader=False, avoid=[B, C]) == A  # down, but the only one left
    router.unreachable(B)
    assert router.pick(to_leader=False, avoid=()) == C
    router.answered(A, leader=None)  # up again
    assert router.pick(to_leader=False, avoid=[C]) == A


def test_the_rotation_reaches_members_learnt_after_the_configured_ones_left() -> None:
    router = Router([A])
    router.answered(A, leader=1, client_urls={1: A, 2: B, 3: C})
    router.unreachable(A)  # the only configured endpoint left the cluster
    assert router.pick(to_leader=False, avoid=()) == B
    assert router.pick(to_leader=False, avoid=[B]) == C


def test_lanes_are_taken_lowest_first_and_number_their_writes() -> None:
    pool = LanePool("base", 3)
    taken = [pool.take() for _ in range(3)]
    assert [session.client_id for _, session in taken] == ["base-0", "base-1", "base-2"]
    with pytest.raises(RuntimeError):
        pool.take()
    pool.give_back(2)
    pool.give_back(0)
    assert pool.take()[1] == type(taken[0][1])("base-0", 2)
    assert pool.take()[1].sequence == 2 and pool.lanes_created() == 3


def test_concurrent_writes_wait_for_a_lane_and_never_share_one() -> None:
    async def scenario() -> None:
        sessions = AsyncSessions("base", 2)
        in_flight: set[str] = set()
        seen: list[tuple[str, int]] = []

        async def write() -> None:
            async with sessions.session() as session:
                assert session.client_id not in in_flight
                in_flight.add(session.client_id)
                seen.append((session.client_id, session.sequence))
                await asyncio.sleep(0)
                in_flight.discard(session.client_id)

        await asyncio.gather(*(write() for _ in range(6)))
        assert sessions.pool.lanes_created() == 2
        for lane in ("base-0", "base-1"):
            assert [sequence for client_id, sequence in seen if client_id == lane] == [1, 2, 3]

    asyncio.run(scenario())


# -- SyncClient ------------------------------------------------------------------------------


def test_sync_client_retries_a_503_and_raises_the_same_typed_errors() -> None:
    stub = Stub(error(503, "not_leader"), PUT_OK, error(410, "compacted"))
    fake = FakeTime()
    with SyncClient(
        ",".join(STUB_ENDPOINTS),
        transport=stub.transport(),
        rng=Random(0),
        sleep=fake.sleep_sync,
        clock=fake.now,
    ) as client:
        assert client.put("k", "v") == PutResult(5, 0)
        with pytest.raises(Compacted):
            client.get("k", revision=1)
    assert stub.hosts() == [A, B, B] and len(fake.slept) == 1
