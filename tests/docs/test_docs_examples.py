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
import dataclasses
import functools
import importlib
import importlib.metadata
import importlib.util
import json
import re
import runpy
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qsl, urlsplit

import pytest
from docs_helpers import (
    PLAIN_COMMANDS,
    PUBLIC_PACKAGES,
    PYTHONS,
    REPOSITORY_DIRECTORIES,
    ROOT,
    Block,
    Document,
    HttpApp,
    blocks,
    parse_program,
    raftkv_entry_point,
    raftkv_parser,
    read_document,
    schema_errors,
)

# -- shell commands ----------------------------------------------------------------------------


SEPARATORS = {"|", "||", "&&", ";", "&"}
REDIRECTIONS = {">", ">>", "<", "2>", "2>&1"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
JSON_TYPE = "Content-Type: application/json"


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
        headers: list[str] = []
        url = ""
        index = 0
        while index < len(arguments):
            argument = arguments[index]
            index += 1
            if argument in ("-H", "--header"):
                headers.append(arguments[index].lower().replace(" ", ""))
                index += 1
            elif argument == "-X":
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
        # The server refuses a body without its JSON type (415): curl's -d alone says form.
        assert body is None or "content-type:application/json" in headers, (
            "a curl with a body must send -H 'Content-Type: application/json'"
        )
        parts = urlsplit(url if "://" in url else f"http://{url}")
        check_route(
            self.http, method, parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))
        )
        if body is not None and parts.path.startswith("/v3/"):
            # etcd's JSON gateway: the body must parse as the route's etcd request message.
            from google.protobuf import json_format

            from raftkv.etcd.gateway import ROUTES as GATEWAY_ROUTES

            (gateway,) = (route for route in GATEWAY_ROUTES if route.path == parts.path)
            json_format.Parse(body, gateway.request())
        elif body is not None:
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
    """raftkv's routes in docs/http-api.md; etcd's gateway (/v3/, /version) in docs/etcd.md."""
    for document, etcd in (("http-api.md", False), ("etcd.md", True)):
        text = (ROOT / "docs" / document).read_text()
        documented = {
            (method, urlsplit(path).path)
            for method, path in re.findall(r"`(GET|PUT|POST|DELETE) (/[^`\s]*)", text)
        }
        missing = sorted(
            f"{method} {route}"
            for method, route in http_app.routes
            if (route.startswith("/v3/") or route == "/version") == etcd
            and (method, route) not in documented
        )
        assert not missing, f"routes missing from docs/{document}: " + ", ".join(missing)


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
    assert refused(lambda: shell.check(["curl", "-XPUT", "localhost:8080/v1/kv/a", "-d", "{}"]))
    assert refused(
        lambda: shell.check(
            ["curl", "-XPUT", "localhost:8080/v1/kv/a", "-H", JSON_TYPE, "-d", '{"valu": "x"}']
        )
    )
    assert refused(lambda: shell.check(["python", "-m", "raftkv.testing.sim", "--no-such-flag"]))
    assert refused(lambda: shell.check(["raftkv", "serve", "--auto-promot"]))  # abbreviated
    bad_compare = '{"compares": [{"key": "a", "target": "versio", "op": "=", "value": 0}]}'
    assert refused(
        lambda: shell.check(["curl", "localhost:8080/v1/txn", "-H", JSON_TYPE, "-d", bad_compare])
    )
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
