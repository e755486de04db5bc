"""What the console reads of its node once per sampling interval: an `Observation`, made of
the node's own Prometheus metrics (`raftkv.server.metrics`, the same families a scrape
gets) and of its membership. The event ring (`events`) and the metrics history
(`history`) are both pure functions of two consecutive observations, so their tests build
observations by hand and need no node and no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.core import Metric

__all__ = ["Buckets", "Observation", "observation_of"]

# Cumulative bucket counts of a histogram: (upper bound, observations <= bound), the last
# bound +inf.
Buckets = tuple[tuple[float, float], ...]

# Routes whose answers are streams: their duration is the stream's, not a latency.
_STREAMS = frozenset({"/v1/watch", "/v1/snapshot", "/v3/watch"})
# The routes of reads of the store.
_READS = frozenset({("GET", "/v1/kv/{key}"), ("GET", "/v1/kv"), ("GET", "/get/{key}")})


@dataclass(frozen=True, slots=True)
class Observation:
    """One reading of the node. Counters are since the node started; gauges as of `at`."""

    # When it was read (Unix seconds).
    at: float
    leader: int = 0
    term: int = 0
    commit_index: int = 0
    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()
    compacted_revision: int = 0
    # Counters.
    commands_applied: float = 0
    snapshots_created: float = 0
    snapshots_installed: float = 0
    snapshots_sent: float = 0
    snapshots_received: float = 0
    snapshots_failed: float = 0
    leases_expired: float = 0
    reads: float = 0
    # Histograms (cumulative buckets): every non-stream HTTP request, durable writes, the
    # event loop's lag.
    requests: Buckets = ()
    fsyncs: Buckets = ()
    loop_lag: Buckets = ()


def _add_bucket(into: dict[float, float], bound: str, count: float) -> None:
    """Add `count` to the bucket of `bound` (an `le` label: "0.005", "+Inf"), summing the
    buckets of every label set of a family."""
    value = float("inf") if bound == "+Inf" else float(bound)
    into[value] = into.get(value, 0.0) + count


def observation_of(
    at: float, families: Iterable[Metric], voters: Iterable[int], learners: Iterable[int]
) -> Observation:
    """The observation at `at` of the metric families of one collection of the node's
    registry, with its configuration's `voters` and `learners`."""
    gauges: dict[str, float] = {}
    counters: dict[str, float] = {}
    requests: dict[float, float] = {}
    fsyncs: dict[float, float] = {}
    loop_lag: dict[float, float] = {}
    reads = 0.0
    for family in families:
        name = family.name
        for sample in family.samples:
            labels = sample.labels
            if name == "raftkv_http_request_duration_seconds":
                if sample.name.endswith("_bucket") and labels["route"] not in _STREAMS:
                    _add_bucket(requests, labels["le"], sample.value)
                elif sample.name.endswith("_count") and (
                    (labels["method"], labels["route"]) in _READS
                ):
                    reads += sample.value
            elif name == "raftkv_fsync_duration_seconds" and sample.name.endswith("_bucket"):
                _add_bucket(fsyncs, labels["le"], sample.value)
            elif name == "raftkv_event_loop_lag_seconds" and sample.name.endswith("_bucket"):
                _add_bucket(loop_lag, labels["le"], sample.value)
            elif name == "raftkv_snapshots":
                counters[f"snapshots_{labels['operation']}"] = sample.value
            elif name == "raftkv_transport_snapshots":
                counters[f"transport_{labels['outcome']}"] = sample.value
            elif not labels:
                (counters if sample.name.endswith("_total") else gauges)[sample.name] = sample.value
    return Observation(
        at=at,
        leader=int(gauges.get("raftkv_leader_id", 0)),
        term=int(gauges.get("raftkv_term", 0)),
        commit_index=int(gauges.get("raftkv_commit_index", 0)),
        voters=frozenset(voters),
        learners=frozenset(learners),
        compacted_revision=int(gauges.get("raftkv_mvcc_compacted_revision", 0)),
        commands_applied=counters.get("raftkv_commands_applied_total", 0),
        snapshots_created=counters.get("snapshots_create", 0),
        snapshots_installed=counters.get("snapshots_install", 0),
        snapshots_sent=counters.get("transport_sent", 0),
        snapshots_received=counters.get("transport_received", 0),
        snapshots_failed=counters.get("transport_failed", 0),
        leases_expired=counters.get("raftkv_lease_expired_total", 0),
        reads=reads,
        requests=tuple(sorted(requests.items())),
        fsyncs=tuple(sorted(fsyncs.items())),
        loop_lag=tuple(sorted(loop_lag.items())),
    )
