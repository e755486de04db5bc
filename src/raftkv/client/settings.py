"""`ClientSettings`: the client's knobs, validated once when built."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["ClientSettings"]

# Room left in the server's default max_client_id_bytes (128) for a lane's "-<number>".
MAX_CLIENT_ID_BYTES = 100


@dataclass(frozen=True, slots=True)
class ClientSettings:
    # How long one HTTP attempt may take before the client gives up on it. Longer than the
    # server's own request timeout (HttpSettings.request_timeout_s, 10 s) by default, so a
    # slow write ends with the server's 504 rather than a lost connection; both are retried
    # the same way. Shorter fails over sooner from a node that hangs.
    request_timeout_s: float = 15.0
    # How long one call may take, every attempt and backoff included. The last attempt
    # gets what is left of it.
    deadline_s: float = 30.0
    # The most attempts per call (1: no retry).
    max_attempts: int = 10
    # Exponential backoff with full jitter between attempts: the n-th retry waits a random
    # time in [0, min(backoff_cap_s, backoff_base_s * 2**n)]. A larger base spares a busy
    # cluster; a smaller one fails over sooner.
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 2.0
    # The most writes in flight at once, which is also the most exactly-once sessions the
    # client uses (one session lane per concurrent write). More concurrent writes wait for
    # a lane (a wait deadline_s does not count). Each lane is a session the server keeps,
    # among its max_exactly_once_clients.
    max_concurrent_writes: int = 64
    # The prefix of the client's session ids ("<client_id>-<lane>"); "" draws a random
    # one. Two clients must never share it: each numbers its writes from 1 again, and the
    # server would refuse the second one's writes as stale.
    client_id: str = ""
    # How often the member list (`/v1/cluster`: who leads, where each member serves) is
    # refreshed before a leader-bound call, so the client follows members that join and
    # leave and outlives the endpoints it was given (etcd's auto-sync). 0: only when the
    # leader's URL is unknown.
    member_refresh_s: float = 10.0
    # TLS (raftkv.client.tls), for https:// endpoints: the CA that signed the cluster's
    # certificates ("": the system's CAs), and this client's certificate and key for a
    # cluster that asks for one (its client_ca_file).
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    # A user and its password, for a cluster with auth enabled (raftkv.client.credentials:
    # the client logs in when the server asks, and again when its token runs out). ""
    # user: none (a client certificate may still name the user).
    user: str = ""
    password: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.password and not self.user:
            raise ValueError("ClientSettings.password: give the user too")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("ClientSettings.cert_file and key_file: give both or neither")
        refresh = self.member_refresh_s
        if isinstance(refresh, bool) or not isinstance(refresh, (int, float)) or refresh < 0:
            raise ValueError(f"ClientSettings.member_refresh_s must be >= 0, got {refresh!r}")
        for name in ("request_timeout_s", "deadline_s", "backoff_cap_s"):
            _check_positive(name, getattr(self, name))
        base = self.backoff_base_s
        _check_positive("backoff_base_s", base)
        if base > self.backoff_cap_s:
            raise ValueError(
                f"ClientSettings.backoff_base_s ({base}) is above backoff_cap_s "
                f"({self.backoff_cap_s})"
            )
        for name in ("max_attempts", "max_concurrent_writes"):
            number = getattr(self, name)
            if not isinstance(number, int) or isinstance(number, bool) or number < 1:
                raise ValueError(f"ClientSettings.{name} must be an integer >= 1, got {number!r}")
        if not isinstance(self.client_id, str):
            raise ValueError(f"ClientSettings.client_id must be a str, got {self.client_id!r}")
        size = len(self.client_id.encode())
        if size > MAX_CLIENT_ID_BYTES:
            raise ValueError(
                f"ClientSettings.client_id is {size} bytes, beyond {MAX_CLIENT_ID_BYTES}"
            )


def _check_positive(name: str, number: object) -> None:
    if (
        not isinstance(number, (int, float))
        or isinstance(number, bool)
        or not (number > 0 and math.isfinite(number))
    ):
        raise ValueError(f"ClientSettings.{name} must be a positive number, got {number!r}")
