"""Every command and example in README.md and docs/*.md keeps working as written, checked
without starting a server or touching the network:
- shell blocks: `raftkv ...`, `python -m MODULE ...` and `python SCRIPT ...` are parsed by
  the program's own argparse parser (stopped once parsed); `make` must name a target and
  its variables; `curl` a route of the app's route table, with its query parameters and a
  body its schema accepts; pytest and git paths must exist; any other command fails until
  it is taught here;
- Python blocks compile and their imports resolve; one after `<!-- docs-check: run -->` runs;
- inline code: `raftkv VERB --flag`, `make TARGET`, `METHOD /path`, `raftkv.dotted.name`,
  `PublicClass.attribute`, repository paths, snake_case names and `RAFTKV_*` variables
  must exist in the code;
- links and anchors between the documents, `docs/*.md#anchor` citations in the source, and
  every route of the app documented in docs/http-api.md.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import dataclasses
import functools
import importlib
import importlib.metadata
import importlib.util
import io
import json
import re
import runpy
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
RUN_MARKER = "<!-- docs-check: run -->"
# Shell commands that need no check of their own (their arguments are plain data).
PLAIN_COMMANDS = {"echo", "rm", "cd", "ls", "cat", "mkdir", "cp", "mv", "export", "sleep"}
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


# -- shell commands ----------------------------------------------------------------------------


SEPARATORS = {"|", "||", "&&", ";", "&"}
REDIRECTIONS = {">", ">>", "<", "2>", "2>&1"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number in the block, command line): continuations joined, and a line whose
    quote is still open joined with the next."""
    pending = ""
    first = 0
    for number, line in enumerate(text.splitlines()):
        first = first if pending else number
        continued = line.endswith("\\")
        pending += line.removesuffix("\\")
        if continued or _quote_open(pending):
            pending += " " if continued else "\n"
            continue
        yield first, pending
        pending = ""
    assert not pending, f"unterminated command: {pending}"


def _quote_open(line: str) -> bool:
    try:
        shlex.split(line, comments=True)
    except ValueError:
        return True
    return False


