"""The etcd API's metrics, read at scrape time from its servicers (raftkv.etcd):

- `raftkv_etcd_requests_total{method,code}` (counter): unary calls of etcd's API (on the
  gRPC port and through the JSON gateway) by method (`Range`, `Put`, `LeaseGrant`, ...) and
  gRPC status code name (`OK`, `OUT_OF_RANGE`, ...);
- `raftkv_etcd_request_duration_seconds{method}` (histogram): their time to answer;
- `raftkv_etcd_watch_streams` (gauge): Watch streams open now.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from raftkv.etcd.servicers import EtcdServicers
from raftkv.server.histograms import add_histogram


def etcd_families(servicers: EtcdServicers | None) -> Iterator[Metric]:
    """The families above; without the etcd API, the same families without samples."""
    requests = CounterMetricFamily(
        "raftkv_etcd_requests",
        "Unary calls of etcd's API by method and gRPC status code.",
        labels=["method", "code"],
    )
    durations = HistogramMetricFamily(
        "raftkv_etcd_request_duration_seconds",
        "Time to answer a unary call of etcd's API, by method.",
        labels=["method"],
    )
    streams = GaugeMetricFamily("raftkv_etcd_watch_streams", "etcd Watch streams open now.")
    if servicers is not None:
        stats = servicers.context.stats
        for (method, code), count in sorted(stats.counts.items()):
            requests.add_metric([method, code], float(count))
        for method, histogram in sorted(stats.durations.items()):
            add_histogram(durations, [method], histogram)
        streams.add_metric([], float(servicers.watch.streams))
    yield requests
    yield durations
    yield streams
