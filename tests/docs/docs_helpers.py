"""What the docs tests share: the documents and their fenced blocks, the programs' own
argparse parsers stopped once parsed, the HTTP app served in-process (`http_app`) and a
JSON Schema check of values against /openapi.json."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.metadata
import importlib.util
import io
import json
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
RUN_MARKER = "<!-- docs-check: run -->"
# Shell commands that need no check of their own (their arguments are plain data).
# Commands the docs may show unchecked (etcdctl: tests/e2e runs it against raftkv).
PLAIN_COMMANDS = {"echo", "rm", "cd", "ls", "cat", "mkdir", "cp", "mv", "export", "sleep", "etcdctl"}
PYTHONS = {"python", "python3", "python3.11"}
# Packages whose public names (`__all__`) inline `Name.attribute` references may use.
PUBLIC_PACKAGES = (
    "raftkv.raft",
    "raftkv.raft.core",
    "raftkv.kv",
    "raftkv.client",
    "raftkv.server",
    "raftkv.testing",
)
REPOSITORY_DIRECTORIES = ("src/", "tests/", "docs/", "tools/", "benchmarks/", "examples/")


# -- reading the documents ---------------------------------------------------------------------


@dataclass
class Block:
    document: str
    line: int
    language: str
    text: str
    run: bool

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"


@dataclass
class Document:
    name: str
    blocks: list[Block] = field(default_factory=list)
    # Inline code spans outside fenced blocks, whitespace collapsed.
    spans: list[str] = field(default_factory=list)
    prose: str = ""


FENCE = re.compile(r"^```(\w*)\s*$")


def read_document(path: Path) -> Document:
    name = path.relative_to(ROOT).as_posix()
    text = path.read_text()
    document = Document(name)
    prose: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            prose.append(lines[index])
            index += 1
            continue
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index])
            index += 1
        index += 1
        run = start > 0 and lines[start - 1].strip() == RUN_MARKER
        document.blocks.append(Block(name, start + 1, opening.group(1), "\n".join(body), run))
        prose.append("")
    document.prose = "\n".join(prose)
    document.spans = [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", document.prose)]
    return document


@pytest.fixture(scope="module")
def documents() -> list[Document]:
    assert DOCUMENTS, "no documents found"
    return [read_document(path) for path in DOCUMENTS]


def blocks(language: str) -> list[Block]:
    return [
        block
        for path in DOCUMENTS
        for block in read_document(path).blocks
        if block.language == language
    ]


# -- parsing a program's arguments without running it -----------------------------------------


class Parsed(BaseException):
    """Raised (a BaseException, so no `except Exception` swallows it) once a program's
    outermost argparse call has parsed its arguments: the program stops there."""

    def __init__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace) -> None:
        super().__init__()
        self.parser = parser
        self.namespace = namespace


@contextlib.contextmanager
def stopping_after_parse() -> Iterator[None]:
    real = argparse.ArgumentParser.parse_known_args
    depth = 0

    def parse_known_args(
        self: argparse.ArgumentParser, args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        nonlocal depth
        # A documented flag is spelled whole: an abbreviation argparse would accept today
        # stops working when another flag starts the same way.
        self.allow_abbrev = False
        depth += 1
        try:
            result = real(self, args, namespace)
        finally:
            depth -= 1
        if depth == 0:
            if result[1]:  # what parse_args would refuse
                self.error(f"unrecognized arguments: {' '.join(result[1])}")
            raise Parsed(self, result[0])
        return result

    with mock.patch.object(argparse.ArgumentParser, "parse_known_args", parse_known_args):
        yield


def parse_program(program: Callable[[], object], argv: list[str]) -> Parsed:
    """Run `program` with `sys.argv = argv` until it has parsed its arguments. Fails with
    argparse's own message when they do not parse."""
    saved = sys.argv
    sys.argv = argv
    errors = io.StringIO()
    try:
        with (
            stopping_after_parse(),
            contextlib.redirect_stderr(errors),
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(),
        ):
            # runpy warns when it runs as __main__ a module that is already imported.
            warnings.simplefilter("ignore", RuntimeWarning)
            program()
    except Parsed as parsed:
        return parsed
    except SystemExit as exit:
        if exit.code in (0, None):  # --help
            return Parsed(argparse.ArgumentParser(), argparse.Namespace())
        raise AssertionError(errors.getvalue().strip().splitlines()[-1]) from None
    finally:
        sys.argv = saved
    raise AssertionError(f"{argv[0]} returned without parsing its arguments with argparse")


