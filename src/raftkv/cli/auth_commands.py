"""The auth verbs (as etcdctl's): `auth enable|disable|status`, `user
add|get|list|delete|passwd|grant-role|revoke-role` and `role
add|get|list|delete|grant-permission|revoke-permission`.

New passwords (`user add`, `user passwd`) come from `NAME:PASSWORD`, else the terminal
(asked twice, never echoed), else one line of stdin (`--password-stdin`, for scripts), so
no password need appear on a command line. Permissions take KEY [END] or KEY --prefix, as
`raftkv range` does (END "\\0": every key from KEY on).
"""

from __future__ import annotations

import argparse
import getpass
import sys

from raftkv.cli import EXIT_OK
from raftkv.cli.arguments import input_bytes, key_input_flags
from raftkv.cli.errors import UsageError
from raftkv.cli.output import Output, add_row, new_table, print_json, print_table
from raftkv.cli.running import Verb, run_verb
from raftkv.client import AuthStatus, Role, SyncClient, User

__all__ = ["add_commands"]


def add_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: list[argparse.ArgumentParser],
) -> None:
    def verbs(name: str, help_text: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        return parser.add_subparsers(dest=f"{name}_command", metavar="VERB", required=True)

    def verb(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        help_text: str,
        handler: Verb,
        parents: list[argparse.ArgumentParser] | None = None,
    ) -> argparse.ArgumentParser:
        parser = group.add_parser(
            name, help=help_text, description=help_text, parents=[*common, *(parents or [])]
        )
        parser.set_defaults(handler=run_verb(handler))
        return parser

    auth = verbs("auth", "turn authentication on or off, or see whether it is on")
    verb(auth, "status", "whether auth is enabled, and the auth revision", _auth_status)
    verb(
        auth,
        "enable",
        "enable auth (needs user root with the role root: raftkv user add root; raftkv "
        "user grant-role root root)",
        _auth_enable,
    )
    verb(auth, "disable", "disable auth (root): every request is allowed again", _auth_disable)

    user = verbs("user", "add, list and change users")
    add = verb(user, "add", "add a user (root)", _user_add)
    add.add_argument("name", metavar="NAME[:PASSWORD]")
    add.add_argument(
        "--no-password",
        action="store_true",
        help="a user only a client certificate (its common name) stands for",
    )
    _password_stdin(add)
    verb(user, "get", "a user and its roles (root, or the user itself)", _user_get).add_argument(
        "name", metavar="NAME"
    )
    verb(user, "list", "every user (root)", _user_list)
    verb(user, "delete", "delete a user (root); its tokens end", _user_delete).add_argument(
        "name", metavar="NAME"
    )
    passwd = verb(
        user, "passwd", "change a password (root, or the user itself); its tokens end", _passwd
    )
    passwd.add_argument("name", metavar="NAME[:PASSWORD]")
    _password_stdin(passwd)
    for name, help_text, handler in (
        ("grant-role", "grant a user a role (root)", _grant_role),
        ("revoke-role", "take a role from a user (root)", _revoke_role),
    ):
        parser = verb(user, name, help_text, handler)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("role", metavar="ROLE")

    role = verbs("role", "add, list and change roles and their permissions")
    verb(role, "add", "add a role (root)", _role_add).add_argument("name", metavar="ROLE")
    verb(role, "get", "a role and its permissions (root)", _role_get).add_argument(
        "name", metavar="ROLE"
    )
    verb(role, "list", "every role and its permissions (root)", _role_list)
    verb(role, "delete", "delete a role (root); its users lose it", _role_delete).add_argument(
        "name", metavar="ROLE"
    )
    grant = verb(
        role,
        "grant-permission",
        "give a role read, write or readwrite on KEY, [KEY, END) or a prefix (root)",
        _grant_permission,
        [key_input_flags()],
    )
    grant.add_argument("name", metavar="ROLE")
    grant.add_argument("kind", choices=["read", "write", "readwrite"])
    _range_arguments(grant)
    revoke = verb(
        role,
        "revoke-permission",
        "take from a role its permission on exactly KEY, [KEY, END) or a prefix (root)",
        _revoke_permission,
        [key_input_flags()],
    )
    revoke.add_argument("name", metavar="ROLE")
    _range_arguments(revoke)


def _password_stdin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the new password from the first line of stdin (scripts)",
    )


def _range_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="KEY")
    parser.add_argument("end", metavar="END", nargs="?", default="")
    parser.add_argument("--prefix", action="store_true", help="every key starting with KEY")


def _new_password(arguments: argparse.Namespace) -> tuple[str, str]:
    """NAME and its new password: from NAME:PASSWORD, --password-stdin, or the terminal."""
    name, colon, password = str(arguments.name).partition(":")
    if colon:
        return name, password
    if arguments.password_stdin:
        return name, sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UsageError(
            "usage",
            f"no new password for {name!r}: give NAME:PASSWORD or --password-stdin (stdin "
            "is not a terminal to ask on)",
        )
    first = getpass.getpass(f"new password of {name}: ")
    if getpass.getpass("again: ") != first:
        raise UsageError("usage", "the two passwords differ; nothing was changed")
    return name, first


