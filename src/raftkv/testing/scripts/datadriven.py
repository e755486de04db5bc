"""A small runner for datadriven test scripts, after cockroachdb/datadriven.

A script is a sequence of test cases separated by blank lines::

    # Comments start with '#' and may appear between cases.
    cmd positional key=value list=(1,2,3)
    optional input lines
    ----
    expected output, ending at the first blank line

When the expected output itself contains blank lines, it is wrapped in a double separator::

    cmd
    ----
    ----
    output with

    a blank line
    ----
    ----

Rules of the format (the parser enforces them and names the file and line when it can't):

- A command line is `name arg...`. Each argument is `key`, `key=value` or
  `key=(v1, v2, ...)`; parentheses nest, and only top-level commas split values. A line
  ending in a backslash continues on the next line.
- Input lines run from the line after the command to the `----` separator; the input is
  the text between them with surrounding whitespace stripped.
- Every case must have a `----` separator, even when the expected output is empty.

`run_file` runs each case through a handler `(TestCase) -> str` in order and compares its
output with the expected text; the first mismatch stops the file (later cases usually
depend on the state the earlier ones built) and raises `OutputMismatch` with a unified
diff and the case's `file:line`. In rewrite mode (`RAFTKV_REWRITE=1`, or pytest's
`--rewrite`), every case runs and the file is written back with the actual outputs;
comments, blank lines and inputs are kept as they were.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "REWRITE_ENV_VAR",
    "CmdArg",
    "DataDrivenError",
    "OutputMismatch",
    "ParseError",
    "Script",
    "TestCase",
    "parse",
    "parse_file",
    "parse_line",
    "rewrite_requested",
    "run_file",
    "run_script",
]

REWRITE_ENV_VAR = "RAFTKV_REWRITE"

SEPARATOR = "----"


class DataDrivenError(Exception):
    """Base of the runner's own errors."""


class ParseError(DataDrivenError):
    """A script is malformed; the message starts with `file:line`."""


class OutputMismatch(DataDrivenError, AssertionError):
    """A case produced output other than the expected text."""


@dataclass(frozen=True, slots=True)
class CmdArg:
    """One argument of a command line: `key`, `key=value` or `key=(v1, v2)`."""

    key: str
    values: tuple[str, ...] = ()

    def __str__(self) -> str:
        if not self.values:
            return self.key
        if len(self.values) == 1:
            return f"{self.key}={self.values[0]}"
        return f"{self.key}=({', '.join(self.values)})"


