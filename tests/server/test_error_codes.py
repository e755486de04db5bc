"""Every error code the server can answer with is in `ERROR_STATUS` at its status, in
`/openapi.json`'s text for that status, and in docs/http-api.md's list under it (issue
14, item 13: the docs missed busy, unavailable, internal, command_too_large, ...).

The codes the server's code makes are found in its source: every `error_response(...)`
and `ApiError(...)` call in raftkv.server naming a code, the tables of errors.py, and each
`KvError` through `error_answer`."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from raftkv.kv import errors as kv_errors
from raftkv.server import errors
from raftkv.server.errors import ERROR_CODES, ERROR_STATUS, HTTP_ERROR_CODES, error_answer

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "src" / "raftkv" / "server"
# Backquoted words of the docs' error list that are fields, not codes.
FIELDS = {"compact_revision", "oldest_revision", "client_id", "sequence", "Allow", "Host"}


def _code_of(node: ast.expr, module: object) -> str | None:
    match node:
        case ast.Constant(value=str() as code):
            return code
        case ast.Attribute(value=ast.Name(id=name), attr="code") if name[0].isupper():
            # SomeError.code
            code = getattr(module, name).code
            assert isinstance(code, str)
            return code
        case _:
            return None


def codes_in_source() -> dict[str, set[int | None]]:
    """code -> the statuses it is answered with (None: a status not written as a number)."""
    found: dict[str, set[int | None]] = {}
    for path in sorted(SERVER.rglob("*.py")):
        dotted = ".".join(path.relative_to(SERVER).with_suffix("").parts)
        module = importlib.import_module(f"raftkv.server.{dotted}")
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or len(node.args) < 2:
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name not in ("error_response", "ApiError"):
                continue
            code = _code_of(node.args[1], module)
            if code is None:  # passing on a code from a table or an error (checked below)
                continue
            status = node.args[0]
            number = status.value if isinstance(status, ast.Constant) else None
            found.setdefault(code, set()).add(number)
    for status, code in HTTP_ERROR_CODES.items():
        found.setdefault(code, set()).add(status)
    for status, code in errors._MEMBERSHIP_ERRORS.values():
        found.setdefault(code, set()).add(status)
    for kind in vars(kv_errors).values():
        if (
            isinstance(kind, type)
            and issubclass(kind, kv_errors.KvError)
            # The bases: their subclasses are the codes.
            and kind not in (kv_errors.KvError, kv_errors.AuthError)
        ):
            error = kind.__new__(kind)
            Exception.__init__(error, "refused")
            error.compact_revision = 1  # type: ignore[attr-defined] # read for Compacted
            error.retry_after_s = 1.0  # type: ignore[attr-defined] # for TooManyFailedLogins
            answer = error_answer(error)
            assert answer is not None
            found.setdefault(kind.code, set()).add(answer.status)
    return found


def documented_codes() -> dict[str, int]:
    """code -> status, from docs/http-api.md's Errors section: a status number sets the
    status of the backquoted codes after it."""
    text = (ROOT / "docs" / "http-api.md").read_text()
    section = text.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    section = re.sub(r"\[[^\]]*\]\([^)]*\)", "", section)  # links
    documented: dict[str, int] = {}
    status = 0
    for token in re.finditer(r"\b([1-5]\d\d)\b|`([A-Za-z_][A-Za-z0-9_]*)`", section):
        if token.group(1):
            status = int(token.group(1))
        elif token.group(2) not in FIELDS:
            documented.setdefault(token.group(2), status)
    return documented


def test_every_code_the_source_answers_is_listed_at_its_status() -> None:
    found = codes_in_source()
    assert set(found) == set(ERROR_STATUS), "ERROR_STATUS and the source differ"
    for code, statuses in found.items():
        assert statuses - {None} <= {ERROR_STATUS[code]}, (code, statuses)


def test_the_openapi_text_names_every_code_under_its_status() -> None:
    for code, status in ERROR_STATUS.items():
        assert re.search(rf"\b{code}\b", ERROR_CODES[status]), (status, code)


def test_the_docs_list_every_code_under_its_status() -> None:
    assert documented_codes() == ERROR_STATUS
