"""`Router`: which endpoint the next attempt goes to, and the backoff between attempts.

The router is what one client knows about the cluster, shared by all its calls: the
configured endpoints, which of them failed to connect lately, which member leads (from
every answer's header) and where clients reach each member (from `/v1/cluster`).

- A leader-bound request (a write, a linearizable read) goes to the leader's client URL
  when both the leader and its URL are known; otherwise, and for every other request, to
  the current endpoint of the rotation. The rotation sticks to an endpoint while it works
  (its connections stay warm) and moves past one that fails.
- Within one call an endpoint that failed is not tried again before every other one was.
- An endpoint that refused a connection, or answered 503 `corrupt`, is marked down: the
  rotation skips it while any endpoint is not marked; an answer from it clears the mark.
- The rotation also holds the members' client URLs learnt from `/v1/cluster`, after the
  configured endpoints: a client outlives the members it was started with.
- A failure at the leader's URL (a 503, a lost connection) forgets the leader until an
  answer names one again.
- An endpoint whose member was removed from the cluster (it answered 503 `removed`, or its
  status says so) is left out of the rotation for good, unless a later member list names
  it as a member's client URL again; its answers say nothing about the leader. Such a
  member still answers `/v1/cluster` with the live members, so one call that meets it
  asks that list once (`Call`) and goes on at the members it names.

Thread-safe: every method holds the router's lock (a SyncClient's threads share it).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Collection, Sequence

from raftkv.client.results import Cluster

__all__ = ["Router", "backoff_delay", "leaders_view", "next_to_ask", "parse_endpoints"]


def parse_endpoints(endpoints: Sequence[str] | str) -> tuple[str, ...]:
    """Base URLs ("http://host:port"), from a list or one comma-separated string, without
    trailing slashes or repeats. Raises ValueError for an empty list or a URL that is not
    http(s)."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    parsed: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"an endpoint is a str, got {type(item).__name__}")
        url = item.strip().rstrip("/")
        if not url:
            continue
        if not url.startswith(("http://", "https://")) or url in ("http:", "https:"):
            raise ValueError(f"an endpoint is a base URL like http://127.0.0.1:8080, got {item!r}")
        if url not in parsed:
            parsed.append(url)
    if not parsed:
        raise ValueError("no endpoints given")
    return tuple(parsed)


def next_to_ask(views: Sequence[Cluster], asked: Collection[str]) -> str | None:
    """Where to ask `/v1/cluster` next to reach the leader's view, after `views` (the
    answers so far, none of them the leader's) from the endpoints `asked`: the leader's
    client URL as a member's answer names it, else a listed member not asked yet; None
    when none is left."""
    urls: list[str] = []
    for view in views:
        listed = {member.id: member.client_url.rstrip("/") for member in view.members}
        if view.id in listed and view.leader in listed:  # a member's answer naming a leader
            urls.insert(0, listed[view.leader])
        urls.extend(listed.values())
    return next((url for url in urls if url and url not in asked), None)


def leaders_view(views: Sequence[Cluster]) -> Cluster:
    """The leader's answer among `views` (non-empty), else the first answer from a member
    (its member list is current), else the first answer."""
    for view in views:
        if view.id == view.leader:
            return view
    for view in views:
        if any(member.id == view.id for member in view.members):
            return view
    return views[0]