@dataclass(slots=True)
class TestCase:
    """One command of a script, with its input and expected output.

    `line` is the 1-based line of the command in `path`. `expected` is the expected output
    with a trailing newline on every line ("" when empty).
    """

    # Not a pytest test class, whatever its name says.
    __test__ = False

    path: str
    line: int
    command: str
    args: tuple[CmdArg, ...] = ()
    input: str = ""
    expected: str = ""

    @property
    def position(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def command_line(self) -> str:
        return " ".join([self.command, *(str(arg) for arg in self.args)])

    # -- argument access -------------------------------------------------------------------

    def positional(self) -> list[str]:
        """The arguments without values, in order."""
        return [arg.key for arg in self.args if not arg.values]

    def has_arg(self, key: str) -> bool:
        return any(arg.key == key for arg in self.args)

    def values(self, key: str) -> tuple[str, ...]:
        """The values of `key` (all occurrences concatenated); () if absent."""
        found: list[str] = []
        for arg in self.args:
            if arg.key == key:
                found.extend(arg.values)
        return tuple(found)

    def keyed(self) -> dict[str, tuple[str, ...]]:
        """The arguments that have values, by key."""
        return {arg.key: self.values(arg.key) for arg in self.args if arg.values}

    def single(self, key: str) -> str | None:
        """The one value of `key`, or None if absent; several values are an error."""
        values = self.values(key)
        if not values:
            return None
        if len(values) > 1:
            raise self.error(f"{key} takes one value, got {len(values)}")
        return values[0]

    def int_arg(self, key: str, default: int) -> int:
        value = self.single(key)
        if value is None:
            return default
        return self.parse_int(value, key)

    def ints(self, key: str) -> list[int]:
        """The values of `key` as integers; `key=()` gives []."""
        return [self.parse_int(value, key) for value in self.values(key) if value]

    def bool_arg(self, key: str, default: bool) -> bool:
        value = self.single(key)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("true", "t", "1", "yes"):
            return True
        if lowered in ("false", "f", "0", "no"):
            return False
        raise self.error(f"{key}: not a boolean: {value!r}")

    def parse_int(self, value: str, what: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise self.error(f"{what}: not an integer: {value!r}") from None

    def error(self, message: str) -> DataDrivenError:
        """An error about this case's command line, naming its position."""
        return DataDrivenError(f"{self.position}: {self.command_line}: {message}")


# -- parsing ---------------------------------------------------------------------------------


def parse_line(line: str) -> tuple[str, tuple[CmdArg, ...]]:
    """Split a command line into its name and arguments (see the module docstring).

    Raises ValueError naming the column where parsing failed. An empty line gives ("", ()).
    """
    text = line.strip()
    if not text:
        return "", ()
    position = 0
    length = len(text)

    def fail() -> ValueError:
        return ValueError(f"cannot parse directive at column {position + 1}: {text}")

    def skip_spaces() -> None:
        nonlocal position
        while position < length and text[position] == " ":
            position += 1

    def take_until(stops: str) -> str:
        nonlocal position
        start = position
        while position < length and text[position] not in stops:
            position += 1
        return text[start:position]

    command = take_until(" ")
    skip_spaces()
    args: list[CmdArg] = []
    while position < length:
        key = take_until(" =")
        if not key:
            raise fail()
        values: list[str] = []
        if position < length and text[position] == "=":
            position += 1
            if position >= length or text[position] == " ":
                values = [""]
            elif text[position] != "(":
                values = [take_until(" ")]
            else:
                position += 1
                depth = 1
                start = position
                while True:
                    if position >= length:
                        raise fail()
                    char = text[position]
                    position += 1
                    if char == "(":
                        depth += 1
                    elif char == ")":
                        depth -= 1
                        if depth == 0:
                            values.append(text[start : position - 1].strip())
                            break
                    elif char == "," and depth == 1:
                        values.append(text[start : position - 1].strip())
                        skip_spaces()
                        start = position
        args.append(CmdArg(key, tuple(values)))
        skip_spaces()
    return command, tuple(args)


@dataclass(slots=True)
class _CaseBlock:
    case: TestCase
    # The command line(s) and input lines exactly as written, each ending in "\n".
    header: str
    # Whether a blank line followed the expected output (as opposed to the end of the file).
    blank_after: bool


@dataclass(slots=True)
class Script:
    """A parsed script: its cases, plus everything needed to write it back."""

    path: str
    # Verbatim text (comments, blank lines) and cases, in file order.
    blocks: list[str | _CaseBlock] = field(default_factory=list)

    @property
    def cases(self) -> list[TestCase]:
        return [block.case for block in self.blocks if isinstance(block, _CaseBlock)]

    def render(self, outputs: dict[int, str] | None = None) -> str:
        """The script's text, with the expected output of case `i` replaced by
        `outputs[i]` where given."""
        parts: list[str] = []
        case_number = 0
        for position, block in enumerate(self.blocks):
            if isinstance(block, str):
                parts.append(block)
                continue
            output = block.case.expected
            if outputs is not None and case_number in outputs:
                output = outputs[case_number]
            case_number += 1
            parts.append(block.header)
            parts.append(_format_expected(output))
            if block.blank_after or position != len(self.blocks) - 1:
                parts.append("\n")
        return "".join(parts)


def _needs_double_separator(output: str) -> bool:
    lines = output.splitlines()
    return any(not line.strip() for line in lines) or (bool(lines) and lines[0] == SEPARATOR)


def _format_expected(output: str) -> str:
    if _needs_double_separator(output):
        return f"{SEPARATOR}\n{SEPARATOR}\n{output}{SEPARATOR}\n{SEPARATOR}\n"
    return f"{SEPARATOR}\n{output}"


def parse(text: str, path: str = "<string>") -> Script:
    """Parse the text of a script. Raises ParseError with `path:line` on malformed input."""
    lines = text.splitlines(keepends=True)
    script = Script(path)
    verbatim: list[str] = []
    index = 0

    def fail(line_number: int, message: str) -> ParseError:
        return ParseError(f"{path}:{line_number}: {message}")

    while index < len(lines):
        raw = lines[index]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            verbatim.append(raw)
            index += 1
            continue
        if stripped == SEPARATOR:
            raise fail(index + 1, "separator '----' without a command before it")

        # The command line, with backslash continuations.
        command_line_number = index + 1
        header = [_with_newline(raw)]
        command_text = stripped
        index += 1
        while command_text.endswith("\\") and index < len(lines):
            header.append(_with_newline(lines[index]))
            command_text = command_text[:-1] + " " + lines[index].strip()
            index += 1
        try:
            command, args = parse_line(command_text)
        except ValueError as error:
            raise fail(command_line_number, str(error)) from None

        # Input lines up to the separator.
        input_lines: list[str] = []
        while index < len(lines) and lines[index].rstrip("\r\n") != SEPARATOR:
            header.append(_with_newline(lines[index]))
            input_lines.append(lines[index].rstrip("\r\n"))
            index += 1
        if index >= len(lines):
            raise fail(command_line_number, f"{command}: no '----' separator after the command")
        header.append(_with_newline(lines[index]))
        index += 1

        # Expected output.
        expected: list[str] = []
        blank_after = False
        if index < len(lines) and lines[index].rstrip("\r\n") == SEPARATOR:
            # Double separator: read until "----\n----", then swallow one blank line.
            header.append(_with_newline(lines[index]))
            index += 1
            while True:
                if index >= len(lines):
                    raise fail(command_line_number, f"{command}: unterminated '----' block")
                current = lines[index].rstrip("\r\n")
                following = lines[index + 1].rstrip("\r\n") if index + 1 < len(lines) else None
                if current == SEPARATOR and following == SEPARATOR:
                    index += 2
                    break
                expected.append(current)
                index += 1
            if index < len(lines):
                if lines[index].strip():
                    raise fail(index + 1, "expected a blank line after the closing '----'")
                blank_after = True
                index += 1
            # The header already holds the opening "----\n----"; render() adds its own.
            header = header[:-2]
        else:
            while index < len(lines) and lines[index].strip():
                expected.append(lines[index].rstrip("\r\n"))
                index += 1
            if index < len(lines):
                blank_after = True
                index += 1
            header = header[:-1]

        if verbatim:
            script.blocks.append("".join(verbatim))
            verbatim = []
        case = TestCase(
            path=path,
            line=command_line_number,
            command=command,
            args=args,
            input="\n".join(input_lines).strip(),
            expected="".join(f"{line}\n" for line in expected),
        )
        script.blocks.append(_CaseBlock(case, "".join(header), blank_after))
    if verbatim:
        script.blocks.append("".join(verbatim))
    return script


def _with_newline(line: str) -> str:
    return line if line.endswith("\n") else line + "\n"


def parse_file(path: str | os.PathLike[str]) -> Script:
    return parse(Path(path).read_text(encoding="utf-8"), str(path))


# -- running ---------------------------------------------------------------------------------


def rewrite_requested() -> bool:
    """Whether the environment asks for rewrite mode (`RAFTKV_REWRITE=1`)."""
    return os.environ.get(REWRITE_ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on")


def _normalize(output: str) -> str:
    if output and not output.endswith("\n"):
        output += "\n"
    return output


def _mismatch(case: TestCase, actual: str) -> OutputMismatch:
    diff = difflib.unified_diff(
        case.expected.splitlines(keepends=True),
        actual.splitlines(keepends=True),
        fromfile="expected",
        tofile="actual",
    )
    lines = [f"{case.position}: output of `{case.command_line}` does not match\n"]
    if case.input:
        lines.append("input:\n")
        lines.extend(f"  {line}\n" for line in case.input.splitlines())
    lines.extend(line if line.endswith("\n") else line + "\n" for line in diff)
    lines.append(
        f"(to accept the actual output, rerun with {REWRITE_ENV_VAR}=1 or pytest --rewrite)\n"
    )
    return OutputMismatch("".join(lines))


def run_script(script: Script, handler: Callable[[TestCase], str], *, rewrite: bool) -> str:
    """Run every case of `script`; return the rewritten text (in rewrite mode) or raise
    `OutputMismatch` at the first case whose output differs.

    An exception raised by the handler propagates with a note naming the case's position.
    """
    __tracebackhide__ = True  # pytest: show the mismatch, not the runner's frames
    outputs: dict[int, str] = {}
    for number, case in enumerate(script.cases):
        try:
            actual = _normalize(handler(case))
        except Exception as error:
            error.add_note(f"while running {case.position}: {case.command_line}")
            raise
        if rewrite:
            outputs[number] = actual
        elif actual != case.expected:
            raise _mismatch(case, actual)
    return script.render(outputs)


def run_file(
    path: str | os.PathLike[str],
    handler: Callable[[TestCase], str],
    *,
    rewrite: bool | None = None,
) -> None:
    """Run the script at `path` (see `run_script`). In rewrite mode the file is written back
    when its text changed. `rewrite=None` means "as `RAFTKV_REWRITE` says"."""
    __tracebackhide__ = True
    if rewrite is None:
        rewrite = rewrite_requested()
    original = Path(path).read_text(encoding="utf-8")
    script = parse(original, str(path))
    rewritten = run_script(script, handler, rewrite=rewrite)
    if rewrite and rewritten != original:
        Path(path).write_text(rewritten, encoding="utf-8")
