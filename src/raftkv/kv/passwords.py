"""Password hashes: scrypt (`hashlib.scrypt`, OpenSSL's), salted, slow on purpose.

A hash is the text "scrypt$<log2 n>$<r>$<p>$<salt, base64>$<key, base64>", so its cost
travels with it: a hash made with other parameters (a cheaper one in tests, a dearer one
later) still verifies. Only hashes enter the log and the store (`raftkv.kv.auth_commands`).

Cost: n = 2**15, r = 8, p = 1 (OWASP's scrypt minimum is n = 2**17 with r = 8 for
interactive logins at 128 MiB each; 2**15 is 32 MiB and ~70 ms on this project's 2-core
machines, a bound a node can afford for a few logins at once, which
`raftkv.kv.auth_service` enforces). Both hashing and verifying run off the event loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from raftkv.kv.errors import InvalidRequest, LimitExceeded

# The longest password accepted (bytes of UTF-8): a longer one costs hashing time for no
# strength (and bcrypt-style truncation surprises are worse).
MAX_PASSWORD_BYTES: Final = 1024
_SALT_BYTES: Final = 16
_KEY_BYTES: Final = 32
_SCHEME: Final = "scrypt"
# Bounds on the parameters a stored hash may name, so that a forged or damaged record
# cannot make a verification allocate gigabytes.
_MAX_LOG2_N: Final = 20
_MAX_R: Final = 16
_MAX_P: Final = 4


@dataclass(frozen=True, slots=True)
class PasswordCost:
    """scrypt's parameters: 2**log2_n iterations over r blocks, p lanes (memory ~ 128 * r *
    2**log2_n bytes)."""

    log2_n: int = 15
    r: int = 8
    p: int = 1


# For tests: the cheapest cost scrypt takes, a thousand times faster.
CHEAP_COST: Final = PasswordCost(log2_n=4, r=1, p=1)


def check_password(password: str) -> None:
    """InvalidRequest unless `password` is 1..MAX_PASSWORD_BYTES bytes."""
    size = len(password.encode())
    if size == 0:
        raise InvalidRequest("the password is empty")
    if size > MAX_PASSWORD_BYTES:
        raise LimitExceeded("password length", size, "MAX_PASSWORD_BYTES", MAX_PASSWORD_BYTES)


def _derive(password: str, salt: bytes, cost: PasswordCost) -> bytes:
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=1 << cost.log2_n,
        r=cost.r,
        p=cost.p,
        maxmem=256 << 20,
        dklen=_KEY_BYTES,
    )


def hash_password(password: str, cost: PasswordCost = PasswordCost()) -> str:
    """A new salted hash of `password` (checked by `check_password`). Slow: off the loop."""
    check_password(password)
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _derive(password, salt, cost)
    encoded = [base64.b64encode(part).decode() for part in (salt, key)]
    return "$".join([_SCHEME, str(cost.log2_n), str(cost.r), str(cost.p), *encoded])


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches the hash `stored`. False for a user without a password
    (""), an unreadable hash, or a password over the limit. Slow: off the loop."""
    if not stored or len(password.encode()) > MAX_PASSWORD_BYTES:
        return False
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        return False
    try:
        cost = PasswordCost(int(parts[1]), int(parts[2]), int(parts[3]))
        salt, key = (
            base64.b64decode(parts[4], validate=True),
            base64.b64decode(parts[5], validate=True),
        )
    except ValueError:
        return False
    if not (1 <= cost.log2_n <= _MAX_LOG2_N and 1 <= cost.r <= _MAX_R and 1 <= cost.p <= _MAX_P):
        return False
    return hmac.compare_digest(_derive(password, salt, cost), key)
