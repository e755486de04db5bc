"""Users, roles and permissions as the state machine applies them (`raftkv.kv.auth_state`),
tokens (`auth_tokens`), password hashes (`passwords`) and the failed-login buckets: no
cluster, no event loop."""

from __future__ import annotations

import pytest

from raftkv.kv import KvCommand, KvStateMachine, Put, encode_command
from raftkv.kv.auth_commands import (
    AuthDisable,
    AuthEnable,
    Permission,
    RoleAdd,
    RoleDelete,
    RoleGrantPermission,
    RoleRevokePermission,
    UserAdd,
    UserChangePassword,
    UserDelete,
    UserGrantRole,
    UserRevokeRole,
)
from raftkv.kv.auth_service import FailedLogins
from raftkv.kv.auth_state import MAX_NAME_BYTES, ROOT
from raftkv.kv.auth_tokens import MAX_TOKEN_BYTES, TokenClaims, issue_token, read_token
from raftkv.kv.commands import (
    AuthChangeResponse,
    PublishMember,
    PublishMemberResponse,
    PutResponse,
    WriteRequest,
)
from raftkv.kv.errors import (
    AuthConflict,
    AuthNotFound,
    AuthRevisionChanged,
    InvalidRequest,
    InvalidToken,
    KvError,
    LimitExceeded,
    TooManyFailedLogins,
)
from raftkv.kv.passwords import (
    CHEAP_COST,
    MAX_PASSWORD_BYTES,
    PasswordCost,
    hash_password,
    verify_password,
)
from raftkv.raft.driver.state_machine import Command
from raftkv.raft.storage.memory import MemoryAppData

KEY = b"k" * 32


class Machine:
    """A state machine fed one command at a time."""

    def __init__(self) -> None:
        self.machine = KvStateMachine(MemoryAppData())
        self.index = 0

    def apply(self, request: WriteRequest, auth_revision: int | None = None) -> object:
        """Apply `request` stamped `auth_revision` (None: as checked against the current
        auth state)."""
        self.index += 1
        if auth_revision is None:
            auth_revision = self.machine.auth.stamp
        data = encode_command(KvCommand(request, auth_revision=auth_revision))
        [result] = self.machine.apply([Command(self.index, 1, data)], self.index, 1)
        return result

    def ok(self, request: WriteRequest) -> AuthChangeResponse:
        result = self.apply(request)
        assert isinstance(result, AuthChangeResponse), result
        return result

    def refused(self, request: WriteRequest) -> KvError:
        revision = self.machine.auth.revision
        result = self.apply(request)
        assert isinstance(result, KvError), result
        assert self.machine.auth.revision == revision  # nothing changed
        return result


def with_root() -> Machine:
    machine = Machine()
    machine.ok(UserAdd(ROOT, "hash"))
    machine.ok(UserGrantRole(ROOT, ROOT))
    return machine


def test_every_change_raises_the_revision_and_enable_needs_root_with_the_role_root() -> None:
    machine = Machine()
    assert machine.machine.auth.revision == 1
    refusal = machine.refused(AuthEnable(KEY))
    assert isinstance(refusal, AuthConflict) and "user add root" in str(refusal)
    machine.ok(UserAdd(ROOT, "hash"))
    assert isinstance(machine.refused(AuthEnable(KEY)), AuthConflict)
    assert machine.ok(UserGrantRole(ROOT, ROOT)).auth_revision == 3
    assert machine.ok(AuthEnable(KEY)).auth_revision == 4
    auth = machine.machine.auth
    assert auth.enabled and auth.signing_key == KEY
    # While enabled, root stays root.
    assert isinstance(machine.refused(UserDelete(ROOT)), AuthConflict)
    assert isinstance(machine.refused(UserRevokeRole(ROOT, ROOT)), AuthConflict)
    machine.ok(AuthDisable())
    assert not machine.machine.auth.enabled and machine.machine.auth.signing_key == b""
    machine.ok(UserDelete(ROOT))


def test_the_role_root_is_built_in_and_holds_every_permission() -> None:
    machine = with_root()
    assert isinstance(machine.refused(RoleAdd(ROOT)), AuthConflict)
    assert isinstance(machine.refused(RoleDelete(ROOT)), AuthConflict)
    refusal = machine.refused(RoleGrantPermission(ROOT, Permission("read", b"a")))
    assert isinstance(refusal, AuthConflict)
    auth = machine.machine.auth
    assert auth.permits(ROOT, "write", b"\0", b"\0")
    assert [role.name for role in auth.roles()] == [ROOT]


