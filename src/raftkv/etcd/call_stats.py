"""`CallStats`: what the etcd API's unary calls did since the node started — counted by
method and status code, timed by method — for the server's /metrics to export
(raftkv_etcd_requests_total, raftkv_etcd_request_duration_seconds). Plain accumulators, as
the node's own `NodeStats`: the etcd layer does not depend on a metrics library.

Invariant: every key of `durations` is a method that also appears in `counts`; a method's
duration histogram counts exactly its calls in `counts`, whatever their codes. Both grow by
method and code only (a few dozen keys at most: etcd's methods times gRPC's codes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from raftkv.raft.driver.status import Histogram

# Seconds: a served read (0.5 ms) to a request that waited out its timeout (10 s).
CALL_BOUNDS_S: Final = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip


@dataclass(slots=True)
class CallStats:
    # (method, gRPC status code name) -> calls ended so.
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    durations: dict[str, Histogram] = field(default_factory=dict)

    def observe(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        self.counts[key] = self.counts.get(key, 0) + 1
        histogram = self.durations.get(method)
        if histogram is None:
            histogram = self.durations[method] = Histogram(CALL_BOUNDS_S)
        histogram.observe(seconds)
