"""`raftkv certs`: a cluster's TLS certificates (`raftkv.server.certificates`).

`certs create` writes a new CA and a certificate per node (and per client user) into a
directory, then prints which settings each node takes and how a client uses them;
`certs add-node` issues one more node certificate from the CA already there. A file in the
way (without `--force`), a CA that cannot be read, an id, host, name or validity out of
bounds: one line, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raftkv.cli import EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from raftkv.server.certificates import ClusterDirectory

# raftkv.server.certificates bounds the ids (and everything else); this bounds the text
# parsed before. It is imported only when a verb runs: `cryptography` loads for `certs`
# alone, not for every `raftkv` command.
MAX_NODE_LIST_LENGTH = 25_000


def add_commands(subparsers: Any) -> None:
    certs = subparsers.add_parser(
        "certs",
        help="create a cluster's TLS certificates (a CA, nodes, clients)",
        description="A cluster's certificates for TLS: a CA, one certificate per node (for "
        "its peer and client ports, and to dial peers), one per client user.",
    )
    verbs = certs.add_subparsers(dest="certs_command", metavar="VERB", required=True)

    create = verbs.add_parser(
        "create",
        help="a new CA and the certificates of the given nodes and clients",
        description="Write DIR/ca.pem, DIR/ca-key.pem, DIR/node-ID.pem and DIR/node-ID-key.pem "
        "for each node, DIR/client-NAME.pem and DIR/client-NAME-key.pem for each client; "
        "then print the settings to give each node. Keys are written 0600; existing files "
        "are not replaced unless --force.",
    )
    create.add_argument("--dir", type=Path, required=True, help="where to write the files")
    create.add_argument(
        "--nodes", required=True, help="the node ids, comma-separated (1,2,3)", metavar="IDS"
    )
    _add_host_flag(create)
    create.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="NAME",
        help="also a client certificate whose common name is NAME (repeatable)",
    )
    _add_days_flag(create)
    create.add_argument(
        "--ca-days", type=int, default=3650, help="how long the CA is valid (3650 days)"
    )
    _add_force_flag(create)
    create.set_defaults(handler=_create)

    add_node = verbs.add_parser(
        "add-node",
        help="one more node certificate from the CA in DIR (a member joining later)",
        description="Write DIR/node-ID.pem and DIR/node-ID-key.pem, signed by DIR/ca.pem's "
        "key DIR/ca-key.pem.",
    )
    add_node.add_argument("--dir", type=Path, required=True, help="where the CA is")
    add_node.add_argument("--node", type=int, required=True, help="the new node's id")
    _add_host_flag(add_node)
    _add_days_flag(add_node)
    _add_force_flag(add_node)
    add_node.set_defaults(handler=_add_node)


def _add_host_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="HOST",
        help="a DNS name or IP address peers and clients reach the nodes by, besides "
        "localhost and 127.0.0.1 (repeatable)",
    )


def _add_days_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--days", type=int, default=365, help="how long certificates are valid (365 days)"
    )


def _add_force_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="replace files that exist")


def node_ids(text: str) -> list[int]:
    """`1,2,3` as ids; ValueError naming what is wrong."""
    if len(text) > MAX_NODE_LIST_LENGTH:
        raise ValueError(f"--nodes is longer than {MAX_NODE_LIST_LENGTH} characters")
    ids = []
    for part in text.split(","):
        if not part.strip().isdigit():
            raise ValueError(f"--nodes {text!r}: give ids as 1,2,3")
        ids.append(int(part))
    return ids


def _create(arguments: argparse.Namespace) -> int:
    from raftkv.server.certificates import CertificateError, create_cluster  # noqa: PLC0415

    try:
        nodes = node_ids(arguments.nodes)
        layout = create_cluster(
            arguments.dir,
            nodes,
            hosts=arguments.host,
            clients=arguments.client,
            days=arguments.days,
            ca_days=arguments.ca_days,
            force=arguments.force,
        )
    except (ValueError, CertificateError) as error:
        print(f"raftkv certs: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"raftkv certs: a CA, {len(nodes)} node and {len(arguments.client)} client "
        f"certificate(s) in {layout.path}"
    )
    for line in usage(layout, "N", arguments.client):
        print(line)
    print(
        f"keep {layout.ca_key_file} safe, offline: it issues certificates "
        f"(raftkv certs add-node --dir {layout.path} --node ID)"
    )
    return EXIT_OK


def _add_node(arguments: argparse.Namespace) -> int:
    from raftkv.server.certificates import (  # noqa: PLC0415
        CertificateError,
        ClusterDirectory,
        add_node,
    )

    try:
        files = add_node(
            arguments.dir,
            arguments.node,
            hosts=arguments.host,
            days=arguments.days,
            force=arguments.force,
        )
    except CertificateError as error:
        print(f"raftkv certs: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"raftkv certs: node {arguments.node}'s certificate in {files.cert_file}")
    for line in usage(ClusterDirectory(arguments.dir), str(arguments.node), []):
        print(line)
    return EXIT_OK


def usage(layout: ClusterDirectory, node: str, clients: list[str]) -> list[str]:
    """How node `node` (an id, or a placeholder) and clients use the files of `layout`."""
    files = layout.node(node)
    client_flags = "".join(
        f" [--cert {layout.client(user).cert_file} --key {layout.client(user).key_file}]"
        for user in clients
    )
    return [
        f"node {node}'s settings (raftkv serve flags; also RAFTKV_* variables and TOML keys):",
        f"  peers (mutual TLS): --peer-ca-file {layout.ca_file} "
        f"--peer-cert-file {files.cert_file} --peer-key-file {files.key_file}",
        f"  clients (TLS): --cert-file {files.cert_file} --key-file {files.key_file}"
        f" [--client-ca-file {layout.ca_file}: only clients with a certificate of this CA]",
        f"clients: raftkv --cacert {layout.ca_file}{client_flags} --endpoints https://HOST:PORT"
        f" ...; curl --cacert {layout.ca_file} https://HOST:PORT/v1/status",
    ]