def test_permissions_cover_keys_prefixes_and_ranges_across_roles() -> None:
    machine = with_root()
    machine.ok(UserAdd("alice", "hash"))
    for role in ("reader", "writer"):
        machine.ok(RoleAdd(role))
        machine.ok(UserGrantRole("alice", role))
    machine.ok(RoleGrantPermission("reader", Permission("read", b"app/", b"app0")))
    machine.ok(RoleGrantPermission("writer", Permission("readwrite", b"app0", b"app5")))
    machine.ok(RoleGrantPermission("writer", Permission("write", b"solo")))
    auth = machine.machine.auth
    # Two roles' ranges side by side cover the range across both.
    assert auth.permits("alice", "read", b"app/", b"app5")
    assert not auth.permits("alice", "read", b"app/", b"app6")
    assert auth.permits("alice", "read", b"app/x", b"")
    assert not auth.permits("alice", "write", b"app/x", b"")
    assert auth.permits("alice", "write", b"app1", b"")
    assert auth.permits("alice", "write", b"solo", b"")
    assert not auth.permits("alice", "write", b"solo0", b"")
    assert not auth.permits("alice", "read", b"solo", b"")
    assert not auth.permits("alice", "read", b"other", b"")
    assert not auth.permits("alice", "read", b"app/", b"\0")  # to the end
    assert auth.permits("alice", "read", b"b", b"a")  # an empty range holds no key
    assert not auth.permits("nobody", "read", b"app/x", b"")
    # A grant on the same range replaces the kind; a revoke names the range exactly.
    machine.ok(RoleGrantPermission("reader", Permission("write", b"app/", b"app0")))
    assert not machine.machine.auth.permits("alice", "read", b"app/x", b"")
    assert isinstance(machine.refused(RoleRevokePermission("reader", b"app/")), AuthNotFound)
    machine.ok(RoleRevokePermission("reader", b"app/", b"app0"))
    assert not machine.machine.auth.permits("alice", "write", b"app/x", b"")
    # Deleting a role takes it from its users.
    machine.ok(RoleDelete("writer"))
    assert machine.machine.auth.user("alice").roles == ["reader"]  # type: ignore[union-attr]
    assert not machine.machine.auth.permits("alice", "write", b"solo", b"")


def test_changes_that_contradict_the_state_are_refused_and_change_nothing() -> None:
    machine = with_root()
    assert isinstance(machine.refused(UserAdd(ROOT, "x")), AuthConflict)
    assert isinstance(machine.refused(UserDelete("ghost")), AuthNotFound)
    assert isinstance(machine.refused(UserChangePassword("ghost", "x")), AuthNotFound)
    assert isinstance(machine.refused(UserGrantRole(ROOT, "ghost")), AuthNotFound)
    assert isinstance(machine.refused(UserGrantRole(ROOT, ROOT)), AuthConflict)
    assert isinstance(machine.refused(UserRevokeRole(ROOT, "ghost")), AuthNotFound)
    assert isinstance(machine.refused(RoleDelete("ghost")), AuthNotFound)
    machine.ok(RoleAdd("r"))
    assert isinstance(machine.refused(RoleAdd("r")), AuthConflict)


@pytest.mark.parametrize(
    "request_",
    [
        UserAdd("", "x"),
        UserAdd("a" * (MAX_NAME_BYTES + 1), "x"),
        UserAdd("tab\there", "x"),
        UserAdd("slash/name", "x"),
        RoleAdd("new\nline"),
        RoleGrantPermission("r", Permission("read", b"")),
        RoleGrantPermission("r", Permission("read", b"b", b"a")),
        RoleGrantPermission("r", Permission("read", b"a", b"a")),
        RoleGrantPermission("r", Permission("read", b"a" * 5000)),
        AuthEnable(b"short"),
    ],
)
def test_malformed_changes_are_refused_with_the_rule_they_break(
    request_: WriteRequest,
) -> None:
    machine = Machine()
    machine.ok(RoleAdd("r"))
    assert isinstance(machine.refused(request_), InvalidRequest | LimitExceeded)


def test_a_write_checked_at_an_older_auth_revision_is_refused_and_not_applied() -> None:
    machine = with_root()
    checked, revision = machine.machine.auth.revision, machine.machine.current_revision()
    machine.ok(RoleAdd("r"))
    result = machine.apply(Put(b"key", b"value"), auth_revision=checked)
    assert isinstance(result, AuthRevisionChanged)
    assert machine.machine.current_revision() == revision
    current = machine.machine.auth.revision
    assert isinstance(machine.apply(Put(b"key", b"value"), auth_revision=current), PutResponse)
    # Unstamped: checked by a member that had applied no auth change yet, refused now that
    # auth is in use; the node's own bookkeeping is never stamped and passes.
    assert isinstance(machine.apply(Put(b"key", b"again"), auth_revision=0), AuthRevisionChanged)
    published = machine.apply(PublishMember(1, "http://a:1"), auth_revision=0)
    assert isinstance(published, PublishMemberResponse)


def test_while_auth_was_never_used_commands_are_unstamped_and_encode_as_before() -> None:
    machine = Machine()
    assert machine.machine.auth.stamp == 0
    assert b"auth_revision" not in encode_command(KvCommand(Put(b"k", b"v")))
    assert isinstance(machine.apply(Put(b"k", b"v")), PutResponse)
    machine.ok(RoleAdd("r"))
    assert machine.machine.auth.stamp == machine.machine.auth.revision == 2


