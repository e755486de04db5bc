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
    AuthFailed,
    AuthNotEnabled,
    AuthRequired,
    AuthRevisionChanged,
    Compacted,
    DuplicateKey,
    EmptyKey,
    FutureRevision,
    InvalidRequest,
    InvalidToken,
    KvError,
    LeaseExists,
    LeaseNotFound,
    LimitExceeded,
    NoSpace,
    PermissionDenied,
    PermissionNotGranted,
    ProtectedAuthChange,
    RoleExists,
    RoleNotFound,
    RoleNotGranted,
    RootNotReady,
    ScanTooLarge,
    TooManyFailedLogins,
    UserExists,
    UserNotFound,
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
# Auth (etcd's auth store errors). etcd answers a request without credentials while auth is
# enabled with "user name is empty": the name its token would have carried.
USER_EMPTY = (Code.INVALID_ARGUMENT, "etcdserver: user name is empty")
ROOT_USER_NOT_EXIST = (Code.FAILED_PRECONDITION, "etcdserver: root user does not exist")
ROOT_ROLE_NOT_EXIST = (Code.FAILED_PRECONDITION, "etcdserver: root user does not have root role")
USER_ALREADY_EXIST = (Code.FAILED_PRECONDITION, "etcdserver: user name already exists")
USER_NOT_FOUND = (Code.FAILED_PRECONDITION, "etcdserver: user name not found")
ROLE_ALREADY_EXIST = (Code.FAILED_PRECONDITION, "etcdserver: role name already exists")
ROLE_NOT_FOUND = (Code.FAILED_PRECONDITION, "etcdserver: role name not found")
AUTH_FAILED = (
    Code.INVALID_ARGUMENT,
    "etcdserver: authentication failed, invalid user ID or password",
)
PERMISSION_NOT_GIVEN = (Code.INVALID_ARGUMENT, "etcdserver: permission not given")
PERMISSION_DENIED = (Code.PERMISSION_DENIED, "etcdserver: permission denied")
ROLE_NOT_GRANTED = (Code.FAILED_PRECONDITION, "etcdserver: role is not granted to the user")
PERMISSION_NOT_GRANTED = (
    Code.FAILED_PRECONDITION,
    "etcdserver: permission is not granted to the role",
)
AUTH_NOT_ENABLED = (Code.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")
INVALID_AUTH_TOKEN = (Code.UNAUTHENTICATED, "etcdserver: invalid auth token")
INVALID_AUTH_MGMT = (Code.INVALID_ARGUMENT, "etcdserver: invalid auth management")
AUTH_OLD_REVISION = (Code.INVALID_ARGUMENT, "etcdserver: revision of auth store is old")


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
        case AuthRequired():
            return USER_EMPTY
        case InvalidToken():
            return INVALID_AUTH_TOKEN
        case AuthFailed():
            return AUTH_FAILED
        case PermissionDenied():
            return PERMISSION_DENIED
        case AuthNotEnabled():
            return AUTH_NOT_ENABLED
        case AuthRevisionChanged():
            return AUTH_OLD_REVISION
        case RootNotReady():
            return ROOT_ROLE_NOT_EXIST if error.root_user_exists else ROOT_USER_NOT_EXIST
        case UserExists():
            return USER_ALREADY_EXIST
        case RoleExists():
            return ROLE_ALREADY_EXIST
        case ProtectedAuthChange():
            return INVALID_AUTH_MGMT
        case UserNotFound():
            return USER_NOT_FOUND
        case RoleNotFound():
            return ROLE_NOT_FOUND
        case RoleNotGranted():
            return ROLE_NOT_GRANTED
        case PermissionNotGranted():
            return PERMISSION_NOT_GRANTED
        case TooManyFailedLogins():
            # etcd has no limit on failed logins; the message says when to try again.
            return Code.RESOURCE_EXHAUSTED, f"raftkv: {error}"
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