def commands(line: str, variables: dict[str, str]) -> Iterator[list[str]]:
    """The simple commands of a line: words after expansion, `...` (elided arguments)
    and redirections dropped; a command of assignments only sets variables."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words: list[str] = []
    tokens = list(lexer)
    index = 0
    while index <= len(tokens):
        token = tokens[index] if index < len(tokens) else ";"
        index += 1
        if token in SEPARATORS:
            if words and all(ASSIGNMENT.match(word) for word in words):
                for word in words:
                    name, _, value = word.partition("=")
                    variables[name] = value
            elif words:
                yield words
            words = []
        elif token in REDIRECTIONS:
            index += 1  # the file
        elif token != "...":
            words.append(re.sub(r"\$(\w+)", lambda found: variables.get(found[1], found[0]), token))


@dataclass
class ShellChecker:
    http: HttpApp
    makefile: str
    repository_text: str

    def check(self, words: list[str]) -> None:
        while words and ASSIGNMENT.match(words[0]):
            name = words.pop(0).partition("=")[0]
            assert name in self.repository_text, f"the repository never reads {name}"
        program, *arguments = words
        name = Path(program).name
        if name == "raftkv":
            parse_program(raftkv_entry_point(), ["raftkv", *arguments])
        elif name in PYTHONS:
            self.python(arguments)
        elif name == "pytest":
            self.pytest(arguments)
        elif name == "make":
            self.make(arguments)
        elif name == "curl":
            self.curl(arguments)
        elif name == "git":
            self.git(arguments)
        elif name not in PLAIN_COMMANDS:
            raise AssertionError(f"no check for the command {program!r}: teach tests/docs")

    def python(self, arguments: list[str]) -> None:
        if arguments[0] == "-m":
            module, rest = arguments[1], arguments[2:]
            if module == "raftkv":
                parse_program(raftkv_entry_point(), ["raftkv", *rest])
            elif module == "pytest":
                self.pytest(rest)
            else:
                assert importlib.util.find_spec(module), f"no module {module}"
                run = functools.partial(
                    runpy.run_module, module, run_name="__main__", alter_sys=True
                )
                parse_program(run, [module, *rest])
        else:
            script = ROOT / arguments[0]
            assert script.is_file(), f"no script {arguments[0]}"
            run = functools.partial(runpy.run_path, str(script), run_name="__main__")
            parse_program(run, [str(script), *arguments[1:]])

    def pytest(self, arguments: list[str]) -> None:
        for argument in arguments:
            if not argument.startswith("-"):
                path = argument.split("::")[0]
                assert (ROOT / path).exists(), f"pytest: no {path}"

    def make(self, arguments: list[str]) -> None:
        for argument in arguments:
            if "=" in argument:
                variable = argument.partition("=")[0]
                assert re.search(rf"\b{variable}\b", self.makefile), f"make: no variable {variable}"
            else:
                assert make_target(self.makefile, argument), f"make: no target {argument}"

    def git(self, arguments: list[str]) -> None:
        if arguments and arguments[0] == "diff":
            for path in arguments[1:]:
                if not path.startswith("-"):
                    assert (ROOT / path).exists(), f"git diff: no {path}"

    def curl(self, arguments: list[str]) -> None:
        method = ""
        body: str | None = None
        url = ""
        index = 0
        while index < len(arguments):
            argument = arguments[index]
            index += 1
            if argument == "-X":
                method = arguments[index]
                index += 1
            elif argument.startswith("-X"):
                method = argument[2:]
            elif argument in ("-d", "--data", "--data-raw"):
                body = arguments[index]
                index += 1
            elif argument.startswith("-"):
                continue
            else:
                url = argument
        method = method or ("POST" if body is not None else "GET")
        parts = urlsplit(url if "://" in url else f"http://{url}")
        check_route(
            self.http, method, parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))
        )
        if body is not None:
            route = self.http.resolve(method, parts.path)
            assert route is not None
            document = json.loads(body)
            request_body = self.http.operation(method, route).get("requestBody")
            assert request_body, f"{method} {route} takes no body"
            schema = request_body["content"]["application/json"]["schema"]
            errors = schema_errors(document, schema, self.http.openapi, "body")
            assert not errors, f"{method} {route}: " + "; ".join(errors)


def make_target(makefile: str, target: str) -> bool:
    return re.search(rf"^{re.escape(target)}\s*:", makefile, re.MULTILINE) is not None


def check_route(http: HttpApp, method: str, path: str, query: dict[str, str]) -> None:
    route = http.resolve(method, path)
    assert route is not None, f"no route serves {method} {path}"
    documented = {
        parameter["name"] for parameter in http.operation(method, route).get("parameters", [])
    }
    unknown = sorted(set(query) - documented - {"encoding"})
    assert not unknown, f"{method} {route} has no query parameter {', '.join(unknown)}"


@pytest.fixture(scope="module")
def shell(http_app: HttpApp) -> ShellChecker:
    text = "\n".join(
        path.read_text()
        for directory in ("src", "tests", "tools", "benchmarks", "examples")
        for path in (ROOT / directory).rglob("*.py")
    )
    makefile = (ROOT / "Makefile").read_text()
    return ShellChecker(http_app, makefile, text + makefile)


def shell_commands() -> list[tuple[str, list[str]]]:
    found = []
    for block in blocks("sh"):
        variables: dict[str, str] = {}
        for offset, line in logical_lines(block.text):
            for words in commands(line, variables):
                found.append((f"{block.document}:{block.line + 1 + offset}", words))
    return found


SHELL_COMMANDS = shell_commands()


@pytest.mark.parametrize(
    ("where", "words"), SHELL_COMMANDS, ids=[where for where, _ in SHELL_COMMANDS]
)
def test_shell_command(where: str, words: list[str], shell: ShellChecker) -> None:
    try:
        shell.check(list(words))
    except (AssertionError, ImportError, AttributeError) as error:
        raise AssertionError(f"{where}: {shlex.join(words)}\n  {first_line(error)}") from None


# -- Python ------------------------------------------------------------------------------------


PYTHON_BLOCKS = blocks("python")


def resolve(dotted: str) -> object:
    """The module, or attribute of a module, named `dotted`; raises if there is none."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        name = ".".join(parts[:split])
        try:
            found: object = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[block.where for block in PYTHON_BLOCKS])
