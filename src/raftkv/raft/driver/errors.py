"""Errors the runtime raises to its callers (the core's own errors pass through as they are:
NotLeader, ProposalDropped, ConfChangeInvalid)."""

from __future__ import annotations

from raftkv.raft.core.errors import InvalidArgument, RaftError


class Stopped(RaftError):
    """The node is stopping or stopped. Raised for a proposal, it was not applied: it never
    left this node (one that did and whose fate is unknown fails with OutcomeUnknown)."""


class NodeFailed(Stopped):
    """The node stopped because of an error it cannot continue after (a corrupt record, a
    failed write, a state machine that raised). `__cause__` holds the error."""


class Removed(Stopped):
    """This node was removed from the cluster by a membership change: it serves nothing
    any more (it keeps running only so the remaining voters can finish the change)."""


class StateUnusable(RaftError):
    """The node's stored state cannot be used to start: a snapshot that does not decode,
    a term no election could move past. The message names what and what to do."""


class OutcomeUnknown(RaftError):
    """The proposal left this node (it was appended as leader, or forwarded to the leader)
    and then this node lost track of it: it stopped, failed, was removed, or installed a
    snapshot covering the entry. The command may have been applied, or may still be:
    retry only with an idempotent command or an exactly-once id. `__cause__` says what
    happened here, when it was not a timeout."""


class ProposalTimeout(OutcomeUnknown, TimeoutError):
    """No outcome within the deadline. The command may still be applied later: retry only
    with an idempotent command or an exactly-once id."""


class ReadTimeout(RaftError, TimeoutError):
    """A linearizable read could not be confirmed within its deadline (no leader or no
    quorum reachable). Nothing was read."""


class CommandTooLarge(InvalidArgument):
    """A proposed command is over the node's `max_command_bytes`: nothing was applied. The
    one `InvalidArgument` a request's size alone can cause (the HTTP API's 413
    `command_too_large`)."""


class Overloaded(RaftError):
    """Too many requests are pending on this node (a limit in NodeSettings); retry later."""


class LearnerNotCaughtUp(RaftError):
    """A learner cannot be promoted yet: its log lags the leader's by more than the limit.
    (Not named NotCaughtUp: that is the HTTP client's error for the API's 409
    `not_caught_up`, `raftkv.client.NotCaughtUp`.)"""


class MembershipError(RaftError):
    """A membership change was refused; `code` says why (see MemberResponse.error)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.detail = message
