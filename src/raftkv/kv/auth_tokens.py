"""Auth tokens: HMAC-SHA256-signed, expiring, stateless.

A token is "rk1.<payload>.<signature>", both parts base64url without padding: the payload
is the msgpack of `TokenClaims` (user, the revision that last set the user's password,
expiry in Unix milliseconds), the signature HMAC-SHA256 over "rk1." + payload with the
cluster's signing key (`raftkv.kv.auth_state`: drawn by the member that proposed `auth
enable` and replicated through the log, so every member verifies every member's tokens).

Why HMAC tokens and not JWT or etcd's "simple" tokens: a JWT library would add a
dependency and algorithm choices (the `alg: none` class of mistakes) for one algorithm we
control at both ends; etcd's simple tokens live in one member's memory, so a client must
authenticate again at each member it fails over to. A token here is valid on every member
until it expires, its user's password changes, its user is deleted, or auth is disabled
(the key goes with it); permissions are looked up at each request, so role changes apply
at once.

Expiry is read on each member's wall clock: members' clocks should agree within seconds
(NTP), as for etcd's JWT tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Final

import msgspec

from raftkv.kv.errors import InvalidToken

# A longer Authorization value is refused before anything decodes it.
MAX_TOKEN_BYTES: Final = 1024
_PREFIX: Final = "rk1."
_BEARER: Final = "bearer "


class TokenClaims(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    user: str
    password_revision: int
    expires_ms: int


_CLAIMS_DECODER = msgspec.msgpack.Decoder(TokenClaims)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, signed: str) -> bytes:
    return hmac.new(key, signed.encode(), hashlib.sha256).digest()


def bearer_token(credential: str) -> str:
    """The token in an `Authorization` value or a gRPC metadata value: "Bearer <token>"
    (any case), or the bare token, as etcd's clients send it."""
    text = credential.strip()
    if text[: len(_BEARER)].lower() == _BEARER:
        return text[len(_BEARER) :].strip()
    return text


def issue_token(key: bytes, claims: TokenClaims) -> str:
    payload = _PREFIX + _b64(msgspec.msgpack.encode(claims))
    return f"{payload}.{_b64(_sign(key, payload))}"


def read_token(key: bytes, token: str, now_ms: int) -> TokenClaims:
    """The claims of `token` if `key` signed it and it has not expired at `now_ms`;
    InvalidToken saying why not. (Whether its user and password revision still hold is
    the caller's check.)"""
    if len(token) > MAX_TOKEN_BYTES or not token.isascii():
        raise InvalidToken("malformed")
    payload, dot, signature = token.rpartition(".")
    if not dot or not payload.startswith(_PREFIX):
        raise InvalidToken("malformed")
    try:
        signature_bytes = _unb64(signature)
        claims_bytes = _unb64(payload[len(_PREFIX) :])
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed") from None
    if not key or not hmac.compare_digest(_sign(key, payload), signature_bytes):
        raise InvalidToken(
            "not signed by this cluster (forged, or from before auth was re-enabled)"
        )
    try:
        claims = _CLAIMS_DECODER.decode(claims_bytes)
    except msgspec.DecodeError:
        raise InvalidToken("malformed") from None
    if claims.expires_ms <= now_ms:
        raise InvalidToken("expired")
    return claims