def test_python_block(block: Block) -> None:
    code = compile(block.text, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    for node in ast.walk(ast.parse(block.text)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom):
            assert node.module and not node.level, f"{block.where}: a relative import"
            for alias in node.names:
                try:
                    resolve(f"{node.module}.{alias.name}")
                except (ImportError, AttributeError):
                    raise AssertionError(
                        f"{block.where}: from {node.module} import {alias.name}: no such name"
                    ) from None
    if block.run:
        exec(code, {"__name__": "__docs__"})


# -- inline code -------------------------------------------------------------------------------


def public_names() -> dict[str, list[object]]:
    names: dict[str, list[object]] = {}
    for package in PUBLIC_PACKAGES:
        module: ModuleType = importlib.import_module(package)
        for name in getattr(module, "__all__", ()):
            names.setdefault(name, []).append(getattr(module, name))
    return names


def has_member(owner: object, name: str) -> bool:
    if hasattr(owner, name):
        return True
    if dataclasses.is_dataclass(owner):
        return name in {item.name for item in dataclasses.fields(owner)}
    return name in getattr(owner, "__struct_fields__", ())


@dataclass
class InlineChecker:
    parser: argparse.ArgumentParser
    shell: ShellChecker
    # Every word of the source: a snake_case name in the docs must be one of them.
    words: set[str]

    def check(self, span: str) -> None:
        route = re.match(r"^(GET|PUT|POST|DELETE) (/\S*)", span)
        if "..." in span:
            return  # an elided example, not a name
        if span.startswith("raftkv "):
            check_synopsis(self.parser, span.split()[1:])
        elif span.startswith("make "):
            self.shell.make(span.split()[1:2])
        elif route:
            parts = urlsplit(re.sub(r"\{\w+\}", "x", route[2]))
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            check_route(self.shell.http, route[1], parts.path, query)
        elif re.fullmatch(r"/(v1/\S*|health|ready|metrics|openapi\.json|set|get/\S*)", span):
            path = urlsplit(re.sub(r"\{\w+\}", "x", span)).path
            methods = ("GET", "PUT", "POST", "DELETE")
            assert any(self.shell.http.resolve(method, path) for method in methods), span
        elif re.fullmatch(r"raftkv(\.\w+)+", span):
            resolve(span)
        elif span.startswith(REPOSITORY_DIRECTORIES) and re.fullmatch(r"[\w./*-]+", span):
            assert list(ROOT.glob(span.rstrip("/"))), f"no file {span}"
        elif re.fullmatch(r"RAFTKV_[A-Z_]+", span):
            assert span in self.shell.repository_text, f"the repository never reads {span}"
        else:
            metric = re.sub(r"\{.*\}$", "", span)
            if re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)+", metric):
                name = metric.removesuffix("_total") if metric.startswith("raftkv_") else metric
                assert name in self.words, f"the source never spells {name}"


def check_synopsis(parser: argparse.ArgumentParser, words: list[str]) -> None:
    """`raftkv VERB [VERB] ... --flag ...` names verbs and flags that exist."""
    for written in words:
        word = written.strip("[],|")
        subcommands = [
            action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
        ]
        if subcommands and re.fullmatch(r"[a-z][a-z-]*", word):
            choices = subcommands[0].choices
            assert word in choices, f"raftkv: no verb {word!r} (one of {', '.join(choices)})"
            parser = choices[word]
        elif word.startswith("--") and word != "--":
            flag = word.split("=")[0]
            assert flag in parser._option_string_actions, f"{parser.prog}: no flag {flag}"


@pytest.fixture(scope="module")
def inline(shell: ShellChecker) -> InlineChecker:
    text = "\n".join(path.read_text() for path in (ROOT / "src").rglob("*.py"))
    return InlineChecker(raftkv_parser(), shell, set(re.findall(r"\w+", text)))


def test_inline_code(documents: list[Document], inline: InlineChecker) -> None:
    failures = []
    for document in documents:
        for span in document.spans:
            try:
                inline.check(span)
            except (AssertionError, ImportError, AttributeError) as error:
                failures.append(f"{document.name}: `{span}`: {first_line(error)}")
    assert not failures, "\n".join(failures)


def first_line(error: BaseException) -> str:
    """The message of a failed check, without pytest's rewritten-assertion details."""
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def test_inline_public_attributes(documents: list[Document]) -> None:
    names = public_names()
    failures = []
    for document in documents:
        for span in document.spans:
            found = re.fullmatch(r"([A-Z]\w*)\.(\w+)(\(.*\))?", span)
            if found and found.group(1) in names:
                owners = names[found.group(1)]
                if not any(has_member(owner, found.group(2)) for owner in owners):
                    failures.append(
                        f"{document.name}: `{span}`: {found.group(1)} has no {found.group(2)}"
                    )
    assert not failures, "\n".join(failures)


