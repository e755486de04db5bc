"""What the watch tests share: a KvStateMachine fed one log entry at a time, and the
events they expect."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from kv_helpers import log_command

from raftkv.kv import (
    Event,
    EventBatch,
    KvError,
    KvStateMachine,
    MvccKeyValue,
    Watch,
    WatchProgress,
    WatchSettings,
    WatchSpec,
    WriteRequest,
)
from raftkv.raft.clock import ManualClock
from raftkv.raft.driver.state_machine import Command
from raftkv.raft.storage.memory import MemoryAppData
from raftkv.testing.local_cluster import run_scenario

EVERYTHING = WatchSpec(b"\0", b"\0")


class Store:
    """A KvStateMachine on a ManualClock, fed one log entry at a time."""

    def __init__(self, watch_settings: WatchSettings | None = None) -> None:
        self.clock = ManualClock()
        self.machine = KvStateMachine(
            MemoryAppData(), clock=self.clock, watch_settings=watch_settings
        )
        self.hub = self.machine.watch_hub
        self.index = 0

    def apply(self, *requests: WriteRequest) -> int:
        """Apply each request as one entry, all in one apply call; the revision after."""
        commands = [
            log_command(self.index + offset, request)
            for offset, request in enumerate(requests, start=1)
        ]
        self.index += len(commands)
        for result in self.machine.apply(commands, self.index, 1):
            assert not isinstance(result, KvError), result
        return self.machine.current_revision()

    def apply_data(self, data: bytes) -> None:
        self.index += 1
        self.machine.apply([Command(self.index, 1, data)], self.index, 1)

    def watch(self, spec: WatchSpec = EVERYTHING, start: int = 1) -> Watch:
        return self.hub.open(spec, start)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    run_scenario(scenario, timeout_s=30.0)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def drain(watch: Watch) -> list[EventBatch]:
    """Every batch available now, without waiting for more (a progress interval of 0
    returns a WatchProgress once the watch is caught up)."""
    batches: list[EventBatch] = []
    while True:
        outcome = await watch.next(progress_interval=0)
        if isinstance(outcome, WatchProgress):
            if outcome.revision >= watch.hub.current_revision():
                return batches
            continue
        assert isinstance(outcome, EventBatch), outcome
        batches.append(outcome)


def events_of(batches: list[EventBatch]) -> list[Event]:
    return [event for batch in batches for event in batch.events]


def put(key: bytes, value: bytes, revision: int, create: int, version: int = 1) -> Event:
    return Event("put", MvccKeyValue(key, value, create, revision, version))


def delete(key: bytes, revision: int) -> Event:
    return Event("delete", MvccKeyValue(key, b"", 0, revision, 0, 0))
