"""Server verbs of the `raftkv` command: `serve`, `dev`, `config show`.

`serve` takes every `ServerSettings` setting as a flag (see `raftkv serve --help`), also
settable through `RAFTKV_*` variables and a TOML file (`--config`); precedence: flag,
environment, file, default. A bad setting (or a file one names that cannot be used) exits 2
with one line naming it, before anything is created; a node that cannot start here (a port
in use, a data dir it cannot write, a database damaged or in use, lost state) exits 1 with
one line saying what and what to do; so does a node that fails while serving.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from raftkv.cli import EXIT_USAGE
from raftkv.server.settings import (
    SETTING_NAMES,
    ServerSettings,
    SettingsInvalid,
    environment_warnings,
    flag_of,
    load_settings,
    render_settings,
    setting_doc,
    setting_type,
)

# `raftkv serve`: the node could not start here, or failed while serving (see above).
EXIT_START_FAILED = 1


def add_commands(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run one node",
        description="Run one raftkv node. With no settings: a one-node store, clients on "
        "127.0.0.1:8080, data in ./data.",
    )
    add_setting_flags(serve)
    serve.add_argument(
        "--stop-on-stdin-eof", action="store_true", help=argparse.SUPPRESS
    )  # used by `raftkv dev`
    serve.set_defaults(handler=_serve)

    dev = subparsers.add_parser(
        "dev",
        help="run a local cluster as child processes",
        description="Start a local cluster; Ctrl-C or SIGTERM stops every node.",
    )
    dev.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    dev.add_argument(
        "--base-port", type=int, default=8080, help="node i serves clients on BASE+i-1 (8080)"
    )
    dev.add_argument(
        "--peer-base-port",
        type=int,
        default=None,
        help="node i listens for peers on PEER_BASE+i-1 (default BASE-1000)",
    )
    dev.add_argument(
        "--etcd-base-port",
        type=int,
        default=None,
        help="node i serves etcd's v3 gRPC API on ETCD_BASE+i-1 (default BASE-5701: 2379; "
        "0: not served)",
    )
    dev.add_argument("--data-dir", default="data/dev", help="node i keeps data in DIR/i")
    dev.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    dev.add_argument(
        "--tls",
        action="store_true",
        help="peers use mutual TLS, with a throwaway CA and certificates in DATA_DIR/certs "
        "(made once, then reused)",
    )
    dev.set_defaults(handler=_dev)

    recover = subparsers.add_parser(
        "recover",
        help="disaster recovery: restart a member as a one-node cluster",
        description="After a quorum is lost for good: keep this stopped member's data and "
        "make it the only member of a new cluster (then add others back). Run it on ONE "
        "member only, the one that knew the most (highest commit index), with its node "
        "stopped.",
    )
    recover.add_argument(
        "--force-new-cluster",
        action="store_true",
        required=True,
        help="required: confirms you mean to discard the other members",
    )
    recover.add_argument("--data-dir", type=Path, required=True, help="the member's data dir")
    recover.add_argument(
        "--listen-peer", default="", help="its peer address from now on (default: as before)"
    )
    recover.set_defaults(handler=_recover)

    config = subparsers.add_parser("config", help="show the effective settings")
    config_verbs = config.add_subparsers(dest="config_command", metavar="VERB", required=True)
    show = config_verbs.add_parser(
        "show", help="print the effective settings as TOML (flags, env, file, defaults)"
    )
    add_setting_flags(show)
    show.set_defaults(handler=_config_show)


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None, help="a TOML file of settings (or RAFTKV_CONFIG)"
    )
    group = parser.add_argument_group("settings (also RAFTKV_<NAME> and TOML keys)")
    for name in SETTING_NAMES:
        # A boolean flag alone means true (`--auto-promote`); it also takes a value.
        boolean: dict[str, Any] = (
            {"nargs": "?", "const": "true"} if setting_type(name) is bool else {}
        )
        group.add_argument(
            flag_of(name), dest=f"setting_{name}", default=None, help=setting_doc(name), **boolean
        )


def settings_of(arguments: argparse.Namespace) -> ServerSettings:
    """The settings of the flags, environment and file; a warning line on stderr for each
    RAFTKV_* variable that sets nothing but looks like a typo of a setting's name."""
    flags = {
        name: getattr(arguments, f"setting_{name}")
        for name in SETTING_NAMES
        if getattr(arguments, f"setting_{name}") is not None
    }
    for warning in environment_warnings():
        print(f"raftkv: warning: {warning}", file=sys.stderr)
    return load_settings(flags, config_file=arguments.config)