def test_the_auth_state_survives_a_snapshot_and_a_restart_of_the_store() -> None:
    machine = with_root()
    machine.ok(RoleAdd("r"))
    machine.ok(RoleGrantPermission("r", Permission("read", b"a", b"\0")))
    machine.ok(AuthEnable(KEY))
    other = KvStateMachine(MemoryAppData())
    other.validate_snapshot(machine.machine.snapshot())
    other.restore(machine.machine.snapshot(), machine.index, 1)
    assert other.auth.record == machine.machine.auth.record
    reopened = KvStateMachine(machine.machine.app)
    assert reopened.auth.record == machine.machine.auth.record


def test_a_password_change_gives_the_user_a_new_password_revision() -> None:
    machine = with_root()
    before = machine.machine.auth.user(ROOT)
    machine.ok(UserChangePassword(ROOT, "other"))
    after = machine.machine.auth.user(ROOT)
    assert before is not None and after is not None
    assert after.password_revision > before.password_revision
    assert after.password_hash == "other"


# -- tokens ------------------------------------------------------------------------------


def test_a_token_reads_back_until_it_expires() -> None:
    token = issue_token(KEY, TokenClaims("alice", 7, expires_ms=2000))
    assert read_token(KEY, token, now_ms=1999) == TokenClaims("alice", 7, 2000)
    with pytest.raises(InvalidToken, match="expired"):
        read_token(KEY, token, now_ms=2000)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "rk1.",
        "rk1.@@@.@@@",
        "rk1.AAAA.AAAA",
        "rk2." + "A" * 20 + ".AAAA",
        "é" * 10,
        "rk1." + "A" * MAX_TOKEN_BYTES,
    ],
)
def test_malformed_tokens_are_refused_with_a_reason(token: str) -> None:
    with pytest.raises(InvalidToken):
        read_token(KEY, token, now_ms=0)


def test_a_token_signed_with_another_key_or_altered_is_refused() -> None:
    token = issue_token(KEY, TokenClaims("alice", 7, expires_ms=2000))
    with pytest.raises(InvalidToken, match="not signed"):
        read_token(b"o" * 32, token, now_ms=0)
    with pytest.raises(InvalidToken, match="not signed"):
        read_token(b"", token, now_ms=0)
    forged = issue_token(b"o" * 32, TokenClaims("root", 7, expires_ms=2000))
    payload = forged.rpartition(".")[0]
    with pytest.raises(InvalidToken, match="not signed"):
        read_token(KEY, payload + "." + token.rpartition(".")[2], now_ms=0)


# -- passwords ---------------------------------------------------------------------------


def test_a_password_verifies_against_its_hash_only() -> None:
    stored = hash_password("secret", CHEAP_COST)
    assert stored.startswith("scrypt$4$1$1$")
    assert verify_password("secret", stored)
    assert not verify_password("Secret", stored)
    assert hash_password("secret", CHEAP_COST) != stored  # salted
    assert not verify_password("secret", "")  # a user without a password


@pytest.mark.parametrize(
    "stored",
    ["plain", "scrypt$4$1$1$AAAA", "scrypt$x$1$1$AAAA$AAAA", "scrypt$4$1$1$!!$AAAA", "bcrypt$1"],
)
def test_an_unreadable_hash_verifies_nothing(stored: str) -> None:
    assert not verify_password("secret", stored)


def test_a_hash_naming_a_ruinous_cost_is_not_run() -> None:
    stored = hash_password("secret", CHEAP_COST).split("$")
    stored[1] = "40"  # 2**40 iterations: terabytes
    assert not verify_password("secret", "$".join(stored))


def test_passwords_are_bounded() -> None:
    with pytest.raises(InvalidRequest):
        hash_password("", CHEAP_COST)
    with pytest.raises(LimitExceeded):
        hash_password("x" * (MAX_PASSWORD_BYTES + 1), CHEAP_COST)
    assert not verify_password("x" * (MAX_PASSWORD_BYTES + 1), hash_password("x", CHEAP_COST))
    assert PasswordCost().log2_n == 15


# -- failed logins -----------------------------------------------------------------------


def test_a_source_that_fails_too_often_waits_and_others_do_not() -> None:
    logins = FailedLogins(burst=3, refill_s=10.0)
    for _ in range(3):
        logins.check("10.0.0.1", now=0.0)
        logins.failed("10.0.0.1", now=0.0)
    with pytest.raises(TooManyFailedLogins, match="retry in 10 s") as refused:
        logins.check("10.0.0.1", now=0.0)
    assert refused.value.retry_after_s == pytest.approx(10.0)
    logins.check("10.0.0.2", now=0.0)
    logins.check("10.0.0.1", now=10.0)  # one try back
    logins.failed("10.0.0.1", now=10.0)
    with pytest.raises(TooManyFailedLogins):
        logins.check("10.0.0.1", now=15.0)
    logins.succeeded("10.0.0.1")
    logins.check("10.0.0.1", now=15.0)
