"""Two rules of how modules reach each other.

- No module of the package imports another module's private (underscore) names: what a
  module shares, it names publicly; what it keeps, it keeps (the CLI's shared plumbing
  once went by twelve private names, and the KV simulator subclassed the driver
  simulator's private run).
- Tests reach their helpers in their own directory (pytest puts it on sys.path) or in
  `raftkv.testing`: never through a sys.path insert, a test module, or a helper of another
  test directory (which only imports when that directory happened to be collected first).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "raftkv"
TESTS = ROOT / "tests"


def _uses_sys_path(path: Path) -> bool:
    return any(
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
    )


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every absolute import in `path`."""
    found: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, []) for alias in node.names)
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name} from {module}"
        for path in sorted(SOURCE.rglob("*.py"))
        for line, module, names in _imports(path)
        if module.startswith("raftkv")
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert found == []


def test_tests_import_helpers_from_their_own_directory_or_raftkv_testing() -> None:
    test_modules = sorted(TESTS.rglob("*.py"))
    directory_of = {path.stem: path.parent for path in test_modules}
    found = []
    for path in test_modules:
        if _uses_sys_path(path):
            found.append(f"{path.relative_to(ROOT)} uses sys.path")
        for line, module, _ in _imports(path):
            top = module.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}"
            if top.startswith("test_") and top in directory_of:
                found.append(f"{where} imports the test module {top}")
            elif top in directory_of and directory_of[top] != path.parent:
                found.append(f"{where} imports {top} from {directory_of[top].relative_to(ROOT)}")
    assert found == []