def backoff_delay(retry: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff
    and Jitter"): uniform in [0, min(cap, base * 2**retry)]. The jitter spreads the
    retries of many clients after one failure, such as a leader change."""
    return rng.uniform(0.0, min(cap_s, base_s * 2.0 ** min(retry, 62)))


class Router:
    def __init__(self, endpoints: Sequence[str] | str, refresh_s: float = 0.0) -> None:
        self.endpoints = parse_endpoints(endpoints)
        # See ClientSettings.member_refresh_s; _synced_at: when the last discovery started
        # (None: never).
        self._refresh_s = refresh_s
        self._synced_at: float | None = None
        self._lock = threading.Lock()
        # Where the rotation (_candidates()) starts; taken modulo its length, which grows
        # as members are learnt.
        self._cursor = 0
        # Endpoints (configured or learnt) that refused a connection and have not answered
        # since.
        self._down: set[str] = set()
        # Endpoints of members removed from the cluster: never picked while another is left.
        self._removed: set[str] = set()
        # The leader the last answer named (0: unknown).
        self._leader_id = 0
        # Client URLs by member id, from the last /v1/cluster answer.
        self._client_urls: dict[int, str] = {}
        # The leader id for which a discovery (a /v1/cluster call) was last started, so a
        # leader whose URL is unpublished costs one discovery, not one per call.
        self._discovered_for = 0

    @property
    def leader_id(self) -> int:
        return self._leader_id

    @property
    def leader_url(self) -> str | None:
        """The leader's client URL, if the leader and its URL are both known."""
        with self._lock:
            return self._leader_url()

    def _leader_url(self) -> str | None:
        return self._client_urls.get(self._leader_id) if self._leader_id else None

    def pick(self, *, to_leader: bool, avoid: Collection[str]) -> str:
        """The endpoint for the next attempt of a call that already failed at `avoid`."""
        with self._lock:
            leader_url = self._leader_url()
            if (
                to_leader
                and leader_url is not None
                and leader_url not in avoid
                and leader_url not in self._down
                and leader_url not in self._removed
            ):
                return leader_url
            candidates = self._candidates()
            count = len(candidates)
            order = [candidates[(self._cursor + step) % count] for step in range(count)]
            members = [url for url in order if url not in self._removed] or order
            fresh = [url for url in members if url not in avoid]
            up = [url for url in fresh if url not in self._down]
            chosen = (up or fresh or members)[0]
            self._cursor = candidates.index(chosen)
            return chosen

    def _candidates(self) -> tuple[str, ...]:
        """The rotation: the configured endpoints, then the client URLs of the members
        learnt from /v1/cluster that are not among them, so the client still reaches the
        cluster after every configured endpoint left it (members replaced over time)."""
        configured = self.endpoints
        learnt = sorted(set(self._client_urls.values()) - set(configured))
        return configured + tuple(learnt)

    def wants_discovery(self, now: float | None = None) -> bool:
        """Whether a leader is known but not where to reach it and no discovery was
        started for it yet; or (given `now`) the member list is older than the refresh
        interval."""
        with self._lock:
            leader = self._leader_id
            if leader != 0 and leader not in self._client_urls and self._discovered_for != leader:
                return True
            return (
                now is not None
                and self._refresh_s > 0
                and self._synced_at is not None
                and now - self._synced_at >= self._refresh_s
            )

    def discovery_started(self, now: float | None = None) -> None:
        with self._lock:
            self._discovered_for = self._leader_id
            if now is not None:
                self._synced_at = now

    def answered(
        self,
        endpoint: str,
        leader: int | None,
        client_urls: dict[int, str] | None = None,
        *,
        removed: bool = False,
    ) -> None:
        """`endpoint` answered; the answer named `leader` (None: said nothing of it) and
        the members' `client_urls`, and said whether its member was `removed`."""
        with self._lock:
            self._down.discard(endpoint)
            if client_urls is not None:
                self._client_urls = dict(client_urls)
                # A URL a member list names is a member's, even one a removed member had.
                self._removed -= set(client_urls.values())
            if removed:
                self._removed.add(endpoint)
            elif leader is not None:
                self._leader_id = leader

    def removed(self, endpoint: str) -> None:
        """`endpoint` answered 503 `removed`: its member left the cluster."""
        with self._lock:
            self._removed.add(endpoint)
            self._failed(endpoint)

    def unreachable(self, endpoint: str) -> None:
        """A connection to `endpoint` failed, or it answered that it serves no client (503
        `corrupt`): mark it down."""
        with self._lock:
            self._down.add(endpoint)
            self._failed(endpoint)

    def not_serving(self, endpoint: str) -> None:
        """`endpoint` answered 503 or 504, or lost the connection after the request."""
        with self._lock:
            self._failed(endpoint)

    def _failed(self, endpoint: str) -> None:
        if endpoint == self._leader_url():
            self._leader_id = 0
        candidates = self._candidates()
        if endpoint in candidates:
            self._cursor = (candidates.index(endpoint) + 1) % len(candidates)
