"""The console's charts' past: one `HistoryPoint` per sampling interval, the last
`capacity` kept (10 minutes at one a second: 600 points of ~200 bytes each).

A point is the difference of two consecutive observations (`observation`): rates are
counter increases over the time between them; latencies come from the increase of each
histogram bucket, so they are of the requests of that interval alone. A counter that went
down (the node restarted its counting) gives no rate for that interval rather than a
negative one.
"""

from __future__ import annotations

import math
from collections import deque

from raftkv.api.console import HistoryPoint
from raftkv.server.console.observation import Buckets, Observation

__all__ = ["History", "bucket_quantile", "point_between"]


def _delta(before: Buckets, after: Buckets) -> Buckets:
    """`after` minus `before`, bucket by bucket (bounds absent before count from 0)."""
    earlier = dict(before)
    return tuple((bound, max(0.0, count - earlier.get(bound, 0.0))) for bound, count in after)


def bucket_quantile(quantile: float, buckets: Buckets) -> float | None:
    """The `quantile` of the observations counted in cumulative `buckets`, interpolated
    linearly inside its bucket as Prometheus' histogram_quantile does (the first bucket
    from 0; in the +inf bucket, the highest finite bound). None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = quantile * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = (bound if not math.isinf(bound) else lower_bound), count
    return lower_bound


def _highest(buckets: Buckets) -> float | None:
    """The upper bound of the highest bucket that gained an observation (the highest
    finite bound for the +inf one)."""
    highest, previous_count, finite = None, 0.0, 0.0
    for bound, count in buckets:
        if count > previous_count:
            highest = finite if math.isinf(bound) else bound
        previous_count = count
        if not math.isinf(bound):
            finite = bound
    return highest


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def point_between(previous: Observation, current: Observation) -> HistoryPoint | None:
    """The point of the interval from `previous` to `current`; None if no time passed."""
    elapsed = current.at - previous.at
    if elapsed <= 0:
        return None

    def rate(before: float, after: float) -> float:
        return round(max(0.0, after - before) / elapsed, 3)

    requests = _delta(previous.requests, current.requests)
    return HistoryPoint(
        at=current.at,
        writes_per_s=rate(previous.commands_applied, current.commands_applied),
        reads_per_s=rate(previous.reads, current.reads),
        requests_per_s=rate(
            previous.requests[-1][1] if previous.requests else 0.0,
            current.requests[-1][1] if current.requests else 0.0,
        ),
        latency_p50_ms=_ms(bucket_quantile(0.5, requests)),
        latency_p99_ms=_ms(bucket_quantile(0.99, requests)),
        commit_index=current.commit_index,
        fsync_p99_ms=_ms(bucket_quantile(0.99, _delta(previous.fsyncs, current.fsyncs))),
        loop_lag_max_ms=_ms(_highest(_delta(previous.loop_lag, current.loop_lag))),
    )


class History:
    """The last `capacity` points (see the module docstring).

    Invariant: points are in increasing `at` order; at most `capacity` of them."""

    def __init__(self, capacity: int, interval_s: float) -> None:
        if capacity < 1 or not interval_s > 0:
            raise ValueError("History needs capacity >= 1 and interval_s > 0")
        self.capacity = capacity
        self.interval_s = interval_s
        self._points: deque[HistoryPoint] = deque(maxlen=capacity)
        self._previous: Observation | None = None

    def observe(self, current: Observation) -> HistoryPoint | None:
        """Add the point since the previous observation (none for the first one, or when
        the clock did not move forward: that observation is then ignored)."""
        previous = self._previous
        if previous is not None and current.at <= previous.at:
            return None
        self._previous = current
        if previous is None:
            return None
        point = point_between(previous, current)
        if point is not None:
            self._points.append(point)
        return point

    def points(self, after: float = 0.0) -> list[HistoryPoint]:
        """The points later than `after` (Unix seconds), oldest first."""
        return [point for point in self._points if point.at > after]
