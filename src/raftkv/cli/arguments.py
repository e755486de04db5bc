"""What the client verbs read from the command line: argument types, the connection and
output flags every client verb shares, and the client settings they make.

  --endpoints URL,URL   the members to try (default: $RAFTKV_ENDPOINTS, else
                        http://127.0.0.1:8080)
  --output table|json   table (default): rich tables for people; json: one JSON document
                        on stdout, for scripts
  --base64              keys and values in base64 in the output (binary data in JSON)
  --timeout SECONDS     give up on the call after this long (default 10)
  --cacert, --cert, --key FILE
                        TLS: the cluster's CA, and this client's certificate and key
                        (default $RAFTKV_CACERT, $RAFTKV_CERT, $RAFTKV_KEY)
  --user NAME[:PASSWORD], --password PASSWORD
                        for a cluster with auth enabled (default $RAFTKV_USER,
                        $RAFTKV_PASSWORD); a user without a password is asked for it on
                        the terminal (never echoed)

and the verbs that take keys (put, get, del, range, txn, watch):

  --base64-input        KEY, END and VALUE arguments (and a txn file's keys and values)
                        are base64: binary keys, as HTTP's `?encoding=base64`. A flag of
                        its own, not --base64's: text keys that happen to be valid base64
                        ("blob") keep their meaning in existing scripts.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import os
import sys

from raftkv.cli.errors import UsageError
from raftkv.client import ClientSettings

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_TIMEOUT_S",
    "ENDPOINTS_VARIABLE",
    "TLS_FLAGS",
    "add_credential_flags",
    "add_tls_flags",
    "argument_bytes",
    "client_settings_of",
    "common_flags",
    "endpoints_hint",
    "endpoints_of",
    "input_bytes",
    "key_input_flags",
    "non_negative",
    "positive",
    "positive_seconds",
    "user_and_password",
]

ENDPOINTS_VARIABLE = "RAFTKV_ENDPOINTS"
USER_VARIABLE = "RAFTKV_USER"
PASSWORD_VARIABLE = "RAFTKV_PASSWORD"
DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S = 10.0


# -- argument types --------------------------------------------------------------------------


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return seconds


def positive(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def non_negative(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"not an integer >= 0: {text!r}")
    return int(text)


def argument_bytes(text: str) -> bytes:
    """An argument's bytes as the shell passed them (os.fsencode undoes the surrogate
    escapes Python uses for bytes that are not UTF-8)."""
    return os.fsencode(text)


# -- the flags every client verb takes -------------------------------------------------------

# The TLS flags (as etcdctl's), their environment variables, and what each names.
TLS_FLAGS = (
    ("--cacert", "RAFTKV_CACERT", "the CA that signed the cluster's certificates"),
    ("--cert", "RAFTKV_CERT", "this client's certificate, for a cluster that asks for one"),
    ("--key", "RAFTKV_KEY", "the private key of --cert"),
)


def common_flags() -> argparse.ArgumentParser:
    """A parent parser (`parents=[common_flags()]`) with the connection and output flags."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument(
        "--endpoints",
        default=None,
        metavar="URL,URL",
        help=f"members to try (default ${ENDPOINTS_VARIABLE}, else {DEFAULT_ENDPOINT})",
    )
    group.add_argument(
        "--output",
        choices=["table", "json"],
        default="table",
        help="table for people (default), json (one document on stdout) for scripts",
    )
    group.add_argument(
        "--base64", action="store_true", help="show keys and values in base64 (binary data)"
    )
    group.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"give up on the call after this long, retries included ({DEFAULT_TIMEOUT_S:g})",
    )
    add_tls_flags(common)
    add_credential_flags(common)
    return common


def add_tls_flags(parser: argparse.ArgumentParser) -> None:
    """--cacert, --cert and --key, kept as tls_cacert, tls_cert, tls_key (not "key": a
    verb's KEY argument)."""
    group = parser.add_argument_group("TLS (https:// endpoints)")
    for flag, variable, what in TLS_FLAGS:
        group.add_argument(
            flag,
            dest=_tls_destination(flag),
            default=None,
            metavar="FILE",
            help=f"{what} (default ${variable})",
        )


