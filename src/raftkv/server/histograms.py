"""The node's plain histograms (`raftkv.raft.driver.status.Histogram`) as Prometheus
histogram samples, the way prometheus_client writes its own."""

from __future__ import annotations

import math

from prometheus_client.core import HistogramMetricFamily

from raftkv.raft.driver.status import Histogram


def add_histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    buckets = [(bound_text(bound), float(count)) for bound, count in histogram.cumulative()]
    family.add_metric(labels, buckets, histogram.sum)


def bound_text(bound: float) -> str:
    """A bucket's `le` as prometheus_client writes its own ("0.005", "1.0", "+Inf")."""
    return "+Inf" if math.isinf(bound) else repr(bound)
