"""The `raftkv` command starts fast: building its parser (every verb's flags, the server's
settings included) loads neither the store, the Raft library nor the server's frameworks;
each client verb's run pays only for the HTTP client."""

from __future__ import annotations

import subprocess
import sys


def test_the_parser_loads_neither_the_store_nor_the_raft_library() -> None:
    code = (
        "import sys, raftkv.cli; raftkv.cli.build_parser(); "
        "print(sorted(m for m in ('aiohttp', 'grpc', 'rocksdict', 'raftkv.kv', 'raftkv.raft', "
        "'raftkv.server.app') if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"
