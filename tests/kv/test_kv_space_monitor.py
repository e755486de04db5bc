"""`SpaceMonitor` (`raftkv.kv.space_monitor`) on a 3-node cluster with a manual clock: a
member out of space (by its own measurement) raises its NOSPACE alarm through the log, the
whole cluster then refuses writes that add data, and only an operator's disarm ends it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from kv_helpers import started, stop

from raftkv.kv import (
    KvCommand,
    KvService,
    RaiseNoSpaceAlarm,
    SpaceMonitor,
    SpaceSettings,
    encode_command,
)
from raftkv.kv.errors import NoSpace
from raftkv.kv.layout import NoSpaceAlarm
from raftkv.kv.space_monitor import SpaceUsage, measure_directory, measure_inline
from raftkv.testing.local_cluster import LocalCluster, run_scenario

MiB = 1 << 20
SETTINGS = SpaceSettings(quota_bytes=100 * MiB, min_free_bytes=10 * MiB, interval_s=1.0)
ROOMY = SpaceUsage(storage_bytes=10 * MiB, free_bytes=1000 * MiB)


class Disk:
    """What one member's measurement reports, set by the test."""

    def __init__(self) -> None:
        self.usage = ROOMY

    def measure(self) -> SpaceUsage:
        return self.usage


@asynccontextmanager
async def monitored(
    tmp_path: Path,
) -> AsyncIterator[tuple[LocalCluster, dict[int, KvService], dict[int, Disk], list[SpaceMonitor]]]:
    """A 3-node cluster (kv_helpers.started) with a SpaceMonitor per member, each measuring
    a Disk of its own; everything stopped on the way out."""
    cluster, services = await started(tmp_path)
    disks = {node: Disk() for node in services}
    running = [
        SpaceMonitor(
            service.node,
            service.machine,
            disks[node].measure,
            SETTINGS,
            run_blocking=measure_inline,
        )
        for node, service in services.items()
    ]
    for monitor in running:
        monitor.start()
    try:
        yield cluster, services, disks, running
    finally:
        for monitor in running:
            await monitor.stop()
        await stop(cluster, services)


def test_a_follower_over_its_quota_makes_the_cluster_refuse_writes_until_disarmed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with monitored(tmp_path) as (cluster, services, disks, _):
            leader = cluster.leader()
            assert leader is not None
            follower = next(node for node in services if node != leader.id)
            at_leader = services[int(leader.id)]
            await cluster.complete(at_leader.put(b"kept", b"1"))

            disks[follower].usage = SpaceUsage(101 * MiB, 1000 * MiB)
            await cluster.run_until(
                lambda: all(service.nospace_alarms() for service in services.values())
            )
            [alarm] = at_leader.nospace_alarms()
            assert (alarm.member_id, alarm.reason) == (follower, "quota")
            with pytest.raises(NoSpace, match=f"NOSPACE alarm of member {follower}"):
                await cluster.complete(at_leader.put(b"new", b"2"))
            with pytest.raises(NoSpace):
                await cluster.complete(at_leader.lease_grant(60))
            # Deleting still works: it is how space is freed.
            deleted = await cluster.complete(at_leader.delete_range(b"kept"))
            assert deleted.deleted == 1

            # Disarmed while still over: the member raises it again at its next round.
            disarmed = await cluster.complete(at_leader.disarm_nospace_alarms())
            assert disarmed.members == []
            await cluster.run_until(lambda: bool(at_leader.nospace_alarms()))

            # Back under: the alarm stays until disarmed, then writes go through again.
            disks[follower].usage = ROOMY
            await cluster.complete(cluster.clock.sleep(3 * SETTINGS.interval_s))
            assert at_leader.nospace_alarms() != []
            await cluster.complete(at_leader.disarm_nospace_alarms(follower))
            await cluster.complete(cluster.clock.sleep(3 * SETTINGS.interval_s))
            assert at_leader.nospace_alarms() == []
            await cluster.complete(at_leader.put(b"new", b"2"))

    with caplog.at_level(logging.INFO, logger="raftkv.kv.space_monitor"):
        run_scenario(scenario)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    # Logged once when it ran short (not at every round), as one line saying what to do.
    assert len(warnings) == 1
    assert "over quota_backend_bytes=104857600" in warnings[0]
    assert "raftkv alarm disarm" in warnings[0]
    assert any("back within its space limits" in record.getMessage() for record in caplog.records)


def test_a_disk_short_of_free_space_raises_the_alarm_with_that_reason(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with monitored(tmp_path) as (cluster, services, disks, running):
            leader = cluster.leader()
            assert leader is not None
            disks[int(leader.id)].usage = SpaceUsage(10 * MiB, 5 * MiB)
            service = services[int(leader.id)]
            await cluster.run_until(lambda: bool(service.nospace_alarms()))
            [alarm] = service.nospace_alarms()
            assert isinstance(alarm, NoSpaceAlarm)
            assert (alarm.member_id, alarm.reason) == (int(leader.id), "disk_free")
            assert running[0].last_usage is not None

    run_scenario(scenario)


def test_the_leader_ends_the_alarm_of_a_member_that_left(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with monitored(tmp_path) as (cluster, services, _, _):
            leader = cluster.leader()
            assert leader is not None
            service = services[int(leader.id)]
            # An alarm raised by member 7, no longer (or never) in the cluster.
            command = encode_command(KvCommand(RaiseNoSpaceAlarm(7, "quota")))
            await cluster.complete(service.node.propose(command))
            assert [alarm.member_id for alarm in service.nospace_alarms()] == [7]
            await cluster.run_until(lambda: service.nospace_alarms() == [])
            await cluster.complete(service.put(b"k", b"v"))

    run_scenario(scenario)


def test_the_settings_say_which_limit_a_measurement_breaks() -> None:
    assert SETTINGS.shortage(ROOMY) is None
    assert SETTINGS.shortage(SpaceUsage(100 * MiB, 10 * MiB)) is None  # at the limits
    assert SETTINGS.shortage(SpaceUsage(100 * MiB + 1, 0)) == "quota"  # the quota first
    assert SETTINGS.shortage(SpaceUsage(0, 10 * MiB - 1)) == "disk_free"
    off = SpaceSettings(quota_bytes=0, min_free_bytes=0)
    assert off.shortage(SpaceUsage(1 << 50, 0)) is None
    describe = SETTINGS.describe("disk_free", SpaceUsage(0, 7))
    assert "has 7 bytes free, under min_free_disk_bytes=10485760" in describe
    for bad in (
        {"quota_bytes": -1},
        {"min_free_bytes": -1},
        {"interval_s": 0},
        {"interval_s": float("inf")},
        {"proposal_timeout_s": 0},
    ):
        with pytest.raises(ValueError, match="SpaceSettings"):
            SpaceSettings(**bad)  # type: ignore[arg-type]


def test_a_directory_is_measured_by_its_files_and_its_disk(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 24)
    usage = measure_directory(str(tmp_path))
    assert usage.storage_bytes == 1024
    assert usage.free_bytes > 0
