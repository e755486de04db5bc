"""etcd's gRPC errors: the status code and message an etcd client expects for each refusal.

etcd's clients branch on these: Go's clientv3 turns a status whose message it knows
("etcdserver: mvcc: required revision has been compacted") back into a typed error, and
etcdctl prints "Error: <message>". So every error raftkv's services raise is translated
here into the code and the exact message etcd answers for the same case (`status_of`),
and the few refusals only the etcd layer makes are `EtcdError`s built from the same table.
An error with no etcd equivalent keeps raftkv's own message under the closest code.
"""

from __future__ import annotations

import grpc

from raftkv.kv.errors import (
    Compacted,
    DuplicateKey,
    EmptyKey,
    FutureRevision,
    InvalidRequest,
    KvError,
    LeaseExists,
    LeaseNotFound,
    LimitExceeded,
    NoSpace,
    ScanTooLarge,
)
from raftkv.kv.watch import TooManyWatches
from raftkv.raft.core.errors import (
    ConfChangeInvalid,
    ConfChangePending,
    InvalidArgument,
    ProposalDropped,
)
from raftkv.raft.driver.errors import (
    CommandTooLarge,
    LearnerNotCaughtUp,
    MembershipError,
    OutcomeUnknown,
    Overloaded,
    ProposalTimeout,
    ReadTimeout,
    Removed,
    Stopped,
)
from raftkv.raft.storage.base import StorageClosed

Code = grpc.StatusCode

# etcd's messages (its rpctypes package), by the name raftkv gives each case.
EMPTY_KEY = (Code.INVALID_ARGUMENT, "etcdserver: key is not provided")
KEY_NOT_FOUND = (Code.INVALID_ARGUMENT, "etcdserver: key not found")
VALUE_PROVIDED = (Code.INVALID_ARGUMENT, "etcdserver: value is provided")
LEASE_PROVIDED = (Code.INVALID_ARGUMENT, "etcdserver: lease is provided")
TOO_MANY_OPS = (Code.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
DUPLICATE_KEY = (Code.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
REQUEST_TOO_LARGE = (Code.INVALID_ARGUMENT, "etcdserver: request is too large")
COMPACTED = (Code.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
FUTURE_REVISION = (Code.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
LEASE_NOT_FOUND = (Code.NOT_FOUND, "etcdserver: requested lease not found")
LEASE_EXISTS = (Code.FAILED_PRECONDITION, "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE = (Code.OUT_OF_RANGE, "etcdserver: too large lease TTL")
MEMBER_NOT_FOUND = (Code.NOT_FOUND, "etcdserver: member not found")
MEMBER_BAD_URLS = (Code.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid")
MEMBER_NOT_LEARNER = (Code.FAILED_PRECONDITION, "etcdserver: can only promote a learner member")
LEARNER_NOT_READY = (
    Code.FAILED_PRECONDITION,
    "etcdserver: can only promote a learner member which is in sync with leader",
)
BAD_LEADER_TRANSFEREE = (Code.FAILED_PRECONDITION, "etcdserver: bad leader transferee")
TOO_MANY_REQUESTS = (Code.RESOURCE_EXHAUSTED, "etcdserver: too many requests")
NO_SPACE = (Code.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")
NO_LEADER = (Code.UNAVAILABLE, "etcdserver: no leader")
STOPPED = (Code.UNAVAILABLE, "etcdserver: server stopped")
TIMEOUT = (Code.UNAVAILABLE, "etcdserver: request timed out")
UNHEALTHY = (Code.UNAVAILABLE, "etcdserver: unhealthy cluster")
CORRUPT = (Code.DATA_LOSS, "etcdserver: corrupt cluster")
NOT_CAPABLE = (Code.UNAVAILABLE, "etcdserver: not capable")


class EtcdError(Exception):
    """A refusal with etcd's code and message (one of the pairs above, or a code with a
    message of raftkv's own where etcd has none for the case)."""

    def __init__(self, code_and_message: tuple[grpc.StatusCode, str]) -> None:
        code, message = code_and_message
        super().__init__(message)
        self.code = code
        self.message = message


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """etcd's code and message for an expected error of raftkv's services (None: not an
    expected error, a bug the caller logs)."""
    match error:
        case EtcdError():
            return error.code, error.message
        case EmptyKey():
            return EMPTY_KEY
        case DuplicateKey():
            return DUPLICATE_KEY
        case ScanTooLarge():
            # etcd has no scan limit; the message says which of this node's limits it was.
            return Code.RESOURCE_EXHAUSTED, f"raftkv: {error}"
        case LimitExceeded(setting="max_txn_ops"):
            return TOO_MANY_OPS
        case LimitExceeded():
            # etcd's exact message, which clients recognize (ErrRequestTooLarge); which
            # limit it was is raftkv's to say in docs/etcd.md, not in the message.
            return REQUEST_TOO_LARGE
        case Compacted():
            return COMPACTED
        case FutureRevision():
            return FUTURE_REVISION
        case LeaseNotFound():
            return LEASE_NOT_FOUND
        case LeaseExists():
            return LEASE_EXISTS
        case NoSpace():
            return NO_SPACE
        case InvalidRequest():
            return Code.INVALID_ARGUMENT, f"etcdserver: {error}"
        case KvError():
            return Code.FAILED_PRECONDITION, f"etcdserver: {error}"
        case CommandTooLarge():
            return REQUEST_TOO_LARGE
        case ProposalDropped():
            # No leader to forward to (an election under way): etcd's clients retry this.
            return NO_LEADER
        case Overloaded() | TooManyWatches():
            return TOO_MANY_REQUESTS
        case Removed():
            return Code.UNAVAILABLE, "etcdserver: the member has been permanently removed"
        case Stopped() | StorageClosed():
            return STOPPED
        case ProposalTimeout() | ReadTimeout():
            return TIMEOUT
        case OutcomeUnknown():
            return Code.UNAVAILABLE, f"etcdserver: request timed out: {error}"
        case LearnerNotCaughtUp():
            return LEARNER_NOT_READY
        case MembershipError():
            return Code.FAILED_PRECONDITION, f"etcdserver: {error.detail}"
        case ConfChangePending():
            return Code.UNAVAILABLE, f"etcdserver: {error}: retry once it is applied"
        case ConfChangeInvalid():
            return Code.FAILED_PRECONDITION, f"etcdserver: {error}"
        case InvalidArgument():
            return Code.INVALID_ARGUMENT, f"etcdserver: {error}"
        case _:
            return None