# -- auth ------------------------------------------------------------------------------------


def _show_status(status: AuthStatus, output: Output) -> int:
    if output.as_json:
        print_json({"enabled": status.enabled, "auth_revision": status.auth_revision})
    else:
        state = "enabled" if status.enabled else "disabled"
        print(f"auth is {state} (auth revision {status.auth_revision})")
    return EXIT_OK


def _auth_status(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    return _show_status(client.auth_status(), output)


def _auth_enable(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    return _show_status(client.auth_enable(), output)


def _auth_disable(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    return _show_status(client.auth_disable(), output)


# -- users -----------------------------------------------------------------------------------


def _show_users(users: tuple[User, ...], output: Output) -> int:
    if output.as_json:
        print_json(
            {
                "users": [
                    {
                        "name": user.name,
                        "roles": list(user.roles),
                        "has_password": user.has_password,
                    }
                    for user in users
                ]
            }
        )
        return EXIT_OK
    table = new_table("user", "roles", "password")
    for user in users:
        add_row(
            table,
            output.shown(user.name.encode()),
            ", ".join(user.roles) or "-",
            "yes" if user.has_password else "no (certificate only)",
        )
    print_table(table)
    return EXIT_OK


def _user_add(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    if arguments.no_password:
        name, password = str(arguments.name), None
        if ":" in name:
            raise UsageError("usage", "--no-password and NAME:PASSWORD: give one")
    else:
        name, password = _new_password(arguments)
    return _show_users((client.add_user(name, password),), output)


def _user_get(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    return _show_users((client.user(arguments.name),), output)


def _user_list(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    return _show_users(client.users(), output)


def _user_delete(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    client.delete_user(arguments.name)
    if output.as_json:
        print_json({"deleted": arguments.name})
    else:
        print(f"deleted user {arguments.name}")
    return EXIT_OK


def _passwd(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    name, password = _new_password(arguments)
    client.change_password(name, password)
    if output.as_json:
        print_json({"changed": name})
    else:
        print(f"changed the password of {name}; its earlier tokens no longer work")
    return EXIT_OK


def _grant_role(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    return _show_users((client.grant_role(arguments.name, arguments.role),), output)


def _revoke_role(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    return _show_users((client.revoke_role(arguments.name, arguments.role),), output)


# -- roles -----------------------------------------------------------------------------------


def _range_text(output: Output, key: bytes, range_end: bytes) -> str:
    if range_end == b"":
        return output.shown(key)
    if range_end == b"\0":
        return f"{output.shown(key)} and every key after"
    return f"[{output.shown(key)}, {output.shown(range_end)})"


def _show_roles(roles: tuple[Role, ...], output: Output) -> int:
    if output.as_json:
        print_json(
            {
                "roles": [
                    {
                        "name": role.name,
                        "permissions": [
                            {
                                "kind": permission.kind,
                                "key": output.text(permission.key, "key"),
                                "range_end": output.text(permission.range_end, "range_end"),
                            }
                            for permission in role.permissions
                        ],
                    }
                    for role in roles
                ]
            }
        )
        return EXIT_OK
    table = new_table("role", "permission", "keys")
    for role in roles:
        if role.name == "root":
            add_row(table, "root", "everything", "every key, and administration")
        elif not role.permissions:
            add_row(table, output.shown(role.name.encode()), "-", "-")
        for permission in role.permissions:
            keys = _range_text(output, permission.key, permission.range_end)
            add_row(table, output.shown(role.name.encode()), permission.kind, keys)
    print_table(table)
    return EXIT_OK


def _role_add(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    return _show_roles((client.add_role(arguments.name),), output)


def _role_get(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    return _show_roles((client.role(arguments.name),), output)


def _role_list(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    return _show_roles(client.roles(), output)


def _role_delete(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    client.delete_role(arguments.name)
    if output.as_json:
        print_json({"deleted": arguments.name})
    else:
        print(f"deleted role {arguments.name}")
    return EXIT_OK


def _range_of(arguments: argparse.Namespace) -> tuple[bytes, bytes]:
    key = input_bytes(arguments, arguments.key, "key")
    end = input_bytes(arguments, arguments.end, "end") if arguments.end else b""
    if arguments.prefix and end:
        raise UsageError("usage", "give END or --prefix, not both")
    return key, end


def _grant_permission(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    key, end = _range_of(arguments)
    role = client.grant_permission(
        arguments.name, arguments.kind, key, end, prefix=arguments.prefix
    )
    return _show_roles((role,), output)


def _revoke_permission(client: SyncClient, arguments: argparse.Namespace, output: Output) -> int:
    key, end = _range_of(arguments)
    role = client.revoke_permission(arguments.name, key, end, prefix=arguments.prefix)
    return _show_roles((role,), output)
