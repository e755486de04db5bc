"""`Call`: one call's attempts, as a state machine both clients drive.

The client sends an attempt, then tells the call what happened: `answered(status, body)`
or `lost(error)`. The call answers `Done(value)`, `Wait(seconds)` (back off, then attempt
again at `next_endpoint()`), or raises the call's final `ClientError`. Nothing here does
I/O or reads a clock: the caller passes `now`.

Rules (what may be retried is decided by whether anything may have been applied):
- 200: done. A 404 `not_found` for a get: done, with no value.
- 503 (not_leader, proposal_dropped, overloaded, stopped, corrupt, removed) or a refused
  connection: nothing was applied; retry at another endpoint. An endpoint that answered
  `corrupt` (a member whose state diverged, see raftkv.kv.hash_checks) or refused the
  connection is passed over by the client's later calls too, until it answers again; one
  that answered `removed` for good. Before retrying after the first `removed` in a call,
  or after a 503 to a leader-only request while the leader's URL is unknown, the client
  asks for the member list (`Wait.discover_at`): a removed member still serves it, so the
  client learns where the live members are even if it was given no other endpoint.
- 504 `timeout` or a connection lost after the request was sent: for a read nothing was
  read, retry; for a write with a session the outcome is unknown, retry with the same
  session (the server applies it at most once); for a write without one (compact), stop
  with OutcomeUnknown, since a retry could apply it twice.
- other 4xx, and 507 `no_space` (a NOSPACE alarm): the typed refusal, at once (the same
  request gets the same answer) — but a 507 after an attempt that may have applied ends
  with OutcomeUnknown, as a 409 `session_expired` does: the earlier attempt may still be
  in the log, and apply once the alarm is disarmed.
- 500 or an unreadable answer: ServerError, at once.
Attempts stop at `max_attempts`, or when the backoff would end past the call's deadline;
the call then fails with OutcomeUnknown if an attempt of a write may have applied, else
Unavailable, listing every attempt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Generic, TypeVar

import httpx

from raftkv.client.errors import ClientError, OutcomeUnknown, ServerError, Unavailable, refusal
from raftkv.client.protocol import BadAnswer, Kind, Request, error_of
from raftkv.client.routing import Router, backoff_delay
from raftkv.client.settings import ClientSettings

__all__ = ["Call", "Done", "Wait", "describe"]

T = TypeVar("T")

# Transport errors raised before a request could reach the server: nothing was applied.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

# An attempt gets at least this long, however little of the deadline is left.
_MIN_TIMEOUT_S = 0.01


@dataclass(frozen=True, slots=True)
class Done(Generic[T]):
    value: T


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float
    # Before the next attempt, ask this endpoint's /v1/cluster where the members and the
    # leader are (one discovery per call at most).
    discover_at: str | None = None


class Call(Generic[T]):
    def __init__(
        self,
        request: Request[T],
        router: Router,
        settings: ClientSettings,
        rng: random.Random,
        now: float,
        *,
        endpoint: str | None = None,
    ) -> None:
        """A call of `request`; with `endpoint`, one attempt at that endpoint only."""
        self.request = request
        self._router = router
        self._settings = settings
        self._rng = rng
        self._pinned = endpoint
        self._max_attempts = 1 if endpoint is not None else settings.max_attempts
        self._started = now
        self._deadline = now + settings.deadline_s
        self._attempts = 0
        # Endpoints that failed in this call, in order, and what happened at each.
        self._failed: list[str] = []
        self._log: list[tuple[str, str]] = []
        # Whether an attempt of this write may have been applied (an unknown outcome).
        self._maybe_applied = False
        # Whether this call asked for a discovery already (Wait.discover_at).
        self._discovered = False

    def next_endpoint(self) -> str:
        self._attempts += 1
        if self._pinned is not None:
            return self._pinned
        return self._router.pick(to_leader=self.request.to_leader, avoid=self._failed)

    def attempt_timeout(self, now: float) -> float:
        """The attempt's timeout: the per-request timeout, or what is left of the call (an
        attempt is made even at the deadline: the first one always is)."""
        return max(_MIN_TIMEOUT_S, min(self._settings.request_timeout_s, self._deadline - now))

    def answered(self, endpoint: str, status: int, content: bytes, now: float) -> Done[T] | Wait:
        request = self.request
        if status == 200:
            try:
                decoded = request.decode(content, endpoint)
            except BadAnswer as error:
                raise self._bad_answer(endpoint, status, str(error)) from error
            self._router.answered(
                endpoint, decoded.leader, decoded.client_urls, removed=decoded.removed
            )
            return Done(decoded.value)
        refused = error_of(content)
        if refused is None:
            raise self._bad_answer(endpoint, status, f"not an error answer: {content[:200]!r}")
        code, message = refused.code, refused.message
        if status == 404 and code == "not_found" and request.absent is not None:
            self._router.answered(endpoint, None)
            return Done(request.absent())
        repeated = request.applied_if_refused
        if self._maybe_applied and repeated is not None and code == repeated[0]:
            self._router.answered(endpoint, None)
            return Done(repeated[1]())
        if status == 503:
            discover_at = None
            if code == "corrupt":
                self._router.unreachable(endpoint)  # it stays so until it is replaced
            elif code == "removed":
                self._router.removed(endpoint)
                discover_at = endpoint  # it still lists the members
            else:
                self._router.not_serving(endpoint)
                if request.leader_only and self._router.leader_url is None:
                    # E.g. a leadership transfer asked of a follower: where is the leader?
                    discover_at = self._router.pick(to_leader=False, avoid=())
            wait = self._retry(endpoint, f"503 {code}: {message}", now)
            if discover_at is None or self._discovered or self._pinned is not None:
                return wait
            self._discovered = True
            return Wait(wait.seconds, discover_at)
        if status == 504:
            self._router.not_serving(endpoint)
            return self._unknown_outcome(endpoint, f"504 {code}: {message}", now)
        if status == 409 and code == "session_expired" and self._maybe_applied:
            # An earlier attempt may have applied before the session was forgotten.
            self._log.append((endpoint, f"409 {code}: {message}"))
            raise self._exhausted(now, True, "the server no longer holds the write's session")
        if status == 507 and self._maybe_applied:
            # This attempt was refused, but an earlier one may still be in the log, and
            # apply once the alarm is disarmed.
            self._log.append((endpoint, f"507 {code}: {message}"))
            raise self._exhausted(now, True, "a NOSPACE alarm refused a retry of the write")
        if 400 <= status < 500 or status == 507:
            self._router.answered(endpoint, None)
            raise refusal(
                status,
                code,
                f"{request.description}: {message}",
                endpoint,
                compact_revision=refused.compact_revision,
                oldest_revision=refused.oldest_revision,
            )
        raise ServerError(
            code,
            f"{request.description}: {message} (HTTP {status} from {endpoint})"
            + self._outcome_note(),
            status=status,
            endpoints=[endpoint],
        )

    def lost(self, endpoint: str, error: httpx.TransportError, now: float) -> Wait:
        what = describe(error)
        if isinstance(error, _NOT_SENT):
            self._router.unreachable(endpoint)
            return self._retry(endpoint, f"not reached ({what})", now)
        self._router.not_serving(endpoint)
        return self._unknown_outcome(endpoint, f"no answer ({what})", now)

    def _unknown_outcome(self, endpoint: str, what: str, now: float) -> Wait:
        """An attempt whose effect is unknown: it may have been applied."""
        match self.request.kind:
            case Kind.READ:
                return self._retry(endpoint, what, now)
            case Kind.WRITE:
                self._maybe_applied = True
                return self._retry(endpoint, what, now)
            case Kind.UNGUARDED_WRITE:
                self._log.append((endpoint, what))
                raise self._exhausted(now, True, "it carries no session, so it is not retried")

    def _retry(self, endpoint: str, what: str, now: float) -> Wait:
        self._log.append((endpoint, what))
        self._failed.append(endpoint)
        if self._attempts >= self._max_attempts:
            raise self._exhausted(now, self._maybe_applied, f"{self._attempts} attempts made")
        delay = backoff_delay(
            self._attempts - 1,
            self._settings.backoff_base_s,
            self._settings.backoff_cap_s,
            self._rng,
        )
        if now + delay >= self._deadline:
            raise self._exhausted(
                now, self._maybe_applied, f"deadline of {self._settings.deadline_s:g}s reached"
            )
        return Wait(delay)

    def _exhausted(self, now: float, maybe_applied: bool, why: str) -> ClientError:
        attempts = "; ".join(_summary(self._log))
        elapsed = now - self._started
        endpoints = list(dict.fromkeys(endpoint for endpoint, _ in self._log))
        if maybe_applied:
            return OutcomeUnknown(
                "outcome_unknown",
                f"{self.request.description}: the outcome is unknown, it may or may not "
                f"have been applied ({why}, after {elapsed:.1f}s): {attempts}",
                status=None,
                endpoints=endpoints,
            )
        return Unavailable(
            "unavailable",
            f"{self.request.description}: no endpoint could serve it, nothing was applied "
            f"({why}, after {elapsed:.1f}s): {attempts}",
            status=None,
            endpoints=endpoints,
        )

    def _outcome_note(self) -> str:
        return "; the write may have been applied" if self.request.kind is not Kind.READ else ""

    def _bad_answer(self, endpoint: str, status: int, why: str) -> ServerError:
        return ServerError(
            "bad_answer",
            f"{self.request.description}: unreadable answer (HTTP {status} from {endpoint}): "
            f"{why}" + self._outcome_note(),
            status=status,
            endpoints=[endpoint],
        )


def describe(error: BaseException) -> str:
    """An exception for a message: its type, and its text when it has one (httpx's
    timeouts have none)."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _summary(log: list[tuple[str, str]]) -> list[str]:
    """One line per distinct failure, in the order first seen ("url: what (x3)")."""
    counts: dict[tuple[str, str], int] = {}
    for entry in log:
        counts[entry] = counts.get(entry, 0) + 1
    return [
        f"{endpoint}: {what}" + (f" (x{count})" if count > 1 else "")
        for (endpoint, what), count in counts.items()
    ]
