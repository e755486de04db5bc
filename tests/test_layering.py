"""The architecture's dependency rules and the size of modules, checked on the source
(docs/architecture.md#layers).

One row of `LAYER_RULES` per rule: the packages it governs, the imports they must not make,
and the narrower imports still allowed. Every import counts (module level, inside functions
and under `TYPE_CHECKING`: a type-only dependency is still a dependency), relative ones
resolved. A row that is broken today lists each offending import in `KNOWN_VIOLATIONS`,
with the fix that removes it; the rule still holds for everything else, and an entry that
no longer matches an import fails the test, so the list only shrinks.

Modules stay under `MAX_MODULE_LINES` (the style rule: split a file by responsibility when
it passes ~800 lines); `OVERSIZED_MODULES` names each exception, why, and its ceiling.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src"

# The core may not reach the outside world: no event loop, clock, global randomness, files,
# sockets, threads, processes, gRPC or RocksDB. (`from random import Random`, to accept an
# injected instance, is the one allowed use of `random`: see ALLOWED_NAMES.)
CORE_FORBIDDEN_STDLIB = (
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
)
ALLOWED_NAMES = {("random", "Random")}


@dataclass(frozen=True)
class LayerRule:
    name: str
    # Packages (dotted) whose modules the rule governs.
    packages: tuple[str, ...]
    # Modules (dotted prefixes) they must not import...
    forbidden: tuple[str, ...]
    # ... except these narrower prefixes.
    allowed: tuple[str, ...] = ()
    why: str = ""


LAYER_RULES = (
    LayerRule(
        "core is pure",
        packages=("raftkv.raft.core",),
        forbidden=(*CORE_FORBIDDEN_STDLIB, "raftkv"),
        allowed=("raftkv.raft.core",),
        why="messages and ticks in, a Ready out: no I/O, clock, threads or global randomness",
    ),
    LayerRule(
        "raft imports nothing above it",
        packages=("raftkv.raft",),
        forbidden=(
            "raftkv.kv",
            "raftkv.api",
            "raftkv.etcd",
            "raftkv.server",
            "raftkv.client",
            "raftkv.cli",
            "raftkv.testing",
            "aiohttp",
            "prometheus_client",
        ),
        why="the Raft library is embedded on its own; the node keeps plain counters, the "
        "server exports them",
    ),
    LayerRule(
        "storage and transport never import the driver",
        packages=("raftkv.raft.storage", "raftkv.raft.transport"),
        forbidden=("raftkv.raft.driver", "raftkv.raft.builder"),
        why="the driver plugs storage and transport together, not the other way round",
    ),
    LayerRule(
        "kv never imports server, client or cli",
        packages=("raftkv.kv",),
        forbidden=("raftkv.server", "raftkv.api", "raftkv.client", "raftkv.cli", "raftkv.etcd"),
        why="the KV state machine is embeddable without the HTTP server or etcd's API",
    ),
    LayerRule(
        "server never imports client or cli",
        packages=("raftkv.server",),
        forbidden=("raftkv.client", "raftkv.cli"),
        why="the server is the composition root of kv and raft, below the tools that call it",
    ),
    LayerRule(
        "the etcd API translates to kv and never imports the HTTP server, client or cli",
        packages=("raftkv.etcd",),
        forbidden=("raftkv.server", "raftkv.api", "raftkv.client", "raftkv.cli"),
        why="etcd's API and the HTTP API are two doors to the same KvService, side by side",
    ),
    LayerRule(
        "client never imports server, kv or raft",
        packages=("raftkv.client",),
        forbidden=("raftkv.server", "raftkv.kv", "raftkv.raft"),
        why="the client speaks the wire schema only: it must not load the store",
    ),
    LayerRule(
        "the wire schema imports nothing else of raftkv",
        packages=("raftkv.api",),
        forbidden=("raftkv",),
        allowed=("raftkv.api",),
        why="the server and the client both decode it: it sits below both",
    ),
)

# (rule name, file under src/, imported module): the fix that removes it. Delete an entry
# when its fix merges (the test fails on entries that match no import any more).
KNOWN_VIOLATIONS: dict[tuple[str, str, str], str] = {}

MAX_MODULE_LINES = 800
# Path under the repository: (ceiling in lines, why it may pass MAX_MODULE_LINES). Delete an
# entry once its file is back under the limit (the test fails on a stale entry).
OVERSIZED_MODULES: dict[str, tuple[int, str]] = {
    "src/raftkv/raft/core/raft.py": (
        1100,
        "the protocol in one module, as etcd keeps raft.go whole (issue 13 §3 allows it; "
        "its ReadIndex/lease block lives in read_index.py)",
    ),
    "tests/core/test_paper.py": (
        1250,
        "the Raft paper's claims in the paper's order (etcd's raft_paper_test.go): one "
        "catalogue, read section by section",
    ),
    "tests/core/test_units_rawnode.py": (
        1080,
        "RawNode's contract, one section per concern; split along those sections when next touched",
    ),
}
SIZED_TREES = ("src", "tests", "tools", "benchmarks", "examples")
# Generated by `make proto`; nobody reads or edits them.
GENERATED = ("_pb2.py", "_pb2_grpc.py")


# -- reading imports ---------------------------------------------------------------------------


def package_of(path: Path) -> str:
    """The dotted package a file under src/ lives in (relative imports start there)."""
    parts = path.relative_to(SOURCE).parts[:-1]
    return ".".join(parts)


def imports_in(source: str, package: str = "") -> list[tuple[int, str]]:
    """(line, module) for every import in `source`, relative ones resolved from `package`,
    except ALLOWED_NAMES. `from module import name` counts as `module` and as
    `module.name`, since `name` may be a submodule."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, module] if module else base)
            if {(module, alias.name) for alias in node.names} <= ALLOWED_NAMES:
                continue
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def matches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def breaking(rule: LayerRule, imports: list[tuple[int, str]]) -> set[str]:
    """The modules among `imports` that break `rule`: of one import statement the least
    specific (`from raftkv.server.api import X` breaks it as raftkv.server.api)."""
    by_line: dict[int, list[str]] = {}
    for line, module in imports:
        if matches(module, rule.forbidden) and not matches(module, rule.allowed):
            by_line.setdefault(line, []).append(module)
    return {min(modules, key=len) for modules in by_line.values()}


