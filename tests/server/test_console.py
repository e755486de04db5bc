"""The web console's server side (raftkv.server.console): the event ring and the metrics
history (observations built by hand: no node, no clock), the page's files (content types,
no way out of the folder), the routes on a real node, and the gathering of the members'
states with members down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from server_helpers import started

from raftkv.api.cluster import StatusAnswer
from raftkv.api.console import ConsoleMember, ConsoleNodeAnswer
from raftkv.raft.core.errors import ConfigInvalid
from raftkv.server.console import ConsoleSettings
from raftkv.server.console.assets import asset, assets
from raftkv.server.console.events import EventRing
from raftkv.server.console.history import History, bucket_quantile
from raftkv.server.console.members import NODE_PATH, SharedGathering, gather_members
from raftkv.server.console.observation import Observation, observation_of
from raftkv.testing.local_cluster import run_scenario

# -- the event ring ------------------------------------------------------------------------


def _seen(at: float, **fields: Any) -> Observation:
    defaults: dict[str, Any] = {"leader": 1, "term": 2, "voters": frozenset({1, 2, 3})}
    return Observation(at=at, **{**defaults, **fields})


def test_first_observation_records_that_the_console_started_and_who_leads() -> None:
    ring = EventRing(8)
    [event] = ring.observe(_seen(100.0))
    assert (event.seq, event.kind, event.term) == (1, "started", 2)
    assert event.message == "console started: member 1 leads (term 2); voters: 1, 2, 3"
    assert ring.observe(_seen(101.0)) == []


def test_leader_changes_elections_and_membership_changes_are_events() -> None:
    ring = EventRing(16)
    ring.observe(_seen(1.0))
    [lost] = ring.observe(_seen(2.0, leader=0, term=3))
    assert (lost.kind, lost.message) == ("election", "no leader known (term 3): an election is on")
    [won] = ring.observe(_seen(3.0, leader=2, term=3))
    assert (won.kind, won.message, won.term) == ("leader", "member 2 leads (term 3)", 3)
    [again] = ring.observe(_seen(4.0, leader=2, term=4))
    assert (again.kind, again.message) == ("election", "member 2 leads again (term 4)")
    changed = ring.observe(
        _seen(5.0, leader=2, term=4, voters=frozenset({1, 2}), learners=frozenset({4}))
    )
    assert [(event.kind, event.message) for event in changed] == [
        ("membership", "voters: 1, 2; removed 3"),
        ("membership", "learners: 4; added 4"),
    ]


def test_snapshots_compactions_and_lease_expiries_are_events() -> None:
    ring = EventRing(16)
    ring.observe(_seen(1.0))
    events = ring.observe(
        _seen(
            2.0,
            snapshots_created=1,
            snapshots_installed=2,
            snapshots_sent=1,
            snapshots_failed=3,
            compacted_revision=40,
            leases_expired=1,
        )
    )
    assert [(event.kind, event.message) for event in events] == [
        ("snapshot", "snapshot taken"),
        ("snapshot", "2 snapshots from the leader installed"),
        ("snapshot", "snapshot sent to a follower"),
        ("snapshot", "3 snapshot transfers failed"),
        ("compaction", "history compacted to revision 40"),
        ("lease", "lease expired"),
    ]


def test_the_ring_keeps_the_last_events_and_counts_the_dropped_ones() -> None:
    ring = EventRing(3)
    ring.observe(_seen(0.0))
    for second in range(1, 6):
        ring.observe(_seen(float(second), compacted_revision=second))
    assert [event.seq for event in ring.after(0)] == [4, 5, 6]
    assert ring.dropped == 3
    assert [event.message for event in ring.after(5)] == ["history compacted to revision 5"]
    assert ring.after(6) == []
    with pytest.raises(ValueError):
        EventRing(0)


# -- the metrics history ------------------------------------------------------------------


def _buckets(*counts: float) -> tuple[tuple[float, float], ...]:
    """Cumulative buckets of bounds 0.001, 0.01, 0.1, +inf."""
    return tuple(zip((0.001, 0.01, 0.1, float("inf")), counts, strict=True))


def test_bucket_quantile_interpolates_as_prometheus_does() -> None:
    assert bucket_quantile(0.5, _buckets(0, 0, 0, 0)) is None
    assert bucket_quantile(0.5, ()) is None
    # 10 observations, all in (0.001, 0.01]: the median halfway through that bucket.
    assert bucket_quantile(0.5, _buckets(0, 10, 10, 10)) == pytest.approx(0.0055)
    # In the +inf bucket: the highest finite bound.
    assert bucket_quantile(0.99, _buckets(0, 0, 0, 4)) == 0.1
    assert bucket_quantile(0.25, _buckets(4, 4, 4, 4)) == pytest.approx(0.00025)


def test_history_points_are_rates_and_latencies_of_each_interval() -> None:
    history = History(capacity=600, interval_s=1.0)
    first = Observation(
        at=10.0,
        commands_applied=100,
        reads=50,
        requests=_buckets(0, 100, 100, 100),
        fsyncs=_buckets(5, 5, 5, 5),
        loop_lag=_buckets(10, 10, 10, 10),
    )
    assert history.observe(first) is None  # nothing to compare with yet
    second = Observation(
        at=12.0,
        commands_applied=140,
        reads=70,
        commit_index=77,
        # 20 more requests, all slow: the interval's latency is theirs alone.
        requests=_buckets(0, 100, 120, 120),
        fsyncs=_buckets(5, 5, 5, 5),
        loop_lag=_buckets(10, 11, 12, 12),
    )
    point = history.observe(second)
    assert point is not None
    assert (point.at, point.writes_per_s, point.reads_per_s, point.requests_per_s) == (
        12.0,
        20.0,
        10.0,
        10.0,
    )
    assert point.latency_p50_ms == pytest.approx(55.0)
    assert point.latency_p99_ms == pytest.approx(99.1)
    assert point.commit_index == 77
    assert point.fsync_p99_ms is None  # no durable write in the interval
    assert point.loop_lag_max_ms == 100.0
    assert history.points() == [point]
    assert history.points(after=12.0) == []


def test_history_is_bounded_and_ignores_a_clock_that_did_not_move_forward() -> None:
    history = History(capacity=3, interval_s=1.0)
    for second in range(6):
        history.observe(Observation(at=float(second), commands_applied=second * 2))
    assert [point.at for point in history.points()] == [3.0, 4.0, 5.0]
    assert history.observe(Observation(at=5.0)) is None
    assert history.observe(Observation(at=4.0)) is None
    # A counter that went back (counting restarted) is a rate of 0, never negative.
    point = history.observe(Observation(at=6.0, commands_applied=0))
    assert point is not None and point.writes_per_s == 0.0


def test_observation_reads_the_node_metric_families() -> None:
    term = GaugeMetricFamily("raftkv_term", "")
    term.add_metric([], 7)
    leader = GaugeMetricFamily("raftkv_leader_id", "")
    leader.add_metric([], 3)
    applied = CounterMetricFamily("raftkv_commands_applied", "", value=12)
    snapshots = CounterMetricFamily("raftkv_snapshots", "", labels=["operation"])
    snapshots.add_metric(["create"], 2)
    snapshots.add_metric(["install"], 1)
    http = HistogramMetricFamily(
        "raftkv_http_request_duration_seconds", "", labels=["route", "method", "status"]
    )
    http.add_metric(["/v1/kv/{key}", "GET", "200"], [("0.01", 3.0), ("+Inf", 4.0)], 0.1)
    http.add_metric(["/v1/kv/{key}", "PUT", "200"], [("0.01", 1.0), ("+Inf", 1.0)], 0.001)
    http.add_metric(["/v1/watch", "GET", "200"], [("0.01", 0.0), ("+Inf", 9.0)], 90.0)
    observation = observation_of(5.0, [term, leader, applied, snapshots, http], [1, 2, 3], [4])
    assert (observation.term, observation.leader, observation.commands_applied) == (7, 3, 12)
    assert (observation.snapshots_created, observation.snapshots_installed) == (2, 1)
    assert observation.voters == {1, 2, 3} and observation.learners == {4}
    assert observation.reads == 4
    # Watches are streams: not in the latency buckets.
    assert observation.requests == ((0.01, 4.0), (float("inf"), 5.0))


def test_console_settings_are_validated() -> None:
    with pytest.raises(ConfigInvalid):
        ConsoleSettings(interval_s=0)
    with pytest.raises(ConfigInvalid):
        ConsoleSettings(history_points=0)


# -- the page's files ---------------------------------------------------------------------


def test_the_page_and_its_files_ship_in_the_package_with_their_types() -> None:
    files = assets()
    assert {"index.html", "console.js", "console.css"} <= set(files)
    assert files["index.html"].content_type == "text/html; charset=utf-8"
    assert files["console.js"].content_type == "text/javascript; charset=utf-8"
    assert files["console.css"].content_type == "text/css; charset=utf-8"
    for name in ("../pyproject.toml", "..", "static/index.html", "assets.py", "__init__.py"):
        assert asset(name) is None, name


def test_the_page_loads_nothing_from_elsewhere() -> None:
    for found in assets().values():
        # SVG's namespace is a name, not an address the page fetches.
        text = found.body.decode(errors="replace").replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in text and "https://" not in text, found.name
        assert "innerHTML" not in text, found.name


def test_console_routes_on_a_node() -> None:
    async def scenario() -> None:
        async with started() as api:
            client = api.clients[1]

            async def get(path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
                async def request() -> tuple[int, dict[str, str], bytes]:
                    async with client.get(path, headers=headers) as response:
                        found = {name.lower(): value for name, value in response.headers.items()}
                        return response.status, found, await response.read()

                return await api.cluster.complete(request())

            status, headers, body = await get("/ui")
            assert status == 200
            assert headers["content-type"] == "text/html; charset=utf-8"
            assert "script-src 'self'" in headers["content-security-policy"]
            assert b"console.js" in body
            status, _, _ = await get("/ui", **{"If-None-Match": headers["etag"]})
            assert status == 304
            status, headers, _ = await get("/ui/console.js")
            assert (status, headers["content-type"]) == (200, "text/javascript; charset=utf-8")
            for path in (
                "/ui/..%2Fpyproject.toml",
                "/ui/%2e%2e%2fpyproject.toml",
                "/ui/.hidden",
                "/ui/nothing.js",
            ):
                status, _, body = await get(path)
                assert status == 404, path
                assert b"[project]" not in body

            # The recording task observed the node once as the app started.
            status, events = await api.call(1, "GET", "/v1/events")
            assert status == 200
            assert events["member"] == 1 and events["events"][0]["kind"] == "started"
            status, later = await api.call(1, "GET", "/v1/events?after=1")
            assert (status, later["events"]) == (200, [])
            status, history = await api.call(1, "GET", "/v1/console/history?after=0")
            assert status == 200 and history["interval_s"] == 1.0
            status, _refused = await api.call(1, "GET", "/v1/console/history?after=-1")
            assert status == 400
            status, node = await api.call(2, "GET", "/v1/console/node")
            assert status == 200 and node["health"] == "ok" and node["status"]["id"] == 2
            # No member published a client URL here: each other one is unreachable, saying why.
            status, members = await api.call(1, "GET", "/v1/console/members")
            assert status == 200
            assert [member["id"] for member in members["members"]] == [1, 2, 3]
            me, other, _ = members["members"]
            assert me["reachable"] and me["node"]["status"]["id"] == 1
            assert not other["reachable"] and "client URL" in other["error"]

    run_scenario(scenario)


# -- gathering the members ----------------------------------------------------------------


def _node(member: int) -> ConsoleNodeAnswer:
    status = StatusAnswer(
        id=member,
        leader=1,
        term=3,
        role="follower",
        commit_index=9,
        applied_index=9,
        revision=4,
        compacted_revision=0,
    )
    return ConsoleNodeAnswer(version="1.0", health="ok", status=status)


@asynccontextmanager
async def _member_server(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def test_gathering_shows_members_that_are_down_as_unreachable() -> None:
    async def scenario() -> None:
        never = asyncio.Event()

        async def answering(request: web.Request) -> web.Response:
            return web.Response(body=msgspec.json.encode(_node(2)))

        async def failing(request: web.Request) -> web.Response:
            return web.Response(status=500)

        async def hanging(request: web.Request) -> web.Response:
            await never.wait()  # until the test is over
            return web.Response(status=204)

        apps = []
        for handler in (answering, failing, hanging):
            app = web.Application()
            app.router.add_get(NODE_PATH, handler)
            apps.append(app)
        # A port nothing listens on: bind one, then close it.
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        closed_port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        async with (
            _member_server(apps[0]) as two,
            _member_server(apps[1]) as four,
            _member_server(apps[2]) as six,
            aiohttp.ClientSession() as session,
        ):
            urls = {
                1: "http://127.0.0.1:1",  # itself: never asked
                2: two,
                3: f"http://127.0.0.1:{closed_port}",
                4: four,
                5: "",
                6: six,
            }
            members = await gather_members(session, urls, 1, _node(1), timeout_s=0.5)
            never.set()
        assert [member.id for member in members] == [1, 2, 3, 4, 5, 6]
        by_id = {member.id: member for member in members}
        assert by_id[1].reachable and by_id[1].node == _node(1)
        assert by_id[2].reachable and by_id[2].node == _node(2)
        for member in (3, 4, 5, 6):
            assert not by_id[member].reachable and by_id[member].node is None
        assert by_id[4].error == "HTTP 500"
        assert by_id[5].error == "it has not published a client URL"
        assert by_id[6].error == "no answer within 0.5 s"
        assert by_id[3].error == "cannot connect: Connection refused"

    run_scenario(scenario)


def test_concurrent_pages_share_one_gathering_until_it_is_stale() -> None:
    async def scenario() -> None:
        now = [100.0]
        release = asyncio.Event()
        one, two, three = ([ConsoleMember(member, "http://a", True)] for member in (1, 2, 3))
        answers = [one, two, three]
        failing = [False]

        async def gather() -> list[ConsoleMember]:
            await release.wait()
            if failing[0]:
                raise RuntimeError("no")
            return answers.pop(0)

        shared = SharedGathering(gather, lambda: now[0], fresh_s=0.5)
        first = asyncio.ensure_future(shared.members())
        second = asyncio.ensure_future(shared.members())
        # A page that goes away does not end the gathering for the others.
        gone = asyncio.ensure_future(shared.members())
        await asyncio.sleep(0)
        gone.cancel()
        release.set()
        assert await first == await second == one
        assert shared.started == 1
        now[0] += 0.4  # still fresh
        assert await shared.members() == one
        assert shared.started == 1
        now[0] += 0.2  # stale: gathered again
        assert await shared.members() == two
        assert shared.started == 2
        # A failed gathering is not served again.
        now[0] += 1
        failing[0] = True
        with pytest.raises(RuntimeError):
            await shared.members()
        failing[0] = False
        assert await shared.members() == three
        assert shared.started == 4
        await shared.close()

    run_scenario(scenario)