def test_every_route_is_documented(http_app: HttpApp) -> None:
    text = (ROOT / "docs" / "http-api.md").read_text()
    documented = {
        (method, urlsplit(path).path)
        for method, path in re.findall(r"`(GET|PUT|POST|DELETE) (/[^`\s]*)", text)
    }
    missing = sorted(
        f"{method} {route}"
        for method, route in http_app.routes
        if (method, route) not in documented
    )
    assert not missing, "routes missing from docs/http-api.md: " + ", ".join(missing)


# -- links and anchors -------------------------------------------------------------------------


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens (of
    headings outside code blocks: a shell comment is not a heading)."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", read_document(path).prose, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def check_link(source: Path, target: str) -> None:
    path_part, _, anchor = target.partition("#")
    path = (source.parent / path_part).resolve() if path_part else source
    assert path.exists(), f"no file {path_part}"
    if anchor:
        assert path.suffix == ".md", f"an anchor into {path_part}"
        assert anchor in anchors(path), f"no heading #{anchor} in {path.name}"


def test_links_between_documents(documents: list[Document]) -> None:
    failures = []
    for document in documents:
        for target in re.findall(r"\]\(([^)\s]+)\)", document.prose):
            if re.match(r"^[a-z]+://", target):
                continue
            try:
                check_link(ROOT / document.name, target)
            except AssertionError as error:
                failures.append(f"{document.name}: ({target}): {first_line(error)}")
    assert not failures, "\n".join(failures)


def test_citations_of_the_docs_in_the_source() -> None:
    failures = []
    for directory in ("src", "tests", "tools", "benchmarks", "examples"):
        for path in (ROOT / directory).rglob("*.py"):
            for target in re.findall(r"\bdocs/[\w-]+\.md(?:#[\w-]+)?", path.read_text()):
                try:
                    check_link(ROOT / "README.md", target)
                except AssertionError as error:
                    failures.append(f"{path.relative_to(ROOT)}: {target}: {first_line(error)}")
    assert not failures, "\n".join(failures)


# -- the checker itself ------------------------------------------------------------------------


def test_the_checks_catch_drift(shell: ShellChecker, inline: InlineChecker) -> None:
    def refused(check: Callable[[], object]) -> bool:
        try:
            check()
        except (AssertionError, ImportError, AttributeError):
            return True
        return False

    assert refused(lambda: shell.check(["raftkv", "put", "k", "v", "--no-such-flag"]))
    assert refused(lambda: shell.check(["raftkv", "membr", "add", "4", "h:1"]))
    assert refused(lambda: shell.check(["make", "no-such-target"]))
    assert refused(lambda: shell.check(["curl", "-X", "PATCH", "localhost:8080/v1/kv/a"]))
    assert refused(lambda: shell.check(["curl", "localhost:8080/v1/kv?no_such_parameter=1"]))
    assert refused(
        lambda: shell.check(["curl", "-XPUT", "localhost:8080/v1/kv/a", "-d", '{"valu": "x"}'])
    )
    assert refused(lambda: shell.check(["python", "-m", "raftkv.testing.sim", "--no-such-flag"]))
    assert refused(lambda: shell.check(["raftkv", "serve", "--auto-promot"]))  # abbreviated
    bad_compare = '{"compares": [{"key": "a", "target": "versio", "op": "=", "value": 0}]}'
    assert refused(lambda: shell.check(["curl", "localhost:8080/v1/txn", "-d", bad_compare]))
    assert refused(lambda: shell.check(["frobnicate"]))
    assert refused(
        lambda: check_link(ROOT / "README.md", "docs/operations.md" + "#no-such-heading")
    )
    assert refused(lambda: inline.check("raftkv lease grant TTL --no-such-flag"))
    assert refused(lambda: inline.check("GET /v2/kv"))
    assert refused(lambda: inline.check("raftkv.client.NoSuchName"))
    assert refused(lambda: inline.check("max_no_such_setting_bytes"))
    assert refused(lambda: inline.check("src/raftkv/no_such_module.py"))
    assert not refused(lambda: shell.check(["raftkv", "lease", "keepalive", "7", "--once"]))
    # The run marker is spelled right somewhere, or no example would run.
    assert any(block.run for block in PYTHON_BLOCKS)
    assert not refused(lambda: inline.check("raftkv serve --join --auto-promote"))