def governed_files(rule: LayerRule) -> list[Path]:
    files = sorted(
        {
            path
            for package in rule.packages
            for path in (SOURCE / package.replace(".", "/")).rglob("*.py")
        }
    )
    assert files, f"rule {rule.name!r}: no sources under {rule.packages}"
    return files


def violations(rule: LayerRule) -> set[tuple[str, str]]:
    """(file under src/, imported module) for each import that breaks `rule`."""
    return {
        (path.relative_to(SOURCE).as_posix(), module)
        for path in governed_files(rule)
        for module in breaking(rule, imports_in(path.read_text(), package_of(path)))
    }


# -- the rules -------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", LAYER_RULES, ids=lambda rule: rule.name)
def test_layer_rule(rule: LayerRule) -> None:
    known = {(path, module) for (name, path, module) in KNOWN_VIOLATIONS if name == rule.name}
    found = violations(rule)
    unexpected = sorted(found - known)
    assert not unexpected, f"{rule.name} ({rule.why}):\n" + "\n".join(
        f"  {path} imports {module}" for path, module in unexpected
    )
    stale = sorted(known - found)
    assert not stale, "KNOWN_VIOLATIONS entries that match no import now (delete them):\n" + (
        "\n".join(f"  {path} -> {module}" for path, module in stale)
    )


def test_known_violations_name_a_rule() -> None:
    names = {rule.name for rule in LAYER_RULES}
    assert {name for name, _, _ in KNOWN_VIOLATIONS} <= names


def test_the_check_sees_every_kind_of_import() -> None:
    # Guard against a checker that silently finds nothing.
    source = (
        "import asyncio\nfrom random import randrange\nfrom random import Random\n"
        "def later():\n    from raftkv.server import api\n"
        "from ..transport import base\nfrom . import clock\n"
    )
    assert [module for _, module in imports_in(source, "raftkv.raft.driver")] == [
        "asyncio",
        "random",
        "random.randrange",
        "raftkv.raft.transport",
        "raftkv.raft.transport.base",
        "raftkv.raft.driver",
        "raftkv.raft.driver.clock",
        "raftkv.server",
        "raftkv.server.api",
    ]


def test_a_rule_reports_the_module_a_statement_imports_from() -> None:
    rule = LayerRule("sample", ("raftkv.client",), ("raftkv.server", "raftkv.api"))
    source = "from raftkv.server.api import A, B\nfrom raftkv import api\nimport raftkv.client\n"
    assert breaking(rule, imports_in(source)) == {"raftkv.server.api", "raftkv.api"}
    core = next(rule for rule in LAYER_RULES if rule.name == "core is pure")
    assert breaking(core, imports_in("import time\nfrom raftkv.raft.driver import node\n")) == {
        "time",
        "raftkv.raft.driver",
    }
    assert not breaking(core, imports_in("from raftkv.raft.core.types import Entry\n"))


# -- module size -------------------------------------------------------------------------------


def python_modules() -> list[Path]:
    return sorted(
        path
        for tree in SIZED_TREES
        for path in (ROOT / tree).rglob("*.py")
        if not path.name.endswith(GENERATED)
    )


def line_count(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_modules_stay_under_the_size_limit() -> None:
    too_long = []
    for path in python_modules():
        relative = path.relative_to(ROOT).as_posix()
        lines = line_count(path)
        if relative in OVERSIZED_MODULES:
            ceiling, _ = OVERSIZED_MODULES[relative]
            if lines > ceiling:
                too_long.append(f"  {relative}: {lines} lines, past its ceiling of {ceiling}")
        elif lines > MAX_MODULE_LINES:
            too_long.append(f"  {relative}: {lines} lines (split it by responsibility)")
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(too_long)


def test_every_oversized_entry_is_still_needed() -> None:
    stale = []
    for relative, (_, why) in OVERSIZED_MODULES.items():
        assert why, f"{relative}: say why it may pass {MAX_MODULE_LINES} lines"
        path = ROOT / relative
        if not path.exists() or line_count(path) <= MAX_MODULE_LINES:
            stale.append(relative)
    assert not stale, "OVERSIZED_MODULES entries no longer needed (delete them): " + ", ".join(
        stale
    )