def add_credential_flags(parser: argparse.ArgumentParser) -> None:
    """--user and --password (`user_and_password` reads them)."""
    credentials = parser.add_argument_group("auth (a cluster with auth enabled)")
    credentials.add_argument(
        "--user",
        default=None,
        metavar="NAME[:PASSWORD]",
        help=f"log in as this user (default ${USER_VARIABLE}); without a password, it is "
        "asked for on the terminal",
    )
    credentials.add_argument(
        "--password",
        default=None,
        metavar="PASSWORD",
        help=f"the user's password (default ${PASSWORD_VARIABLE}; safer than the command line)",
    )


def _tls_destination(flag: str) -> str:
    return "tls_" + flag.removeprefix("--")


def key_input_flags() -> argparse.ArgumentParser:
    """A parent parser for the verbs that take keys: --base64-input."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument(
        "--base64-input",
        action="store_true",
        help="KEY, END and VALUE (and a txn file's keys and values) are base64 (binary keys)",
    )
    return flags


def input_bytes(arguments: argparse.Namespace, text: str, what: str) -> bytes:
    """A key or value argument's bytes: decoded from base64 with --base64-input, else as
    the shell passed it. UsageError if it is not base64."""
    if not arguments.base64_input:
        return argument_bytes(text)
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise UsageError(
            "usage", f"the {what} {text!r} is not base64 (--base64-input takes base64)"
        ) from None


def endpoints_of(arguments: argparse.Namespace) -> str:
    """--endpoints, else $RAFTKV_ENDPOINTS, else the default endpoint."""
    given: str | None = arguments.endpoints
    return given or os.environ.get(ENDPOINTS_VARIABLE) or DEFAULT_ENDPOINT


def endpoints_hint(arguments: argparse.Namespace) -> str:
    """Where the endpoints came from and how to give others, for an error line."""
    if arguments.endpoints:
        source = "--endpoints"
    elif os.environ.get(ENDPOINTS_VARIABLE):
        source = f"${ENDPOINTS_VARIABLE}"
    else:
        source = f"the default, {DEFAULT_ENDPOINT}"
    return (
        f"the endpoints came from {source}: name live members' client URLs with "
        f"--endpoints URL,URL or {ENDPOINTS_VARIABLE} (raftkv members lists them)"
    )


def user_and_password(arguments: argparse.Namespace) -> tuple[str, str]:
    """The user and password: --user NAME[:PASSWORD] and --password, else $RAFTKV_USER and
    $RAFTKV_PASSWORD; a user without a password is asked for it on the terminal.
    ("", "") without a user. UsageError if a password is needed and cannot be asked."""
    given: str = getattr(arguments, "user", None) or os.environ.get(USER_VARIABLE, "")
    if not given:
        return "", ""
    user, colon, password = given.partition(":")
    if not colon:
        password = getattr(arguments, "password", None) or os.environ.get(PASSWORD_VARIABLE, "")
    if not user:
        raise UsageError("usage", "--user needs a name: --user NAME[:PASSWORD]")
    if not password:
        if not sys.stdin.isatty():
            raise UsageError(
                "usage",
                f"no password for user {user!r}: give --user {user}:PASSWORD, --password, "
                f"or ${PASSWORD_VARIABLE} (stdin is not a terminal to ask on)",
            )
        password = getpass.getpass(f"password of {user}: ")
    return user, password


def client_settings_of(arguments: argparse.Namespace) -> ClientSettings:
    """--timeout bounds each request and the whole call, retries included; the TLS files
    come from --cacert/--cert/--key, else $RAFTKV_CACERT/$RAFTKV_CERT/$RAFTKV_KEY; the
    credentials from `user_and_password`."""
    timeout: float = arguments.timeout
    ca_file, cert_file, key_file = (
        getattr(arguments, _tls_destination(flag), None) or os.environ.get(variable, "")
        for flag, variable, _ in TLS_FLAGS
    )
    user, password = user_and_password(arguments)
    return ClientSettings(
        request_timeout_s=timeout,
        deadline_s=timeout,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        user=user,
        password=password,
    )