def raftkv_entry_point() -> Callable[[], object]:
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="raftkv")
    program: Callable[[], object] = script.load()
    return program


def raftkv_parser() -> argparse.ArgumentParser:
    """The `raftkv` command's top-level parser, caught as its entry point parses."""
    return parse_program(raftkv_entry_point(), ["raftkv", "members"]).parser


# -- the HTTP app ------------------------------------------------------------------------------


@dataclass
class HttpApp:
    """The HTTP app of a one-node in-memory cluster, kept on its own event loop."""

    loop: asyncio.AbstractEventLoop
    app: Any
    openapi: dict[str, Any]
    routes: set[tuple[str, str]]

    def resolve(self, method: str, path: str) -> str | None:
        """The canonical route serving `method path`, or None."""
        from aiohttp.test_utils import make_mocked_request

        request = make_mocked_request(method, path, app=self.app)
        match = self.loop.run_until_complete(self.app.router.resolve(request))
        if match.http_exception is not None:
            return None
        canonical: str = match.route.resource.canonical
        return canonical

    def operation(self, method: str, route: str) -> dict[str, Any]:
        operation: dict[str, Any] = self.openapi["paths"].get(route, {}).get(method.lower(), {})
        return operation


@pytest.fixture(scope="module")
def http_app() -> Iterator[HttpApp]:
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from raftkv.kv import KvService, KvStateMachine
    from raftkv.server import create_app
    from raftkv.testing import LocalCluster

    loop = asyncio.new_event_loop()
    cluster = LocalCluster(1, state_machine=lambda storage: KvStateMachine(storage.app_data()))
    loop.run_until_complete(cluster.start())
    try:
        (node,) = cluster.nodes.values()
        machine = node.state_machine
        assert isinstance(machine, KvStateMachine)
        app = create_app(KvService(node, machine))
        routes = {
            (route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None and route.method not in ("HEAD", "*")
        }
        request = make_mocked_request("GET", "/openapi.json", app=app)
        match = loop.run_until_complete(app.router.resolve(request))
        response = loop.run_until_complete(match.handler(request))
        assert isinstance(response, web.Response) and response.text is not None
        openapi = json.loads(response.text)
        yield HttpApp(loop, app, openapi, routes)
    finally:
        loop.run_until_complete(cluster.stop())
        loop.close()


def schema_errors(
    value: object, schema: dict[str, Any], document: dict[str, Any], at: str
) -> list[str]:
    """Where `value` breaks the JSON schema (the subset the OpenAPI document uses)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return schema_errors(value, document["components"]["schemas"][name], document, at)
    for union in ("anyOf", "oneOf"):
        if union in schema:
            failures = [schema_errors(value, option, document, at) for option in schema[union]]
            return [] if any(not failure for failure in failures) else min(failures, key=len)
    if "enum" in schema and value not in schema["enum"]:
        return [f"{at}: {value!r} is not one of {schema['enum']}"]
    if "const" in schema and value != schema["const"]:
        return [f"{at}: {value!r} is not {schema['const']!r}"]
    kinds = schema.get("type")
    if kinds is None:
        return []
    python_types: dict[str, tuple[type, ...]] = {
        "object": (dict,),
        "array": (list,),
        "string": (str,),
        "integer": (int,),
        "number": (int, float),
        "boolean": (bool,),
        "null": (type(None),),
    }
    allowed = [kinds] if isinstance(kinds, str) else list(kinds)
    if not any(
        isinstance(value, python_types[kind])
        and not (kind in ("integer", "number") and isinstance(value, bool))
        for kind in allowed
    ):
        return [f"{at}: {value!r} is not {' or '.join(allowed)}"]
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return [f"{at}: {value!r} is below the minimum {schema['minimum']}"]
        if "maximum" in schema and value > schema["maximum"]:
            return [f"{at}: {value!r} is above the maximum {schema['maximum']}"]
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        errors = [
            f"{at}: missing {name!r}" for name in schema.get("required", []) if name not in value
        ]
        for name, item in value.items():
            if name in properties:
                errors += schema_errors(item, properties[name], document, f"{at}.{name}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{at}: unknown field {name!r}")
        return errors
    if isinstance(value, list) and "items" in schema:
        return [
            error
            for position, item in enumerate(value)
            for error in schema_errors(item, schema["items"], document, f"{at}[{position}]")
        ]
    return []
