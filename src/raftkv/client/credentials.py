"""`PasswordLogin`: the client's credentials, as an httpx auth flow.

With a user and password (`ClientSettings.user`, `password`), each request carries the
token of the client's last login as `Authorization: Bearer <token>`. The client logs in
when it has no token yet and the server asks for one, or when its token ran out:
1. the request goes out (with the token, if the client holds one);
2. a 401 `auth_required` or `invalid_token` (none given, or it expired or was voided by a
   password change) makes the client log in (`POST /v1/auth/authenticate` at the same
   member) and send the request once more with the new token. A 401 means the server
   applied nothing, so the repeat is safe;
3. a refused login (wrong password, too many failures) is the call's answer: the call
   raises it as a refusal, naming the login's error.
While auth is disabled the server never asks, so the client never logs in. The password
stays in this object only; it is never logged and never part of a message.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Final

import httpx
import msgspec

from raftkv.api.auth import AuthenticateAnswer, AuthenticateBody
from raftkv.api.errors import ErrorAnswer
from raftkv.client.settings import ClientSettings

__all__ = ["PasswordLogin", "credentials_of"]

_LOGIN_PATH: Final = "/v1/auth/authenticate"
# The refusals a login answers.
_ASKS_FOR_LOGIN: Final = frozenset({"auth_required", "invalid_token"})
_ERROR = msgspec.json.Decoder(ErrorAnswer)
_LOGIN = msgspec.json.Decoder(AuthenticateAnswer)


class PasswordLogin(httpx.Auth):
    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self._password = password
        # The last login's token (None: no login yet, or the last one was refused).
        self._token: str | None = None

    def __repr__(self) -> str:
        return f"PasswordLogin(user={self.user!r})"

    def _with_token(self, request: httpx.Request) -> httpx.Request:
        if self._token is not None:
            request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def _login_request(self, request: httpx.Request) -> httpx.Request:
        body = msgspec.json.encode(AuthenticateBody(name=self.user, password=self._password))
        return httpx.Request(
            "POST",
            request.url.copy_with(path=_LOGIN_PATH, query=None),
            content=body,
            headers={"content-type": "application/json"},
            extensions=request.extensions,
        )

    @staticmethod
    def _asks_for_login(response: httpx.Response) -> bool:
        """Whether the (read) 401 `response` asks for a login."""
        try:
            return _ERROR.decode(response.content).error.code in _ASKS_FOR_LOGIN
        except msgspec.DecodeError:
            return False

    def _took_token(self, login: httpx.Response) -> bool:
        """Keep the token of a (read) login answer; False if the login was refused."""
        if login.status_code != 200:
            self._token = None
            return False
        try:
            self._token = _LOGIN.decode(login.content).token
        except msgspec.DecodeError:
            self._token = None
            return False
        return True

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        if request.url.path == _LOGIN_PATH:
            yield request
            return
        response = yield self._with_token(request)
        if response.status_code != 401:
            return
        response.read()
        if not self._asks_for_login(response):
            return
        login = yield self._login_request(request)
        login.read()
        if self._took_token(login):
            yield self._with_token(request)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if request.url.path == _LOGIN_PATH:
            yield request
            return
        response = yield self._with_token(request)
        if response.status_code != 401:
            return
        await response.aread()
        if not self._asks_for_login(response):
            return
        login = yield self._login_request(request)
        await login.aread()
        if self._took_token(login):
            yield self._with_token(request)


def credentials_of(settings: ClientSettings) -> PasswordLogin | None:
    """The login of `settings`' user and password, None without a user. (A user without a
    password is one a client certificate names: nothing to log in with.)"""
    if not settings.user or not settings.password:
        return None
    return PasswordLogin(settings.user, settings.password)
