"""The HTTP server reaches the store through `KvService` only: no handler, guard or task
reads `service.node` or `service.machine` (KvService's docstring names the one exception:
the metrics, which read both's counters)."""

from __future__ import annotations

import ast
from pathlib import Path

import raftkv.server

SERVER = Path(raftkv.server.__file__).parent
# (module, line text) of the reads allowed, each with why.
ALLOWED = {
    # The metrics observe the node's and the state machine's counters, read-only.
    ("app.py", "metrics = Metrics(service.node, service.machine)"),
}


def test_the_server_goes_through_kv_service() -> None:
    found = set()
    for path in sorted(SERVER.glob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("node", "machine")
                and ast.unparse(node.value).split(".")[-1] == "service"
            ):
                found.add((path.name, lines[node.lineno - 1].strip()))
    assert found <= ALLOWED