def _serve(arguments: argparse.Namespace) -> int:
    try:
        settings = settings_of(arguments)
    except SettingsInvalid as error:
        print(f"raftkv serve: {error}", file=sys.stderr)
        return EXIT_USAGE
    # Imported here: the server's dependencies (RocksDB, gRPC, aiohttp) load only to serve.
    from raftkv.raft.driver.errors import StateUnusable  # noqa: PLC0415
    from raftkv.raft.storage.base import StorageCorrupt  # noqa: PLC0415
    from raftkv.raft.storage.rocks import StorageOpenError  # noqa: PLC0415
    from raftkv.raft.transport.base import TransportError  # noqa: PLC0415
    from raftkv.raft.transport.settings import TransportSettingsInvalid  # noqa: PLC0415
    from raftkv.server.collector import tune_collector  # noqa: PLC0415
    from raftkv.server.event_loops import loop_factory  # noqa: PLC0415
    from raftkv.server.identity import StateLost  # noqa: PLC0415
    from raftkv.server.logs import configure_logging  # noqa: PLC0415
    from raftkv.server.native_stderr import NativeStderr  # noqa: PLC0415
    from raftkv.server.preflight import StartFailed  # noqa: PLC0415
    from raftkv.server.runner import JoinFailed, run_server, started_line  # noqa: PLC0415
    from raftkv.server.switch_interval import shorten_switch_interval  # noqa: PLC0415

    # gRPC's C core writes to descriptor 2 in its own format: logged in ours instead.
    native = NativeStderr()
    log_context = configure_logging(
        settings.log_level, settings.log_format, settings.id, native=native
    )
    tune_collector()  # everything is imported: freeze it (see raftkv.server.collector)
    shorten_switch_interval()  # the loop waits less for the GIL (raftkv.server.switch_interval)
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            return runner.run(
                run_server(
                    settings,
                    on_started=lambda _: print(started_line(settings), flush=True),
                    stop_on_stdin_eof=arguments.stop_on_stdin_eof,
                    log_context=log_context,
                )
            )
    except (SettingsInvalid, TransportSettingsInvalid) as error:
        print(f"raftkv serve: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (
        OSError,
        StartFailed,
        TransportError,
        JoinFailed,
        StateLost,
        StateUnusable,
        StorageCorrupt,
        StorageOpenError,
    ) as error:
        # A port is taken; the data dir cannot be written; no cluster to join; the data
        # dir lost its state, or what is stored is damaged or cannot be used; the database
        # cannot be opened. One line each, no traceback.
        print(f"raftkv serve: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_START_FAILED
    finally:
        native.stop()


def _dev(arguments: argparse.Namespace) -> int:
    from raftkv.server.dev import DevCluster, run_dev  # noqa: PLC0415

    if not 1 <= arguments.nodes <= 99:
        print("raftkv dev: --nodes must be in 1..99", file=sys.stderr)
        return EXIT_USAGE
    peer_base = arguments.peer_base_port
    if peer_base is None:
        peer_base = arguments.base_port - 1000
    etcd_base = arguments.etcd_base_port
    if etcd_base is None:
        etcd_base = arguments.base_port - 5701
    bases = [("--base-port", arguments.base_port), ("--peer-base-port", peer_base)]
    if etcd_base != 0:
        bases.append(("--etcd-base-port", etcd_base))
    for name, base in bases:
        if not 1 <= base <= 65535 - arguments.nodes:
            print(f"raftkv dev: {name} {base} is out of range", file=sys.stderr)
            return EXIT_USAGE
    cluster = DevCluster(
        nodes=arguments.nodes,
        base_port=arguments.base_port,
        peer_base_port=peer_base,
        etcd_base_port=etcd_base,
        data_dir=Path(arguments.data_dir),
        log_level=arguments.log_level,
        tls=arguments.tls,
    )
    return asyncio.run(run_dev(cluster))


def _recover(arguments: argparse.Namespace) -> int:
    from raftkv.raft.storage.rocks import StorageOpenError  # noqa: PLC0415
    from raftkv.server.recover import recover  # noqa: PLC0415

    try:
        report = asyncio.run(recover(arguments.data_dir, arguments.listen_peer))
    except SettingsInvalid as error:
        print(f"raftkv recover: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (StorageOpenError, TimeoutError, ValueError) as error:
        print(f"raftkv recover: {error}", file=sys.stderr)
        return 1
    print(report, flush=True)
    return 0


def _config_show(arguments: argparse.Namespace) -> int:
    try:
        settings = settings_of(arguments)
    except SettingsInvalid as error:
        print(f"raftkv config: {error}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(render_settings(settings))
    return 0
