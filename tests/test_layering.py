"""The architecture's dependency rules, checked on the source (ARCHITECTURE.md §2).

- `raftkv.raft.core` is pure: no asyncio, clock, global randomness, files, sockets,
  threads, gRPC or RocksDB. It may take a `random.Random` instance but never import
  `random` itself.
- `raftkv.raft` never imports the layers above it (kv, server, client, cli), so the Raft
  library can be embedded on its own; nor the server's libraries (aiohttp, and
  prometheus_client: the node keeps plain counters and histograms, the server exports them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "raftkv"

CORE_FORBIDDEN = {
    "asyncio",
    "time",
    "random",
    "os",
    "socket",
    "threading",
    "multiprocessing",
    "concurrent",
    "subprocess",
    "select",
    "selectors",
    "signal",
    "datetime",
    "pathlib",
    "io",
    "shutil",
    "tempfile",
    "pickle",
    "grpc",
    "rocksdict",
}
RAFT_FORBIDDEN_PREFIXES = (
    "raftkv.kv",
    "raftkv.server",
    "raftkv.client",
    "raftkv.cli",
    "aiohttp",
    "prometheus_client",
)


# The one allowed use of `random` in the core: the Random class, to accept an instance.
ALLOWED_IMPORTS = {("random", "Random")}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every absolute import, except ALLOWED_IMPORTS."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names = {(node.module, alias.name) for alias in node.names}
            if not names <= ALLOWED_IMPORTS:
                found.append((node.lineno, node.module))
    return found


def python_files(package: Path) -> list[Path]:
    files = sorted(package.rglob("*.py"))
    assert files, f"no sources found under {package}"
    return files


@pytest.mark.parametrize("path", python_files(SOURCE / "raft" / "core"), ids=lambda p: p.name)
def test_core_is_pure(path: Path) -> None:
    for line, module in imported_modules(path):
        top = module.split(".")[0]
        assert top not in CORE_FORBIDDEN, f"{path.name}:{line} imports {module}"
        # Only the core itself and the standard library's pure modules may be used.
        if top == "raftkv":
            assert module.startswith("raftkv.raft.core"), f"{path.name}:{line} imports {module}"


@pytest.mark.parametrize("path", python_files(SOURCE / "raft"), ids=lambda p: p.name)
def test_raft_does_not_import_upper_layers(path: Path) -> None:
    for line, module in imported_modules(path):
        assert not module.startswith(RAFT_FORBIDDEN_PREFIXES), f"{path}:{line} imports {module}"


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    # Guard against a checker that silently finds nothing.
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import asyncio\nfrom random import randrange\nfrom random import Random\nfrom . import x\n"
    )
    assert [module for _, module in imported_modules(sample)] == ["asyncio", "random"]
