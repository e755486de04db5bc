"""The garbage collector of a server process (raftkv.server.collector): tuned once after
start-up, and every collection's pause observed into `raftkv_gc_pause_seconds`."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from server_helpers import served

from raftkv.server.collector import YOUNG_THRESHOLD, GcPauses, tune_collector
from raftkv.testing.local_cluster import run_scenario as run


@pytest.fixture
def restored_collector() -> Iterator[None]:
    """The test process's collector as it was, whatever the test did to it."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_tuning_freezes_what_start_up_made_and_raises_the_young_threshold() -> None:
    _, middle, old = gc.get_threshold()
    start_up = [[]]  # alive at tuning time: frozen with the rest
    assert any(start_up is tracked for tracked in gc.get_objects())
    tune_collector()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)
    assert gc.get_freeze_count() > 0
    # Still tracked, but in the permanent generation no collection walks.
    assert gc.is_tracked(start_up)
    assert not any(start_up is tracked for tracked in gc.get_objects())


def pauses(registry: CollectorRegistry, generation: int) -> float:
    value = registry.get_sample_value(
        "raftkv_gc_pause_seconds_count", {"generation": str(generation)}
    )
    return value or 0.0


def test_each_collection_is_observed_while_observing_and_only_then() -> None:
    registry = CollectorRegistry()
    collector = GcPauses(registry)
    gc.collect()
    assert pauses(registry, 2) == 0
    with collector.observing():
        gc.collect()
        gc.collect(0)
    assert pauses(registry, 2) == 1
    assert pauses(registry, 0) >= 1
    assert registry.get_sample_value("raftkv_gc_pause_seconds_sum", {"generation": "2"}) > 0
    gc.collect()
    assert pauses(registry, 2) == 1  # the hook is gone


def test_a_served_node_exports_its_collections_pauses() -> None:
    async def scenario() -> None:
        async with served() as api:
            gc.collect()
            first = await api.metric("raftkv_gc_pause_seconds_count", generation="2")
            gc.collect()
            assert await api.metric("raftkv_gc_pause_seconds_count", generation="2") == first + 1

    run(scenario)
